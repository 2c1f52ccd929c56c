"""The contract of every table Track writes to the lake (one DataFrameModel a table).

Each partitioned table lives under `<table>/date=YYYY-MM-DD/part-<id>.parquet`; the `date` key is
in the path, not in the file, so `polars.scan_parquet("<lake>/<table>/")` reads it as a column.
"""

from __future__ import annotations

import functools
from typing import Annotated

import pandera.polars as pa
import polars as pl

from track.schemas.constants import MAX_METADATA_BYTES, MAX_STRING_CHARS, REASONS

UTC_MS = pl.Datetime("ms", "UTC")
"""Every instant Track keeps: UTC, at millisecond precision (SPEC section 2)."""
Instant = Annotated[pl.Datetime, UTC_MS.time_unit, UTC_MS.time_zone]
"""UTC_MS, as a pandera model's column type."""
Dates = Annotated[pl.List, pl.Date()]


class Events(pa.DataFrameModel):
    """`events/`: one row per accepted event, partitioned by the UTC date of `timestamp`."""

    event: str = pa.Field(str_length={"min_value": 1, "max_value": MAX_STRING_CHARS})
    user_id: str = pa.Field(str_length={"min_value": 1, "max_value": MAX_STRING_CHARS})
    timestamp: Instant = pa.Field(description="when it happened, clamped to received_at")
    metadata: str = pa.Field(nullable=True, description="compact JSON object, with _warnings")
    received_at: Instant = pa.Field(description="last-modified time of the source file")
    source: str = pa.Field(description="path of the raw file, relative to raw/")
    line: int = pa.Field(ge=1, description="1-based line number in the source file")
    fingerprint: pl.Int64 = pa.Field(description="XXH3-64 of event, user_id and metadata as sent")
    sent_at: Instant = pa.Field(description="the instant as sent (received_at if none)")

    @pa.check("metadata", name="metadata_fits")
    @classmethod
    def metadata_fits(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Stored metadata is at most MAX_METADATA_BYTES of compact JSON."""
        return data.lazyframe.select(pl.col(data.key).str.len_bytes() <= MAX_METADATA_BYTES)

    class Config:
        strict = True


EVENTS_ORDER = ["timestamp", "source", "line"]
"""How the rows of each file of events/ and duplicates/ are sorted."""


class Duplicates(Events):
    """`duplicates/`: copies of accepted events that lost to an earlier copy, same columns."""


class Quarantine(pa.DataFrameModel):
    """`quarantine/`: one row per rejected line, partitioned by the UTC date of `received_at`."""

    source: str
    line: int = pa.Field(ge=1, description="1-based line; 1 for a file rejected whole")
    raw: str = pa.Field(description="the line as sent (bytes not UTF-8 shown as \\xNN)")
    reason: str = pa.Field(isin=list(REASONS))
    message: str
    received_at: Instant

    class Config:
        strict = True


class Counts(pa.DataFrameModel):
    """`counts/`: accepted events per UTC date (partition), event name and user. A date, event
    and user may have a row in more than one file of a date (a run that adds events to a date
    adds their counts as a file; past APPENDED_FILES_AT_MOST files, those after the first are
    summed into one): their counts add up, so sum `count` by date, event and user."""

    event: str
    user_id: str
    count: int = pa.Field(ge=1)

    class Config:
        strict = True


class Sessions(pa.DataFrameModel):
    """`sessions/`: one row per play/stop session, partitioned by the UTC date of its play."""

    user_id: str
    play_at: Instant
    stop_at: Instant
    duration_ms: int = pa.Field(ge=0)

    class Config:
        strict = True


class Plays(pa.DataFrameModel):
    """`plays/`: the plays and stops of `events/` (their user, event and instant), partitioned
    and sorted as they are there: what the sessions are matched from, a few columns of a
    fraction of the events (2 of 7 names in the bench's mix: a spread file's matching read
    0.06 s of them on an 8M-event window, against 0.24 s from the events)."""

    user_id: str
    event: str = pa.Field(isin=["play", "stop"])
    timestamp: Instant

    class Config:
        strict = True


class Keys(pa.DataFrameModel):
    """`keys/`: the record mix (`fingerprint` XOR `sent_at`'s epoch milliseconds) of every copy
    `events/` and `duplicates/` hold under each date, in no set order: where the merge looks
    first for the stored copies of new records (8 bytes a copy), and reads those tables only
    under dates holding one of their mixes. A file spread over every day of an 8M-event window
    found none of its 20,000 records there in 0.03 s, where reading the mixes from the events
    took 0.14 s. Equal for all copies of a record; two records may share one."""

    mix: int

    class Config:
        strict = True


class Manifest(pa.DataFrameModel):
    """`_state/files-<id>.parquet`: every raw file ingested, the bytes read and what they gave."""

    path: str = pa.Field(unique=True, description="relative to raw/")
    size: int
    modified: Instant = pa.Field(description="last-modified time when last listed")
    version: str = pa.Field(
        nullable=True, description="the store's version token when last listed (store.version_of)"
    )
    sha256: str
    received_at: Instant = pa.Field(description="last-modified time when first read")
    dates: Dates = pa.Field(description="event dates its records were stored under")

    class Config:
        strict = True


TABLE_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "events": Events,
    "duplicates": Duplicates,
    "quarantine": Quarantine,
    "counts": Counts,
    "sessions": Sessions,
    "plays": Plays,
    "keys": Keys,
}
"""The tables users read, each at `<root>/<name>/`, partitioned by date: a Delta table too."""


def conform(rows: pl.DataFrame, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """The rows in a model's columns, checked for names and types only: for rows assembled
    from rows the model already validated (its value checks hold for them by construction).
    Raises TypeError on any difference."""
    schema = polars_schema(model)
    missing = [name for name in schema if name not in rows.columns]
    if missing:
        raise TypeError(f"{model.__name__} rows lack columns {missing}")
    rows = rows.select(list(schema))
    if rows.schema != schema:
        raise TypeError(f"{model.__name__} rows have types {dict(rows.schema)}, not {dict(schema)}")
    return rows


@functools.cache
def polars_schema(model: type[pa.DataFrameModel]) -> pl.Schema:
    """The Polars schema of a model's columns, for empty tables and casts (built once a model:
    `to_schema` costs milliseconds)."""
    return pl.Schema({name: col.dtype.type for name, col in model.to_schema().columns.items()})


class ReplacedBytes(pa.DataFrameModel):
    """`_state/replaced-<id>.parquet`: bytes a raw file held before it was replaced, and when
    they were first read. Bytes keep the received_at of their first read (SPEC 1), also when a
    file is later set back to them; the manifest holds only each path's current bytes."""

    sha256: str = pa.Field(unique=True)
    received_at: Instant

    class Config:
        strict = True


class Clamped(pa.DataFrameModel):
    """`_state/clamped-<id>.parquet`: the record key of each stored copy (event or duplicate)
    whose timestamp was clamped, with the date it is stored under. Every other copy of a record
    is stored under the date of its `sent_at`: with these, the merge knows every date that may
    hold a copy of a record without reading the lake. An entry may outlive its copy (a file
    replaced): that only makes the merge read a date for nothing."""

    fingerprint: pl.Int64
    sent_at: Instant
    date: pl.Date

    class Config:
        strict = True


class Tombstones(pa.DataFrameModel):
    """`_state/tombstones-<id>.parquet`: keys of records counted once whose kept copy expired."""

    fingerprint: pl.Int64
    sent_at: Instant

    class Config:
        strict = True

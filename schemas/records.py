"""The contract of an incoming record (SPEC section 2), and the reasons a line breaks it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from track.schemas.constants import (
    INVALID_EVENT,
    INVALID_METADATA,
    INVALID_TIMESTAMP,
    INVALID_USER_ID,
    MAX_STRING_CHARS,
    RESERVED_EVENT,
    RFC3339,
)
from track.schemas.tables import Instant

# The messages of the field rules (SPEC section 2), each written once: the pipeline fills them
# in with Polars expressions (`_messages`), the HTTP API with str.format (`record_problem`).
STRING_MESSAGE = f"{{field}} must be a string of 1 to {MAX_STRING_CHARS} characters, got {{got}}"
RESERVED_MESSAGE = f'event must not be "{RESERVED_EVENT}": the answers use that key'
TIMESTAMP_TYPE_MESSAGE = "timestamp must be an RFC 3339 date-time string or null, got {got}"
TIMESTAMP_MESSAGE = (
    'timestamp must be an RFC 3339 date-time such as "2025-01-18T14:30:00Z", got "{got}"'
)
UNREAL_DATE_MESSAGE = 'timestamp names no real date (its month has no such day), got "{got}"'
METADATA_MESSAGE = "metadata must be a JSON object or null, got {got}"
QUOTED_CHARS = 64
"""A timestamp quoted in a message is cut to this many characters."""


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as messages quote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class ParsedRecord(pa.DataFrameModel):
    """A decoded JSON object line, before normalisation: one row per line that is an object."""

    line: int
    event: str = pa.Field(
        nullable=False,
        str_length={"min_value": 1, "max_value": MAX_STRING_CHARS},
        notin=[RESERVED_EVENT],
    )
    user_id: str = pa.Field(
        nullable=False, str_length={"min_value": 1, "max_value": MAX_STRING_CHARS}
    )
    timestamp_type: str = pa.Field(isin=["string", "null"])
    timestamp: str = pa.Field(nullable=True)
    sent_at: Instant = pa.Field(nullable=True)
    metadata_type: str = pa.Field(isin=["object", "null"])

    @pa.check("timestamp", name="timestamp_is_rfc3339")
    @classmethod
    def timestamp_is_rfc3339(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A timestamp must keep RFC 3339's grammar. One read into an instant (`sent_at`) keeps
        it (transforms.timestamps reads only those): the grammar is run on the others alone,
        not a second time over every timestamp."""
        unread = pl.when(pl.col("sent_at").is_null()).then(pl.col(data.key))
        return data.lazyframe.select(unread.str.contains(RFC3339).fill_null(True))

    @pa.dataframe_check(name="timestamp_is_a_real_instant")
    @classmethod
    def timestamp_is_a_real_instant(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A timestamp must name a real instant (no 2025-02-30). One that breaks the grammar
        fails here too, but its `timestamp` failure ranks first (`_FIELD_REASON`), so only the
        dates the grammar lets through are reported by this check (a second pass of the
        grammar over every timestamp cost more than the rest of this model)."""
        return data.lazyframe.select(
            pl.col("timestamp").is_null() | pl.col("sent_at").is_not_null()
        )

    class Config:
        strict = "filter"


# The column a failure is reported on -> (reason, order of precedence).
_FIELD_REASON = {
    "event": (INVALID_EVENT, 0),
    "user_id": (INVALID_USER_ID, 1),
    "timestamp_type": (INVALID_TIMESTAMP, 2),
    "timestamp": (INVALID_TIMESTAMP, 3),
    "metadata_type": (INVALID_METADATA, 5),
}


def _string_problem(field: str) -> pl.Expr:
    """STRING_MESSAGE for the row's value of `field`."""
    value, kind = pl.col(field), pl.col(f"{field}_type")
    got = (
        pl.when(value.is_null())
        .then(kind)
        .when(value == "")
        .then(pl.lit("an empty string"))
        .otherwise(pl.format("{} characters", value.str.len_chars()))
    )
    return pl.format(STRING_MESSAGE.format(field=field, got="{}"), got)


def _messages() -> dict[str, pl.Expr]:
    quoted = pl.col("timestamp").str.slice(0, QUOTED_CHARS)
    return {
        "event": pl.when(pl.col("event") == RESERVED_EVENT)
        .then(pl.lit(RESERVED_MESSAGE))
        .otherwise(_string_problem("event")),
        "user_id": _string_problem("user_id"),
        "timestamp_type": pl.format(TIMESTAMP_TYPE_MESSAGE.format(got="{}"), "timestamp_type"),
        "timestamp": pl.format(TIMESTAMP_MESSAGE.format(got="{}"), quoted),
        "sent_at": pl.format(UNREAL_DATE_MESSAGE.format(got="{}"), quoted),
        "metadata_type": pl.format(METADATA_MESSAGE.format(got="{}"), "metadata_type"),
    }


def validate_records(records: pl.DataFrame, key: Sequence[str] = ("line",)) -> pl.DataFrame:
    """The `key` columns (what names a line), `reason` and `message` of every record that
    breaks ParsedRecord (one row a line)."""
    empty = (
        records.select(*key)
        .clear()
        .with_columns(reason=pl.lit(None, pl.String), message=pl.lit(None, pl.String))
    )
    try:
        ParsedRecord.validate(records, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null())
    else:
        return empty
    # A dataframe-level check names no column: it is about the parsed instant.
    cases = cases.with_columns(
        column=pl.when(pl.col("check") == "timestamp_is_a_real_instant")
        .then(pl.lit("sent_at"))
        .otherwise(pl.col("column"))
    )
    precedence = {**{k: v[1] for k, v in _FIELD_REASON.items()}, "sent_at": 4}
    reasons = {**{k: v[0] for k, v in _FIELD_REASON.items()}, "sent_at": INVALID_TIMESTAMP}
    first = (
        cases.select(
            pl.col("index").cast(pl.Int64),
            pl.col("column"),
            pl.col("column").replace_strict(precedence, return_dtype=pl.Int64).alias("rank"),
        )
        .sort("index", "rank")
        .unique("index", keep="first")
    )
    rows = records.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    joined = first.join(rows, on="index", how="left")
    messages = _messages()
    message = pl.lit(None, pl.String)
    for column, expr in messages.items():
        message = pl.when(pl.col("column") == column).then(expr).otherwise(message)
    if joined.is_empty():
        return empty
    return joined.select(
        *key,
        pl.col("column").replace_strict(reasons, return_dtype=pl.String).alias("reason"),
        message.alias("message"),
    ).sort(*key)


_TIMESTAMP = re.compile(RFC3339)
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _real_day(year: int, month: int, day: int) -> bool:
    # The proleptic Gregorian calendar Polars parses with (year 0000 included).
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _MONTH_DAYS[month - 1] + (month == 2 and leap)


def _string_got(record: Mapping[str, Any], field: str) -> str | None:
    """What STRING_MESSAGE says `field` got, or None when it keeps the rule."""
    value = record.get(field)
    if not isinstance(value, str):
        return json_type(value) if field in record else "missing"
    if value == "":
        return "an empty string"
    return f"{len(value)} characters" if len(value) > MAX_STRING_CHARS else None


def record_problem(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """The reason and message of the first field rule a decoded record breaks, or None: what
    `validate_records` says of it, one record at a time, without pandera (the HTTP API's
    verdict: tests/schemas/test_records.py checks that the two agree on generated records)."""
    if record.get("event") == RESERVED_EVENT:
        return INVALID_EVENT, RESERVED_MESSAGE
    for field, reason in (("event", INVALID_EVENT), ("user_id", INVALID_USER_ID)):
        got = _string_got(record, field)
        if got is not None:
            return reason, STRING_MESSAGE.format(field=field, got=got)
    timestamp = record.get("timestamp")
    if timestamp is not None:
        if not isinstance(timestamp, str):
            return INVALID_TIMESTAMP, TIMESTAMP_TYPE_MESSAGE.format(got=json_type(timestamp))
        match = _TIMESTAMP.fullmatch(timestamp)
        if match is None:
            return INVALID_TIMESTAMP, TIMESTAMP_MESSAGE.format(got=timestamp[:QUOTED_CHARS])
        if not _real_day(*(int(match.group(part)) for part in ("year", "month", "day"))):
            return INVALID_TIMESTAMP, UNREAL_DATE_MESSAGE.format(got=timestamp[:QUOTED_CHARS])
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return INVALID_METADATA, METADATA_MESSAGE.format(got=json_type(metadata))
    return None

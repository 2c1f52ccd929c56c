"""Ingest: raw files to staged events and quarantine rows (a file is parsed a chunk of lines at
a time; no lake writes except the staging files of its batch)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl

from flows.lake import Lake, RawFile
from schemas.constants import UNREADABLE_FILE
from schemas.records import validate_records
from schemas.tables import Quarantine, polars_schema
from transforms.normalise import normalise_events
from transforms.parse import decode_ndjson
from transforms.timestamps import with_sent_at


@dataclass(frozen=True)
class FilePlan:
    """A raw file to read, what the manifest knew of its path, and bytes seen elsewhere."""

    raw: RawFile
    prior_sha256: str | None
    known_received_at: dict[str, datetime] = field(default_factory=dict)


@dataclass
class FileResult:
    """What one raw file gave."""

    path: str
    size: int
    modified: datetime
    sha256: str
    received_at: datetime
    unchanged: bool = False
    lines: int = 0
    expired: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)


CHUNK_BYTES = 16 * 1024 * 1024
"""Lines are parsed this many bytes at a time: however large a file, its rows never all sit in
memory at once."""

Sink = Callable[[pl.DataFrame, pl.DataFrame], None]
"""Where the events and quarantine rows of each chunk of a file go."""


class UnreadableFileError(ValueError):
    """A raw file whose bytes cannot be read as lines at all (bad gzip, binary)."""


def file_text(name: str, data: bytes) -> bytes:
    """The NDJSON bytes of a raw file: gunzipped if `.gz`; raises UnreadableFileError."""
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnreadableFileError(f"{name} is not a readable gzip file: {exc}") from exc
    if b"\x00" in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFileError(
                f"{name} holds NUL bytes and is not UTF-8 text: {exc.reason}"
            ) from exc
    return data


def line_chunks(text: bytes, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, bytes) of consecutive runs of whole lines of about `size`."""
    start, first_line = 0, 1
    while start < len(text):
        cut = text.find(b"\n", start + size - 1)
        end = len(text) if cut == -1 else cut + 1
        chunk = text[start:end]
        yield first_line, chunk
        first_line += chunk.count(b"\n")
        start = end


def parse_file(
    data: bytes, *, source: str, received_at: datetime, window_start: date, first_line: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with `expired`) and quarantine rows of NDJSON bytes: a raw file's, or the chunk
    of it that starts at line `first_line`."""
    lines = decode_ndjson(data, first_line=first_line).pipe(with_sent_at).collect()
    objects = lines.filter(pl.col("reason").is_null())
    rejected = validate_records(objects)
    events = normalise_events(
        objects.lazy().join(rejected.lazy(), on="line", how="anti"),
        received_at=received_at,
        window_start=window_start,
        source=source,
    ).collect()
    bad = pl.concat(
        [
            lines.filter(pl.col("reason").is_not_null()).select("line", "reason", "message"),
            rejected,
        ]
    )
    quarantine = (
        bad.join(lines.select("line", "raw"), on="line")
        .with_columns(source=pl.lit(source), received_at=pl.lit(received_at))
        .pipe(_as_quarantine)
        .sort("line")
    )
    return events, quarantine


def unreadable_file(source: str, message: str, received_at: datetime) -> pl.DataFrame:
    """The one quarantine row of a file rejected whole."""
    return pl.DataFrame(
        {
            "source": [source],
            "line": [1],
            "raw": [""],
            "reason": [UNREADABLE_FILE],
            "message": [message],
            "received_at": [received_at],
        }
    ).pipe(_as_quarantine)


def _as_quarantine(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(
        pl.col(name).cast(dtype) for name, dtype in polars_schema(Quarantine).items()
    )


def ingest_file(lake: Lake, plan: FilePlan, *, window_start: date, sink: Sink) -> FileResult:
    """Read and parse one raw file, chunk by chunk into `sink`; nothing when its bytes are
    unchanged."""
    raw = plan.raw
    data = lake.read_raw(raw.path)
    sha = hashlib.sha256(data).hexdigest()
    received_at = plan.known_received_at.get(sha, raw.modified)
    result = FileResult(raw.path, len(data), raw.modified, sha, received_at)
    if sha == plan.prior_sha256:
        result.unchanged = True
        return result
    chunks: Iterable[tuple[pl.DataFrame, pl.DataFrame]]
    try:
        text = file_text(raw.path, data)
    except UnreadableFileError as exc:
        chunks = [(pl.DataFrame(), unreadable_file(raw.path, str(exc), received_at))]
    else:
        del data
        chunks = (
            parse_file(
                chunk,
                source=raw.path,
                received_at=received_at,
                window_start=window_start,
                first_line=first_line,
            )
            for first_line, chunk in line_chunks(text)
        )
    for events, quarantine in chunks:
        result.lines += len(events) + len(quarantine)
        result.expired += int(events["expired"].sum()) if len(events) else 0
        for reason, count in quarantine.group_by("reason").len().iter_rows():
            result.quarantined[reason] = result.quarantined.get(reason, 0) + count
        sink(events, quarantine)
    return result

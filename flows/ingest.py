"""Ingest: raw files to staged events and quarantine rows (a file is parsed a chunk of lines at
a time; no lake writes except the staging files of its batch)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl

from flows.lake import Lake, RawFile
from schemas.constants import UNREADABLE_FILE
from schemas.records import validate_records
from schemas.tables import Quarantine, polars_schema
from transforms.normalise import normalise_events
from transforms.parse import decode_pieces
from transforms.timestamps import UTC_MS, with_sent_at


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
"""Where parsed events and quarantine rows go (staging)."""


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


LINE_ID = ["source", "line"]
"""What names a line among the lines of many files."""


@dataclass(frozen=True)
class Piece:
    """A file's bytes, or a chunk of them, with where they come from."""

    source: str
    received_at: datetime
    first_line: int
    data: bytes


def decode_files(pieces: list[Piece]) -> pl.DataFrame:
    """The decoded lines of pieces of files, decoded together, each with its file's `source`
    and `received_at`."""
    lines = decode_pieces([(p.first_line, p.data) for p in pieces]).collect()
    files = pl.DataFrame(
        {
            "piece": range(len(pieces)),
            "source": [p.source for p in pieces],
            "received_at": [p.received_at for p in pieces],
        },
        schema={"piece": pl.UInt32, "source": pl.String, "received_at": UTC_MS},
    )
    return lines.join(files, on="piece", how="left", maintain_order="left").drop("piece")


def parse_lines(lines: pl.DataFrame, *, window_start: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with `expired`) and quarantine rows of decoded lines, of any number of files:
    one validation for them all, however small the files."""
    lines = lines.lazy().pipe(with_sent_at).collect()
    objects = lines.filter(pl.col("reason").is_null())
    rejected = validate_records(objects, key=LINE_ID)
    events = normalise_events(
        objects.lazy().join(rejected.lazy(), on=LINE_ID, how="anti"), window_start=window_start
    ).collect()
    bad = pl.concat(
        [
            lines.filter(pl.col("reason").is_not_null()).select(*LINE_ID, "reason", "message"),
            rejected,
        ]
    )
    quarantine = (
        bad.join(lines.select(*LINE_ID, "raw", "received_at"), on=LINE_ID)
        .pipe(_as_quarantine)
        .sort(LINE_ID)
    )
    return events, quarantine


def parse_file(
    data: bytes, *, source: str, received_at: datetime, window_start: date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with `expired`) and quarantine rows of one raw file's NDJSON bytes."""
    lines = decode_files([Piece(source, received_at, 1, data)])
    return parse_lines(lines, window_start=window_start)


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


class Batch:
    """Where a batch's files go: their decoded lines, parsed together whenever they reach
    `rows` lines (one validation for many small files; a bound on memory for large ones)."""

    def __init__(self, *, window_start: date, rows: int, stage: Sink) -> None:
        self.window_start, self.limit, self.stage = window_start, rows, stage
        self.pieces: list[Piece] = []
        self.piece_bytes = 0
        self.lines: list[pl.DataFrame] = []
        self.rejected: list[pl.DataFrame] = []
        self.rows = 0
        self.files: dict[str, FileResult] = {}

    def add(self, piece: Piece) -> None:
        """Take a piece of a file; decode what is held once it makes a chunk."""
        self.pieces.append(piece)
        self.piece_bytes += len(piece.data)
        if self.piece_bytes >= CHUNK_BYTES:
            self._decode()

    def _decode(self) -> None:
        if self.pieces:
            lines = decode_files(self.pieces)
            self.pieces, self.piece_bytes = [], 0
            self.lines.append(lines)
            self.rows += len(lines)
        if self.rows >= self.limit:
            self._parse()

    def reject(self, quarantine: pl.DataFrame) -> None:
        self.rejected.append(quarantine)

    def flush(self) -> None:
        """Decode and parse all that is held, count it into the files' results, stage it."""
        self._decode()
        self._parse()

    def _parse(self) -> None:
        events, quarantine = pl.DataFrame(), pl.concat(self.rejected or [_NONE])
        if self.lines:
            events, bad = parse_lines(pl.concat(self.lines), window_start=self.window_start)
            quarantine = pl.concat([quarantine, bad])
        if len(events):
            counted = events.group_by("source").agg(pl.len(), pl.col("expired").sum())
            for source, lines, expired in counted.iter_rows():
                self.files[source].lines += lines
                self.files[source].expired += expired
        for source, reason, count in quarantine.group_by("source", "reason").len().iter_rows():
            found = self.files[source]
            found.lines += count
            found.quarantined[reason] = found.quarantined.get(reason, 0) + count
        self.stage(events, quarantine)
        self.lines, self.rejected, self.rows = [], [], 0


_NONE = pl.DataFrame(schema=polars_schema(Quarantine))


def ingest_file(lake: Lake, plan: FilePlan, batch: Batch) -> FileResult:
    """Read one raw file and decode it into `batch`, a chunk of lines at a time; nothing when
    its bytes are unchanged."""
    raw = plan.raw
    data = lake.read_raw(raw.path)
    sha = hashlib.sha256(data).hexdigest()
    received_at = plan.known_received_at.get(sha, raw.modified)
    result = FileResult(raw.path, len(data), raw.modified, sha, received_at)
    if sha == plan.prior_sha256:
        result.unchanged = True
        return result
    batch.files[raw.path] = result
    try:
        text = file_text(raw.path, data)
    except UnreadableFileError as exc:
        batch.reject(unreadable_file(raw.path, str(exc), received_at))
        return result
    del data
    for first_line, chunk in line_chunks(text):
        batch.add(Piece(raw.path, received_at, first_line, chunk))
    return result

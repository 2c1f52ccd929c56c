"""Ingest: raw files to staged events and quarantine rows (a file is parsed a chunk of lines at
a time; no lake writes except the staging files of its batch)."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import IO

import polars as pl

from track.errors import RawFileChangedError, UnreadableFileError
from track.lake.store import Lake, RawFile
from track.schemas.constants import UNREADABLE_FILE
from track.schemas.records import validate_records
from track.schemas.tables import UTC_MS, Quarantine, polars_schema
from track.transforms.normalise import normalise_events
from track.transforms.parse import decode_pieces
from track.transforms.timestamps import with_line_received_at, with_sent_at


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


def _gunzip_errors(name: str) -> tuple[type[Exception], ...]:
    return (OSError, EOFError, zlib.error) if name.endswith(".gz") else ()


def file_text(name: str, data: bytes) -> bytes:
    """The NDJSON bytes of a raw file: gunzipped if `.gz`; raises UnreadableFileError."""
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except _gunzip_errors(name) as exc:
            raise _not_gzip(name, exc) from exc
    if b"\x00" in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_text(name, exc) from exc
    return data


def _not_gzip(name: str, exc: Exception) -> UnreadableFileError:
    return UnreadableFileError(f"{name} is not a readable gzip file: {exc}")


def _not_text(name: str, exc: UnicodeDecodeError) -> UnreadableFileError:
    return UnreadableFileError(f"{name} holds NUL bytes and is not UTF-8 text: {exc.reason}")


WHOLE_FILE_BYTES = 64 * 1024 * 1024
"""A raw file up to this size is read in one request. A larger one is read twice, a block at a
time: once to hash it and check that it can be read as lines at all, then to parse it; so
neither a large file nor its decompressed text is ever held whole."""


class _StoreError(Exception):
    """A read of the store that failed: not a sign of a bad file (it goes up, to be retried)."""


class _Hashed:
    """A binary file read through: every byte read is hashed and counted."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        try:
            block = self.f.read(size)
        except Exception as exc:
            raise _StoreError() from exc
        self.hash.update(block)
        self.size += len(block)
        return block


READ_BYTES = 1024 * 1024
"""A large file is read this many bytes at a time: reads of CHUNK_BYTES, each a fresh large
allocation, raised the peak memory of a 4M-event run by a fifth."""


def _text_blocks(name: str, f: IO[bytes] | _Hashed) -> Iterator[bytes]:
    """The NDJSON bytes of an open raw file, READ_BYTES at a time (gunzipped if `.gz`)."""
    text = gzip.GzipFile(fileobj=f, mode="rb") if name.endswith(".gz") else f  # type: ignore[arg-type]
    while block := text.read(READ_BYTES):
        yield block


def check_large_file(
    name: str, open_file: Callable[[], AbstractContextManager[IO[bytes]]]
) -> tuple[str, int, str | None]:
    """Read a large raw file through: its sha256, its size, and why it cannot be read as lines
    (None if it can), as `file_text` would say it."""
    with open_file() as f:
        hashed = _Hashed(f)
        problem, nul = None, False
        try:
            try:
                for block in _text_blocks(name, hashed):
                    nul = nul or b"\x00" in block
            except _gunzip_errors(name) as exc:
                problem = str(_not_gzip(name, exc))
            while hashed.read(READ_BYTES):  # the rest, for the hash
                pass
        except _StoreError as exc:
            raise exc.__cause__ from None  # type: ignore[misc]
    if nul and problem is None:  # then it must be UTF-8 throughout: read it again to see
        utf8 = codecs.getincrementaldecoder("utf-8")()
        with open_file() as f:
            try:
                for block in _text_blocks(name, f):
                    utf8.decode(block)
                utf8.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                problem = str(_not_text(name, exc))
    return hashed.hash.hexdigest(), hashed.size, problem


def stream_chunks(name: str, f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, bytes) of consecutive runs of whole lines of an open raw
    file, read a block at a time; as `line_chunks` cuts them: at the first line end from
    CHUNK_BYTES on (a batch decodes a run as soon as it holds CHUNK_BYTES)."""
    first_line, blocks, size = 1, [], 0
    for block in _text_blocks(name, f):
        blocks.append(block)
        size += len(block)
        if size < CHUNK_BYTES:
            continue
        cut = block.find(b"\n", max(CHUNK_BYTES - 1 - (size - len(block)), 0)) + 1
        if cut == 0:  # read on: a run ends with a line
            continue
        chunk = b"".join([*blocks[:-1], block[:cut]])  # the one copy
        blocks, size = [block[cut:]], len(block) - cut
        yield first_line, chunk
        first_line += chunk.count(b"\n")
    rest = b"".join(blocks)
    if rest:
        yield first_line, rest


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
    and `received_at` (which a line's own `_received_at` may replace: `parse_lines`)."""
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
    sent = lines.lazy().pipe(with_sent_at)
    if lines["received_at_text"].null_count() == len(lines):  # no line carries its own:
        sent = sent.drop("received_at_text")  # 0.15 us a line saved
    else:
        sent = sent.pipe(with_line_received_at)
    lines = sent.collect()
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


class _OneVersion:
    """A large raw file opened once and read again from its start by every pass, so that the
    hash and the rows come from one version of it: on S3 each read must match the ETag of the
    open (s3fs asks If-Match; a newer object fails the read, and the task is retried); locally
    the open file keeps the version it opened when a producer renames a new one over it, and
    `check` notices one rewritten in place."""

    def __init__(self, lake: Lake, path: str) -> None:
        self.lake, self.path = lake, path
        self.f = lake.open_raw(path)
        self.opened = self._version()

    def rewound(self) -> IO[bytes]:
        """The open file, at its start."""
        self.f.seek(0)
        return self.f

    def again(self) -> AbstractContextManager[IO[bytes]]:
        """The open file at its start, to read `with`, left open."""
        return nullcontext(self.rewound())

    def _version(self) -> tuple[int, ...] | None:
        if not self.lake.local:
            return None
        stat = os.fstat(self.f.fileno())
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def check(self) -> None:
        if self._version() != self.opened:
            raise RawFileChangedError(
                f"raw/{self.path} was rewritten in place while it was read: read it again"
            )


def ingest_file(lake: Lake, plan: FilePlan, batch: Batch) -> FileResult:
    """Read one raw file and decode it into `batch`, a chunk of lines at a time; nothing when
    its bytes are unchanged. A file larger than WHOLE_FILE_BYTES is never held whole, and all
    its passes read one version of it."""
    path = plan.raw.path
    if plan.raw.size <= WHOLE_FILE_BYTES:
        data = lake.read_raw(path)
        whole: tuple[str, int, str | None] = hashlib.sha256(data).hexdigest(), len(data), None
        return _ingest(plan, batch, whole, lambda: line_chunks(file_text(path, data)))
    pinned = _OneVersion(lake, path)
    with pinned.f:
        found = check_large_file(path, pinned.again)
        result = _ingest(plan, batch, found, lambda: stream_chunks(path, pinned.rewound()))
        pinned.check()
        return result


def _ingest(
    plan: FilePlan,
    batch: Batch,
    found: tuple[str, int, str | None],
    chunks: Callable[[], Iterator[tuple[int, bytes]]],
) -> FileResult:
    """A file's result from its hash, size and verdict; its lines, from `chunks` (which raises
    UnreadableFileError for a file that cannot be read as lines), into `batch` unless its
    bytes are unchanged."""
    raw = plan.raw
    sha, size, problem = found
    received_at = plan.known_received_at.get(sha, raw.modified)
    result = FileResult(raw.path, size, raw.modified, sha, received_at)
    if sha == plan.prior_sha256:
        result.unchanged = True
        return result
    batch.files[raw.path] = result
    lines: Iterator[tuple[int, bytes]] = iter(())
    if problem is None:
        try:
            lines = chunks()
        except UnreadableFileError as exc:
            problem = str(exc)
    if problem is not None:
        batch.reject(unreadable_file(raw.path, problem, received_at))
        return result
    for first_line, chunk in lines:
        batch.add(Piece(raw.path, received_at, first_line, chunk))
    return result

"""Reading one raw file: its sha256 and size, whether it can be read as lines at all, and its
bytes as runs of whole lines, every pass reading one version of it.

A file up to RAW_WHOLE_BYTES is read in one request. A larger one is opened once and read twice
from its start, a block at a time (hash and check, then parse), so neither it nor its gunzipped
text is ever held whole, and its hash and rows come from one version: on S3 every read must
match the ETag of the open (s3fs asks If-Match; a newer object fails the read, and the task is
retried); locally the open file keeps the version it opened when a producer renames a new one
over it, and one rewritten in place is noticed and read again.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from track import settings
from track.errors import RawFileChangedError, UnreadableFileError
from track.lake.store import Lake

Chunks = Iterator[tuple[int, bytes]]
"""Consecutive runs of whole lines of a file: (number of the run's first line, its bytes)."""


@dataclass(frozen=True)
class RawBytes:
    """What reading a raw file through found: its hash, its size, and why it cannot be read as
    lines (None if it can, as far as reading it through tells)."""

    sha256: str
    size: int
    problem: str | None = None


@contextmanager
def read_raw_file(
    lake: Lake, path: str, size: int
) -> Iterator[tuple[RawBytes, Callable[[], Chunks]]]:
    """A raw file's RawBytes, and a way to read its lines once, as `(first line, bytes)` runs
    (which raises UnreadableFileError for a file that cannot be read as lines)."""
    if size <= settings.RAW_WHOLE_BYTES:
        data = lake.read_raw(path)
        found = RawBytes(hashlib.sha256(data).hexdigest(), len(data))
        yield found, lambda: line_chunks(file_text(path, data))
        return
    pinned = _OneVersion(lake, path)
    with pinned.f:
        yield check_large_file(path, pinned.rewound), lambda: stream_chunks(path, pinned.rewound())
        pinned.check()


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


def line_chunks(text: bytes, size: int | None = None) -> Chunks:
    """Consecutive runs of whole lines of about `size` bytes (PARSE_CHUNK_BYTES)."""
    size = size or settings.PARSE_CHUNK_BYTES
    start, first_line = 0, 1
    while start < len(text):
        cut = text.find(b"\n", start + size - 1)
        end = len(text) if cut == -1 else cut + 1
        chunk = text[start:end]
        yield first_line, chunk
        if end < len(text):  # counting a file's last run (most often its only one) is waste
            first_line += chunk.count(b"\n")
        start = end


def check_large_file(name: str, rewound: Callable[[], IO[bytes]]) -> RawBytes:
    """Read a large raw file through, from `rewound()` (the open file at its start): its hash,
    its size, and why it cannot be read as lines, as `file_text` would say it."""
    hashed = _Hashed(rewound())
    problem, nul = None, False
    try:
        try:
            for block in _text_blocks(name, hashed):
                nul = nul or b"\x00" in block
        except _gunzip_errors(name) as exc:
            problem = str(_not_gzip(name, exc))
        while hashed.read(settings.RAW_BLOCK_BYTES):  # the rest, for the hash
            pass
    except _StoreError as exc:
        raise exc.__cause__ from None  # type: ignore[misc]
    if nul and problem is None:  # then it must be UTF-8 throughout: read it again to see
        utf8 = codecs.getincrementaldecoder("utf-8")()
        try:
            for block in _text_blocks(name, rewound()):
                utf8.decode(block)
            utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            problem = str(_not_text(name, exc))
    return RawBytes(hashed.hash.hexdigest(), hashed.size, problem)


def stream_chunks(name: str, f: IO[bytes]) -> Chunks:
    """Consecutive runs of whole lines of an open raw file, read a block at a time, cut as
    `line_chunks` cuts them: at the first line end from PARSE_CHUNK_BYTES on (a batch decodes a
    run as soon as it holds PARSE_CHUNK_BYTES)."""
    chunk_bytes = settings.PARSE_CHUNK_BYTES
    first_line, blocks, size = 1, [], 0
    for block in _text_blocks(name, f):
        blocks.append(block)
        size += len(block)
        if size < chunk_bytes:
            continue
        cut = block.find(b"\n", max(chunk_bytes - 1 - (size - len(block)), 0)) + 1
        if cut == 0:  # read on: a run ends with a line
            continue
        chunk = b"".join([*blocks[:-1], block[:cut]])  # the one copy
        blocks, size = [block[cut:]], len(block) - cut
        yield first_line, chunk
        first_line += chunk.count(b"\n")
    rest = b"".join(blocks)
    if rest:
        yield first_line, rest


def _gunzip_errors(name: str) -> tuple[type[Exception], ...]:
    return (OSError, EOFError, zlib.error) if name.endswith(".gz") else ()


def _not_gzip(name: str, exc: Exception) -> UnreadableFileError:
    return UnreadableFileError(f"{name} is not a readable gzip file: {exc}")


def _not_text(name: str, exc: UnicodeDecodeError) -> UnreadableFileError:
    return UnreadableFileError(f"{name} holds NUL bytes and is not UTF-8 text: {exc.reason}")


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


def _text_blocks(name: str, f: IO[bytes] | _Hashed) -> Iterator[bytes]:
    """The NDJSON bytes of an open raw file, RAW_BLOCK_BYTES at a time (gunzipped if `.gz`)."""
    text = gzip.GzipFile(fileobj=f, mode="rb") if name.endswith(".gz") else f  # type: ignore[arg-type]
    while block := text.read(settings.RAW_BLOCK_BYTES):
        yield block


class _OneVersion:
    """A large raw file opened once, read again from its start by every pass."""

    def __init__(self, lake: Lake, path: str) -> None:
        self.lake, self.path = lake, path
        self.f = lake.open_raw(path)
        self.opened = self._version()

    def rewound(self) -> IO[bytes]:
        """The open file, at its start."""
        self.f.seek(0)
        return self.f

    def _version(self) -> tuple[int, ...] | None:
        if not self.lake.local:
            return None  # s3fs checks the ETag on every read
        stat = os.fstat(self.f.fileno())
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def check(self) -> None:
        """Raise RawFileChangedError if the file was rewritten in place since it was opened."""
        if self._version() != self.opened:
            raise RawFileChangedError(
                f"raw/{self.path} was rewritten in place while it was read: read it again"
            )

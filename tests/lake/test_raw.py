"""Reading a raw file: whole, or a block at a time as files above RAW_WHOLE_BYTES are, with the
same hash, verdict and numbered lines; a store failing mid-file is an error to retry."""

from __future__ import annotations

import gzip
import hashlib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import track.settings
from track.errors import UnreadableFileError
from track.lake.raw import check_large_file, file_text, line_chunks, stream_chunks


@pytest.mark.parametrize(
    ("name", "data"),
    [("a.ndjson.gz", b"not gzip at all"), ("a.ndjson", b"\x00\xff\xfe binary \x00")],
)
def test_unreadable_files(name, data):
    with pytest.raises(UnreadableFileError, match=name):
        file_text(name, data)


def test_nul_bytes_in_valid_utf8_are_only_bad_lines():
    assert file_text("a.ndjson", b'{"a":1}\n\x00\n') == b'{"a":1}\n\x00\n'


_raw_bytes = st.lists(
    st.sampled_from([b"\n", b"\r\n", b"{}", b"x" * 30, "é☕".encode(), b"\x00", b"\xff"]),
    max_size=30,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(data=_raw_bytes, block=st.integers(1, 40), gz=st.booleans())
def test_a_large_file_read_a_block_at_a_time_is_read_as_when_whole(data, block, gz):
    # Files above RAW_WHOLE_BYTES are read a block at a time: the same hash, size, verdict,
    # and lines with the same numbers as file_text and line_chunks give for the whole file.
    name = "a.ndjson.gz" if gz else "a.ndjson"
    raw = gzip.compress(data) if gz else data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(track.settings, "PARSE_CHUNK_BYTES", block)
        patch.setattr(track.settings, "RAW_BLOCK_BYTES", max(block // 3, 1))
        found = check_large_file(name, lambda: io.BytesIO(raw))
        chunks = list(stream_chunks(name, io.BytesIO(raw)))
    assert (found.sha256, found.size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    try:
        text = file_text(name, raw)
    except UnreadableFileError as exc:
        assert found.problem == str(exc)
        return
    assert found.problem is None
    assert b"".join(c for _, c in chunks) == text
    numbered = [(n, line) for first, c in chunks for n, line in enumerate(c.split(b"\n"), first)]
    whole = [
        (n, line) for first, c in line_chunks(text) for n, line in enumerate(c.split(b"\n"), first)
    ]
    assert [p for p in numbered if p[1]] == [p for p in whole if p[1]]


def test_a_large_file_that_breaks_early_is_still_hashed_whole():
    raw = bytearray(gzip.compress(random.Random(7).randbytes(300_000)))
    raw[0] ^= 0xFF  # not gzip: found out in the first bytes
    found = check_large_file("a.ndjson.gz", lambda: io.BytesIO(bytes(raw)))
    assert (found.sha256, found.size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert found.problem is not None and "is not a readable gzip file" in found.problem


class _StoreGoesAway(io.BytesIO):
    """A file whose store fails once, after its first bytes."""

    failed = False

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= 100 and not self.failed:
            self.failed = True
            raise ConnectionResetError("the store went away")
        return super().read(50 if size is None or size < 0 else min(size, 50))


@pytest.mark.parametrize("name", ["a.ndjson.gz", "a.ndjson"])
def test_a_store_failing_mid_file_is_an_error_to_retry_not_a_bad_file(name):
    data = gzip.compress(random.Random(7).randbytes(10_000)) if name.endswith(".gz") else b"x" * 500
    with pytest.raises(ConnectionResetError):
        check_large_file(name, lambda: _StoreGoesAway(data))

"""Every quarantine reason, with a message that names the field and the problem."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import track.lake.ingest
from track.errors import UnreadableFileError
from track.lake.ingest import (
    check_large_file,
    file_text,
    line_chunks,
    parse_file,
    stream_chunks,
)

RECEIVED = datetime(2025, 1, 10, tzinfo=UTC)


def _quarantine(line: bytes):
    events, quarantine = parse_file(
        line + b"\n",
        source="date=2025-01-10/a.ndjson",
        received_at=RECEIVED,
        window_start=date(2025, 1, 1),
    )
    assert len(events) + len(quarantine) == 1
    return quarantine.to_dicts()


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        (b"{oops", "invalid_json", "line is not valid JSON"),
        (b'{"event":"\xff","user_id":"u"}', "invalid_utf8", "line is not valid UTF-8"),
        (b"[1]", "not_an_object", "line must be a JSON object, got array"),
        (b'{"x":' * 65 + b"1" + b"}" * 65, "too_deep", "nested deeper than 64 levels"),
        (
            b'{"user_id":"u"}',
            "invalid_event",
            "event must be a string of 1 to 256 characters, got missing",
        ),
        (
            b'{"event":7,"user_id":"u"}',
            "invalid_event",
            "event must be a string of 1 to 256 characters, got number",
        ),
        (b'{"event":"","user_id":"u"}', "invalid_event", "got an empty string"),
        (b'{"event":"' + b"e" * 257 + b'","user_id":"u"}', "invalid_event", "got 257 characters"),
        (b'{"event":"date","user_id":"u"}', "invalid_event", 'event must not be "date"'),
        (
            b'{"event":"e","user_id":12}',
            "invalid_user_id",
            "user_id must be a string of 1 to 256 characters, got number",
        ),
        (b'{"event":"e"}', "invalid_user_id", "got missing"),
        (b'{"event":"e","user_id":null}', "invalid_user_id", "got null"),
        (
            b'{"event":"e","user_id":"u","timestamp":1700000000}',
            "invalid_timestamp",
            "timestamp must be an RFC 3339 date-time string or null, got number",
        ),
        (
            b'{"event":"e","user_id":"u","timestamp":"01/02/2025"}',
            "invalid_timestamp",
            'such as "2025-01-18T14:30:00Z", got "01/02/2025"',
        ),
        (
            b'{"event":"e","user_id":"u","timestamp":"2025-02-30T00:00:00Z"}',
            "invalid_timestamp",
            "timestamp names no real date",
        ),
        (
            b'{"event":"e","user_id":"u","metadata":"text"}',
            "invalid_metadata",
            "metadata must be a JSON object or null, got string",
        ),
    ],
)
def test_every_reason_names_the_field_and_problem(line, reason, message):
    (row,) = _quarantine(line)
    assert row["reason"] == reason
    assert message in row["message"]
    assert row["line"] == 1
    assert row["source"] == "date=2025-01-10/a.ndjson"


def test_256_characters_counted_as_characters_not_bytes():
    events, quarantine = parse_file(
        ('{"event":"' + "é" * 256 + '","user_id":"' + "😀" * 256 + '"}').encode(),
        source="a",
        received_at=RECEIVED,
        window_start=date(2025, 1, 1),
    )
    assert (len(events), len(quarantine)) == (1, 0)


def test_first_broken_rule_in_field_order_is_reported():
    (row,) = _quarantine(b'{"event":"date","user_id":5,"timestamp":"x","metadata":[]}')
    assert row["reason"] == "invalid_event"


def test_raw_text_is_kept():
    (row,) = _quarantine(b'{"event":"e","user_id":"u","metadata":"text"}')
    assert row["raw"] == '{"event":"e","user_id":"u","metadata":"text"}'


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
    # Files above WHOLE_FILE_BYTES are read a block at a time: the same hash, size, verdict,
    # and lines with the same numbers as file_text and line_chunks give for the whole file.
    name = "a.ndjson.gz" if gz else "a.ndjson"
    raw = gzip.compress(data) if gz else data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(track.lake.ingest, "CHUNK_BYTES", block)
        patch.setattr(track.lake.ingest, "READ_BYTES", max(block // 3, 1))
        sha, size, problem = check_large_file(name, lambda: io.BytesIO(raw))
        chunks = list(stream_chunks(name, io.BytesIO(raw)))
    assert (sha, size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    try:
        text = file_text(name, raw)
    except UnreadableFileError as exc:
        assert problem == str(exc)
        return
    assert problem is None
    assert b"".join(c for _, c in chunks) == text
    numbered = [(n, line) for first, c in chunks for n, line in enumerate(c.split(b"\n"), first)]
    whole = [
        (n, line) for first, c in line_chunks(text) for n, line in enumerate(c.split(b"\n"), first)
    ]
    assert [p for p in numbered if p[1]] == [p for p in whole if p[1]]


def test_a_large_file_that_breaks_early_is_still_hashed_whole():
    raw = bytearray(gzip.compress(random.Random(7).randbytes(300_000)))
    raw[0] ^= 0xFF  # not gzip: found out in the first bytes
    sha, size, problem = check_large_file("a.ndjson.gz", lambda: io.BytesIO(bytes(raw)))
    assert (sha, size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert problem is not None and "is not a readable gzip file" in problem


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

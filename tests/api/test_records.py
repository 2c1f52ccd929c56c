"""The HTTP API's verdict on a record is the pipeline's: the same reason and message for what
the pipeline would quarantine, and for what it accepts a line that gives the same event."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime

import orjson
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.test_properties import BAD_LINES, records
from track.api.records import (
    as_line,
    batch_records,
    body_text,
    one_record,
    received_at_text,
)
from track.errors import BadRequest, TooLarge, UnsupportedEncoding
from track.lake.ingest import parse_file
from track.schemas.constants import MAX_BODY_BYTES

RECEIVED = datetime(2025, 3, 1, 12, tzinfo=UTC)
STORED = ["event", "user_id", "timestamp", "metadata", "received_at", "fingerprint", "sent_at"]


def _pipeline(line: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What a run makes of one line: its event, or its quarantine row."""
    events, quarantine = parse_file(
        line.encode() + b"\n",
        source="a.ndjson",
        received_at=RECEIVED,
        window_start=date(2000, 1, 1),
    )
    return events, quarantine


@settings(max_examples=300, deadline=None)
@given(st.one_of(records(), st.sampled_from(BAD_LINES)))
@example('{"event": "play", "user_id": "u", "timestamp": "0000-02-29T00:00:00Z"}')
@example('{"event": "play", "user_id": "u", "timestamp": "2025-03-01T10:00:00Z\\n"}')
@example('{"event": "date", "user_id": ""}')
@example('{"event": "' + "é" * 257 + '", "user_id": "u"}')
def test_the_apis_verdict_is_the_pipelines(line):
    events, quarantine = _pipeline(line)
    found = one_record(line.encode())
    if not line.strip():  # skipped by the pipeline; refused by the API (there is no record)
        assert events.is_empty() and quarantine.is_empty()
        assert isinstance(found, tuple)
        return
    if isinstance(found, tuple):
        assert events.is_empty()
        assert quarantine.select("reason", "message").rows() == [found]
        return
    assert quarantine.is_empty()
    # The line the API writes gives the same event (received when the file was).
    written = as_line(found, received_at_text(RECEIVED)).decode()
    again, rejected = _pipeline(written.rstrip("\n"))
    assert rejected.is_empty()
    assert_frame_equal(again.select(STORED), events.select(STORED))


def test_a_sent_received_at_is_replaced_by_the_apis():
    record = {"event": "e", "user_id": "u", "_received_at": "2020-01-01T00:00:00Z", "x": 1}
    line = as_line(record, "2025-03-01T12:00:00.000Z")
    assert json.loads(line) == {
        "event": "e",
        "user_id": "u",
        "x": 1,
        **{"_received_at": "2025-03-01T12:00:00.000Z"},
    }
    assert line == b'{"event":"e","user_id":"u","x":1,"_received_at":"2025-03-01T12:00:00.000Z"}\n'
    with_metadata = as_line({"event": "e", "user_id": "u", "metadata": {"a": 1}}, "T")
    assert with_metadata == b'{"event":"e","user_id":"u","_received_at":"T","metadata":{"a":1}}\n'


def test_a_batch_is_judged_record_by_record_in_either_shape():
    wrapped = orjson.dumps({"batch": [{"event": "a", "user_id": "u"}, [1], {"event": "b"}]})
    ndjson = b'{"event":"a","user_id":"u"}\n[1]\n\n \n{"event":"b"}\n'
    for body in (wrapped, ndjson):
        found = batch_records(body)
        assert isinstance(found[0], dict)
        assert found[1] == ("not_an_object", "line must be a JSON object, got array")
        assert found[2] == (
            "invalid_user_id",
            "user_id must be a string of 1 to 256 characters, got missing",
        )


def test_a_batch_holds_1_to_500_records():
    with pytest.raises(BadRequest, match="no records"):
        batch_records(b"\n \n")
    with pytest.raises(TooLarge, match="at most 500 records, got 501"):
        batch_records(orjson.dumps({"batch": [{}] * 501}))
    assert len(batch_records(orjson.dumps({"batch": [{}] * 500}))) == 500


def test_bodies_are_gunzipped_within_the_limit():
    assert body_text(gzip.compress(b'{"a":1}'), "gzip") == b'{"a":1}'
    with pytest.raises(TooLarge, match="once gunzipped"):
        body_text(gzip.compress(b" " * (MAX_BODY_BYTES + 1)), "gzip")
    with pytest.raises(TooLarge):
        body_text(b" " * (MAX_BODY_BYTES + 1), None)
    with pytest.raises(BadRequest, match="not valid gzip"):
        body_text(b"plain", "gzip")
    with pytest.raises(UnsupportedEncoding, match="br"):
        body_text(b"x", "br")

"""Every quarantine reason, with a message that names the field and the problem."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from track.lake.ingest import parse_file

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

"""RFC 3339 timestamps to UTC milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from track.schemas.tables import UTC_MS
from track.transforms.timestamps import with_line_received_at, with_sent_at


def _parse(text: str | None) -> datetime | None:
    return with_sent_at(
        pl.LazyFrame({"timestamp": [text]}, schema={"timestamp": pl.String})
    ).collect()["sent_at"][0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-18T14:30:00Z", datetime(2025, 1, 18, 14, 30, tzinfo=UTC)),
        ("2025-01-18t14:30:00Z", datetime(2025, 1, 18, 14, 30, tzinfo=UTC)),
        ("2025-01-18 14:30:00Z", datetime(2025, 1, 18, 14, 30, tzinfo=UTC)),
        # No offset means UTC.
        ("2025-01-18T14:30:00", datetime(2025, 1, 18, 14, 30, tzinfo=UTC)),
        # Offsets move the instant, and can move the UTC date.
        ("2025-01-18T14:30:00.250+02:00", datetime(2025, 1, 18, 12, 30, 0, 250000, tzinfo=UTC)),
        ("2025-01-18T23:30:00-05:00", datetime(2025, 1, 19, 4, 30, tzinfo=UTC)),
        ("2025-01-18T00:30:00+05:45", datetime(2025, 1, 17, 18, 45, tzinfo=UTC)),
        # Finer digits are cut, not rounded.
        ("2025-01-18T14:30:00.9999Z", datetime(2025, 1, 18, 14, 30, 0, 999000, tzinfo=UTC)),
        ("2025-01-18T14:30:00.5Z", datetime(2025, 1, 18, 14, 30, 0, 500000, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_valid_timestamps(text, expected):
    assert _parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T00:00:00Z",  # not a leap year
        "2025-04-31T00:00:00Z",
        "2025-01-18T24:00:00Z",
        "2025-01-18T14:60:00Z",
        "2025-01-18T14:30:60Z",  # leap second: no instant in UTC milliseconds
        # The same in the common shape, which one strptime reads.
        "2025-02-29T00:00:00.000Z",
        "2025-04-31T00:00:00.000Z",
        "2025-01-18T24:00:00.000Z",
        "2025-01-18T14:30:60.000Z",
        "2025-01-18T14:30Z",
        "2025-01-18",
        "2025-01-18T14:30:00z",
        "2025-01-18T14:30:00+0200",
        "2025-01-18T14:30:00+24:00",
        "2025-01-18T14:30:00.Z",
        "2025-1-18T14:30:00Z",
        " 2025-01-18T14:30:00Z",
        "2025-01-18T14:30:00Z\n",
        "２０２５-01-18T14:30:00Z",
        "yesterday",
    ],
)
def test_invalid_timestamps_give_null(text):
    assert _parse(text) is None


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_the_common_shape_and_the_general_path_agree(moment):
    # Read by one strptime when it has milliseconds and a Z, taken apart otherwise.
    at = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC)
    wall = f"{at.year:04d}-{at:%m-%dT%H:%M:%S}"
    millis = f"{at.microsecond // 1000:03d}"
    assert _parse(f"{wall}.{millis}Z") == at
    assert _parse(f"{wall}.{millis}0+00:00") == at


FILE_AT = datetime(2025, 1, 18, 14, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The HTTP API's own instant, before the file was written: the line's.
        ("2025-01-18T14:30:00.123Z", datetime(2025, 1, 18, 14, 30, 0, 123000, tzinfo=UTC)),
        ("2025-01-18T16:30:00+02:00", datetime(2025, 1, 18, 14, 30, tzinfo=UTC)),
        # Less than a second after the file (stores keep mtimes to the second): the line's.
        ("2025-01-18T14:30:05.999Z", datetime(2025, 1, 18, 14, 30, 5, 999000, tzinfo=UTC)),
        # A second or more after the file that holds it cannot be: the file's.
        ("2025-01-18T14:30:06Z", FILE_AT),
        ("2031-01-01T00:00:00Z", FILE_AT),
        # Without an offset, or not a date-time at all: ignored.
        ("2025-01-18T14:30:00", FILE_AT),
        ("2025-02-30T14:30:00Z", FILE_AT),
        ("yesterday", FILE_AT),
        (None, FILE_AT),
    ],
)
def test_a_lines_own_received_at_replaces_its_files_when_it_can_be_true(text, expected):
    lines = pl.LazyFrame(
        {"received_at_text": [text], "received_at": [FILE_AT]},
        schema={"received_at_text": pl.String, "received_at": UTC_MS},
    )
    got = with_line_received_at(lines).collect()
    assert got.columns == ["received_at"]
    assert got["received_at"][0] == expected

"""Counts: UTC dates, ISO weeks starting Monday, months, ranges that cut periods."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from track.transforms.counts import counts_by_period, daily_counts, period_start


@pytest.mark.parametrize(
    ("day", "group_by", "start"),
    [
        ("2025-01-01", "day", "2025-01-01"),
        ("2025-01-01", "week", "2024-12-30"),  # a Wednesday; its ISO week starts in 2024
        ("2025-01-05", "week", "2024-12-30"),  # Sunday ends the ISO week
        ("2025-01-06", "week", "2025-01-06"),  # Monday starts one
        ("2025-01-31", "month", "2025-01-01"),
        ("2024-02-29", "month", "2024-02-01"),
    ],
)
def test_period_start(day, group_by, start):
    frame = pl.DataFrame({"d": [date.fromisoformat(day)]})
    assert frame.select(period_start(pl.col("d"), group_by))["d"][0] == date.fromisoformat(start)


def test_daily_counts_per_date_event_and_user():
    events = pl.LazyFrame(
        {
            "date": [date(2025, 1, 1)] * 3 + [date(2025, 1, 2)],
            "event": ["play", "play", "stop", "play"],
            "user_id": ["a", "a", "b", "a"],
        }
    )
    expected = pl.DataFrame(
        {
            "date": [date(2025, 1, 1), date(2025, 1, 1), date(2025, 1, 2)],
            "event": ["play", "stop", "play"],
            "user_id": ["a", "b", "a"],
            "count": [2, 1, 1],
        }
    )
    assert_frame_equal(daily_counts(events).collect(), expected, check_row_order=False)


DAILY = pl.LazyFrame(
    {
        "date": [date(2025, 1, 31), date(2025, 2, 1), date(2025, 2, 2), date(2025, 2, 3)],
        "event": ["play", "play", "stop", "play"],
        "user_id": ["a", "b", "a", "a"],
        "count": [1, 2, 4, 8],
    }
)


def test_range_cuts_periods_to_the_days_inside():
    weeks = counts_by_period(DAILY, start=date(2025, 2, 1), end=date(2025, 2, 2), group_by="week")
    # 2025-02-01 and 02 are in the week of Monday 2025-01-27; 01-31 is outside the range.
    expected = {"period": [date(2025, 1, 27)] * 2, "event": ["play", "stop"], "count": [2, 4]}
    assert_frame_equal(weeks.collect(), pl.DataFrame(expected))


def test_months_and_user_filter():
    months = counts_by_period(
        DAILY, start=date(2025, 1, 1), end=date(2025, 2, 28), group_by="month", user_id="a"
    )
    expected = {
        "period": [date(2025, 1, 1), date(2025, 2, 1), date(2025, 2, 1)],
        "event": ["play", "play", "stop"],
        "count": [1, 8, 4],
    }
    assert_frame_equal(months.collect(), pl.DataFrame(expected))

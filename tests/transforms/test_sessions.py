"""Sessions: each stop as-of joined to its user's latest play; a play ends at most one session."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from track.transforms.sessions import match_sessions, neighbours, rematch, sessions_by_period

T = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def _events(*rows: tuple[str, str, int]) -> pl.LazyFrame:
    """(user, event, milliseconds after T) rows."""
    return pl.LazyFrame(
        {
            "user_id": [r[0] for r in rows],
            "event": [r[1] for r in rows],
            "timestamp": [T + timedelta(milliseconds=r[2]) for r in rows],
        },
        schema={"user_id": pl.String, "event": pl.String, "timestamp": pl.Datetime("ms", "UTC")},
    )


def _durations(*rows) -> list[tuple[str, int]]:
    return [
        (r["user_id"], r["duration_ms"])
        for r in match_sessions(_events(*rows)).collect().to_dicts()
    ]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # play, stop: one session
        ([("u", "play", 0), ("u", "stop", 1500)], [("u", 1500)]),
        # play, play, stop: the later play gets the session, the first none
        ([("u", "play", 0), ("u", "play", 1000), ("u", "stop", 3000)], [("u", 2000)]),
        # play, stop, stop: the second stop has no open play
        ([("u", "play", 0), ("u", "stop", 1000), ("u", "stop", 2000)], [("u", 1000)]),
        # stop without play, play without stop: nothing
        ([("u", "stop", 0), ("u", "play", 1000)], []),
        # zero-length session counts; at an equal timestamp the play comes first
        ([("u", "stop", 0), ("u", "play", 0)], [("u", 0)]),
        # stops are matched per user
        (
            [("a", "play", 0), ("b", "play", 10), ("a", "stop", 20), ("b", "stop", 40)],
            [("a", 20), ("b", 30)],
        ),
        # other events do not interrupt a session
        ([("u", "play", 0), ("u", "pause", 5), ("u", "stop", 10)], [("u", 10)]),
        # two plays at one instant are one play
        ([("u", "play", 0), ("u", "play", 0), ("u", "stop", 7), ("u", "stop", 9)], [("u", 7)]),
    ],
)
def test_match_sessions(rows, expected):
    assert sorted(_durations(*rows)) == sorted(expected)


def test_session_across_midnight_belongs_to_the_date_of_its_play():
    late = (datetime(2025, 1, 1, 23, 50, tzinfo=UTC) - T) // timedelta(milliseconds=1)
    sessions = match_sessions(_events(("u", "play", late), ("u", "stop", late + 1_200_000)))
    row = sessions.collect().row(0, named=True)
    assert row["date"] == date(2025, 1, 1)
    assert row["stop_at"].date() == date(2025, 1, 2)
    assert row["duration_ms"] == 1_200_000


EVENT_ROW = st.tuples(
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["play", "stop"]), st.integers(0, 12)
)


@given(
    before=st.lists(EVENT_ROW, max_size=30),
    gone=st.sets(st.integers(0, 29), max_size=6),
    came=st.lists(EVENT_ROW, max_size=6),
)
def test_matching_again_in_the_spans_gives_every_session_of_the_new_events(before, gone, came):
    # The sessions of the events after a change are those before it, with the sessions whose
    # play is in a changed user's span replaced by `rematch`'s (a run matches no other).
    after = [row for i, row in enumerate(before) if i not in gone] + came
    moved = [row for i, row in enumerate(before) if i in gone] + came
    changed = _events(*moved).select("user_id", "timestamp")
    users = {row[0] for row in moved}
    events = _events(*[r for r in after if r[0] in users])
    spans, again = rematch(events, neighbours(events, changed))
    old = match_sessions(_events(*before)).collect()
    in_span = (
        old.join(spans.collect(), on="user_id", how="left")
        .select(pl.col("play_at").is_between("start", "end").fill_null(False))
        .to_series()
    )
    patched = pl.concat([old.filter(~in_span), again.collect()])
    expected = match_sessions(_events(*after)).collect()
    order = ["user_id", "play_at"]
    assert_frame_equal(patched.sort(order), expected.sort(order))


@given(
    before=st.lists(EVENT_ROW, max_size=30),
    gone=st.sets(st.integers(0, 29), max_size=6),
    came=st.lists(EVENT_ROW, min_size=1, max_size=6),
    margin=st.integers(0, 12),
)
def test_the_events_of_a_range_of_time_match_the_users_they_settle_as_all_their_events_do(
    before, gone, came, margin
):
    # A run reads the events of a range of time around the changes (instants 0 to 12 here)
    # and matches the users it settles: those with an event before and after their changes in
    # it, or whose range reaches the window's ends. Theirs come out as from all their events.
    after = [row for i, row in enumerate(before) if i not in gone] + came
    moved = [row for i, row in enumerate(before) if i in gone] + came
    changed = _events(*moved).select("user_id", "timestamp")
    users = {row[0] for row in moved}
    first = min(row[2] for row in moved) - margin
    last = max(row[2] for row in moved) + margin
    held = _events(*[r for r in after if r[0] in users and first <= r[2] <= last])
    near = neighbours(held, changed).collect()
    settled = near.filter(
        pl.col("last").is_not_null() | (first <= 0), pl.col("until").is_not_null() | (last >= 12)
    )
    ours = pl.col("user_id").is_in(settled["user_id"].implode())
    spans, sessions = rematch(held.filter(ours), settled.lazy())
    everything = _events(*[r for r in after if r[0] in users]).filter(ours)
    want_spans, want = rematch(everything, neighbours(everything, changed.filter(ours)))
    order = ["user_id", "play_at"]
    assert_frame_equal(sessions.collect().sort(order), want.collect().sort(order))
    assert_frame_equal(spans.collect().sort("user_id"), want_spans.collect().sort("user_id"))


def test_a_span_starts_at_the_last_play_before_the_change_unless_a_stop_came_since():
    events = _events(("a", "play", 0), ("a", "play", 5), ("b", "play", 0), ("b", "stop", 3))
    changed = _events(("a", "stop", 9), ("b", "stop", 9)).select("user_id", "timestamp")
    spans = rematch(events, neighbours(events, changed))[0].collect()
    ms = {r["user_id"]: (r["start"] - T) // timedelta(milliseconds=1) for r in spans.to_dicts()}
    assert ms == {"a": 5, "b": 9}


def _sessions(*rows: tuple[str, str, int]) -> pl.LazyFrame:
    """(date, user, duration_ms) rows."""
    return pl.LazyFrame(
        {
            "date": [date.fromisoformat(r[0]) for r in rows],
            "user_id": [r[1] for r in rows],
            "duration_ms": [r[2] for r in rows],
        },
    )


def test_rounding_half_up_and_average_from_the_unrounded_total():
    table = _sessions(
        ("2025-01-01", "a", 1500), ("2025-01-01", "b", 1000), ("2025-01-02", "a", 499)
    )
    answer = (
        sessions_by_period(table, start=date(2025, 1, 1), end=date(2025, 1, 2), group_by="day")
        .collect()
        .to_dicts()
    )
    assert answer == [
        # 2.5 s -> 3; average 1.25 s -> 1
        {"period": date(2025, 1, 1), "totalDuration": 3, "sessionCount": 2, "averageDuration": 1},
        # 0.499 s -> 0
        {"period": date(2025, 1, 2), "totalDuration": 0, "sessionCount": 1, "averageDuration": 0},
    ]


def test_average_half_up():
    table = _sessions(("2025-01-01", "a", 1000), ("2025-01-01", "a", 2000))
    (row,) = (
        sessions_by_period(table, start=date(2025, 1, 1), end=date(2025, 1, 1), group_by="day")
        .collect()
        .to_dicts()
    )
    assert (row["totalDuration"], row["averageDuration"]) == (3, 2)  # 1.5 s -> 2


def test_periods_cut_by_the_range_and_user_filter():
    table = _sessions(
        ("2025-01-05", "a", 1000),
        ("2025-01-06", "a", 2000),
        ("2025-01-07", "b", 4000),
        ("2025-02-01", "a", 8000),
    )
    weeks = sessions_by_period(
        table, start=date(2025, 1, 5), end=date(2025, 1, 31), group_by="week"
    ).collect()
    expected = {"period": [date(2024, 12, 30), date(2025, 1, 6)], "totalDuration": [1, 6]}
    assert_frame_equal(weeks.select("period", "totalDuration"), pl.DataFrame(expected))
    months = sessions_by_period(
        table, start=date(2025, 1, 6), end=date(2025, 2, 28), group_by="month", user_id="a"
    ).collect()
    expected = {"period": [date(2025, 1, 1), date(2025, 2, 1)], "totalDuration": [2, 8]}
    assert_frame_equal(months.select("period", "totalDuration"), pl.DataFrame(expected))

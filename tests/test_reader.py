"""The reader: exactly the answers and messages of SPEC section 7, never an exception."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import polars as pl
import pytest

from track import reader
from track.lake.store import Lake

QUESTIONS = [reader.metrics, reader.sessions, reader.users]


@pytest.mark.parametrize("query", QUESTIONS)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, "2025-01-02"), "start_date and end_date are required"),
        (("2025-01-01", ""), "start_date and end_date are required"),
        (("", ""), "start_date and end_date are required"),
        (("2025-1-01", "2025-01-02"), "Invalid date format. Use YYYY-MM-DD"),
        (("2025-02-30", "2025-03-01"), "Invalid date format. Use YYYY-MM-DD"),
        (("2025-01-01", "20250102"), "Invalid date format. Use YYYY-MM-DD"),
        (("2025-01-01T00:00:00", "2025-01-02"), "Invalid date format. Use YYYY-MM-DD"),
        (("２０２５-01-01", "2025-01-02"), "Invalid date format. Use YYYY-MM-DD"),
        ((20250101, "2025-01-02"), "Invalid date format. Use YYYY-MM-DD"),
        (("2025-01-01", "2025-01-02", "year"), "group_by must be one of: day, week, month"),
        (("2025-01-01", "2025-01-02", ""), "group_by must be one of: day, week, month"),
        (("2025-01-01", "2025-01-02", "Day"), "group_by must be one of: day, week, month"),
        (("2025-01-03", "2025-01-02"), "start_date must be on or before end_date"),
        # Rules are checked in the order of the table.
        (("bad", "2025-01-02", "year"), "Invalid date format. Use YYYY-MM-DD"),
        (("2025-01-03", "2025-01-02", "year"), "group_by must be one of: day, week, month"),
    ],
)
def test_error_messages(query, args, message, tmp_path):
    assert query(*args, lake=str(tmp_path)) == {"status": "error", "message": message}


@pytest.mark.parametrize("query", QUESTIONS)
@pytest.mark.parametrize(
    ("args", "week_start", "message"),
    [
        (("2025-01-01", "2025-01-02"), "Sunday", "week_start must be one of: monday, sunday"),
        (("2025-01-01", "2025-01-02"), "", "week_start must be one of: monday, sunday"),
        (("2025-01-01", "2025-01-02", "week"), "iso", "week_start must be one of: monday, sunday"),
        # ... checked after the other rules.
        (("2025-01-03", "2025-01-02"), "tuesday", "start_date must be on or before end_date"),
        (("2025-01-01", "2025-01-02", "hour"), "x", "group_by must be one of: day, week, month"),
    ],
)
def test_week_start_errors(query, args, week_start, message, tmp_path):
    answer = query(*args, week_start=week_start, lake=str(tmp_path))
    assert answer == {"status": "error", "message": message}


@pytest.mark.parametrize("query", QUESTIONS)
def test_empty_lake_is_success_with_no_data(query, lake_url):
    assert query("2025-01-01", "2025-01-31", lake=lake_url) == {"status": "success", "data": []}


@pytest.mark.parametrize(
    ("query", "table", "message"),
    [
        (reader.metrics, "counts", "Failed to fetch metrics"),
        (reader.sessions, "sessions", "Failed to fetch session metrics"),
        (reader.users, "counts", "Failed to fetch user metrics"),
    ],
)
def test_a_failing_store_is_an_error_answer_with_details_in_the_log(
    query, table, message, lake_url, caplog
):
    lake = Lake(lake_url).begin()
    lake.write_partition(table, date(2025, 1, 1), pl.DataFrame({"x": [1]}))
    lake.commit()
    ((name,),) = lake.current().tables[table].values()
    lake.fs.pipe_file(lake.path(name), b"not parquet")
    with caplog.at_level(logging.ERROR, logger="track.reader"):
        assert query("2025-01-01", "2025-01-31", lake=lake_url) == {
            "status": "error",
            "message": message,
        }
    assert "query failed" in caplog.text


def test_a_question_reads_only_the_partitions_of_its_range(lake_url):
    # A file outside the range asked is never read: here, one that is not Parquet.
    lake = Lake(lake_url).begin()
    rows = pl.DataFrame({"event": ["play"], "user_id": ["u"], "count": [2]})
    for day in (date(2025, 1, 1), date(2025, 1, 9)):
        lake.write_partition("counts", day, rows)
    lake.commit()
    (broken,) = lake.current().tables["counts"]["2025-01-01"]
    lake.fs.pipe_file(lake.path(broken), b"not parquet")
    assert reader.metrics("2025-01-02", "2025-01-31", "month", lake=lake_url) == {
        "status": "success",
        "data": [{"date": "2025-01-01", "play": 2}],
    }
    assert reader.users("2025-01-09", "2025-01-09", lake=lake_url)["data"] == [
        {"date": "2025-01-09", "users": 1}
    ]
    assert reader.metrics("2025-01-01", "2025-01-01", lake=lake_url)["status"] == "error"


def test_counts_of_a_date_split_over_files_add_up(tmp_path):
    # A run that adds events to a date adds their counts as one more file of it.
    lake = Lake(str(tmp_path)).begin()
    day = date(2025, 1, 1)
    lake.append_partition(
        "counts", day, pl.DataFrame({"event": ["play"], "user_id": ["a"], "count": [3]})
    )
    lake.append_partition(
        "counts",
        day,
        pl.DataFrame({"event": ["play", "stop"], "user_id": ["a", "b"], "count": [1, 1]}),
    )
    lake.commit()
    assert reader.metrics("2025-01-01", "2025-01-01", lake=str(tmp_path))["data"] == [
        {"date": "2025-01-01", "play": 4, "stop": 1}
    ]
    assert reader.metrics("2025-01-01", "2025-01-01", user_id="a", lake=str(tmp_path))["data"] == [
        {"date": "2025-01-01", "play": 4}
    ]
    assert reader.users("2025-01-01", "2025-01-01", lake=str(tmp_path))["data"] == [
        {"date": "2025-01-01", "users": 2}
    ]


def test_metrics_rows_and_user_filter(tmp_path):
    lake = Lake(str(tmp_path)).begin()
    lake.write_partition(
        "counts",
        date(2025, 1, 1),
        pl.DataFrame(
            {"event": ["play", "stop", "play"], "user_id": ["a", "a", "b"], "count": [3, 1, 2]}
        ),
    )
    lake.write_partition(
        "counts",
        date(2025, 1, 3),
        pl.DataFrame({"event": ["pause"], "user_id": ["b"], "count": [1]}),
    )
    lake.commit()
    assert reader.metrics("2025-01-01", "2025-01-03", lake=str(tmp_path)) == {
        "status": "success",
        "data": [{"date": "2025-01-01", "play": 5, "stop": 1}, {"date": "2025-01-03", "pause": 1}],
    }
    assert reader.metrics("2025-01-01", "2025-01-03", "month", "b", lake=str(tmp_path)) == {
        "status": "success",
        "data": [{"date": "2025-01-01", "play": 2, "pause": 1}],
    }
    # An empty user_id (a query string's `user_id=`) is no filter.
    assert reader.metrics("2025-01-01", "2025-01-01", "day", "", lake=str(tmp_path))["data"] == [
        {"date": "2025-01-01", "play": 5, "stop": 1}
    ]
    assert reader.metrics("2025-01-01", "2025-01-03", "day", "nobody", lake=str(tmp_path)) == {
        "status": "success",
        "data": [],
    }


def test_lake_defaults_to_the_environment(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path)).begin()
    lake.write_partition(
        "counts",
        date(2025, 1, 1),
        pl.DataFrame({"event": ["play"], "user_id": ["a"], "count": [1]}),
    )
    lake.commit()
    monkeypatch.setenv("TRACK_LAKE", str(tmp_path))
    assert reader.metrics("2025-01-01", "2025-01-01")["data"] == [{"date": "2025-01-01", "play": 1}]


def _counts(lake: Lake, day: date, rows: list[tuple[str, str, int]]) -> None:
    events, users, counts = zip(*rows, strict=True)
    frame = pl.DataFrame({"event": events, "user_id": users, "count": counts})
    lake.write_partition("counts", day, frame)


def test_users_are_distinct_per_period_and_event(tmp_path):
    lake = Lake(str(tmp_path)).begin()
    # Sat 4, Sun 5, Mon 6 and Sun 12 January 2025.
    _counts(lake, date(2025, 1, 4), [("play", "a", 3), ("stop", "a", 1), ("play", "b", 1)])
    _counts(lake, date(2025, 1, 5), [("pause", "a", 2), ("pause", "c", 1)])
    _counts(lake, date(2025, 1, 6), [("play", "a", 1)])
    _counts(lake, date(2025, 1, 12), [("stop", "d", 1)])
    lake.commit()
    url = str(tmp_path)
    assert reader.users("2025-01-01", "2025-01-31", lake=url)["data"] == [
        {"date": "2025-01-04", "users": 2},
        {"date": "2025-01-05", "users": 2},
        {"date": "2025-01-06", "users": 1},
        {"date": "2025-01-12", "users": 1},
    ]
    # A user is counted once in a period, however many days and events they sent.
    assert reader.users("2025-01-01", "2025-01-31", "week", lake=url)["data"] == [
        {"date": "2024-12-30", "users": 3},
        {"date": "2025-01-06", "users": 2},
    ]
    assert reader.users("2025-01-01", "2025-01-31", "week", week_start="sunday", lake=url)[
        "data"
    ] == [
        {"date": "2024-12-29", "users": 2},
        {"date": "2025-01-05", "users": 2},
        {"date": "2025-01-12", "users": 1},
    ]
    assert reader.users("2025-01-01", "2025-01-31", "month", "play", lake=url)["data"] == [
        {"date": "2025-01-01", "users": 2}
    ]
    # Only the days inside the range count, and an empty event is no filter.
    assert reader.users("2025-01-05", "2025-01-06", "month", "", lake=url)["data"] == [
        {"date": "2025-01-01", "users": 2}
    ]
    assert reader.users("2025-01-01", "2025-01-31", event="purchase", lake=url)["data"] == []


def test_sunday_weeks_for_metrics_and_sessions(tmp_path):
    lake = Lake(str(tmp_path)).begin()
    _counts(lake, date(2025, 1, 4), [("play", "a", 3)])
    _counts(lake, date(2025, 1, 5), [("play", "a", 2)])
    sessions = {
        "user_id": ["a"],
        "play_at": [datetime(2025, 1, 5, 10, tzinfo=UTC)],
        "stop_at": [datetime(2025, 1, 5, 10, 1, tzinfo=UTC)],
        "duration_ms": [60_000],
    }
    lake.write_partition("sessions", date(2025, 1, 5), pl.DataFrame(sessions))
    lake.commit()
    url = str(tmp_path)
    assert reader.metrics("2025-01-01", "2025-01-31", "week", lake=url)["data"] == [
        {"date": "2024-12-30", "play": 5}
    ]
    assert reader.metrics("2025-01-01", "2025-01-31", "week", week_start="sunday", lake=url)[
        "data"
    ] == [{"date": "2024-12-29", "play": 3}, {"date": "2025-01-05", "play": 2}]
    # Sunday weeks change nothing but weeks.
    assert reader.metrics("2025-01-01", "2025-01-31", "month", week_start="sunday", lake=url)[
        "data"
    ] == [{"date": "2025-01-01", "play": 5}]
    assert reader.sessions("2025-01-01", "2025-01-31", "week", week_start="sunday", lake=url)[
        "data"
    ] == [{"date": "2025-01-05", "totalDuration": 60, "sessionCount": 1, "averageDuration": 60}]

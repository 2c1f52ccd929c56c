"""Answers in the JSON shape of the Track analytics API (GET /metrics, GET /sessions), and
past it, distinct users per period (GET /users).

The functions take their arguments as a query string gives them, read only the rollups
(never raw NDJSON) and never raise: bad input gives `{"status": "error", "message": ...}`.

Every call reads the lake's snapshot pointer, so it answers from the latest run, and reads
only the partitions of the dates it asks about: a week after a year of history costs what a
week after a month does. The rollup files are immutable (a rewrite is a new file), so a process
keeps what it read of a range as of a snapshot, prepared as each kind of question first needs
it: per-date totals for all users, all rows sorted by user for one user's (a binary search, not
a scan), users numbered and sorted by date for distinct users. A notebook or API process that
asks again pays only for the pointer and the small sums; the first question of a range after a
run reads that range's files again.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, cast

import polars as pl

from track.lake.store import COUNTS, SESSIONS, Lake
from track.schemas.tables import Counts, Sessions, polars_schema
from track.settings import resolve_lake
from track.transforms.counts import (
    GROUP_BYS,
    WEEK_STARTS,
    GroupBy,
    WeekStart,
    counts_by_period,
    users_by_period,
)
from track.transforms.sessions import sessions_by_period

log = logging.getLogger("track.reader")

REQUIRED = "start_date and end_date are required"
BAD_DATE = "Invalid date format. Use YYYY-MM-DD"
BAD_GROUP_BY = "group_by must be one of: day, week, month"
BAD_ORDER = "start_date must be on or before end_date"
BAD_WEEK_START = "week_start must be one of: monday, sunday"
METRICS_FAILED = "Failed to fetch metrics"
SESSIONS_FAILED = "Failed to fetch session metrics"
USERS_FAILED = "Failed to fetch user metrics"
_MODELS = {COUNTS: Counts, SESSIONS: Sessions}
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

Answer = dict[str, Any]


def _error(message: str) -> Answer:
    return {"status": "error", "message": message}


@dataclass(frozen=True)
class _Query:
    """A checked query: its days (both included) and how they are grouped (its fields are
    the keyword arguments of the transforms' *_by_period)."""

    start: date
    end: date
    group_by: GroupBy
    week_start: WeekStart


def _parse_query(start_date: Any, end_date: Any, group_by: Any, week_start: Any) -> _Query | Answer:
    """The checked query, or the error answer for the first rule it breaks (SPEC 7)."""
    if not start_date or not end_date:
        return _error(REQUIRED)
    days = []
    for text in (start_date, end_date):
        if not isinstance(text, str) or not _ISO_DATE.match(text):
            return _error(BAD_DATE)
        try:
            days.append(date.fromisoformat(text))
        except ValueError:
            return _error(BAD_DATE)
    group = "day" if group_by is None else group_by
    if group not in GROUP_BYS:
        return _error(BAD_GROUP_BY)
    if days[0] > days[1]:
        return _error(BAD_ORDER)
    first = "monday" if week_start is None else week_start
    if first not in WEEK_STARTS:
        return _error(BAD_WEEK_START)
    return _Query(days[0], days[1], cast(GroupBy, group), cast(WeekStart, first))


def _optional(value: Any) -> str | None:
    # An empty query parameter (`user_id=`, `event=`) means no filter, as an absent one does.
    return str(value) if value not in (None, "") else None


class _Prepared:
    """A rollup table's rows of a range of dates as of one snapshot, prepared for each kind
    of question when it is first asked (most processes ask only one kind)."""

    def __init__(self, table: str, rows: pl.DataFrame) -> None:
        self.table, self._rows = table, rows
        if table == SESSIONS:
            self._rows = rows.select("date", "user_id", "duration_ms", sessions=pl.lit(1, pl.Int64))

    @functools.cached_property
    def totals(self) -> pl.DataFrame:
        """All users together, per date: counts per event, or the sum and number of
        sessions."""
        if self.table == COUNTS:
            return self._rows.group_by("date", "event").agg(pl.col("count").sum())
        return self._rows.group_by("date").agg(
            pl.col("duration_ms").sum(), pl.col("sessions").sum()
        )

    @functools.cached_property
    def by_user(self) -> pl.DataFrame:
        """The rows, with `date`, sorted by user_id: a user's are found by binary search."""
        return self._rows.sort("user_id")

    @functools.cached_property
    def by_date(self) -> pl.DataFrame:
        """Counts only: `date`, `event` and `user_id` as a number (one per user), sorted by
        date: a range is found by binary search, and distinct numbers are counted 10 to 40
        times faster than distinct strings."""
        assert self.table == COUNTS, "distinct users are a question of the counts"
        first_row = pl.col("user_id") != pl.col("user_id").shift()
        code = first_row.fill_null(True).cum_sum().cast(pl.UInt32)  # sorted: a run is a user
        return self.by_user.select("date", "event", user_id=code).sort("date")

    def rows(self, start: date, end: date, user_id: str | None) -> pl.LazyFrame:
        """The per-date totals of [start, end], or one user's rows."""
        if user_id is None:
            rows = self.totals
        else:
            users = self.by_user["user_id"]
            first = users.search_sorted(user_id, side="left")
            rows = self.by_user.slice(first, users.search_sorted(user_id, side="right") - first)
        return rows.lazy().filter(pl.col("date").is_between(start, end))

    def every_user(self, start: date, end: date) -> pl.LazyFrame:
        """Every user's rows of [start, end] (`date`, `event`, `user_id` as a number)."""
        days = self.by_date["date"]
        first = days.search_sorted(start, side="left")
        return self.by_date.slice(first, days.search_sorted(end, side="right") - first).lazy()


@functools.lru_cache(maxsize=8)
def _prepared(url: str, table: str, files: tuple[tuple[date, str], ...]) -> _Prepared:
    """The rows of a rollup table's files (a range's), to be prepared (the most recently used
    few ranges are kept): a file is never rewritten, so the same names mean the same rows."""
    lake = Lake(url)
    frames = [pl.DataFrame(schema={**polars_schema(_MODELS[table]), "date": pl.Date()})]
    frames += [lake.read_parquet(name).with_columns(date=pl.lit(day)) for day, name in files]
    return _Prepared(table, pl.concat(frames, how="vertical_relaxed"))


AsOf = str | None
"""When the run an answer comes from committed (RFC 3339), None when no run has."""

Ask = Callable[[_Prepared, _Query], pl.LazyFrame]
"""A question of one rollup table: its rows aggregated per period of a checked query."""


def _period_rows(
    table: str, failure: str, dates: tuple[Any, Any, Any, Any], lake: str | None, ask: Ask
) -> tuple[pl.DataFrame | Answer, AsOf]:
    """A question's rows for the query of `dates` (start_date, end_date, group_by,
    week_start), or the error answer; and as of when (the one snapshot all of it was read
    from)."""
    query = _parse_query(*dates)
    if isinstance(query, dict):
        return query, None
    try:
        store = Lake(resolve_lake(lake)).pin()
        files = tuple(
            (day, name)
            for day, names in sorted(store.partition_files(table).items())
            if query.start <= day <= query.end
            for name in names
        )
        found = ask(_prepared(store.url, table, files), query).collect()
    except Exception:
        log.exception("%s query failed", table)
        return _error(failure), None
    return found, store.pinned.committed_at if store.pinned else None


def metrics(
    start_date: Any,
    end_date: Any,
    group_by: Any = "day",
    user_id: Any = None,
    *,
    week_start: Any = "monday",
    lake: str | None = None,
) -> Answer:
    """Event counts per period: `{"status": "success", "data": [{"date": ..., event: n}]}`."""
    return _metrics((start_date, end_date, group_by, week_start), user_id, lake)[0]


def _metrics(
    dates: tuple[Any, Any, Any, Any], user_id: Any, lake: str | None
) -> tuple[Answer, AsOf]:
    user = _optional(user_id)

    def ask(table: _Prepared, query: _Query) -> pl.LazyFrame:
        rows = table.rows(query.start, query.end, user)
        return counts_by_period(rows, user_id=user, **asdict(query))

    rows, as_of = _period_rows(COUNTS, METRICS_FAILED, dates, lake, ask)
    if isinstance(rows, dict):
        return rows, as_of
    data: list[dict[str, Any]] = []
    for period, event, count in rows.iter_rows():
        if not data or data[-1]["date"] != period.isoformat():
            data.append({"date": period.isoformat()})
        data[-1][event] = int(count)
    return {"status": "success", "data": data}, as_of


def sessions(
    start_date: Any,
    end_date: Any,
    group_by: Any = "day",
    user_id: Any = None,
    *,
    week_start: Any = "monday",
    lake: str | None = None,
) -> Answer:
    """Session totals per period: date, totalDuration, sessionCount, averageDuration."""
    return _sessions((start_date, end_date, group_by, week_start), user_id, lake)[0]


def _sessions(
    dates: tuple[Any, Any, Any, Any], user_id: Any, lake: str | None
) -> tuple[Answer, AsOf]:
    user = _optional(user_id)

    def ask(table: _Prepared, query: _Query) -> pl.LazyFrame:
        rows = table.rows(query.start, query.end, user)
        return sessions_by_period(rows, user_id=user, **asdict(query))

    rows, as_of = _period_rows(SESSIONS, SESSIONS_FAILED, dates, lake, ask)
    return _rows_answer(rows), as_of


def users(
    start_date: Any,
    end_date: Any,
    group_by: Any = "day",
    event: Any = None,
    *,
    week_start: Any = "monday",
    lake: str | None = None,
) -> Answer:
    """Distinct users per period (DAU, WAU, MAU): `{"status": "success", "data": [{"date":
    ..., "users": n}]}`, counting the users who sent at least one event (of `event`, when
    given and not empty) on the period's days inside the range. Exact after the events
    expire: it reads the counts rollup, which is kept."""
    return _users((start_date, end_date, group_by, week_start), event, lake)[0]


def _users(dates: tuple[Any, Any, Any, Any], event: Any, lake: str | None) -> tuple[Answer, AsOf]:
    name = _optional(event)

    def ask(table: _Prepared, query: _Query) -> pl.LazyFrame:
        rows = table.every_user(query.start, query.end)
        return users_by_period(rows, event=name, **asdict(query))

    rows, as_of = _period_rows(COUNTS, USERS_FAILED, dates, lake, ask)
    return _rows_answer(rows), as_of


def _rows_answer(rows: pl.DataFrame | Answer) -> Answer:
    """Rows of `period` and whole numbers as the answer's data (or the error answer)."""
    if isinstance(rows, dict):
        return rows
    data = [
        {"date": row["period"].isoformat(), **{k: int(v) for k, v in row.items() if k != "period"}}
        for row in rows.iter_rows(named=True)
    ]
    return {"status": "success", "data": data}


QUESTIONS = {
    "metrics": (_metrics, "user_id"),
    "sessions": (_sessions, "user_id"),
    "users": (_users, "event"),
}
"""The questions `answer` takes, by the name of their endpoint, with the name of their filter."""
FAILURES = (METRICS_FAILED, SESSIONS_FAILED, USERS_FAILED)
"""The messages of an answer that failed because the store did (not the query)."""


def answer(
    question: str, query: Mapping[str, str], *, lake: str | None = None
) -> tuple[Answer, AsOf]:
    """The answer to `metrics`, `sessions` or `users` for a query string's parameters
    (start_date, end_date, group_by, week_start, and user_id or event), and when the run it
    comes from committed."""
    ask, filter_name = QUESTIONS[question]
    fields = ("start_date", "end_date", "group_by", "week_start")
    start_date, end_date, group_by, week_start = (query.get(name) for name in fields)
    return ask((start_date, end_date, group_by, week_start), query.get(filter_name), lake)


__all__ = ["answer", "metrics", "sessions", "users"]

"""Answers in the JSON shape of the Track analytics API (GET /metrics, GET /sessions).

Both functions take their arguments as a query string gives them, read only the rollups
(never raw NDJSON) and never raise: bad input gives `{"status": "error", "message": ...}`.

Every call reads the lake's snapshot pointer, so it answers from the latest run. The rollup
files it names are immutable (a rewrite is a new file), so a process keeps what it read of a
table as of a snapshot, prepared for both kinds of question: per-date totals for all users, and
all rows sorted by user for one user's (a binary search, not a scan). A notebook or API process
that asks again pays only for the pointer and the small sums; the first question after a run
reads the table again.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import polars as pl

from track.lake.store import COUNTS, SESSIONS, Lake
from track.schemas.tables import Counts, Sessions, polars_schema
from track.settings import resolve_lake
from track.transforms.counts import GROUP_BYS, GroupBy, counts_by_period
from track.transforms.sessions import sessions_by_period

log = logging.getLogger("track.reader")

REQUIRED = "start_date and end_date are required"
BAD_DATE = "Invalid date format. Use YYYY-MM-DD"
BAD_GROUP_BY = "group_by must be one of: day, week, month"
BAD_ORDER = "start_date must be on or before end_date"
METRICS_FAILED = "Failed to fetch metrics"
SESSIONS_FAILED = "Failed to fetch session metrics"
_MODELS = {COUNTS: Counts, SESSIONS: Sessions}
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

Answer = dict[str, Any]


def _error(message: str) -> Answer:
    return {"status": "error", "message": message}


def _parse_query(
    start_date: Any, end_date: Any, group_by: Any
) -> tuple[date, date, GroupBy] | Answer:
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
    return days[0], days[1], cast(GroupBy, group)


def _user(user_id: Any) -> str | None:
    # An empty query parameter (`user_id=`) means no filter, as an absent one does.
    return str(user_id) if user_id not in (None, "") else None


@dataclass(frozen=True)
class _Prepared:
    """A rollup table as of one snapshot, ready for either kind of question."""

    totals: pl.DataFrame
    """All users together, per date: counts per event, or the sum and number of sessions."""
    by_user: pl.DataFrame
    """Its rows, with `date`, sorted by user_id: a user's are found by binary search."""

    def rows(self, start: date, end: date, user_id: str | None) -> pl.DataFrame:
        if user_id is None:
            rows = self.totals
        else:
            users = self.by_user["user_id"]
            first = users.search_sorted(user_id, side="left")
            rows = self.by_user.slice(first, users.search_sorted(user_id, side="right") - first)
        return rows.filter(pl.col("date").is_between(start, end))


def _prepare(table: str, rows: pl.DataFrame) -> _Prepared:
    if table == COUNTS:
        totals = rows.group_by("date", "event").agg(pl.col("count").sum())
        return _Prepared(totals, rows.sort("user_id"))
    rows = rows.select("date", "user_id", "duration_ms", sessions=pl.lit(1, pl.Int64))
    totals = rows.group_by("date").agg(pl.col("duration_ms").sum(), pl.col("sessions").sum())
    return _Prepared(totals, rows.sort("user_id"))


@functools.lru_cache(maxsize=8)
def _prepared(url: str, table: str, files: tuple[tuple[date, str], ...]) -> _Prepared:
    """A rollup table prepared from its files (the most recently used few are kept): a file
    is never rewritten, so the same names mean the same rows."""
    lake = Lake(url)
    frames = [pl.DataFrame(schema={**polars_schema(_MODELS[table]), "date": pl.Date()})]
    frames += [lake.read_parquet(name).with_columns(date=pl.lit(day)) for day, name in files]
    return _prepare(table, pl.concat(frames, how="vertical_relaxed"))


AsOf = str | None
"""When the run an answer comes from committed (RFC 3339), None when no run has."""


def _period_rows(
    table: str,
    by_period: Callable[..., pl.LazyFrame],
    failure: str,
    args: tuple[Any, Any, Any, Any],
    lake: str | None,
) -> tuple[pl.DataFrame | Answer, AsOf]:
    """A rollup aggregated per period for a checked query, or the error answer; and as of
    when (the one snapshot all of it was read from)."""
    start_date, end_date, group_by, user_id = args
    query = _parse_query(start_date, end_date, group_by)
    if isinstance(query, dict):
        return query, None
    start, end, group = query
    user = _user(user_id)
    try:
        store = Lake(resolve_lake(lake)).pin()
        files = tuple(sorted(store.partition_files(table).items()))
        rows = _prepared(store.url, table, files).rows(start, end, user).lazy()
        found = by_period(rows, start=start, end=end, group_by=group, user_id=user).collect()
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
    lake: str | None = None,
) -> Answer:
    """Event counts per period: `{"status": "success", "data": [{"date": ..., event: n}]}`."""
    return _metrics((start_date, end_date, group_by, user_id), lake)[0]


def _metrics(args: tuple[Any, Any, Any, Any], lake: str | None) -> tuple[Answer, AsOf]:
    rows, as_of = _period_rows(COUNTS, counts_by_period, METRICS_FAILED, args, lake)
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
    lake: str | None = None,
) -> Answer:
    """Session totals per period: date, totalDuration, sessionCount, averageDuration."""
    return _sessions((start_date, end_date, group_by, user_id), lake)[0]


def _sessions(args: tuple[Any, Any, Any, Any], lake: str | None) -> tuple[Answer, AsOf]:
    rows, as_of = _period_rows(SESSIONS, sessions_by_period, SESSIONS_FAILED, args, lake)
    if isinstance(rows, dict):
        return rows, as_of
    data = [
        {"date": row["period"].isoformat(), **{k: int(v) for k, v in row.items() if k != "period"}}
        for row in rows.iter_rows(named=True)
    ]
    return {"status": "success", "data": data}, as_of


QUESTIONS = {"metrics": _metrics, "sessions": _sessions}
"""The questions `answer` takes, by the name of their endpoint."""
FAILURES = (METRICS_FAILED, SESSIONS_FAILED)
"""The messages of an answer that failed because the store did (not the query)."""


def answer(
    question: str, query: Mapping[str, str], *, lake: str | None = None
) -> tuple[Answer, AsOf]:
    """The answer to `metrics` or `sessions` for a query string's parameters (start_date,
    end_date, group_by, user_id), and when the run it comes from committed."""
    fields = ("start_date", "end_date", "group_by", "user_id")
    start_date, end_date, group_by, user_id = (query.get(name) for name in fields)
    return QUESTIONS[question]((start_date, end_date, group_by, user_id), lake)


__all__ = ["answer", "metrics", "sessions"]

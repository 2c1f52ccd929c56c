"""Figure 5: median latency of `reader.metrics` over a month, by day, week and month, with and
without a user filter, against Polars aggregating the same answer straight from one Parquet
file of the events (target: at most 25% of it). Then `reader.users` (distinct users: DAU, WAU,
MAU, all events and one) against Polars counting them from the same file (no target: printed).

    python bench/queries.py [--events N] [--files N] [--repeat N]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from common import OUT, arguments, fresh_lake, inputs, record, track_run, verdict

from track import reader

START, END = "2026-11-01", "2026-11-30"
USER = "user-4242"
TRUNCATE = {"day": "1d", "week": "1w", "month": "1mo"}


def _events_of_the_month(events: Path) -> tuple[pl.Expr, pl.LazyFrame]:
    """The day of an event, and the events of [START, END] in a Parquet file of all events."""
    day = pl.col("timestamp").dt.date()
    month = pl.scan_parquet(events).filter(
        day.is_between(date.fromisoformat(START), date.fromisoformat(END))
    )
    return day, month


def polars_metrics(events: Path, group_by: str, user_id: str | None) -> dict[str, Any]:
    """The metrics answer aggregated straight from a Parquet file of all events."""
    day, query = _events_of_the_month(events)
    if user_id is not None:
        query = query.filter(pl.col("user_id") == user_id)
    rows = (
        query.group_by(period=day.dt.truncate(TRUNCATE[group_by]), event=pl.col("event"))
        .len()
        .sort("period", "event")
        .collect()
    )
    data: list[dict[str, Any]] = []
    for period, event, count in rows.iter_rows():
        if not data or data[-1]["date"] != period.isoformat():
            data.append({"date": period.isoformat()})
        data[-1][event] = count
    return {"status": "success", "data": data}


def polars_users(events: Path, group_by: str, event: str | None) -> dict[str, Any]:
    """The users answer counted straight from a Parquet file of all events."""
    day, query = _events_of_the_month(events)
    if event is not None:
        query = query.filter(pl.col("event") == event)
    rows = (
        query.group_by(period=day.dt.truncate(TRUNCATE[group_by]))
        .agg(users=pl.col("user_id").n_unique())
        .sort("period")
        .collect()
    )
    return {
        "status": "success",
        "data": [{"date": p.isoformat(), "users": n} for p, n in rows.iter_rows()],
    }


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm: first-call imports and caches are not what a dashboard waits for
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    args = arguments(__doc__, events=3_000_000, files=28, repeat=21)
    lake = fresh_lake(inputs(args.events, args.files), "queries")
    track_run(lake)
    start = time.perf_counter()
    reader.metrics(START, END, "day", None, lake=str(lake))
    first_ms = (time.perf_counter() - start) * 1000
    events = OUT / "events.parquet"
    pl.scan_delta(str(lake / "events")).collect().write_parquet(events)
    lines = [f"first question after a run (reads the rollup): {first_ms:.0f} ms"]
    figures: dict[str, Any] = {"first_ms": first_ms}
    worst = 0.0
    for group_by in ("day", "week", "month"):
        for user_id in (None, USER):
            ours = reader.metrics(START, END, group_by, user_id, lake=str(lake))
            theirs = polars_metrics(events, group_by, user_id)
            assert ours == theirs, (group_by, user_id)
            ours_ms = median_ms(
                lambda g=group_by, u=user_id: reader.metrics(START, END, g, u, lake=str(lake)),
                args.repeat,
            )
            theirs_ms = median_ms(
                lambda g=group_by, u=user_id: polars_metrics(events, g, u), args.repeat
            )
            ratio = ours_ms / theirs_ms
            worst = max(worst, ratio)
            label = f"{group_by}, {'user ' + user_id if user_id else 'all users'}"
            lines.append(
                f"{label:<22} reader {ours_ms:6.1f} ms, Polars on events {theirs_ms:6.1f} ms:"
                f" {ratio:.0%}"
            )
            figures[label] = {"reader_ms": ours_ms, "polars_ms": theirs_ms, "ratio": ratio}
    lines.append(f"worst ratio {worst:.0%}: {verdict(worst, 0.25, percent=True)}")
    for group_by in ("day", "week", "month"):
        for event in (None, "play"):
            ours = reader.users(START, END, group_by, event, lake=str(lake))
            assert ours == polars_users(events, group_by, event), (group_by, event)
            ours_ms = median_ms(
                lambda g=group_by, e=event: reader.users(START, END, g, e, lake=str(lake)),
                args.repeat,
            )
            theirs_ms = median_ms(
                lambda g=group_by, e=event: polars_users(events, g, e), args.repeat
            )
            label = f"users {group_by}, {event or 'all events'}"
            lines.append(
                f"{label:<22} reader {ours_ms:6.1f} ms, Polars on events {theirs_ms:6.1f} ms:"
                f" {ours_ms / theirs_ms:.0%}"
            )
            figures[label] = {"reader_ms": ours_ms, "polars_ms": theirs_ms}
    events.unlink()
    record("queries", lines, figures)


if __name__ == "__main__":
    main()

"""The plan for a hundred million events a day, from measurements on this machine (README, "At a
hundred million events a day"). On a lake of 8 million events over 28 days (the generator's
shape: 7 event names, 50,000 users), it measures what each table costs per event on disk, how
fast a run's work goes (ingest, dedup keys read, plays and stops read for sessions, a date's
compaction) and then runs one batch of the size a 15-minute schedule gets at the lake's own rate.
It prints those rates and what they give at `--rate` events a day, scaled linearly (the
scaling is stated with each figure; no attempt is made to hold such a day here).

    python bench/plan.py [--events N] [--files N] [--rate N]
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

from common import add_files, arguments, empty_run, fresh_lake, inputs, record, track_run

from track.lake.merge import match_window
from track.lake.store import COUNTS, EVENTS, KEYS, PLAYS, SESSIONS, Lake
from track.schemas.tables import Counts, Events
from track.transforms.dedup import RECORD_KEY

RUNS_A_DAY = 96  # every 15 minutes
WINDOW_DAYS = 30


def table_bytes(lake: Path, table: str) -> int:
    """Bytes of a table's Parquet files."""
    return sum(f.stat().st_size for f in (lake / table).glob("date=*/*.parquet"))


def timed(work: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


def main() -> None:
    args = arguments(__doc__, events=8_000_000, files=28, rate=100_000_000)
    lake = fresh_lake(inputs(args.events, args.files), "plan")
    empty = empty_run()
    full = track_run(lake)
    store = Lake(str(lake))
    days = len(store.partitions(EVENTS))
    per_day = args.events / days
    scale = args.rate / per_day
    # What each table costs on disk, per event.
    sizes = {t: table_bytes(lake, t) for t in (EVENTS, COUNTS, SESSIONS, PLAYS, KEYS)}
    counts_rows = sum(
        len(store.read_partition(COUNTS, d, Counts, ["user_id"])) for d in store.partitions(COUNTS)
    )
    # The rates of the work a run does, on this lake.
    keys_s, keys = timed(
        lambda: sum(
            len(store.read_partition(EVENTS, d, Events, columns=RECORD_KEY))
            for d in store.partitions(EVENTS)
        )
    )
    window = min(store.partitions(EVENTS))
    sessions_s, (_, sessions) = timed(lambda: match_window(store, window, None))
    last = max(store.partitions(EVENTS))
    compact_s, _ = timed(lambda: store.read_partition(EVENTS, last, Events).sort("timestamp"))
    # One batch of what a 15-minute schedule gets at this lake's rate, all of the last day.
    batch = int(per_day / RUNS_A_DAY)
    add_files(lake, batch, 1, first=args.files + 27, seed=5)  # number % 28 == 27: the last day
    run = track_run(lake)
    steps = run.report["seconds"]
    ingest_rate = full.report["lines"] / (full.seconds - empty.seconds)
    batch_at_rate = args.rate / RUNS_A_DAY
    plays = sessions.height  # sessions in the window: a bound on the plays read
    lines = [
        f"lake: {args.events:,} events over {days} days ({per_day:,.0f} a day);"
        f" a day at {args.rate:,} events is {scale:,.0f} times one of its days",
        f"events {sizes[EVENTS] / args.events:.1f} bytes/event, counts"
        f" {sizes[COUNTS] / counts_rows:.1f} bytes/row ({counts_rows / args.events:.2f} rows/event"
        f" at {50_000:,} users), sessions {sizes[SESSIONS] / max(plays, 1):.1f} bytes/session"
        f" ({plays / args.events:.3f} sessions/event)",
        f"at {args.rate:,}/day: events {sizes[EVENTS] / args.events * args.rate / 1e9:.1f} GB/day,"
        f" {sizes[EVENTS] / args.events * args.rate * WINDOW_DAYS / 1e9:.0f} GB in a"
        f" {WINDOW_DAYS}-day window, their plays and stops"
        f" {sizes[PLAYS] / args.events * args.rate * WINDOW_DAYS / 1e9:.0f} GB and keys"
        f" {sizes[KEYS] / args.events * args.rate * WINDOW_DAYS / 1e9:.0f} GB more; sessions"
        f" {sizes[SESSIONS] / args.events * args.rate * 365 / 1e9:.1f} GB/year (kept)",
        f"ingest (full run, marginal): {ingest_rate:,.0f} events/s on this machine:"
        f" {batch_at_rate / ingest_rate:.1f} s for a 15-minute batch of {batch_at_rate:,.0f}",
        f"dedup keys read: {keys / keys_s / 1e6:.1f} M rows/s: a day's keys at the rate"
        f" {args.rate / (keys / keys_s):.1f} s (a batch of today reads today's)",
        f"sessions, every user's: {args.events / sessions_s / 1e6:.1f} M window events/s:"
        f" {args.rate * WINDOW_DAYS / (args.events / sessions_s) / 60:.0f} min for a window at"
        f" the rate",
        f"a date read and sorted (compaction): {per_day / compact_s / 1e6:.2f} M events/s:"
        f" {args.rate / (per_day / compact_s):.0f} s for a day at the rate",
        f"a batch of {batch:,} events ({RUNS_A_DAY} a day at this lake's rate):"
        f" run {run.seconds:.1f} s (empty {empty.seconds:.1f} s);"
        f" steps {', '.join(f'{k} {v:.2f}' for k, v in steps.items())}",
    ]
    record(
        "plan",
        lines,
        {
            "events": args.events,
            "days": days,
            "bytes": sizes,
            "counts_rows": counts_rows,
            "sessions": plays,
            "ingest_events_per_s": ingest_rate,
            "keys_rows_per_s": keys / keys_s,
            "session_events_per_s": args.events / sessions_s,
            "compact_events_per_s": per_day / compact_s,
            "batch": batch,
            "batch_steps": steps,
            "batch_run_s": run.seconds,
            "empty_s": empty.seconds,
            "window_start": date.isoformat(window),
        },
    )


if __name__ == "__main__":
    main()

"""Figure 9: the reader after a year of history. A fresh process asks one week of metrics and
of sessions, for all users and for one user, of a lake holding one month of rollups (a run over
the generated month), and of the same lake holding a year: twelve more months of rollups
before it (the month's counts and sessions partitions written again under the dates 28, 56,
..., 336 days earlier, through the lake's own commit). The time of the four questions and the
process's peak memory, year / month (target: at most 1.5 each), and the same four questions
asked again in each process (they keep their speed: compare `bench/queries.py`).

    python bench/history.py [--events N] [--files N] [--months N] [--repeat N]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import BENCH, arguments, fresh_lake, inputs, record, track_run, verdict

from track.lake.store import COUNTS, SESSIONS, Lake
from track.schemas.tables import TABLE_MODELS

WEEK = ("2026-11-16", "2026-11-22")
USER = "user-4242"
ASK = f"""
import json, resource, time
from track import reader
lake, (start, end) = {{lake!r}}, {WEEK!r}
def ask():
    began = time.perf_counter()
    for question in (reader.metrics, reader.sessions):
        for user in (None, {USER!r}):
            assert question(start, end, "day", user, lake=lake)["status"] == "success"
    return time.perf_counter() - began
ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
first = ask()
again = min(ask() for _ in range(5))
print(json.dumps(dict(first_s=first, again_s=again, ready_kb=ready)))
"""


def add_history(lake: Path, months: int) -> None:
    """Write the lake's counts and sessions partitions again under dates `months` times 28
    days earlier (one commit, as a run makes them)."""
    store = Lake(str(lake)).begin()
    for table in (COUNTS, SESSIONS):
        for day in store.partitions(table):
            rows = store.read_partition(table, day, TABLE_MODELS[table])
            for back in range(1, months + 1):
                store.write_partition(table, day - timedelta(days=28 * back), rows)
    store.commit()


def ask_fresh(lake: Path) -> dict[str, Any]:
    """The four questions in a new Python process: their times, and its peak RSS (MB)."""
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(
            [sys.executable, "-c", ASK.format(lake=str(lake))], stdout=out, cwd=BENCH.parent
        )
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the questions failed on {lake}")
        out.seek(0)
        figures: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
    figures["peak_mb"] = usage.ru_maxrss / 1024
    figures["ready_mb"] = figures.pop("ready_kb") / 1024
    return figures


def rollup_rows(lake: Path) -> int:
    """Rows of counts and sessions the lake holds (what a whole-table read would load)."""
    store = Lake(str(lake))
    return sum(
        len(store.read_partition(t, d, TABLE_MODELS[t], columns=["user_id"]))
        for t in (COUNTS, SESSIONS)
        for d in store.partitions(t)
    )


def main() -> None:
    args = arguments(__doc__, events=3_000_000, files=28, months=12, repeat=3)
    month = fresh_lake(inputs(args.events, args.files), "history-month")
    track_run(month)
    year = month.parent / "history-year"
    shutil.rmtree(year, ignore_errors=True)
    shutil.copytree(month, year)
    add_history(year, args.months)
    days = Lake(str(year)).partitions(COUNTS)
    assert len(days) == len(Lake(str(month)).partitions(COUNTS)) * (args.months + 1), days
    runs: dict[str, list[dict[str, Any]]] = {"month": [], "year": []}
    for _ in range(args.repeat):  # alternating: the machine's drift hits both alike
        runs["month"].append(ask_fresh(month))
        runs["year"].append(ask_fresh(year))
    median = {
        size: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for size, rs in runs.items()
    }
    time_ratio = median["year"]["first_s"] / median["month"]["first_s"]
    memory_ratio = median["year"]["peak_mb"] / median["month"]["peak_mb"]
    lines = [
        f"one week ({WEEK[0]} to {WEEK[1]}) of metrics and sessions, all users and {USER},"
        f" in a fresh process (median of {args.repeat})",
    ]
    for size, lake in (("month", month), ("year", year)):
        m = median[size]
        span = Lake(str(lake)).partitions(COUNTS)
        lines.append(
            f"{size:<5} ({span[0]} to {span[-1]}, {rollup_rows(lake):,} rollup rows):"
            f" first {m['first_s'] * 1000:6.0f} ms, again {m['again_s'] * 1000:5.1f} ms,"
            f" peak {m['peak_mb']:5.0f} MB ({m['ready_mb']:.0f} MB once imported)"
        )
    lines.append(f"time, year / month {time_ratio:.2f}x: {verdict(time_ratio, 1.5)}")
    lines.append(f"peak memory, year / month {memory_ratio:.2f}x: {verdict(memory_ratio, 1.5)}")
    record(
        "history",
        lines,
        {**median, "time_ratio": time_ratio, "memory_ratio": memory_ratio, "runs": runs},
    )


if __name__ == "__main__":
    main()

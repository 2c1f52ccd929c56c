"""Real `track run` processes, and the three drops of input the crash and lock tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import fsspec

from tests.lakes import drop, ndjson
from track import reader
from track.lake.store import Lake

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)
MODIFIED = datetime(2025, 3, 9, tzinfo=UTC)

Started = tuple[subprocess.Popen, IO[bytes], IO[bytes]]


def track_run(
    lake: str,
    folder: Path,
    *,
    kill_at: str | None = None,
    stop_at: str | None = None,
    home: Path | None = None,
) -> Started:
    """Start `track run` at NOW in its own process group, with a lease of 3 s and its own
    Prefect home (in `folder`, unless `home` is shared).

    Output goes to files in `folder`: a killed run's temporary Prefect server (its child) would
    otherwise hold pipes open.
    """
    folder.mkdir(parents=True, exist_ok=True)
    own = Path(tempfile.mkdtemp(prefix="run-", dir=folder))
    env = dict(
        os.environ,
        PREFECT_HOME=str(home or own / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TRACK_LOCK_LEASE="3",
    )
    env.pop("PREFECT_API_URL", None)
    if kill_at:
        env["TRACK_KILL_AT"] = kill_at
    if stop_at:
        env["TRACK_STOP_AT"] = stop_at
    command = [sys.executable, "-m", "track.cli", "run", "--lake", lake]
    command += ["--now", NOW.isoformat(), "--json"]
    out, err = open(own / "out", "w+b"), open(own / "err", "w+b")  # noqa: SIM115 (finish closes)
    process = subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True)
    return process, out, err


def finish(started: Started) -> tuple[int, str, str]:
    """Wait for a `track run`, end whatever it left running; its exit code and output."""
    process, *streams = started
    try:
        process.wait(timeout=300)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = []
    for stream in streams:
        stream.seek(0)
        out.append(stream.read().decode())
        stream.close()
    return process.returncode, out[0], out[1]


def stopped(pid: int) -> bool:
    """Whether a process is stopped (SIGSTOP)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def answers(lake: str) -> list:
    """The reader's metrics and sessions, by day and by month, over the drops' dates."""
    out = []
    for query in (reader.metrics, reader.sessions):
        for group in ("day", "month"):
            answer = query("2025-01-01", "2025-03-31", group, lake=lake)
            assert answer["status"] == "success", answer
            out.append(answer["data"])
    return out


def delta_daily(lake: str) -> dict[str, dict[str, int]]:
    """Daily counts by event as a notebook reads them: `pl.scan_delta` of counts/."""
    import polars as pl

    from track.lake.delta import storage_options

    counts = pl.scan_delta(f"{lake}/counts", storage_options=storage_options(lake))
    daily = counts.group_by("date", "event").agg(pl.col("count").sum()).collect()
    out: dict[str, dict[str, int]] = {}
    for day, event, count in daily.rows():
        out.setdefault(day.isoformat(), {})[event] = count
    return out


def reader_daily(lake: str) -> dict[str, dict[str, int]]:
    """Daily counts by event as the reader answers them (days with none left out)."""
    answer = reader.metrics("2025-01-01", "2025-03-31", "day", lake=lake)["data"]
    days = ({k: n for k, n in row.items() if k != "date" and n} for row in answer)
    return {row["date"]: counts for row, counts in zip(answer, days, strict=True) if counts}


def no_stray_files(lake_url: str) -> None:
    """Every Parquet file under a table is current (its Delta log aside): nothing is left."""
    current = Lake(lake_url).current().referenced()
    fs, root = fsspec.core.url_to_fs(lake_url)
    fs.invalidate_cache()
    for table in ("events", "duplicates", "quarantine", "counts", "sessions", "plays", "keys"):
        if fs.exists(f"{root}/{table}"):
            for path in fs.find(f"{root}/{table}"):
                if "/_delta_log/" not in path:
                    assert path[len(root.rstrip("/")) + 1 :] in current, path


def first_drop(lake: str) -> None:
    """Two users' plays and stops, and a bad line."""
    drop(
        lake,
        "date=2025-03-05/a.ndjson",
        ndjson(
            {"event": "play", "user_id": "u", "timestamp": "2025-03-05T10:00:00Z"},
            {"event": "stop", "user_id": "u", "timestamp": "2025-03-05T10:30:00Z"},
            {"event": "play", "user_id": "v", "timestamp": "2025-03-06T23:00:00Z"},
            "bad",
        ),
        modified=MODIFIED,
    )


def second_drop(lake: str) -> None:
    """A stop that ends v's session, a duplicate, and a raw partition before the window."""
    drop(
        lake,
        "date=2025-03-07/b.ndjson",
        ndjson(
            {"event": "stop", "user_id": "v", "timestamp": "2025-03-07T01:00:00Z"},
            {"event": "stop", "user_id": "u", "timestamp": "2025-03-05T10:30:00Z"},  # duplicate
            {"event": "pause", "user_id": "w", "timestamp": "2025-03-08T08:00:00Z"},
        ),
        modified=MODIFIED,
    )
    drop(
        lake,
        "date=2025-01-02/late.ndjson",
        ndjson(  # a raw partition before the window
            {"event": "play", "user_id": "x", "timestamp": "2025-03-08T09:00:00Z"},
            {"event": "play", "user_id": "x", "timestamp": "2025-01-02T09:00:00Z"},
        ),
        modified=MODIFIED,
    )


def third_drop(lake: str) -> None:
    """One more session."""
    drop(
        lake,
        "date=2025-03-08/c.ndjson",
        ndjson(
            {"event": "play", "user_id": "y", "timestamp": "2025-03-08T10:00:00Z"},
            {"event": "stop", "user_id": "y", "timestamp": "2025-03-08T10:05:00Z"},
        ),
        modified=MODIFIED,
    )


def counts_row(event: str, count: int) -> Any:
    """A one-row counts partition of user u."""
    import polars as pl

    return pl.DataFrame({"event": [event], "user_id": ["u"], "count": [count]})

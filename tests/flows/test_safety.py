"""Crash and concurrency safety (SPEC section 9) with real `track run` processes: killed at
several points, or started two at once, on a local folder and on the S3 API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fsspec
import pytest

from tests.lakes import drop, ndjson
from track import reader
from track.errors import LakeFencedError
from track.flows.pipeline import pipeline
from track.lake.lock import LakeLock
from track.lake.store import Lake

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)
MODIFIED = datetime(2025, 3, 9, tzinfo=UTC)


Started = tuple[subprocess.Popen, Any, Any]


SHARED_PREFECT_HOME = tempfile.mkdtemp(prefix="track-shared-")


def _track_run(
    lake: str, *, kill_at: str | None = None, stop_at: str | None = None, home: str | None = None
) -> Started:
    """Start `track run` in its own process group, with its own Prefect home.

    Output goes to temporary files: a killed run's temporary Prefect server (its child) would
    otherwise hold pipes open.
    """
    env = dict(
        os.environ,
        PREFECT_HOME=home or tempfile.mkdtemp(prefix="track-proc-"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        TRACK_LOCK_LEASE="3",
    )
    env.pop("PREFECT_API_URL", None)
    if kill_at:
        env["TRACK_KILL_AT"] = kill_at
    if stop_at:
        env["TRACK_STOP_AT"] = stop_at
    command = [
        sys.executable,
        "-m",
        "track.cli",
        "run",
        "--lake",
        lake,
        "--now",
        NOW.isoformat(),
        "--json",
    ]
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    process = subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True)
    return process, out, err


def _finish(started: Started) -> tuple[int, str, str]:
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
    return process.returncode, out[0], out[1]


def _answers(lake: str) -> list:
    out = []
    for query in (reader.metrics, reader.sessions):
        for group in ("day", "month"):
            answer = query("2025-01-01", "2025-03-31", group, lake=lake)
            assert answer["status"] == "success", answer
            out.append(answer["data"])
    return out


def _delta_daily(lake: str) -> dict[str, dict[str, int]]:
    """Daily counts by event as a notebook reads them: `pl.scan_delta` of counts/."""
    import polars as pl

    from track.lake.delta import storage_options

    counts = pl.scan_delta(f"{lake}/counts", storage_options=storage_options(lake))
    daily = counts.group_by("date", "event").agg(pl.col("count").sum()).collect()
    out: dict[str, dict[str, int]] = {}
    for day, event, count in daily.rows():
        out.setdefault(day.isoformat(), {})[event] = count
    return out


def _reader_daily(lake: str) -> dict[str, dict[str, int]]:
    """Daily counts by event as the reader answers them (days with none left out)."""
    answer = reader.metrics("2025-01-01", "2025-03-31", "day", lake=lake)["data"]
    days = ({k: n for k, n in row.items() if k != "date" and n} for row in answer)
    return {row["date"]: counts for row, counts in zip(answer, days, strict=True) if counts}


def _first_drop(lake: str) -> None:
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


def _second_drop(lake: str) -> None:
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


def _third_drop(lake: str) -> None:
    drop(
        lake,
        "date=2025-03-08/c.ndjson",
        ndjson(
            {"event": "play", "user_id": "y", "timestamp": "2025-03-08T10:00:00Z"},
            {"event": "stop", "user_id": "y", "timestamp": "2025-03-08T10:05:00Z"},
        ),
        modified=MODIFIED,
    )


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def _no_stray_files(lake_url: str) -> None:
    """Every Parquet file under a table is current (its Delta log aside): nothing is left."""
    lake = Lake(lake_url)
    live = lake.current().referenced()
    fs, root = fsspec.core.url_to_fs(lake_url)
    fs.invalidate_cache()
    for table in ("events", "duplicates", "quarantine", "counts", "sessions"):
        if fs.exists(f"{root}/{table}"):
            for path in fs.find(f"{root}/{table}"):
                if "/_delta_log/" not in path:
                    assert path[len(root.rstrip("/")) + 1 :] in live, path


def test_track_run_stops_the_temporary_server_it_started(tmp_path):
    # No Prefect server configured: `track run` starts Prefect's temporary one itself, in its
    # own process group here; once the run has exited, nothing of that group may be left.
    started = _track_run(str(tmp_path / "lake"))
    process = started[0]
    assert process.wait(timeout=300) == 0
    try:
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    finally:
        _finish(started)


@pytest.fixture(scope="module")
def after_answers(prefect_harness):
    """The answers of uninterrupted runs over both drops."""
    lake = tempfile.mkdtemp(prefix="track-after-") + "/lake"
    _first_drop(lake)
    pipeline(lake=lake, now=NOW)
    _second_drop(lake)
    pipeline(lake=lake, now=NOW)
    return _answers(lake)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    "point", ["ingested", "partition-written", "rolled-up", "snapshot-written", "published"]
)
def test_a_killed_run_leaves_old_or_new_answers_and_the_next_run_finishes(
    lake_url, point, after_answers
):
    _first_drop(lake_url)
    pipeline(lake=lake_url, now=NOW)
    before, delta_before = _answers(lake_url), _delta_daily(lake_url)
    assert delta_before == _reader_daily(lake_url)
    _second_drop(lake_url)
    code, _, err = _finish(_track_run(lake_url, kill_at=point))
    assert code == -signal.SIGKILL, err[-2000:]
    assert _answers(lake_url) in (before, after_answers)
    if point in ("snapshot-written", "published"):  # the reader answers from the new snapshot
        assert _answers(lake_url) == after_answers
    else:  # killed mid-write, before its commit: a notebook reads the lake as before the run
        assert _delta_daily(lake_url) == delta_before
    report = pipeline(lake=lake_url, now=NOW)
    assert _answers(lake_url) == after_answers
    assert _delta_daily(lake_url) == _reader_daily(lake_url) != delta_before
    _no_stray_files(lake_url)
    fs, root = fsspec.core.url_to_fs(lake_url)
    assert not fs.exists(f"{root}/raw/date=2025-01-02")
    if point == "published":  # the killed run was live: nothing was left to read
        assert report["files"] == 0


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("point", ["partition-written", "rolled-up"])
def test_a_run_frozen_past_its_lease_cannot_overwrite_the_run_that_took_over(lake_url, point):
    # Frozen (SIGSTOP) in its write phase, a run loses its 3 s lease; another run takes the
    # lake, ingests more and commits. Thawed, the first must fail and change nothing visible.
    everything = tempfile.mkdtemp(prefix="track-all-") + "/lake"
    for add in (_first_drop, _second_drop, _third_drop):
        add(everything)
    pipeline(lake=everything, now=NOW)
    _first_drop(lake_url)
    pipeline(lake=lake_url, now=NOW)
    before = _delta_daily(lake_url)
    _second_drop(lake_url)
    frozen = _track_run(lake_url, stop_at=point)
    try:
        deadline = time.monotonic() + 120
        while not _stopped(frozen[0].pid):
            assert frozen[0].poll() is None and time.monotonic() < deadline, _finish(frozen)
            time.sleep(0.1)
        assert _delta_daily(lake_url) == before  # frozen mid-write: not half a run
        _third_drop(lake_url)
        taken_over = pipeline(lake=lake_url, now=NOW, lock_wait=60)
        assert (taken_over["files"], taken_over["waited_for_lock"] > 1) == (3, True)
        answers = _answers(lake_url)
        assert answers == _answers(everything)
    finally:
        os.kill(frozen[0].pid, signal.SIGCONT)
    code, _, err = _finish(frozen)
    assert code == 1, err[-2000:]
    if point == "rolled-up":  # its own files were left alone: it got as far as its commit
        assert "LakeFencedError: This run lost" in err, err[-2000:]
    assert _answers(lake_url) == answers
    assert pipeline(lake=lake_url, now=NOW)["files"] == 0
    assert _answers(lake_url) == answers
    assert _delta_daily(lake_url) == _reader_daily(lake_url) == _reader_daily(everything)
    _no_stray_files(lake_url)


@pytest.mark.usefixtures("prefect_harness")
def test_two_runs_at_once_neither_corrupt_nor_double_count(lake_url, after_answers):
    _first_drop(lake_url)
    _second_drop(lake_url)
    # Both processes share one Prefect home, as two runs by one user would.
    started = [_track_run(lake_url, home=SHARED_PREFECT_HOME) for _ in range(2)]
    finished = [_finish(p) for p in started]
    assert [code for code, _, _ in finished] == [0, 0], [err[-2000:] for _, _, err in finished]
    reports = [json.loads(out) for _, out, _ in finished]
    assert sorted(r["files"] for r in reports) == [0, 3]
    assert sum(r["accepted"] for r in reports) == 6
    assert _answers(lake_url) == after_answers
    _no_stray_files(lake_url)


def test_lock_is_exclusive_and_a_stale_one_is_taken_over(lake_url):
    lake = Lake(lake_url)
    first = LakeLock(lake, "first", lease=timedelta(seconds=60))
    assert first.acquire(wait=0)
    second = LakeLock(lake, "second", lease=timedelta(seconds=60))
    assert not second.acquire(wait=1.5)
    first.release()
    assert second.acquire(wait=0)
    second.release()
    # A run killed while holding the lock stops renewing its claim, which lapses.
    killed = LakeLock(lake, "killed", lease=timedelta(seconds=1))
    assert killed.acquire(wait=0)
    killed._stop.set()  # as a SIGKILL would: no more renewals, no release
    time.sleep(1.5)
    taker = LakeLock(lake, "taker", lease=timedelta(seconds=60))
    assert taker.acquire(wait=0)
    assert taker.generation == 4
    taker.release()


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_that_cannot_get_the_lock_skips_and_says_so(tmp_path):
    lake = str(tmp_path / "lake")
    holder = LakeLock(Lake(lake), "someone else", lease=timedelta(seconds=60))
    assert holder.acquire(wait=0)
    try:
        report = pipeline(lake=lake, now=NOW, lock_wait=1)
    finally:
        holder.release()
    assert report["skipped"] is True
    assert report["files"] == 0
    assert not (tmp_path / "lake" / "events").exists()


def _lake_on_own_s3_server(monkeypatch) -> tuple[Any, int, str]:
    """A lake, after a first run, on an S3 server of the test's own that it may stop.

    moto keeps its buckets in this process, so a server started again on the same port serves
    the same objects.
    """
    import uuid

    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"track-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    lake = f"s3://{bucket}/lake"
    _first_drop(lake)
    pipeline(lake=lake, now=NOW)
    return server, port, lake


@pytest.mark.usefixtures("prefect_harness")
def test_a_storage_failure_fails_the_run_clearly_and_the_next_run_recovers(
    s3_endpoint, after_answers, monkeypatch, capsys
):

    import s3fs
    from moto.server import ThreadedMotoServer

    import track.flows.pipeline
    from track.cli import main

    server, port, lake = _lake_on_own_s3_server(monkeypatch)
    before = _answers(lake)
    _second_drop(lake)

    def outage(name: str) -> None:
        if name == "merged":
            server.stop()

    monkeypatch.setattr(track.flows.pipeline, "crash_point", outage)
    monkeypatch.setenv("TRACK_LOCK_LEASE", "3")  # the failed run cannot release its lock
    try:
        assert main(["run", "--lake", lake, "--now", NOW.isoformat(), "--wait", "5"]) == 1
    finally:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
    assert "track run failed" in capsys.readouterr().err
    monkeypatch.setattr(track.flows.pipeline, "crash_point", lambda name: None)
    assert _answers(lake) == before
    pipeline(lake=lake, now=NOW, lock_wait=120)
    assert _answers(lake) == after_answers
    _no_stray_files(lake)
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_waits_for_the_lock_and_says_so(tmp_path):
    import threading

    lake = str(tmp_path / "lake")
    _first_drop(lake)
    holder = LakeLock(Lake(lake), "someone else", lease=timedelta(seconds=60))
    assert holder.acquire(wait=0)
    threading.Timer(3, holder.release).start()
    report = pipeline(lake=lake, now=NOW, lock_wait=60)
    assert report["waited_for_lock"] >= 2
    assert (report["skipped"], report["accepted"]) == (False, 3)


@pytest.mark.usefixtures("prefect_harness")
def test_a_short_storage_outage_is_retried_and_the_run_completes(
    s3_endpoint, after_answers, monkeypatch
):
    import threading

    import s3fs
    from moto.server import ThreadedMotoServer

    import track.flows.pipeline

    server, port, lake = _lake_on_own_s3_server(monkeypatch)
    _second_drop(lake)
    restarted: list[ThreadedMotoServer] = []

    def blip(name: str) -> None:
        if name == "merged":  # the store goes away for a moment, between two tasks
            server.stop()

            def back() -> None:
                restarted.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port))
                restarted[0].start()

            threading.Timer(0.3, back).start()

    monkeypatch.setattr(track.flows.pipeline, "crash_point", blip)
    try:
        report = pipeline(lake=lake, now=NOW)
        assert report["files"] == 2
        assert _answers(lake) == after_answers
    finally:
        time.sleep(0.5)
        for again in restarted:
            again.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_the_lock_is_still_renewed_after_the_store_fails_for_a_moment(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    holder = LakeLock(lake, "holder", lease=timedelta(seconds=2))
    assert holder.acquire(wait=0)
    locks = tmp_path / "lake" / "_state" / "lock"
    # The store fails: the lock folder is not a folder for a while (renewals every 0.5 s).
    locks.rename(locks.with_name("lock-away"))
    locks.write_text("not a folder")
    time.sleep(1.2)
    locks.unlink()
    locks.with_name("lock-away").rename(locks)
    time.sleep(2.5)  # longer than the lease: only renewals keep the claim
    other = LakeLock(lake, "other", lease=timedelta(seconds=60))
    assert not other.acquire(wait=0)
    holder.release()
    assert other.acquire(wait=0)
    other.release()


def test_a_run_that_began_before_another_cannot_commit_after_it(lake_url):
    first = Lake(lake_url).begin()
    first.write_partition("counts", date(2025, 3, 5), _counts("play", 1))
    second = Lake(lake_url).begin()  # took the lake over: its claim fences the first run out
    second.write_partition("counts", date(2025, 3, 6), _counts("stop", 2))
    second.commit()
    current = Lake(lake_url).current()
    fenced = "took it over .the lake is at snapshot 3, this run began from snapshot 0"
    with pytest.raises(LakeFencedError, match=fenced):
        first.commit()
    assert Lake(lake_url).current() == current
    assert Lake(lake_url).partitions("counts") == [date(2025, 3, 6)]
    # A run that changes nothing leaves only its claim, a copy: the lake says when it changed.
    third = Lake(lake_url).begin()
    third.commit()
    after = Lake(lake_url).current()
    assert (after.number, after.committed_at) == (current.number + 1, current.committed_at)


def _counts(event: str, count: int) -> Any:
    import polars as pl

    return pl.DataFrame({"event": [event], "user_id": ["u"], "count": [count]})

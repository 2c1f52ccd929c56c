"""The lake's run lock: one run at a time across processes, a stale lock taken over after its
lease, renewals that outlast a short store failure; a run that waits says so, one that cannot
get the lock skips; two real `track run`s at once neither corrupt nor double count."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest

from tests.runs import NOW, answers, finish, first_drop, no_stray_files, second_drop, track_run
from track.flows.pipeline import pipeline
from track.lake.lock import LakeLock
from track.lake.store import Lake


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


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_waits_for_the_lock_and_says_so(tmp_path):
    lake = str(tmp_path / "lake")
    first_drop(lake)
    holder = LakeLock(Lake(lake), "someone else", lease=timedelta(seconds=60))
    assert holder.acquire(wait=0)
    threading.Timer(3, holder.release).start()
    report = pipeline(lake=lake, now=NOW, lock_wait=60)
    assert report["waited_for_lock"] >= 2
    assert (report["skipped"], report["accepted"]) == (False, 3)


@pytest.mark.usefixtures("prefect_harness")
def test_two_runs_at_once_neither_corrupt_nor_double_count(lake_url, after_answers, tmp_path):
    first_drop(lake_url)
    second_drop(lake_url)
    # Both processes share one Prefect home, as two runs by one user would.
    home = tmp_path / "prefect"
    started = [track_run(lake_url, tmp_path, home=home) for _ in range(2)]
    finished = [finish(p) for p in started]
    assert [code for code, _, _ in finished] == [0, 0], [err[-2000:] for _, _, err in finished]
    reports = [json.loads(out) for _, out, _ in finished]
    assert sorted(r["files"] for r in reports) == [0, 3]
    assert sum(r["accepted"] for r in reports) == 6
    assert answers(lake_url) == after_answers
    no_stray_files(lake_url)

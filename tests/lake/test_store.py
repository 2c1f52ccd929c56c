"""The commit protocol (SPEC section 9) with real `track run` processes: a run killed at any
point leaves the answers and the Delta tables of before it or after it, and the next run
finishes the job; a run frozen past its lease, or one that began before another, cannot commit
over the newer run; a store that fails fails the run clearly, or is retried. On a local folder
and on the S3 API."""

from __future__ import annotations

import os
import signal
import time
from datetime import date
from typing import Any

import fsspec
import pytest

from tests.runs import (
    NOW,
    answers,
    counts_row,
    delta_daily,
    finish,
    first_drop,
    no_stray_files,
    reader_daily,
    second_drop,
    stopped,
    third_drop,
    track_run,
)
from track.errors import LakeFencedError
from track.flows.pipeline import pipeline
from track.lake.store import Lake

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.parametrize(
    "point", ["ingested", "partition-written", "rolled-up", "snapshot-written", "published"]
)
def test_a_killed_run_leaves_old_or_new_answers_and_the_next_run_finishes(
    lake_url, point, after_answers, tmp_path
):
    first_drop(lake_url)
    pipeline(lake=lake_url, now=NOW)
    before, delta_before = answers(lake_url), delta_daily(lake_url)
    assert delta_before == reader_daily(lake_url)
    second_drop(lake_url)
    code, _, err = finish(track_run(lake_url, tmp_path, kill_at=point))
    assert code == -signal.SIGKILL, err[-2000:]
    assert answers(lake_url) in (before, after_answers)
    if point in ("snapshot-written", "published"):  # the reader answers from the new snapshot
        assert answers(lake_url) == after_answers
    else:  # killed mid-write, before its commit: a notebook reads the lake as before the run
        assert delta_daily(lake_url) == delta_before
    report = pipeline(lake=lake_url, now=NOW)
    assert answers(lake_url) == after_answers
    assert delta_daily(lake_url) == reader_daily(lake_url) != delta_before
    no_stray_files(lake_url)
    fs, root = fsspec.core.url_to_fs(lake_url)
    assert not fs.exists(f"{root}/raw/date=2025-01-02")
    if point == "published":  # the killed run had committed: nothing was left to read
        assert report["files"] == 0


@pytest.mark.parametrize("point", ["partition-written", "rolled-up"])
def test_a_run_frozen_past_its_lease_cannot_overwrite_the_run_that_took_over(
    lake_url, point, tmp_path
):
    # Frozen (SIGSTOP) in its write phase, a run loses its 3 s lease; another run takes the
    # lake, ingests more and commits. Thawed, the first must fail and change nothing visible.
    everything = str(tmp_path / "everything")
    for add in (first_drop, second_drop, third_drop):
        add(everything)
    pipeline(lake=everything, now=NOW)
    first_drop(lake_url)
    pipeline(lake=lake_url, now=NOW)
    before = delta_daily(lake_url)
    second_drop(lake_url)
    frozen = track_run(lake_url, tmp_path, stop_at=point)
    try:
        deadline = time.monotonic() + 120
        while not stopped(frozen[0].pid):
            assert frozen[0].poll() is None and time.monotonic() < deadline, finish(frozen)
            time.sleep(0.1)
        assert delta_daily(lake_url) == before  # frozen mid-write: not half a run
        third_drop(lake_url)
        taken_over = pipeline(lake=lake_url, now=NOW, lock_wait=60)
        assert (taken_over["files"], taken_over["waited_for_lock"] > 1) == (3, True)
        after = answers(lake_url)
        assert after == answers(everything)
    finally:
        os.kill(frozen[0].pid, signal.SIGCONT)
    code, _, err = finish(frozen)
    assert code == 1, err[-2000:]
    if point == "rolled-up":  # its own files were left alone: it got as far as its commit
        assert "LakeFencedError: This run lost" in err, err[-2000:]
    assert answers(lake_url) == after
    assert pipeline(lake=lake_url, now=NOW)["files"] == 0
    assert answers(lake_url) == after
    assert delta_daily(lake_url) == reader_daily(lake_url) == reader_daily(everything)
    no_stray_files(lake_url)


def test_a_run_that_began_before_another_cannot_commit_after_it(lake_url):
    first = Lake(lake_url).begin()
    first.write_partition("counts", date(2025, 3, 5), counts_row("play", 1))
    second = Lake(lake_url).begin()  # took the lake over: its claim fences the first run out
    second.write_partition("counts", date(2025, 3, 6), counts_row("stop", 2))
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
    first_drop(lake)
    pipeline(lake=lake, now=NOW)
    return server, port, lake


def test_a_storage_failure_fails_the_run_clearly_and_the_next_run_recovers(
    s3_endpoint, after_answers, monkeypatch, capsys
):
    import s3fs
    from moto.server import ThreadedMotoServer

    import track.flows.pipeline
    from track.cli import main

    server, port, lake = _lake_on_own_s3_server(monkeypatch)
    before = answers(lake)
    second_drop(lake)

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
    assert answers(lake) == before
    pipeline(lake=lake, now=NOW, lock_wait=120)
    assert answers(lake) == after_answers
    no_stray_files(lake)
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_short_storage_outage_is_retried_and_the_run_completes(
    s3_endpoint, after_answers, monkeypatch
):
    import threading

    import s3fs
    from moto.server import ThreadedMotoServer

    import track.flows.pipeline

    server, port, lake = _lake_on_own_s3_server(monkeypatch)
    second_drop(lake)
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
        assert answers(lake) == after_answers
    finally:
        time.sleep(0.5)
        for again in restarted:
            again.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_a_failure_inside_the_merge_is_retried_from_the_snapshot_as_it_was(lake_url, after_answers):
    # The store fails (as s3fs raises) once some dates took their new rows (added as a file
    # or written): the merge's retry must start from the run's snapshot as it was before its
    # first attempt, or the rows added then would be added twice (each date works on a fork
    # of the run's lake, taken back only once every date is done; the merge on a fork too).
    import track.lake.merge

    first_drop(lake_url)
    pipeline(lake=lake_url, now=NOW)
    second_drop(lake_url)
    written: list[str] = []

    def failure(name: str) -> None:
        written.append(name)
        if len(written) == 2:  # two dates' events are written: now the store fails
            raise OSError("the store went away")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(track.lake.merge, "crash_point", failure)
        report = pipeline(lake=lake_url, now=NOW)
    assert (report["files"], report["accepted"], report["duplicates"]) == (2, 3, 1)
    assert len(written) > 3  # the merge ran again: three dates changed
    assert answers(lake_url) == after_answers
    # What the failed attempt wrote is named by no snapshot: the next run deletes it.
    assert pipeline(lake=lake_url, now=NOW)["files"] == 0
    no_stray_files(lake_url)

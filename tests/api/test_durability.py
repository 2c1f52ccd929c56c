"""No acknowledged record is lost or counted twice (SPEC section 11): `track api` killed with
SIGKILL under load, stopped with SIGTERM, restarted on what a dead process left, and two
processes on one lake, on a local folder and on the S3 API."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from tests.api.test_http import raw_files, spooled, stored_events, wait_for
from track.api.spool import new_name
from track.flows.pipeline import pipeline

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _load(url: str, client_id: int, acknowledged: list[int], stop: threading.Event) -> None:
    """Post numbered records until told to stop or the API goes away; note each one
    acknowledged. Every fifth request is a batch of three."""
    number = client_id * 1_000_000
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            ids = [number, number + 1, number + 2] if number % 5 == 0 else [number]
            records = [
                {"event": "load", "user_id": f"c{client_id}", "metadata": {"id": i}} for i in ids
            ]
            try:
                if len(ids) == 1:
                    answer = client.post("/track", content=json.dumps(records[0]))
                else:
                    answer = client.post("/batch", content=json.dumps({"batch": records}))
            except httpx.TransportError:
                return  # killed
            if answer.status_code == 200:
                acknowledged.extend(ids)
            number += len(ids)


def _ids(lake: str) -> pl.Series:
    events = stored_events(lake).filter(pl.col("event") == "load")
    return events["metadata"].str.json_path_match("$.id").cast(pl.Int64)


def test_sigkill_under_load_loses_no_acknowledged_record(lake_url, api_factory, tmp_path):
    spool = str(tmp_path / "spool")
    api = api_factory(lake_url, spool, max_age=0.3)
    acknowledged: list[int] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=_load, args=(api.url, n, acknowledged, stop)) for n in range(1, 5)
    ]
    for client in clients:
        client.start()
    wait_for(lambda: len(acknowledged) > 300, what="300 acknowledged records")
    time.sleep(0.5)  # moves into the lake are under way too
    api.process.send_signal(signal.SIGKILL)  # as a power cut would
    api.process.wait()
    stop.set()
    for client in clients:
        client.join()
    assert raw_files(lake_url) or spooled(api)
    # The next process moves what the dead one left, then drains on SIGTERM.
    again = api_factory(lake_url, spool)
    wait_for(lambda: not spooled(again), what="moving the dead process's spool")
    assert again.stop() < 10
    report = pipeline(lake=lake_url)
    assert report["quarantined"] == 0 and report["duplicates"] == 0
    ids = _ids(lake_url)
    assert ids.is_unique().all()  # nothing counted twice
    missing = set(acknowledged) - set(ids.to_list())
    assert not missing, f"{len(missing)} acknowledged records lost, such as {sorted(missing)[:5]}"


def test_sigterm_moves_everything_and_exits_within_seconds(lake_url, api_factory):
    api = api_factory(lake_url, max_age=3600)  # nothing would move on its own
    for n in range(40):
        body = json.dumps({"event": "load", "user_id": "u", "metadata": {"id": n}})
        assert api.post("/track", body).status_code == 200
    assert spooled(api) and not raw_files(lake_url)
    assert api.stop() < 10
    assert api.process.returncode == 0
    assert not spooled(api)
    (data,) = raw_files(lake_url).values()
    assert data.count(b"\n") == 40


def test_a_dead_processs_spool_is_moved_whole_lines_only_and_moving_twice_changes_nothing(
    lake_url, api_factory, tmp_path
):
    from datetime import UTC, datetime

    name = new_name(datetime.now(UTC))
    day = datetime.now(UTC).date().isoformat()
    lines = b"".join(
        json.dumps({"event": "load", "user_id": "u", "metadata": {"id": n}}).encode() + b"\n"
        for n in range(2)
    )
    left = tmp_path / "spool" / f"date={day}" / name
    left.parent.mkdir(parents=True)
    left.write_bytes(lines + b'{"event": "load", "user_id": "u", "meta')  # killed mid-write
    # A crash after the store took the file but before the spool file was deleted: it is moved
    # again, under the same name with the same bytes.
    api = api_factory(lake_url)
    wait_for(lambda: not left.exists(), what="moving the left spool file")
    assert raw_files(lake_url) == {f"date={day}/{name}": lines}
    assert pipeline(lake=lake_url)["accepted"] == 2
    left.write_bytes(lines + b'{"event": "lo')
    wait_for(lambda: not left.exists(), what="moving it again")
    assert raw_files(lake_url) == {f"date={day}/{name}": lines}
    again = pipeline(lake=lake_url)
    assert (again["accepted"], again["duplicates"]) == (0, 0)
    assert sorted(_ids(lake_url).to_list()) == [0, 1]
    assert api.stop() < 10


def test_two_api_processes_serve_one_lake_from_one_spool_folder(lake_url, api_factory, tmp_path):
    spool = str(tmp_path / "spool")
    first, second = api_factory(lake_url, spool), api_factory(lake_url, spool)
    for n in range(60):
        api = first if n % 2 else second
        body = json.dumps({"event": "load", "user_id": "u", "metadata": {"id": n}})
        assert api.post("/track", body).status_code == 200
    # One dies; the other moves its files too (a sibling's orphans, within max_age).
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    wait_for(lambda: not spooled(second), what="the survivor moving every spool file")
    assert second.stop() < 10
    assert len(raw_files(lake_url)) >= 2
    assert pipeline(lake=lake_url)["accepted"] == 60
    assert sorted(_ids(lake_url).to_list()) == list(range(60))


def test_each_file_moved_is_a_prefect_event_that_triggers_the_deployment(tmp_path, api_factory):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.settings import PREFECT_API_URL

    from track.flows.pipeline import deployment
    from track.lake.store import RAW_FILE_CREATED, lake_resource

    lake = str(tmp_path / "lake")
    deployment_id = deployment(lake, cron=None).apply()
    api = api_factory(lake, env={"PREFECT_API_URL": str(PREFECT_API_URL.value())})
    body = json.dumps({"event": "play", "user_id": "u"})
    assert api.post("/track", body).status_code == 200
    wait_for(lambda: raw_files(lake), what="the move")
    (moved,) = raw_files(lake)

    def events() -> list:
        only = EventFilter(
            event=EventNameFilter(name=[RAW_FILE_CREATED]),
            resource=EventResourceFilter(id=[lake_resource(lake)]),
        )
        with get_client(sync_client=True) as client:
            return client.read_events(filter=only, limit=50).events

    wait_for(events, timeout=30, what="the event")
    (event,) = events()
    assert event.payload == {"path": f"raw/{moved}", "bytes": len(raw_files(lake)[moved])}

    def runs() -> list:
        # Other tests of this worker serve the same deployment (by name) on their own lakes.
        only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(deployment_filter=only)
        return [run for run in found if run.parameters.get("lake") == lake]

    wait_for(runs, timeout=30, what="a run of the deployment")
    (run,) = runs()
    assert run.parameters == {"lake": lake, "alert_quarantine": 1.0}
    assert api.stop() < 10
    assert Path(api.spool).exists()

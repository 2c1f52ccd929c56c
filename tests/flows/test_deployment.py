"""The `pipeline/track` deployment, served by a Prefect runner and run through Prefect."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import pytest
from prefect.deployments import run_deployment
from prefect.runner import Runner

from tests.lakes import drop, ndjson
from track import reader
from track.flows.pipeline import DEPLOYMENT, deployment

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_served_deployment_runs_the_pipeline_at_its_scheduled_time(tmp_path):
    lake = str(tmp_path / "lake")
    drop(
        lake,
        "date=2025-03-01/a.ndjson",
        ndjson(
            {"event": "play", "user_id": "u", "timestamp": "2025-03-01T10:00:00Z"},
            {"event": "stop", "user_id": "u", "timestamp": "2025-03-01T10:00:02Z"},
        ),
        modified=datetime(2025, 3, 2, tzinfo=UTC),
    )
    runner = Runner(query_seconds=1, limit=1)
    runner.add_deployment(deployment(lake, cron=None))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(runner.start(),), daemon=True)
    thread.start()
    try:
        scheduled = datetime(2025, 3, 20, 6, tzinfo=UTC)
        flow_run = run_deployment(
            f"pipeline/{DEPLOYMENT}", scheduled_time=scheduled, timeout=240, poll_interval=1
        )
    finally:
        asyncio.run_coroutine_threadsafe(runner.astop(), loop).result(timeout=60)
        thread.join(timeout=60)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    # The run happened in the runner's own process: its report is in the lake.
    (report_file,) = (tmp_path / "lake" / "runs").glob("*.json")
    report = json.loads(report_file.read_text())
    # The scheduled start time is the run's `now`: the window is 30 days before it.
    assert report["now"].startswith("2025-03-20T06:00:00")
    assert report["window_start"] == "2025-02-18"
    assert reader.metrics("2025-03-01", "2025-03-01", lake=lake)["data"] == [
        {"date": "2025-03-01", "play": 1, "stop": 1}
    ]

"""What a run tells Prefect, read back from a real Prefect server: its artifacts (report,
progress, quarantine by reason) and its events (every run's, and the alert over a threshold).
And what `track run` shows on a terminal, and does not show elsewhere."""

from __future__ import annotations

import http.server
import json
import os
import pty
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from tests.api.test_http import wait_for
from tests.lakes import drop, ndjson
from track.flows.announce import QUARANTINE_HIGH, RUN_COMPLETED
from track.flows.pipeline import pipeline
from track.lake.store import lake_resource

pytestmark = pytest.mark.usefixtures("prefect_harness")

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _events(lake: str, name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    only = EventFilter(
        event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[lake_resource(lake)])
    )
    with get_client(sync_client=True) as client:
        return client.read_events(filter=only, limit=50).events


def _good(n: int) -> list[dict]:
    return [
        {"event": "play", "user_id": f"u{i}", "timestamp": "2025-03-09T10:00:00Z"} for i in range(n)
    ]


def test_a_run_publishes_its_progress_its_quarantine_and_its_events(lake_url):
    from prefect.artifacts import Artifact

    drop(lake_url, "date=2025-03-09/a.ndjson", ndjson(*_good(3), "not json"))
    report = pipeline(lake=lake_url, now=NOW)
    assert (report["lines"], report["quarantined"]) == (4, 1)

    progress = Artifact.get("track-run-progress")
    assert progress is not None and float(progress.data) == 100.0
    assert progress.description.startswith("done: 1 files")
    table = Artifact.get("track-quarantine")
    assert table is not None and report["run_id"] in table.description
    rows = {row["reason"]: row for row in json.loads(table.data)}
    assert rows["invalid_json"] == {
        "reason": "invalid_json",
        "lines": 1,
        "share of the run's lines": "25.00%",
    }
    assert rows["invalid_event"]["lines"] == 0

    wait_for(lambda: _events(lake_url, RUN_COMPLETED), what="the run's event")
    (completed,) = _events(lake_url, RUN_COMPLETED)
    assert completed.payload == report
    assert completed.resource["prefect.resource.name"] == lake_url
    # 25% of its lines quarantined, over the default threshold of 1%.
    wait_for(lambda: _events(lake_url, QUARANTINE_HIGH), what="the alert")
    (alert,) = _events(lake_url, QUARANTINE_HIGH)
    assert alert.payload == {
        "run_id": report["run_id"],
        "lines": 4,
        "quarantined": 1,
        "quarantined_by_reason": {"invalid_json": 1},
        "share": 0.25,
        "threshold_percent": 1.0,
    }


def test_the_alert_follows_its_threshold(tmp_path):
    quiet, loud = str(tmp_path / "quiet"), str(tmp_path / "loud")
    for lake in (quiet, loud):  # 1 line of 200 quarantined: 0.5%
        drop(lake, "date=2025-03-09/a.ndjson", ndjson(*_good(199), "not json"))
    pipeline(lake=quiet, now=NOW)  # the default: 1%
    pipeline(lake=loud, now=NOW, alert_quarantine=0.4)
    wait_for(lambda: _events(loud, QUARANTINE_HIGH), what="the alert over 0.4%")
    wait_for(lambda: _events(quiet, RUN_COMPLETED), what="the quiet run's event")
    assert _events(quiet, QUARANTINE_HIGH) == []
    # A run with nothing new read no lines: no alert, whatever the threshold.
    pipeline(lake=loud, now=NOW, alert_quarantine=0)
    wait_for(lambda: len(_events(loud, RUN_COMPLETED)) == 2, what="the second run's event")
    assert len(_events(loud, QUARANTINE_HIGH)) == 1


def _track_run(lake: str, *, terminal: bool) -> tuple[int, str]:
    """`track run` on a lake, its stderr on a terminal (a pseudo-terminal) or in a pipe: its
    exit code and what it wrote there."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()), COLUMNS="120")
    command = [sys.executable, "-m", "track.cli", "run", "--lake", lake, "--json"]
    command += ["--now", NOW.isoformat()]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, timeout=300)
        return done.returncode, done.stderr.decode()
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the run closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return process.wait(timeout=300), shown.decode(errors="replace")


def test_track_run_shows_its_progress_on_a_terminal_only(tmp_path):
    for name in ("a", "b"):
        lake = str(tmp_path / name)
        drop(lake, "date=2025-03-09/a.ndjson", ndjson(*_good(50)))
        drop(lake, "date=2025-03-09/b.ndjson", ndjson(*_good(30)))
    code, shown = _track_run(str(tmp_path / "a"), terminal=True)
    assert code == 0, shown
    assert "2 of 2 files" in shown
    assert "ingest" in shown and "done" in shown
    code, logged = _track_run(str(tmp_path / "b"), terminal=False)
    assert code == 0, logged
    assert "of 2 files" not in logged and "━" not in logged


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_readmes_automation_notifies_when_a_run_quarantines_too_much(tmp_path):
    """automations.yaml, created with Prefect's own command, sends its notification (here to a
    webhook on loopback) when a run's quarantined share is over its threshold."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/"
    block = CustomWebhookNotificationBlock(
        name="track-test", url=hook, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    )
    block_id = block.save(f"track-alerts-{uuid.uuid4().hex[:8]}")
    spec = (ROOT / "automations.yaml").read_text().replace("BLOCK_DOCUMENT_ID", str(block_id))
    (tmp_path / "automations.yaml").write_text(spec)
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()))
    prefect = [sys.executable, "-m", "prefect", "automation", "create"]
    made = subprocess.run(
        [*prefect, "--from-file", str(tmp_path / "automations.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    try:
        lake = str(tmp_path / "lake")
        drop(lake, "date=2025-03-09/a.ndjson", ndjson(*_good(3), "not json"))
        report = pipeline(lake=lake, now=NOW)
        wait_for(lambda: _Webhook.received, timeout=60, what="the notification")
        (note,) = _Webhook.received
        assert note["subject"] == "Track quarantined 1 of 4 lines"
        assert f"Run {report['run_id']} of the lake {lake}" in note["body"]
        assert "over the threshold of 1.0%" in note["body"]
        assert "'invalid_json': 1" in note["body"]
    finally:
        server.shutdown()
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name("track-quarantine-alert"):
                client.delete_automation(automation.id)

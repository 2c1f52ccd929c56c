"""The `track` command: run, metrics, sessions and users, with their output and exit codes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from tests.lakes import SPEC_REPORT_KEYS, drop, ndjson
from tests.runs import finish, track_run
from track.cli import main

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_run_json_then_metrics_and_sessions(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    drop(
        lake,
        "date=2025-03-01/a.ndjson",
        ndjson(
            {"event": "play", "user_id": "u", "timestamp": "2025-03-01T10:00:00Z"},
            {"event": "stop", "user_id": "u", "timestamp": "2025-03-01T10:00:01.500Z"},
            "oops",
        ),
        modified=datetime(2025, 3, 2, tzinfo=UTC),
    )
    assert main(["run", "--lake", lake, "--now", "2025-03-05T00:00:00Z", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(SPEC_REPORT_KEYS) <= set(report)
    assert (report["accepted"], report["quarantined"]) == (2, 1)
    assert report["window_start"] == "2025-02-03"

    assert (
        main(
            [
                "metrics",
                "--lake",
                lake,
                "--start-date",
                "2025-03-01",
                "--end-date",
                "2025-03-31",
                "--group-by",
                "month",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "status": "success",
        "data": [{"date": "2025-03-01", "play": 1, "stop": 1}],
    }
    assert (
        main(
            [
                "sessions",
                "--lake",
                lake,
                "--start-date",
                "2025-03-01",
                "--end-date",
                "2025-03-01",
                "--user-id",
                "u",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {
        "status": "success",
        "data": [
            {"date": "2025-03-01", "totalDuration": 2, "sessionCount": 1, "averageDuration": 2}
        ],
    }
    query = ["--lake", lake, "--start-date", "2025-03-01", "--end-date", "2025-03-31"]
    weekly = ["--group-by", "week", "--week-start", "sunday"]
    assert main(["users", *query, *weekly, "--event", "play"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "status": "success",
        "data": [{"date": "2025-02-23", "users": 1}],  # 2025-03-01 is a Saturday
    }
    assert main(["metrics", *query, *weekly]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == [
        {"date": "2025-02-23", "play": 1, "stop": 1}
    ]


def test_the_commands_ask_every_question_of_the_reader():
    from track import cli, reader

    assert {name: f for name, (_, f) in reader.QUESTIONS.items()} == cli.QUESTIONS


def test_run_prints_a_readable_report(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    assert main(["run", "--lake", lake, "--retention-days", "7"]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "partitions_deleted" in out
    assert (datetime.now(UTC) - timedelta(days=7)).date().isoformat() in out


@pytest.mark.parametrize("command", ["metrics", "sessions", "users"])
def test_query_errors_exit_1(command, tmp_path, capsys):
    assert (
        main(
            [
                command,
                "--lake",
                str(tmp_path),
                "--start-date",
                "2025-03-02",
                "--end-date",
                "2025-03-01",
            ]
        )
        == 1
    )
    assert json.loads(capsys.readouterr().out) == {
        "status": "error",
        "message": "start_date must be on or before end_date",
    }
    assert main([command, "--lake", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["message"] == "start_date and end_date are required"


def test_serve_refuses_a_temporary_server(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["serve", "--lake", "data/lake"]) == 2
    assert "prefect server start" in capsys.readouterr().err


def test_bad_now_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--now", "tomorrow"])
    assert "--now must be an ISO 8601 date-time" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["150", "-1", "1 percent", ""])
def test_an_alert_threshold_that_is_no_percent_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--alert-quarantine", value])
    assert "expected a percent from 0 to 100" in capsys.readouterr().err


def test_the_alert_threshold_takes_a_percent_sign(tmp_path, capsys):
    from tests.api.test_http import wait_for
    from tests.flows.test_announce import _events
    from track.flows.announce import QUARANTINE_HIGH, RUN_COMPLETED

    # 75% of the lines quarantined: over 50%, not over 80%.
    lakes = {threshold: str(tmp_path / f"lake-{n}") for n, threshold in enumerate(("50%", "80"))}
    for threshold, lake in lakes.items():
        drop(
            lake, "date=2025-03-01/a.ndjson", ndjson(*["oops"] * 3, {"event": "e", "user_id": "u"})
        )
        assert main(["run", "--lake", lake, "--alert-quarantine", threshold, "--json"]) == 0
        wait_for(lambda lake=lake: _events(lake, RUN_COMPLETED), what="the run's event")
    capsys.readouterr()
    wait_for(lambda: _events(lakes["50%"], QUARANTINE_HIGH), what="the alert over 50%")
    assert _events(lakes["80"], QUARANTINE_HIGH) == []


def test_track_run_stops_the_temporary_server_it_started(tmp_path):
    # No Prefect server configured: `track run` starts Prefect's temporary one itself, in its
    # own process group here; once the run has exited, nothing of that group may be left.
    started = track_run(str(tmp_path / "lake"), tmp_path)
    process = started[0]
    assert process.wait(timeout=300) == 0
    try:
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    finally:
        finish(started)


def test_a_setting_track_cannot_use_is_named_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRACK_RETENTION_DAYS", "a month")
    query = ["metrics", "--lake", str(tmp_path), "--start-date", "2025-03-01"]
    assert main([*query, "--end-date", "2025-03-01"]) == 2
    err = capsys.readouterr().err
    assert err == "track: TRACK_RETENTION_DAYS must be a whole number, got 'a month'\n"

"""What a run tells Prefect: its report and its quarantine by reason as artifacts, its progress
as a progress artifact, and its events, which Prefect automations react to (README, Alerts).

Every event names the lake as its resource (`track.lake.<url>`, as the HTTP API's file events
do), so an automation can watch one lake or all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event

from track.lake.report import RunReport
from track.lake.store import lake_resource
from track.schemas.constants import REASONS

RUN_COMPLETED = "track.run.completed"
"""Emitted by every run that completed (not by one that skipped), its report as payload."""
QUARANTINE_HIGH = "track.run.quarantine.high"
"""Emitted too when the share of a run's lines it quarantined is above the alert threshold."""


def progress_artifact(run_id: str) -> Callable[[float, str], Any]:
    """A run's progress artifact (`track-run-progress`), made at once: a function that updates
    it with a fraction done and what the run is doing."""
    made = create_progress_artifact(0.0, key="track-run-progress", description=run_id)
    artifact = cast(UUID, made)  # a UUID when called from sync code, as a flow's steps are

    def update(fraction: float, description: str) -> None:
        update_progress_artifact(artifact, round(100 * fraction, 1), description)

    return update


def quarantine_share(report: RunReport) -> float:
    """The share of a run's lines it quarantined (0 when it read none)."""
    return report.quarantined / report.lines if report.lines else 0.0


def publish(report: RunReport, lake_url: str, alert_percent: float) -> None:
    """The run's artifacts and events: its report (a table of every count) and its quarantine
    by reason (a table with each reason's share of the run's lines); RUN_COMPLETED, and
    QUARANTINE_HIGH when the quarantined share is above `alert_percent` percent."""
    create_markdown_artifact(report.markdown(), key="track-run-report", description="Track run")
    lines = report.lines
    by_reason = {reason: report.quarantined_by_reason.get(reason, 0) for reason in REASONS}
    create_table_artifact(
        [
            {"reason": reason, "lines": n, "share of the run's lines": f"{n / lines:.2%}"}
            if lines
            else {"reason": reason, "lines": n, "share of the run's lines": "-"}
            for reason, n in by_reason.items()
        ],
        key="track-quarantine",
        description=f"Quarantined lines of run {report.run_id}, by reason",
    )
    resource = {"prefect.resource.id": lake_resource(lake_url), "prefect.resource.name": lake_url}
    emit_event(event=RUN_COMPLETED, resource=resource, payload=asdict(report))
    share = quarantine_share(report)
    if share * 100 > alert_percent:
        emit_event(
            event=QUARANTINE_HIGH,
            resource=resource,
            payload={
                "run_id": report.run_id,
                "lines": lines,
                "quarantined": report.quarantined,
                "quarantined_by_reason": report.quarantined_by_reason,
                "share": round(share, 6),
                "threshold_percent": alert_percent,
            },
        )

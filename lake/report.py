"""The run report (SPEC section 9): what a run did, logged, stored as `runs/<run_id>.json`,
published as a Prefect artifact and printed by `track run`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from track.lake.ingest import BatchResult, counted_files
from track.lake.merge import Merged
from track.schemas.constants import REASONS


@dataclass
class RunReport:
    """What a run did. Every run satisfies lines = accepted + duplicates + expired +
    quarantined."""

    run_id: str
    now: str
    window_start: str
    files: int = 0
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    expired: int = 0
    quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    clamped: int = 0
    truncated: int = 0
    sessions: int = 0
    partitions_deleted: int = 0
    ignored: list[str] = field(default_factory=list)
    waited_for_lock: float = 0.0
    skipped: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    """The time each step of the run took (flows.progress.STEPS), where a run's time goes."""

    def markdown(self) -> str:
        """The report as a Markdown table, for the Prefect artifact."""
        listed = ("quarantined_by_reason", "ignored", "seconds")
        rows = [(k, v) for k, v in asdict(self).items() if k not in listed]
        rows += [(f"quarantined: {k}", v) for k, v in self.quarantined_by_reason.items()]
        rows += [("ignored", ", ".join(self.ignored) or "none")]
        rows += [(f"seconds: {k}", v) for k, v in self.seconds.items()]
        return "| item | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def run_report(
    run_id: str,
    now: datetime,
    window_start: date,
    results: list[BatchResult],
    merged: Merged,
    *,
    sessions: int,
    deleted: int,
    ignored: list[str],
) -> RunReport:
    """The report of a run that read `results` and merged them as `merged`."""
    files = [f for f in counted_files(results) if not f.unchanged]
    by_reason = {reason: sum(f.quarantined.get(reason, 0) for f in files) for reason in REASONS}
    return RunReport(
        run_id=run_id,
        now=now.isoformat(),
        window_start=window_start.isoformat(),
        files=len(files),
        lines=sum(f.lines for f in files),
        accepted=merged.accepted,
        duplicates=merged.duplicates,
        expired=sum(f.expired for f in files),
        quarantined=sum(by_reason.values()),
        quarantined_by_reason={k: v for k, v in by_reason.items() if v},
        clamped=merged.clamped,
        truncated=merged.truncated,
        sessions=sessions,
        partitions_deleted=deleted,
        ignored=ignored,
    )

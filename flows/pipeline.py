"""The `pipeline` flow: ingest what is new in raw/, rebuild what it changes, apply retention."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar, cast

import polars as pl
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.runtime import flow_run as prefect_flow_run
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from track.errors import LakeError
from track.lake.faults import crash_point
from track.lake.ingest import Batch, FilePlan, FileResult, ingest_file
from track.lake.lock import POLL_EVERY, LakeLock
from track.lake.merge import (
    MANIFEST,
    Merged,
    Staged,
    count_sessions,
    expire_events,
    expire_quarantine,
    expire_raw,
    merge_events,
    merge_quarantine,
    rebuild_sessions,
    update_manifest,
)
from track.lake.store import (
    RAW_FILE_CREATED,
    RUNS,
    STATE,
    Lake,
    RawFile,
    lake_resource,
)
from track.schemas.constants import REASONS
from track.schemas.tables import Events, Manifest, Quarantine, polars_schema
from track.settings import DEFAULT_CRON, LOCK_WAIT, Settings, resolve_lake

STAGING = "staging"
BATCH_BYTES = 64 * 1024 * 1024
BATCH_FILES = 256
BATCHES_AT_LEAST = 4
WORKERS = os.cpu_count() or 2
"""Ingest batches parsed at once (threads: Polars releases the GIL); each holds up to
STAGE_ROWS lines, so this bounds ingest's memory too."""
THREADS: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=WORKERS)
STAGE_ROWS = 250_000
"""A batch stages its rows whenever it holds this many: the bound on a batch's memory."""
# Storage calls can fail for a moment (throttling, a dropped connection): retry the I/O tasks.
# Their results are never cached: every run must look at the lake as it is.
RETRY_DELAYS: list[float] = list(Settings.from_env().retry_delays)
RETRIES = len(RETRY_DELAYS)
P = ParamSpec("P")
R = TypeVar("R")


def _worth_retrying(task: Any, task_run: Any, state: State) -> bool:
    """A store failing for a moment is worth retrying; a lake that says no is not."""
    try:
        state.result()
    except LakeError:
        return False
    except BaseException:  # noqa: BLE001 (any other failure is the store's, for a moment)
        return True
    return True


def storage_task(fn: Callable[P, R]) -> Task[P, R]:
    """A task whose storage calls are retried, whose results are never cached (every run must
    look at the lake as it is), and which gives up at once when the lake refuses the run."""
    return task(
        retries=RETRIES,
        retry_delay_seconds=RETRY_DELAYS,
        retry_condition_fn=_worth_retrying,
        cache_policy=NO_CACHE,
    )(fn)


@dataclass
class RunReport:
    """What a run did (SPEC section 9): printed, logged, stored in runs/, published."""

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

    def markdown(self) -> str:
        """The report as a Markdown table, for the Prefect artifact."""
        rows = [
            (k, v) for k, v in asdict(self).items() if k not in ("quarantined_by_reason", "ignored")
        ]
        rows += [(f"quarantined: {k}", v) for k, v in self.quarantined_by_reason.items()]
        rows += [("ignored", ", ".join(self.ignored) or "none")]
        return "| item | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def window_start_for(lake: Lake, now: datetime, retention_days: int) -> date:
    """The first retained date of a run at `now`: never earlier than the last run's (SPEC 8)."""
    start = (now.astimezone(UTC) - timedelta(days=retention_days)).date()
    last = lake.window_start
    return max(start, last) if last else start


def plan_files(lake: Lake, files: list[RawFile]) -> list[FilePlan]:
    """The listed files whose size or modified time differ from what the manifest holds."""
    manifest = lake.read_state(MANIFEST, Manifest)
    known = {row["path"]: row for row in manifest.iter_rows(named=True)}
    by_bytes = {row["sha256"]: row["received_at"] for row in known.values()}
    plans = []
    for raw in files:
        prior = known.get(raw.path)
        if prior and prior["size"] == raw.size and prior["modified"] == raw.modified:
            continue
        plans.append(FilePlan(raw, prior["sha256"] if prior else None, by_bytes))
    return plans


def batches(plans: list[FilePlan]) -> list[list[FilePlan]]:
    """Plans grouped so that one task reads many small files or a few large ones, and into at
    least BATCHES_AT_LEAST groups when there are files enough, so no worker idles at the end."""
    limit = min(BATCH_BYTES, sum(p.raw.size for p in plans) // BATCHES_AT_LEAST + 1)
    groups: list[list[FilePlan]] = [[]]
    size = 0
    for plan in plans:
        if groups[-1] and (size + plan.raw.size > limit or len(groups[-1]) >= BATCH_FILES):
            groups.append([])
            size = 0
        groups[-1].append(plan)
        size += plan.raw.size
    return [g for g in groups if g]


@dataclass
class BatchResult:
    """Files a batch read and the staging files holding their rows (events/date=D/..., and
    quarantine/...), relative to the run's staging folder."""

    files: list[FileResult]
    events: list[str]
    quarantine: list[str]
    read_again: set[str] = field(default_factory=set)
    """Files read again later in the run: their staged rows here are not used."""


def same_bytes_again(plans: list[FilePlan], results: list[BatchResult]) -> list[FilePlan]:
    """Files whose bytes another file first read in this run holds with an earlier mtime.

    Bytes first read in one run get the earliest last-modified time among their files as
    `received_at`, so dropping a file twice at once changes no answer; these files are read again
    with it.
    """
    earliest: dict[str, datetime] = {}
    read = [f for r in results for f in r.files if not f.unchanged]
    for f in read:
        earliest[f.sha256] = min(earliest.get(f.sha256, f.received_at), f.received_at)
    late = {f.path: f.sha256 for f in read if f.received_at > earliest[f.sha256]}
    return [
        FilePlan(
            p.raw,
            p.prior_sha256,
            {**p.known_received_at, late[p.raw.path]: earliest[late[p.raw.path]]},
        )
        for p in plans
        if p.raw.path in late
    ]


@storage_task
def list_raw(lake_url: str) -> tuple[list[RawFile], list[str]]:
    """List raw/ (files to consider, and other paths to report)."""
    return Lake(lake_url).list_raw()


class Stager:
    """Writes a batch's parsed rows to staging: events split by date, without the expired."""

    def __init__(self, lake: Lake, stage: str) -> None:
        self.lake, self.stage = lake, stage
        self.written: list[str] = []
        self.rejected: list[str] = []

    def __call__(self, events: pl.DataFrame, quarantine: pl.DataFrame) -> None:
        name = uuid.uuid4().hex
        if len(events):
            events = events.filter(~pl.col("expired")).drop("expired")
            # The one validation of the values of these rows: the commit only moves them.
            Events.validate(events.select(list(polars_schema(Events))))
            for (day,), part in events.partition_by("date", as_dict=True).items():
                path = f"events/date={day.isoformat()}/{name}.parquet"
                self.lake.write_parquet(part.drop("date"), STATE, STAGING, self.stage, path)
                self.written.append(path)
        if len(quarantine):
            path = f"quarantine/{name}.parquet"
            self.lake.write_parquet(quarantine, STATE, STAGING, self.stage, path)
            self.rejected.append(path)


@storage_task
def ingest_batch(
    lake_url: str, plans: list[FilePlan], window_start: date, stage: str
) -> BatchResult:
    """Read and parse a batch of raw files; stage their rows in the lake."""
    lake = Lake(lake_url)
    stager = Stager(lake, stage)
    batch = Batch(window_start=window_start, rows=STAGE_ROWS, stage=stager)
    results = [ingest_file(lake, plan, batch) for plan in plans]
    batch.flush()
    return BatchResult(results, stager.written, stager.rejected)


def _staged(lake: Lake, stage: str, results: list[BatchResult]) -> Staged:
    return Staged(
        lake,
        f"{STATE}/{STAGING}/{stage}",
        [(name, frozenset(r.read_again)) for r in results for name in r.events],
    )


def _rejected(lake: Lake, stage: str, results: list[BatchResult]) -> pl.DataFrame:
    frames = [pl.DataFrame(schema=polars_schema(Quarantine))]
    for result in results:
        for name in result.quarantine:
            rows = lake.read_parquet(STATE, STAGING, stage, name)
            frames.append(rows.filter(~pl.col("source").is_in(result.read_again)))
    return pl.concat(frames)


@storage_task
def drop_expired_events(lake: Lake, window_start: date) -> int:
    """Drop event partitions that left the window, before anything is rebuilt."""
    return expire_events(lake, window_start=window_start)


@storage_task
def merge(lake: Lake, results: list[BatchResult], window_start: date, stage: str) -> Merged:
    """Fold the staged rows into events, duplicates, counts, quarantine and the manifest."""
    files = [f for r in results for f in r.files if f.path not in r.read_again]
    sources = {f.path for f in files if not f.unchanged}
    staged = _staged(lake, stage, results)
    outcome = merge_events(lake, staged, sources=sources, window_start=window_start)
    merge_quarantine(
        lake, _rejected(lake, stage, results), sources=sources, window_start=window_start
    )
    update_manifest(lake, files, outcome.dates_of_sources)
    return outcome


@storage_task
def rollups(lake: Lake, outcome: Merged, window_start: date) -> int:
    """Match again the sessions of the users whose plays or stops changed; the sessions in the
    window."""
    if any(d >= window_start for d in outcome.changed_dates):
        return rebuild_sessions(lake, window_start=window_start, users=outcome.session_users)
    return count_sessions(lake, window_start=window_start)


@storage_task
def publish(lake: Lake, window_start: date, stage: str) -> int:
    """Make the run live (the commit point), then delete raw input that left the window."""
    deleted = expire_quarantine(lake, window_start=window_start)
    lake.window_start = window_start
    lake.commit()
    crash_point("published")
    lake.remove(STATE, STAGING, stage)
    return deleted + expire_raw(lake, window_start=window_start)


@storage_task
def recover(lake: Lake) -> int:
    """Finish or undo what a killed run left: publish its snapshot to the Delta logs, delete
    unreferenced files and staging; the count deleted."""
    lake.publish_tables()
    lake.remove(STATE, STAGING)
    return lake.delete_orphans()


def _scheduled_start() -> datetime:
    """A scheduled run's scheduled start time (a run started by hand: about now)."""
    scheduled = prefect_flow_run.scheduled_start_time
    if scheduled is None:
        return datetime.now(UTC)
    return datetime.fromtimestamp(scheduled.timestamp(), UTC)


LOCAL_DASK = "local"
"""`--dask local`: a LocalCluster of two worker processes on this machine."""


def dask_runner(dask_address: str) -> TaskRunner[Any]:
    """A Dask cluster's task runner: an address, or `local` for a cluster made here."""
    from prefect_dask import DaskTaskRunner

    if dask_address == LOCAL_DASK:
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": 2,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    return DaskTaskRunner(address=dask_address)


def _ingest_all(
    lake_url: str, groups: list[list[FilePlan]], window_start: date, stage: str
) -> list[BatchResult]:
    futures = [ingest_batch.submit(lake_url, group, window_start, stage) for group in groups]
    return [f.result() for f in futures]


@flow(name="ingest")
def ingest(
    lake_url: str, groups: list[list[FilePlan]], window_start: date, stage: str
) -> list[BatchResult]:
    """Ingest batches of raw files in parallel on the flow's task runner (a Dask cluster)."""
    return _ingest_all(lake_url, groups, window_start, stage)


def ingest_batches(
    lake_url: str,
    groups: list[list[FilePlan]],
    window_start: date,
    stage: str,
    dask_address: str | None,
) -> list[BatchResult]:
    """Ingest on the pipeline's threads, or in a subflow on Dask (a subflow costs about 2 s)."""
    if not groups:
        return []
    if not dask_address:
        return _ingest_all(lake_url, groups, window_start, stage)
    on_dask = ingest.with_options(task_runner=dask_runner(dask_address))
    return on_dask(lake_url, groups, window_start, stage)


@flow(name="pipeline", log_prints=False, task_runner=THREADS)
def pipeline(
    lake: str | None = None,
    now: datetime | None = None,
    retention_days: int | None = None,
    dask_address: str | None = None,
    lock_wait: float = LOCK_WAIT,
) -> dict[str, Any]:
    """Ingest new or changed raw files, rebuild what they affect, apply retention; the report.

    One run at a time per lake: a run waits up to `lock_wait` seconds for another to finish,
    then skips (its report says `skipped`).
    """
    settings = Settings.from_env()
    lake_url = resolve_lake(lake)
    now = (now or _scheduled_start()).astimezone(UTC)
    days = settings.retention_days if retention_days is None else retention_days
    run_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    store = Lake(lake_url)
    lock = LakeLock(store, run_id, lease=timedelta(seconds=settings.lock_lease))
    logger = get_run_logger()
    if not lock.acquire(wait=lock_wait):
        logger.warning("Another run holds the lock of %s; this run skipped it", lake_url)
        return asdict(RunReport(run_id, now.isoformat(), "", skipped=True))
    if lock.waited >= POLL_EVERY:
        logger.info("Waited %.0f s for another run on %s to finish", lock.waited, lake_url)
    try:
        report = _locked_run(store, run_id, now, days, dask_address)
    finally:
        lock.release()
    report.waited_for_lock = round(lock.waited, 1)
    store.write_json(asdict(report), RUNS, f"{run_id}.json")
    logger.info("Track run report: %s", asdict(report))
    create_markdown_artifact(report.markdown(), key="track-run-report", description="Track run")
    return asdict(report)


DEPLOYMENT = "track"


def deployment(lake: str, cron: str | None = DEFAULT_CRON) -> RunnerDeployment:
    """The `pipeline/track` deployment: the pipeline on a cron schedule, lake as a parameter,
    and also run whenever the HTTP API moves a file into this lake's raw/ (its Prefect event)."""
    moved = DeploymentEventTrigger(
        name="new raw file",
        expect={RAW_FILE_CREATED},
        match={"prefect.resource.id": lake_resource(lake)},
    )
    made = pipeline.to_deployment(
        name=DEPLOYMENT, cron=cron, parameters={"lake": lake}, triggers=[moved]
    )
    return cast(RunnerDeployment, made)  # to_deployment is sync here, called outside a loop


def _locked_run(
    store: Lake, run_id: str, now: datetime, days: int, dask_address: str | None
) -> RunReport:
    """The run itself, under the lake's lock."""
    store.begin()  # claims the lake's next snapshot: an earlier, stalled run can't commit now
    recover(store)
    window_start = window_start_for(store, now, days)
    files, ignored = list_raw(store.url)
    plans = plan_files(store, files)
    results = ingest_batches(store.url, batches(plans), window_start, run_id, dask_address)
    again = same_bytes_again(plans, results)
    if again:
        for result in results:
            result.read_again = {p.raw.path for p in again}
        results += ingest_batches(store.url, batches(again), window_start, run_id, dask_address)
    crash_point("ingested")
    deleted = drop_expired_events(store, window_start)
    outcome = merge(store, results, window_start, run_id)
    crash_point("merged")
    sessions = rollups(store, outcome, window_start)
    crash_point("rolled-up")
    deleted += publish(store, window_start, run_id)
    return _report(run_id, now, window_start, results, outcome, deleted, sessions, ignored)


def _report(
    run_id: str,
    now: datetime,
    window_start: date,
    results: list[BatchResult],
    outcome: Merged,
    deleted: int,
    sessions: int,
    ignored: list[str],
) -> RunReport:
    files = [f for r in results for f in r.files if not f.unchanged and f.path not in r.read_again]
    by_reason = {reason: sum(f.quarantined.get(reason, 0) for f in files) for reason in REASONS}
    return RunReport(
        run_id=run_id,
        now=now.isoformat(),
        window_start=window_start.isoformat(),
        files=len(files),
        lines=sum(f.lines for f in files),
        accepted=outcome.accepted,
        duplicates=outcome.duplicates,
        expired=sum(f.expired for f in files),
        quarantined=sum(by_reason.values()),
        quarantined_by_reason={k: v for k, v in by_reason.items() if v},
        clamped=outcome.clamped,
        truncated=outcome.truncated,
        sessions=sessions,
        partitions_deleted=deleted,
        ignored=ignored,
    )

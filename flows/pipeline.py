"""The `pipeline` flow: the Prefect wiring of a run. Each step is a thin task over the lake
layer (`track.lake`), retried where it does I/O; the flow takes the lake's lock, calls the steps
in order and reports.

The steps take the `Lake` that holds the run's private snapshot (its claim, `Lake.begin`): they
run in the flow's own process, one after another, and only the commit makes their writes
visible. Their heavy parts (the ingest batches, the rewrite of each event date, the sessions of
each shard of users) are calls that can run anywhere: on the flow's threads, or with `--dask`
as tasks on a Dask cluster, each on a fork of the run's lake (`Lake.fork`) whose changes the
step takes back. A step that fails leaves the run's snapshot as it found it, so its retry
starts again from there.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.futures import as_completed
from prefect.runtime import flow_run as prefect_flow_run
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from track import settings
from track.errors import LakeError
from track.flows import progress as progressing
from track.flows.announce import progress_artifact, publish
from track.flows.progress import RunProgress
from track.lake import ingest as ingesting
from track.lake.faults import crash_point
from track.lake.ingest import BatchResult, FilePlan, Staged, counted_files, staging_folder
from track.lake.lock import LakeLock
from track.lake.merge import (
    Merged,
    Spread,
    count_sessions,
    merge_events,
    merge_quarantine,
    rebuild_sessions,
    update_manifest,
)
from track.lake.report import RunReport, run_report
from track.lake.retention import expire_events, expire_quarantine, expire_raw, window_start_for
from track.lake.store import RAW_FILE_CREATED, RUNS, STAGING, STATE, Lake, RawFile, lake_resource
from track.settings import ALERT_QUARANTINE, DEFAULT_CRON, LOCK_WAIT, Settings, resolve_lake

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
    """A task whose storage calls are retried (as often as TRACK_RETRY_DELAYS says: `retried`),
    whose results are never cached (every run must look at the lake as it is), and which gives
    up at once when the lake refuses the run."""
    delays = list(Settings().retry_delays)
    return task(
        retries=len(delays),
        retry_delay_seconds=delays,
        retry_condition_fn=_worth_retrying,
        cache_policy=NO_CACHE,
    )(fn)


def retried(step: Task[P, R], delays: tuple[float, ...]) -> Task[P, R]:
    """A storage task with the retries of this run's settings (read once, when it starts)."""
    return step.with_options(retries=len(delays), retry_delay_seconds=list(delays))


@storage_task
def recover(lake: Lake) -> int:
    """Finish or undo what a killed run left: publish its snapshot to the Delta logs, delete
    unreferenced files and staging; the count deleted."""
    lake.publish_tables()
    lake.remove(STATE, STAGING)
    return lake.delete_orphans()


@storage_task
def list_raw(lake_url: str) -> tuple[list[RawFile], list[str]]:
    """List raw/ (files to consider, and other paths to report)."""
    return Lake(lake_url).list_raw()


@storage_task
def ingest_batch(
    lake_url: str, plans: list[FilePlan], window_start: date, run_id: str
) -> BatchResult:
    """Read and parse a batch of raw files; stage their rows in the lake."""
    return ingesting.ingest_batch(lake_url, plans, window_start, run_id)


@storage_task
def drop_expired_events(lake: Lake, window_start: date) -> int:
    """Drop event partitions that left the window, before anything is merged."""
    return expire_events(lake, window_start=window_start)


CLUSTERS: dict[str, Spread] = {}
"""The Dask cluster of each run of this process that has one, by run id, as a Spread. Not a
task parameter: the context of a task, parameters included, travels with each task it submits."""


@storage_task
def merge(lake: Lake, results: list[BatchResult], window_start: date, run_id: str) -> Merged:
    """Fold the staged rows into events, duplicates, counts, quarantine and the manifest (each
    event date a task on the run's Dask cluster, if it has one)."""
    spread = CLUSTERS.get(run_id)
    files = counted_files(results)
    sources = {f.path for f in files if not f.unchanged}
    work = lake.fork()  # a failed attempt leaves the run's snapshot as it was
    staged = Staged.of(work, run_id, results)
    merged = merge_events(work, staged, sources=sources, window_start=window_start, spread=spread)
    merge_quarantine(work, staged.rejected(), sources=sources, window_start=window_start)
    update_manifest(work, files, merged.dates_of_sources)
    lake.join(work.changes())
    return merged


@storage_task
def rollups(lake: Lake, merged: Merged, window_start: date, run_id: str) -> int:
    """Match again the sessions around the plays and stops that changed (in shards of users,
    a task each, on the run's Dask cluster if it has one); the sessions in the window."""
    spread = CLUSTERS.get(run_id)
    if not any(d >= window_start for d in merged.changed_dates):
        return count_sessions(lake, window_start=window_start)
    work = lake.fork()
    shards = 1 if spread is None else settings.SESSION_SHARDS
    found = rebuild_sessions(
        work,
        window_start=window_start,
        changed=merged.session_changes,
        spread=spread,
        shards=shards,
        folder=f"{staging_folder(run_id)}/plays",
    )
    lake.join(work.changes())
    return found


@task(cache_policy=NO_CACHE)
def calls(function: Callable[..., Any], each: list[tuple[Any, ...]]) -> list[Any]:
    """Some calls of a step's heavy part, one after another, on a Dask worker."""
    return [function(*args) for args in each]


def on_runner(runner: TaskRunner[Any]) -> Spread:
    """A Spread (track.lake.merge) that runs the calls as at most CLUSTER_TASKS tasks of
    `runner` (a Dask cluster's), named after their function: a task costs a tenth of a second
    or more (its run is recorded in Prefect, its arguments pickled), so a task takes a few
    calls when there are many."""

    def spread(function: Callable[..., Any], each: list[tuple[Any, ...]]) -> list[Any]:
        step = calls.with_options(name=function.__name__)
        size = -(-len(each) // settings.CLUSTER_TASKS)  # ceiling
        groups = [each[start : start + size] for start in range(0, len(each), size or 1)]
        # Submitted as tasks of the flow, not of the step calling: a task's context (which
        # travels with what it submits) holds what does not pickle.
        outside = TaskRunContext.__var__.set(cast(TaskRunContext, None))
        try:
            futures = [runner.submit(step, {"function": function, "each": g}) for g in groups]
        finally:
            TaskRunContext.__var__.reset(outside)
        return [result for future in futures for result in future.result()]

    return spread


@storage_task
def commit(lake: Lake, window_start: date, run_id: str) -> int:
    """Commit the run (its snapshot becomes the lake's), then delete raw input that left the
    window; the partitions deleted."""
    deleted = expire_quarantine(lake, window_start=window_start)
    lake.window_start = window_start
    lake.commit()
    crash_point("published")
    lake.remove(staging_folder(run_id))
    return deleted + expire_raw(lake, window_start=window_start)


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


def ingest_batches(
    lake_url: str,
    plans: list[FilePlan],
    window_start: date,
    run_id: str,
    retry_delays: tuple[float, ...],
    runner: TaskRunner[Any] | None,
) -> list[BatchResult]:
    """Ingest batches of raw files in parallel: as tasks of `runner` (a Dask cluster's), or of
    the pipeline's own thread pool."""
    step = retried(ingest_batch, retry_delays)
    futures = []
    for group in ingesting.batches(plans):
        if runner is None:
            futures.append(step.submit(lake_url, group, window_start, run_id))
        else:
            parameters = {"lake_url": lake_url, "plans": group, "window_start": window_start}
            futures.append(runner.submit(step, {**parameters, "run_id": run_id}))
    progress = progressing.of(run_id)
    for done in as_completed(futures):
        if progress is not None:
            progress.ingested(done.result())
    return [f.result() for f in futures]


THREADS: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=settings.INGEST_WORKERS)


@flow(name="pipeline", log_prints=False, task_runner=THREADS)
def pipeline(
    lake: str | None = None,
    now: datetime | None = None,
    retention_days: int | None = None,
    dask_address: str | None = None,
    lock_wait: float = LOCK_WAIT,
    alert_quarantine: float = ALERT_QUARANTINE,
) -> dict[str, Any]:
    """Ingest new or changed raw files, rebuild what they affect, apply retention; the report.

    One run at a time per lake: a run waits up to `lock_wait` seconds for another to finish,
    then skips (its report says `skipped`). A run that quarantined more than
    `alert_quarantine` percent of its lines says so in an event (flows.announce).
    """
    config = Settings.from_env()
    lake_url = resolve_lake(lake)
    now = (now or _scheduled_start()).astimezone(UTC)
    days = config.retention_days if retention_days is None else retention_days
    run_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    store = Lake(lake_url)
    lock = LakeLock(store, run_id, lease=timedelta(seconds=config.lock_lease))
    logger = get_run_logger()
    if not lock.acquire(wait=lock_wait):
        logger.warning("Another run holds the lock of %s; this run skipped it", lake_url)
        return asdict(RunReport(run_id, now.isoformat(), "", skipped=True))
    if lock.waited >= settings.LOCK_POLL_SECONDS:
        logger.info("Waited %.0f s for another run on %s to finish", lock.waited, lake_url)
    try:
        with RunProgress.of_run(run_id, progress_artifact(run_id)) as progress:
            report = _locked_run(store, config, run_id, now, days, dask_address, progress)
    finally:
        lock.release()
    report.waited_for_lock = round(lock.waited, 1)
    store.write_json(asdict(report), RUNS, f"{run_id}.json")
    logger.info("Track run report: %s", asdict(report))
    publish(report, lake_url, alert_quarantine)
    return asdict(report)


def _locked_run(
    store: Lake,
    config: Settings,
    run_id: str,
    now: datetime,
    days: int,
    dask: str | None,
    progress: RunProgress,
) -> RunReport:
    """The run itself, under the lake's lock: the steps of README's "What a run does"."""
    store.begin()  # claims the lake's next snapshot: an earlier, stalled run can't commit now
    retried(recover, config.retry_delays)(store)
    window_start = window_start_for(store, now, days)
    files, ignored = retried(list_raw, config.retry_delays)(store.url)
    plans = ingesting.plan_files(store, files)
    progress.planned(plans)
    with ExitStack() as stack:
        runner = stack.enter_context(dask_runner(dask)) if dask else None
        if runner is not None:
            CLUSTERS[run_id] = on_runner(runner)
            stack.callback(CLUSTERS.pop, run_id, None)
        ingest = functools.partial(
            ingest_batches,
            store.url,
            window_start=window_start,
            run_id=run_id,
            retry_delays=config.retry_delays,
            runner=runner,
        )
        results = ingest(plans)
        again = ingesting.same_bytes_again(plans, results)
        if again:
            progress.read_again(again)
            for result in results:
                result.read_again = {p.raw.path for p in again}
            results += ingest(again)
        crash_point("ingested")
        progress.step("expire")
        deleted = retried(drop_expired_events, config.retry_delays)(store, window_start)
        progress.step("merge")
        merged = retried(merge, config.retry_delays)(store, results, window_start, run_id)
        crash_point("merged")
        progress.step("rollups")
        sessions = retried(rollups, config.retry_delays)(store, merged, window_start, run_id)
        crash_point("rolled-up")
    progress.step("commit")
    deleted += retried(commit, config.retry_delays)(store, window_start, run_id)
    progress.finished()
    report = run_report(
        run_id,
        now,
        window_start,
        results,
        merged,
        sessions=sessions,
        deleted=deleted,
        ignored=ignored,
    )
    report.seconds = progress.seconds
    return report


DEPLOYMENT = "track"


def deployment(
    lake: str, cron: str | None = DEFAULT_CRON, alert_quarantine: float = ALERT_QUARANTINE
) -> RunnerDeployment:
    """The `pipeline/track` deployment: the pipeline on a cron schedule, lake as a parameter,
    and also run whenever the HTTP API moves a file into this lake's raw/ (its Prefect event)."""
    moved = DeploymentEventTrigger(
        name="new raw file",
        expect={RAW_FILE_CREATED},
        match={"prefect.resource.id": lake_resource(lake)},
    )
    made = pipeline.to_deployment(
        name=DEPLOYMENT,
        cron=cron,
        parameters={"lake": lake, "alert_quarantine": alert_quarantine},
        triggers=[moved],
    )
    return cast(RunnerDeployment, made)  # to_deployment is sync here, called outside a loop

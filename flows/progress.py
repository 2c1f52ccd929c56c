"""How far a run has got: the files and bytes ingested of the total, then each later step.

A run publishes it as a Prefect progress artifact (`track-run-progress`) and hands it to whoever
watches in this process: `track run`'s terminal display (`watching`). The ingest reports each
batch as it finishes, on the flow's threads or, in its subflow, from the results the Dask
cluster sends back, so the run is found by its id (`of`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from track.lake.ingest import BatchResult, FilePlan

STEPS = ("ingest", "expire", "merge", "rollups", "commit")
"""A run's steps in order (README, What a run does), as the progress names them."""
INGEST_SHARE = 0.8
"""The share of a run's progress its ingest stands for (most of a run's time, by bytes); the
later steps share the rest equally."""
ARTIFACT_SECONDS = 1.0
"""The Prefect artifact is updated at most this often while files are ingested (each update is
a call to the server), and at every step."""


@dataclass(frozen=True)
class Progress:
    """A run's progress at one moment."""

    run_id: str
    files: int = 0
    files_total: int = 0
    bytes: int = 0
    bytes_total: int = 0
    step: str = "ingest"
    done: bool = False

    @property
    def fraction(self) -> float:
        """How far the run has got, from 0 to 1."""
        if self.done:
            return 1.0
        if self.step == "ingest":
            return INGEST_SHARE * (self.bytes / self.bytes_total if self.bytes_total else 0.0)
        later = STEPS.index(self.step) - 1  # later steps finished
        return INGEST_SHARE + (1 - INGEST_SHARE) * later / (len(STEPS) - 1)


Watcher = Callable[[Progress], None]
_watchers: list[Watcher] = []
_runs: dict[str, RunProgress] = {}


@contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Call `watcher` with every change of progress of the runs of this process meanwhile."""
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)


def of(run_id: str) -> RunProgress | None:
    """The progress of a run going on in this process, if any."""
    return _runs.get(run_id)


class RunProgress:
    """The progress of one run: told what happens, it tells the watchers and Prefect."""

    def __init__(self, run_id: str, artifact: Callable[[float, str], Any] | None) -> None:
        self.now = Progress(run_id)
        self._artifact = artifact
        self._published = 0.0
        self._lock = threading.Lock()
        self._began = time.monotonic()
        self.seconds: dict[str, float] = {}
        """The seconds each step took, once it ended (for the run report)."""

    @classmethod
    @contextmanager
    def of_run(
        cls, run_id: str, artifact: Callable[[float, str], Any] | None
    ) -> Iterator[RunProgress]:
        """A run's progress, findable by its id while the run goes on. `artifact(fraction,
        description)` publishes it to Prefect."""
        progress = cls(run_id, artifact)
        _runs[run_id] = progress
        try:
            yield progress
        finally:
            _runs.pop(run_id, None)

    def planned(self, plans: list[FilePlan]) -> None:
        """The files this run will ingest."""
        total = sum(plan.raw.size for plan in plans)
        self._change(force=True, files_total=len(plans), bytes_total=total)

    def read_again(self, plans: list[FilePlan]) -> None:
        """Files to be read a second time (their bytes arrived twice): more to ingest."""
        now = self.now
        extra = sum(plan.raw.size for plan in plans)
        self._change(
            force=True,
            files_total=now.files_total + len(plans),
            bytes_total=now.bytes_total + extra,
        )

    def ingested(self, result: BatchResult) -> None:
        """A batch of files finished."""
        now = self.now
        size = sum(f.size for f in result.files)
        self._change(files=now.files + len(result.files), bytes=now.bytes + size)

    def step(self, name: str) -> None:
        """The run begins a later step (one of STEPS)."""
        self._ended()
        self._change(force=True, step=name)

    def finished(self) -> None:
        self._ended()
        self._change(force=True, done=True)

    def _ended(self) -> None:
        moment = time.monotonic()
        self.seconds[self.now.step] = round(moment - self._began, 3)
        self._began = moment

    def _change(self, *, force: bool = False, **fields: Any) -> None:
        with self._lock:
            self.now = now = replace(self.now, **fields)
            for watcher in list(_watchers):
                watcher(now)
            if self._artifact is None:
                return
            moment = time.monotonic()
            if force or moment - self._published >= ARTIFACT_SECONDS:
                self._published = moment
                self._artifact(now.fraction, describe(now))


def describe(now: Progress) -> str:
    """One line of what a run is doing, for the artifact's description."""
    if now.done:
        return f"done: {now.files} files, {now.bytes:,} bytes ingested"
    if now.step == "ingest":
        files = f"{now.files} of {now.files_total} files"
        return f"ingest: {files}, {now.bytes:,} of {now.bytes_total:,} bytes"
    return f"{now.step} ({STEPS.index(now.step) + 1} of {len(STEPS)} steps)"

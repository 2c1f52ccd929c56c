"""The HTTP API's spool: records made durable on local disk before they are acknowledged, then
moved into the lake's raw/ as whole files (SPEC section 11).

    <spool>/date=YYYY-MM-DD/api-<first record's instant>-<random>.ndjson

A spool file holds the records received on one UTC date, one NDJSON line each, and is named
once, when it is created, with the name it will have in raw/date=D/: moved twice after a
crash, it lands under the same name with the same bytes, so it changes no answer.

- `append` hands a line to the writer thread and returns once it is written and `fsync`ed:
  the lines of all requests that arrive while one flush runs share the next (group commit).
- A spool file is closed once its first record is `max_age` seconds old (or it holds
  `max_file_bytes`), then moved by the mover thread through `Lake.put_raw`, and deleted only
  once the store holds it. A move that fails is tried again, with a growing pause.
- Each open spool file carries an exclusive `flock` for as long as its process lives, so
  several API processes can share one spool folder: a file nobody holds is an earlier
  process's, and any process moves it (its half-written last line cut, never moved): at start,
  and then every `max_age` seconds, in case a sibling died.
- Bounded: past `max_pending` requests waiting for a flush or `max_bytes` on disk, `append`
  raises SpoolFull at once; a disk that fails raises SpoolBroken. Nothing is accepted and then
  dropped.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from track.errors import SpoolBroken, SpoolFull
from track.lake.store import Lake, fsync_folder, partition_date
from track.settings import SPOOL_FILE_BYTES, SPOOL_LIMIT, SPOOL_MAX_AGE, SPOOL_MAX_PENDING

log = logging.getLogger("track.api.spool")

PREFIX, SUFFIX = "api-", ".ndjson"


Moved = Callable[[str, int], None]
"""Told of each file moved into the lake: its path under raw/ and its size in bytes."""


@dataclass
class SpoolFile:
    """One spool file, open and locked by this process until it is moved and deleted."""

    day: str
    name: str
    path: str
    fd: int
    opened: float = field(default_factory=time.monotonic)
    size: int = 0
    attempts: int = 0
    next_try: float = 0.0

    @property
    def rel(self) -> str:
        """Its path under raw/ (and under the spool)."""
        return f"date={self.day}/{self.name}"


@dataclass
class _Waiting:
    day: str
    data: bytes
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


def new_name(now: datetime) -> str:
    """A spool (and raw) file name that no other file ever has: the instant, then 128 random
    bits."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    return f"{PREFIX}{stamp}Z-{uuid.uuid4().hex}{SUFFIX}"


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # the request went away (client gone, shut down)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class Spool:
    """A spool folder feeding one lake; `start` it, `append` to it, `close` it."""

    def __init__(
        self,
        folder: str,
        lake: Lake,
        *,
        max_age: float = SPOOL_MAX_AGE,
        max_file_bytes: int = SPOOL_FILE_BYTES,
        max_pending: int = SPOOL_MAX_PENDING,
        max_bytes: int = SPOOL_LIMIT,
        on_moved: Moved | None = None,
    ) -> None:
        self.folder, self.lake = os.path.abspath(folder), lake
        self.max_age, self.max_file_bytes = max_age, max_file_bytes
        self.max_pending, self.max_bytes = max_pending, max_bytes
        self.on_moved = on_moved
        self._lock = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._open: dict[str, SpoolFile] = {}  # by day; only the writer thread touches them
        self._ready: list[SpoolFile] = []  # closed, to move; guarded by _lock
        self._owned: set[str] = set()  # paths of this process's files
        self._bytes = 0  # on disk and waiting, guarded by _lock
        self._stopping = False
        self._broken: str | None = None
        self._moving = threading.Event()
        self._threads: list[threading.Thread] = []

    # The requests' side ----------------------------------------------------------------------

    async def append(self, day: str, data: bytes) -> None:
        """Return once `data` (whole NDJSON lines of records received on `day`) is written and
        flushed to disk; raise SpoolFull or SpoolBroken when it cannot be."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._stopping:
                raise SpoolFull("the API is shutting down")
            if len(self._waiting) >= self.max_pending:
                raise SpoolFull(f"{len(self._waiting)} requests are waiting for the disk")
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFull(
                    f"the spool holds {self._bytes} bytes not yet in the lake (at most"
                    f" {self.max_bytes}): is the lake reachable?"
                )
            self._bytes += len(data)
            self._waiting.append(_Waiting(day, data, future, loop))
            self._lock.notify_all()
        await future

    @property
    def problem(self) -> str | None:
        """Why the spool cannot take writes now, or None when it can."""
        with self._lock:
            if self._stopping:
                return "shutting down"
            if self._broken:
                return self._broken
            if self._bytes >= self.max_bytes:
                return f"full: {self._bytes} bytes not yet in the lake"
        return None

    # Life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the folder, check that it takes writes, and start the writer and the mover
        (which first moves whatever earlier processes left)."""
        os.makedirs(self.folder, exist_ok=True)
        probe = os.path.join(self.folder, f".probe-{uuid.uuid4().hex}")
        with open(probe, "wb") as f:
            os.fsync(f.fileno())
        os.remove(probe)
        for target in (self._write_loop, self._move_loop):
            thread = threading.Thread(target=target, name=f"track-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop taking records, flush what waits, close every file and move them all (for at
        most `timeout` seconds); whether everything reached the lake."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = len(self._ready) + len(self._open)
        if left:
            log.warning("%d spool files are not yet in the lake; the next start moves them", left)
        return left == 0

    # The writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                if not self._waiting and not self._stopping:
                    self._lock.wait(timeout=self._until_next_roll())
                batch, self._waiting = self._waiting, []
                stopping = self._stopping
            if batch:
                self._write(batch)
            self._roll(everything=stopping)
            if stopping:
                with self._lock:
                    if not self._waiting:
                        self._moving.set()
                        return

    def _until_next_roll(self) -> float:
        if not self._open:
            return 1.0
        oldest = min(f.opened for f in self._open.values())
        return max(0.01, min(1.0, oldest + self.max_age - time.monotonic()))

    def _write(self, batch: list[_Waiting]) -> None:
        by_day: dict[str, list[_Waiting]] = {}
        for waiting in batch:
            by_day.setdefault(waiting.day, []).append(waiting)
        for day, group in by_day.items():
            error: Exception | None = None
            try:
                spool_file = self._open.get(day) or self._create(day)
                data = b"".join(w.data for w in group)
                view = memoryview(data)
                while view:
                    view = view[os.write(spool_file.fd, view) :]
                spool_file.size += len(data)
                os.fsync(spool_file.fd)
            except OSError as exc:
                log.exception("the spool could not write or flush %d records", len(group))
                error = SpoolBroken(f"the spool's disk failed: {exc}")
                self._broken = str(error)
                with self._lock:
                    self._bytes -= sum(len(w.data) for w in group)
                # No later line may follow a partial one: close the file (its last line is cut).
                if day in self._open:
                    self._close(self._open.pop(day))
            else:
                self._broken = None
            for waiting in group:
                try:
                    waiting.loop.call_soon_threadsafe(_settle, waiting.future, error)
                except RuntimeError:  # its event loop has closed: nobody waits any more
                    pass

    def _create(self, day: str) -> SpoolFile:
        folder = os.path.join(self.folder, f"date={day}")
        os.makedirs(folder, exist_ok=True)
        name = new_name(datetime.now(UTC))
        path = os.path.join(folder, name)
        # Locked before it has its name: a file under its name that nobody holds is an earlier
        # process's to any mover, this process's own included, which would take a new one.
        aside = os.path.join(folder, f".new-{uuid.uuid4().hex}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(aside, path)  # the name is new: nothing is replaced
        fsync_folder(folder)  # the name survives a power cut too
        spool_file = SpoolFile(day, name, path, fd)
        self._open[day] = spool_file
        with self._lock:
            self._owned.add(path)
        return spool_file

    def _roll(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        for day, spool_file in list(self._open.items()):
            old = now - spool_file.opened >= self.max_age
            if everything or old or spool_file.size >= self.max_file_bytes:
                self._close(self._open.pop(day))

    def _close(self, spool_file: SpoolFile) -> None:
        with self._lock:
            self._ready.append(spool_file)
        self._moving.set()

    # The mover thread ------------------------------------------------------------------------

    def _move_loop(self) -> None:
        self._adopt_orphans()
        last_scan = time.monotonic()
        while True:
            self._moving.wait(timeout=1.0)
            self._moving.clear()
            with self._lock:
                stopping, writer_done = self._stopping, not self._threads[0].is_alive()
                now = time.monotonic()
                due = [f for f in self._ready if f.next_try <= now or stopping]
            for spool_file in due:
                self._move(spool_file)
            if now - last_scan > max(1.0, self.max_age):  # a sibling process may have died
                self._adopt_orphans()
                last_scan = now
            if stopping and writer_done:
                with self._lock:
                    if all(f.attempts >= 3 for f in self._ready):  # none left, or the store
                        return  # is away: the next start moves what is left

    def _move(self, spool_file: SpoolFile) -> None:
        try:
            with open(spool_file.path, "rb") as f:
                data = f.read()
            data = data[: data.rfind(b"\n") + 1]  # a half-written last line is never moved
            if data:
                self.lake.put_raw(spool_file.rel, data)
        except Exception as exc:  # the store is away: keep it, try again later
            spool_file.attempts += 1
            pause = min(30.0, 2.0**spool_file.attempts)
            spool_file.next_try = time.monotonic() + pause
            log.warning("moving %s failed (%s); trying again in %.0f s", spool_file.rel, exc, pause)
            return
        try:
            os.remove(spool_file.path)
        except FileNotFoundError:  # an orphan that another process moved as well
            pass
        fsync_folder(os.path.dirname(spool_file.path))
        os.close(spool_file.fd)
        with self._lock:
            self._ready.remove(spool_file)
            self._owned.discard(spool_file.path)
            self._bytes -= spool_file.size
        log.info("moved %s (%d bytes) into the lake", spool_file.rel, len(data))
        if data and self.on_moved is not None:
            try:
                self.on_moved(spool_file.rel, len(data))
            except Exception:
                log.exception("telling of %s failed", spool_file.rel)

    def _adopt_orphans(self) -> None:
        """Take the spool files no living process holds (left by one that died), to move."""
        for folder in sorted(os.listdir(self.folder)):
            day = partition_date(folder)
            if day is None:
                continue
            for name in sorted(os.listdir(os.path.join(self.folder, folder))):
                path = os.path.join(self.folder, folder, name)
                with self._lock:
                    if path in self._owned or not name.startswith(PREFIX):
                        continue
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # its owner just moved it
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)  # a living process holds it
                    continue
                size = os.fstat(fd).st_size
                spool_file = SpoolFile(day.isoformat(), name, path, fd, size=size)
                with self._lock:
                    self._owned.add(path)
                    self._bytes += size
                    self._ready.append(spool_file)
                log.info("moving %s, left by an earlier process", spool_file.rel)

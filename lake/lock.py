"""A lock that lives in the lake itself, so that two runs on one lake never overlap, whatever
process, machine or Prefect server they run from.

Holders take numbered generations: `_state/lock/<n>.json`. A run holds the lock when it created
the newest generation, and creating one is exclusive (`O_EXCL` locally, `If-None-Match: *` on S3),
so of two runs racing for generation n only one gets it. A generation is free once its holder
marks it released or lets its lease lapse (a killed run stops renewing it): a stale lock delays
the next run by at most the lease, never forever.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

from track import settings
from track.lake.store import STATE, Lake

log = logging.getLogger("track.lock")

LOCKS = f"{STATE}/lock"


class LakeLock:
    """The lake's run lock: `acquire(wait=...)`, then `release()`."""

    def __init__(self, lake: Lake, owner: str, *, lease: timedelta) -> None:
        """`lease`: how long a claim lasts without renewal (renewed four times per lease)."""
        self.lake = lake
        self.owner = owner
        self.lease = lease
        self.generation: int | None = None
        self.waited = 0.0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _path(self, generation: int) -> str:
        return self.lake.path(LOCKS, f"{generation:012d}.json")

    def _generations(self) -> list[int]:
        self.lake.fs.invalidate_cache()
        try:
            names = self.lake.fs.ls(self.lake.path(LOCKS), detail=False)
        except FileNotFoundError:
            return []
        return sorted(int(n.rsplit("/", 1)[-1][:-5]) for n in names if n.endswith(".json"))

    def _claim(self, released: bool = False) -> dict[str, object]:
        expires = datetime.now(UTC) + self.lease
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": expires.isoformat(),
            "released": released,
        }

    def _rewrite(self, released: bool = False) -> None:
        # Only the holder rewrites its generation, and atomically: readers never see half.
        assert self.generation is not None
        self.lake.write_json(self._claim(released), LOCKS, f"{self.generation:012d}.json")

    def _is_free(self, generation: int) -> bool:
        try:
            claim = json.loads(self.lake.fs.cat_file(self._path(generation)))
        except FileNotFoundError:
            return True
        except ValueError:
            return False  # being written: look again
        return claim["released"] or datetime.fromisoformat(claim["expires"]) < datetime.now(UTC)

    def _create(self, generation: int) -> bool:
        target = self._path(generation)
        data = json.dumps(self._claim()).encode()
        try:
            if self.lake.local:
                self.lake.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                with open(target, "xb") as f:
                    f.write(data)
            else:
                self.lake.fs.pipe_file(target, data, mode="create")
        except FileExistsError:
            return False
        return True

    def acquire(self, wait: float) -> bool:
        """Take the lock, waiting up to `wait` seconds for another run to finish."""
        start = time.monotonic()
        while True:
            latest = max(self._generations(), default=0)
            if (latest == 0 or self._is_free(latest)) and self._create(latest + 1):
                self.generation = latest + 1
                self.waited = time.monotonic() - start
                self._renewer = threading.Thread(target=self._renew, daemon=True)
                self._renewer.start()
                return True
            if time.monotonic() - start >= wait:
                return False
            time.sleep(settings.LOCK_POLL_SECONDS)

    def _renew(self) -> None:
        while not self._stop.wait(max(self.lease.total_seconds() / 4, 0.05)):
            try:
                self._rewrite()
            except Exception as exc:  # noqa: BLE001 (a dead renewer would let the lease lapse)
                # The store failing for a moment: the claim still has three renewals' time.
                log.warning("Could not renew the lake lock (%s); trying again", exc)

    def release(self) -> None:
        """Mark the generation released and forget older ones."""
        if self.generation is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._rewrite(released=True)
            for old in self._generations():
                if old < self.generation:
                    self.lake.fs.rm_file(self._path(old))
        except OSError as exc:
            # The store is failing (often the reason the run ends): the lease lapses instead.
            log.warning("Could not release the lake lock (%s); it lapses in %s", exc, self.lease)
        self.generation = None

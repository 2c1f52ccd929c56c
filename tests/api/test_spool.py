"""The spool on its own: a file this process is creating is never taken for one an earlier
process left, however its mover's sweep falls."""

from __future__ import annotations

import asyncio
import fcntl
import os

import track.api.spool
from track.api.spool import Spool
from track.lake.store import Lake


def test_a_file_being_created_is_not_swept_as_an_earlier_processs(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    spool = Spool(str(tmp_path / "spool"), lake, max_age=3600)
    locked, sweeps = fcntl.flock, []

    def swept_first(fd: int, operation: int) -> None:
        # The mover sweeps for files nobody holds just as the writer is about to lock its new
        # file: under load and a short --max-age, this happened (13 answers of 503 in 50,000).
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_WRONLY and not sweeps:
            sweeps.append(fd)
            spool._adopt_orphans()
        locked(fd, operation)

    monkeypatch.setattr(track.api.spool.fcntl, "flock", swept_first)
    spool.start()
    line = b'{"event": "play", "user_id": "u"}\n'
    try:
        asyncio.run(spool.append("2025-03-01", line))
    finally:
        moved = spool.close()
    assert sweeps and moved
    (name,) = os.listdir(tmp_path / "lake" / "raw" / "date=2025-03-01")
    assert (tmp_path / "lake" / "raw" / "date=2025-03-01" / name).read_bytes() == line

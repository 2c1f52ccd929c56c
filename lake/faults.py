"""Fault injection for the crash tests, the one test-only seam in production code:
`TRACK_KILL_AT=<point>` makes a run kill itself (SIGKILL, as a power cut would) when it reaches
that point, `TRACK_STOP_AT=<point>` stops it there (SIGSTOP, as a frozen VM or a long pause
would) the first time it gets there, until it is sent SIGCONT. Unset, they do nothing."""

from __future__ import annotations

import os
import signal

_stopped: set[str] = set()
POINTS = (
    "ingested",
    "partition-written",
    "merged",
    "rolled-up",
    "snapshot-written",
    "published",
)


def crash_point(name: str) -> None:
    """Die or freeze here, at once and without clean-up, if the environment asks for it."""
    if os.environ.get("TRACK_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("TRACK_STOP_AT") == name and name not in _stopped:
        _stopped.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)

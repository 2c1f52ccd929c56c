"""Fault injection for the crash tests: `TRACK_KILL_AT=<point>` makes a run kill itself
(SIGKILL, as a power cut would) when it reaches that point. Unset, it does nothing."""

from __future__ import annotations

import os
import signal

POINTS = ("ingested", "partition-written", "committed", "rolled-up", "published")


def crash_point(name: str) -> None:
    """Die here, at once and without clean-up, if the environment asks for it."""
    if os.environ.get("TRACK_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

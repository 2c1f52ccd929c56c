"""Track's settings, built in one place from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from schemas.constants import RETENTION_DAYS

DEFAULT_LAKE = "data/lake"
DEFAULT_CRON = "*/15 * * * *"
"""The schedule `track serve` gives the pipeline deployment unless told otherwise."""
LOCK_WAIT = 600.0
"""Seconds a run waits for another run on the same lake before it skips."""


@dataclass(frozen=True)
class Settings:
    """Where the lake is and how long it keeps events.

    Built by `from_env` from:
      TRACK_LAKE            root URL of the lake (default `data/lake`)
      TRACK_RETENTION_DAYS  days of events kept before the run's date (default 30)
      TRACK_LOCK_LEASE      seconds a killed run's lock on the lake lasts (default 90)
      TRACK_RETRY_DELAYS    seconds between retries of a failed storage task (default 1,5,15)
    S3 credentials, region and endpoint come from the standard AWS variables.
    """

    lake: str = DEFAULT_LAKE
    retention_days: int = RETENTION_DAYS
    lock_lease: float = 90.0
    retry_delays: tuple[float, ...] = (1.0, 5.0, 15.0)

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment variables listed above."""
        return cls(
            lake=os.environ.get("TRACK_LAKE") or DEFAULT_LAKE,
            retention_days=int(_number("TRACK_RETENTION_DAYS", RETENTION_DAYS, whole=True)),
            lock_lease=_number("TRACK_LOCK_LEASE", 90.0),
            retry_delays=_delays(os.environ.get("TRACK_RETRY_DELAYS") or "1,5,15"),
        )


def _delays(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError(
            f"TRACK_RETRY_DELAYS must be seconds separated by commas, such as 1,5,15; got {text!r}"
        ) from exc


def _number(name: str, default: float, *, whole: bool = False) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return int(text) if whole else float(text)
    except ValueError as exc:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {kind}, got {text!r}") from exc


def resolve_lake(lake: str | None) -> str:
    """The lake URL to use: the one given, else $TRACK_LAKE, else data/lake."""
    return lake or Settings.from_env().lake

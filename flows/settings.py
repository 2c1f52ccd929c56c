"""Track's settings, built in one place from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from schemas.constants import RETENTION_DAYS

DEFAULT_LAKE = "data/lake"


@dataclass(frozen=True)
class Settings:
    """Where the lake is and how long it keeps events.

    Built by `from_env` from:
      TRACK_LAKE            root URL of the lake (default `data/lake`)
      TRACK_RETENTION_DAYS  days of events kept before the run's date (default 30)
    S3 credentials, region and endpoint come from the standard AWS variables.
    """

    lake: str = DEFAULT_LAKE
    retention_days: int = RETENTION_DAYS

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment variables listed above."""
        days = os.environ.get("TRACK_RETENTION_DAYS", str(RETENTION_DAYS))
        try:
            retention_days = int(days)
        except ValueError as exc:
            raise ValueError(
                f"TRACK_RETENTION_DAYS must be a whole number of days, got {days!r}"
            ) from exc
        return cls(lake=os.environ.get("TRACK_LAKE") or DEFAULT_LAKE, retention_days=retention_days)


def resolve_lake(lake: str | None) -> str:
    """The lake URL to use: the one given, else $TRACK_LAKE, else data/lake."""
    return lake or Settings.from_env().lake

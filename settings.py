"""Track's settings, built in one place from the environment."""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass

from track.errors import SettingsError
from track.schemas.constants import RETENTION_DAYS

DEFAULT_LAKE = "data/lake"
DEFAULT_CRON = "*/15 * * * *"
"""The schedule `track serve` gives the pipeline deployment unless told otherwise."""
SPOOL_MAX_AGE = 60.0
"""Seconds after its first record that the HTTP API moves a spool file into the lake."""
SPOOL_LIMIT = 1024**3
"""Bytes the HTTP API's spool may hold that are not yet in the lake; past them it answers 503."""
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
        raise SettingsError(
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
        raise SettingsError(f"{name} must be {kind}, got {text!r}") from exc


def resolve_lake(lake: str | None) -> str:
    """The lake URL to use: the one given, else $TRACK_LAKE, else data/lake."""
    return lake or Settings.from_env().lake


def prefect_home() -> str:
    """Prefect's home folder: $PREFECT_HOME, else ~/.prefect."""
    return os.path.expanduser(os.environ.get("PREFECT_HOME") or "~/.prefect")


def prefect_api_url() -> str | None:
    """The Prefect server this process would talk to ($PREFECT_API_URL, else the active
    profile's), or None when there is none. Read without importing Prefect (0.8 s)."""
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"] or None
    path = os.environ.get("PREFECT_PROFILES_PATH") or os.path.join(prefect_home(), "profiles.toml")
    try:
        with open(path, "rb") as f:
            profiles = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None


def spool_folder(lake: str) -> str:
    """The HTTP API's default spool for a lake: a folder of the user's cache named after it
    ($XDG_CACHE_HOME, else ~/.cache; then track/spool/<lake as a name>-<its hash>)."""
    url = lake if "://" in lake else os.path.abspath(lake)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url).strip("_")[-60:]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "track", "spool", f"{name}-{digest}")

"""Track's settings, in one place: what the environment sets (`Settings`, read when asked),
the defaults of the command line's options, and the tuning numbers, each defined once."""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass

from track.errors import SettingsError
from track.schemas.constants import RETENTION_DAYS

DEFAULT_LAKE = "data/lake"


@dataclass(frozen=True)
class Settings:
    """What the environment sets: where the lake is, how long it keeps events, how a run holds
    the lake and retries the store. Read when a run or command starts (`from_env`), never at
    import.

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
        """Settings from the environment variables listed above (SettingsError names a bad one)."""
        default = cls()
        return cls(
            lake=os.environ.get("TRACK_LAKE") or default.lake,
            retention_days=int(_number("TRACK_RETENTION_DAYS", default.retention_days, whole=True)),
            lock_lease=_number("TRACK_LOCK_LEASE", default.lock_lease),
            retry_delays=_delays("TRACK_RETRY_DELAYS", default.retry_delays),
        )


# Defaults of the command line's options (SPEC section 10) -----------------------------------

DEFAULT_CRON = "*/15 * * * *"
"""The schedule `track serve` gives the pipeline deployment unless told otherwise."""
ALERT_QUARANTINE = 1.0
"""Percent of a run's lines quarantined above which it emits its alert event (flows.announce;
`track run --alert-quarantine`, `track serve --alert-quarantine`)."""
LOCK_WAIT = 600.0
"""Seconds a run waits for another run on the same lake before it skips (`track run --wait`)."""
SPOOL_MAX_AGE = 60.0
"""Seconds after its first record that the HTTP API moves a spool file into the lake
(`track api --max-age`)."""
SPOOL_LIMIT = 1024**3
"""Bytes the HTTP API's spool may hold that are not yet in the lake; past them it answers 503
(`track api --spool-limit`)."""

# Tuning: sizes and counts that trade memory for speed; none of them changes an answer --------

RAW_WHOLE_BYTES = 64 * 1024**2
"""A raw file up to this size is read in one request. A larger one is read twice, a block at a
time (hash and check, then parse), so neither it nor its gunzipped text is ever held whole."""
RAW_BLOCK_BYTES = 1024**2
"""A large raw file is read this many bytes at a time: reads of PARSE_CHUNK_BYTES, each a fresh
large allocation, raised the peak memory of a 4M-event run by a fifth."""
PARSE_CHUNK_BYTES = 16 * 1024**2
"""Lines are decoded this many bytes at a time (many small files together, a large one in
runs of whole lines): however large a file, its rows never all sit in memory at once."""
STAGE_ROWS = 250_000
"""An ingest batch validates, normalises and stages its lines whenever it holds this many: the
bound on a batch's memory."""
BATCH_BYTES = 64 * 1024**2
"""An ingest task reads raw files of about this many bytes in all (or one larger file)..."""
BATCH_FILES = 256
"""... and at most this many files."""
BATCHES_AT_LEAST = 4
"""The raw files of a run are split into at least this many ingest tasks when there are files
enough, so that no worker idles at the end."""
INGEST_WORKERS = os.cpu_count() or 2
"""Ingest tasks run at once in the flow's process (threads: Polars releases the GIL); each holds
up to STAGE_ROWS lines, so this bounds ingest's memory too."""
MERGE_WORKERS = 2
"""Event dates the merge rewrites at once (Polars and Parquet encoding release the GIL)."""
MERGE_PARALLEL_ROWS = 250_000
"""A run with a date of more new rows than this rewrites its dates one at a time (a date's
rows are held whole while it is rewritten)."""
SESSION_SHARDS = 8
"""Shards of users whose sessions are matched as tasks of their own on a Dask cluster."""
CLUSTER_TASKS = 8
"""At most this many tasks a step on a Dask cluster (event dates, shards of users): each takes
a few calls when there are more."""
APPENDED_FILES_AT_MOST = 8
TAIL_SHARE = 0.125
"""An event date takes a run's new rows as one more file when they displace nothing, up to
APPENDED_FILES_AT_MOST files; then its files after the first are merged into one (as are its
counts'), while they would hold, with the run's new rows, at most TAIL_SHARE of the first's
rows; past that, the run rewrites the date as one file (compaction). A date taking a few rows
a run is rewritten whole once they add up to an eighth of it, not every few runs."""
MATCH_USERS_AT_MOST = 20_000
MATCH_DATES_AT_MOST = 2
"""Beyond MATCH_USERS_AT_MOST users with changed plays or stops, on more than MATCH_DATES_AT_MOST
dates, all sessions are matched again: reading a long list of users' events over the whole
window costs more than matching everyone (1.8 s against 1.1 to 1.4 s for 40,000 users on an
8M-event window). Within a few dates, the reads around the changes spare most of the window
(0.6 s against 1.4 s for the same users, all on one date)."""
KEEP_SNAPSHOTS = 20
"""How many of the newest snapshot files a commit keeps (older ones are deleted)."""
LOCK_POLL_SECONDS = 1.0
"""How often a run waiting for the lake's lock looks again."""
SPOOL_FILE_BYTES = 32 * 1024**2
"""A spool file is closed and moved into the lake at this size, whatever its age."""
SPOOL_MAX_PENDING = 10_000
"""Requests that may wait for the spool's next flush; past them the HTTP API answers 503."""


def _delays(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise SettingsError(
            f"{name} must be seconds separated by commas, such as 1,5,15; got {text!r}"
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

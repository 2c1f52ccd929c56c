"""Every error Track raises on purpose, in one tree:

    TrackError
    ├── SettingsError            an environment variable Track cannot use (also a ValueError)
    ├── LakeError                the lake refuses this run: retrying it does not help
    │   ├── LakeFormatError      its events were written by a Track this one cannot extend
    │   ├── LakeFencedError      the run lost the lake to another before it committed
    │   └── LakeRootError        its root's path has a folder named after a table's column
    ├── RawFileError             a raw file as read
    │   ├── UnreadableFileError  its bytes are no lines at all (bad gzip, binary): quarantined
    │   └── RawFileChangedError  it changed while it was read: the task that read it is retried
    ├── ReportError              the lake did not answer a question `track report` needs
    ├── SpoolError               the HTTP API could not make records durable
    │   ├── SpoolFull            the spool holds as much as it may, or the API is stopping
    │   └── SpoolBroken          the spool's disk failed a write or a flush
    └── RequestError             a request the HTTP API cannot take; `status` is its HTTP status
        ├── BadRequest           400: a body that holds no record to judge
        ├── TooLarge             413: a body over 1 MiB (gunzipped too), a batch over 500 records
        ├── UnsupportedEncoding  415: a Content-Encoding other than gzip
        └── Unavailable          503: a SpoolError, with the seconds to wait in `retry_after`

A store that fails (a dropped connection, throttling, a missing file) raises its own OSError,
which Prefect retries; a LakeError is never retried. The reader never raises for bad input or a
failing store: it answers `{"status": "error", ...}`.
"""

from __future__ import annotations


class TrackError(Exception):
    """Anything Track raises on purpose."""


class SettingsError(TrackError, ValueError):
    """An environment variable Track reads holds a value it cannot use; the message names it."""


class LakeError(TrackError):
    """The lake refuses this run; nothing the run wrote became visible."""


class LakeFormatError(LakeError):
    """A lake whose events were fingerprinted by a version of Track whose stored rows this one
    cannot extend: rebuild it from raw/."""


class LakeRootError(LakeError, ValueError):
    """A lake whose root's path has a `key=value` folder named after a column of its tables or
    `date`: readers of a table's files (Polars, Track's own scans) take every such folder of a
    file's path as a partition column, so it would stand for that column."""


class LakeFencedError(LakeError):
    """A run lost the lake to another (its lock lease lapsed) before it committed: its commit
    was refused and nothing it wrote became visible."""


class RawFileError(TrackError):
    """A raw file, as the pipeline read it."""


class UnreadableFileError(RawFileError, ValueError):
    """A raw file whose bytes cannot be read as lines at all (bad gzip, binary)."""


class RawFileChangedError(RawFileError, OSError):
    """A raw file changed while it was read (as a store error: its task is retried)."""


class ReportError(TrackError):
    """The lake did not answer a question the report needs (its message says which)."""


class SpoolError(TrackError):
    """The HTTP API's spool could not make records durable."""


class SpoolFull(SpoolError):
    """The spool holds as much as it may (or the API is stopping): try again later."""


class SpoolBroken(SpoolError):
    """The spool's disk failed a write or a flush: the records were not made durable."""


class RequestError(TrackError):
    """A request the HTTP API cannot take; `status` is its HTTP status (`api.app` maps them)."""

    status = 400

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class BadRequest(RequestError):
    """A body that holds no record to judge (empty, not gzip as it says)."""


class TooLarge(RequestError):
    """A body over MAX_BODY_BYTES (after gzip too), or a batch of too many records."""

    status = 413


class UnsupportedEncoding(RequestError):
    """A Content-Encoding other than gzip or identity."""

    status = 415


class Unavailable(RequestError):
    """The records cannot be made durable now: try again after `retry_after` seconds."""

    status = 503

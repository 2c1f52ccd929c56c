"""The numbers and names of the contract (SPEC sections 2 to 4, 8), defined once."""

from __future__ import annotations

MAX_STRING_CHARS = 256
"""`event` and `user_id` are strings of 1 to this many characters (code points)."""

MAX_DEPTH = 64
"""A line nested deeper than this (the record itself is level 1) is bad input."""

MAX_METADATA_BYTES = 4096
"""Compact UTF-8 JSON size above which metadata is truncated."""

RETENTION_DAYS = 30
"""Default retention window, in days before the run's date."""

RESERVED_EVENT = "date"
"""An event may not be called this: the answers use the key."""

# Warnings and the pipeline's own metadata keys (SPEC section 3).
WARNINGS_KEY = "_warnings"
ORIGINAL_SIZE_KEY = "_original_size"
ORIGINAL_TIMESTAMP_KEY = "_original_timestamp"
TIMESTAMP_CLAMPED = "timestamp_clamped"
METADATA_TRUNCATED = "metadata_truncated"

# Quarantine reason codes (SPEC section 4), in the order a line is checked.
UNREADABLE_FILE = "unreadable_file"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
TOO_DEEP = "too_deep"
INVALID_EVENT = "invalid_event"
INVALID_USER_ID = "invalid_user_id"
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_METADATA = "invalid_metadata"

REASONS = (
    UNREADABLE_FILE,
    INVALID_UTF8,
    INVALID_JSON,
    NOT_AN_OBJECT,
    TOO_DEEP,
    INVALID_EVENT,
    INVALID_USER_ID,
    INVALID_TIMESTAMP,
    INVALID_METADATA,
)

# RFC 3339 section 5.6 date-time with `T`, `t` or a space, offset `Z`, +hh:mm, -hh:mm or none.
# Field ranges are in the pattern; whether the day exists in its month is checked by parsing.
# Second 60 (a leap second) has no instant in UTC milliseconds and is refused.
RFC3339 = (
    r"^(?P<year>[0-9]{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12][0-9]|3[01])[Tt ]"
    r"(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9]):(?P<second>[0-5][0-9])"
    r"(?:\.(?P<fraction>[0-9]+))?(?P<offset>Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
"""A timestamp (and the API's `_received_at`) as SPEC section 2 allows it, its parts named."""

RAW_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
"""Names a producer may drop under raw/date=YYYY-MM-DD/."""

FINGERPRINT = "xxh3-64-sum-int64"
"""How the stored `fingerprint` of events and duplicates is made (transforms.parse.fingerprint):
the sum of XXH3-64s, its 64 bits stored as a signed integer (lakes before Delta tables stored
them unsigned, "xxh3-64-sum", and are rebuilt from raw/).
A lake's snapshot names it; a run refuses a lake whose rows were fingerprinted otherwise, as
new copies would not meet the stored ones."""

RECEIVED_AT_KEY = "_received_at"
"""The instant Track's HTTP API received a record, written into the line (SPEC sections 2, 11)."""
RECEIVED_AT_SLACK_MS = 1000
"""A line's `_received_at` counts only when less than this after its file's received_at: a
record cannot arrive after the file that holds it, and stores keep mtimes to the second."""

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body the HTTP API takes (after gzip too): 413 above it."""
MAX_BATCH_RECORDS = 500
"""The most records one `POST /batch` may hold."""

"""Turn the bytes of one raw NDJSON file into one row per non-blank line.

JSON decoding is the one step that cannot be a Polars expression: Polars'
NDJSON reader re-escapes metadata wrongly and infers structs that drop keys
(shared/ECOSYSTEM.md). orjson is strict RFC 8259 (no NaN, no lone surrogates,
valid UTF-8) and exact, so each line is decoded with it once; everything that
follows (field rules, timestamps, clamping, dedup) is Polars.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import polars as pl

from schemas.constants import INVALID_JSON, INVALID_UTF8, MAX_DEPTH, NOT_AN_OBJECT, TOO_DEEP

BOM = b"\xef\xbb\xbf"
TOO_DEEP_MESSAGE = f"line is nested deeper than {MAX_DEPTH} levels"

LINE_SCHEMA: dict[str, pl.DataType] = {
    "line": pl.Int64(),
    "raw": pl.String(),
    "reason": pl.String(),
    "message": pl.String(),
    "event": pl.String(),
    "event_type": pl.String(),
    "user_id": pl.String(),
    "user_id_type": pl.String(),
    "timestamp": pl.String(),
    "timestamp_type": pl.String(),
    "metadata": pl.String(),
    "metadata_type": pl.String(),
    "fingerprint": pl.Binary(),
}


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as messages quote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def nesting_depth(value: Any) -> int:
    """Levels of arrays and objects in a decoded value (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((nesting_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_depth(v) for v in value), default=0)
    return 0


def canonical(value: Any) -> Any:
    """The value with every number as a double and -0 as 0, so equal JSON values dump alike."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) + 0.0
    return value


def fingerprint(event: Any, user_id: Any, metadata: Any) -> bytes:
    """128-bit digest of what makes two records alike, apart from their instant (SPEC 3.6)."""
    key = orjson.dumps([event, user_id, canonical(metadata)], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(key, digest_size=16).digest()


def _bad(line_no: int, raw: str, reason: str, message: str) -> tuple[Any, ...]:
    return (line_no, raw, reason, message) + (None,) * 9


def decode_line(line_no: int, data: bytes) -> tuple[Any, ...] | None:
    """One LINE_SCHEMA row for one line: the decoded fields, or a reason it is bad input.

    None for a line of only white space (any Unicode white space, such as a no-break space).
    """
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as utf:
            text = data.decode("utf-8", errors="backslashreplace")
            return _bad(line_no, text, INVALID_UTF8, f"line is not valid UTF-8 ({utf.reason})")
        if not raw.strip():
            return None
        if "depth limit" in str(exc) and raw.lstrip().startswith("{"):
            # orjson stops at 1024 levels, long before it could tell whether the rest is valid.
            return _bad(line_no, raw, TOO_DEEP, TOO_DEEP_MESSAGE)
        return _bad(line_no, raw, INVALID_JSON, f"line is not valid JSON: {exc}")
    raw = data.decode("utf-8")
    if not isinstance(record, dict):
        return _bad(
            line_no, raw, NOT_AN_OBJECT, f"line must be a JSON object, got {json_type(record)}"
        )
    # Only a line with more than MAX_DEPTH openers can be too deep; skip the walk otherwise.
    if data.count(b"{") + data.count(b"[") > MAX_DEPTH and nesting_depth(record) > MAX_DEPTH:
        return _bad(line_no, raw, TOO_DEEP, TOO_DEEP_MESSAGE)
    event = record.get("event")
    user_id = record.get("user_id")
    timestamp = record.get("timestamp")
    metadata = record.get("metadata")
    return (
        line_no,
        raw,
        None,
        None,
        event if isinstance(event, str) else None,
        json_type(event) if "event" in record else "missing",
        user_id if isinstance(user_id, str) else None,
        json_type(user_id) if "user_id" in record else "missing",
        timestamp if isinstance(timestamp, str) else None,
        json_type(timestamp),
        orjson.dumps(metadata).decode() if isinstance(metadata, dict) else None,
        json_type(metadata),
        fingerprint(event, user_id, metadata),
    )


def decode_ndjson(data: bytes) -> pl.LazyFrame:
    """One row per non-blank line of an NDJSON file's bytes, in LINE_SCHEMA."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    # Blank ASCII lines are skipped here, cheaply; other white space only once JSON fails.
    decoded = (
        decode_line(number, line)
        for number, line in enumerate(data.split(b"\n"), start=1)
        if line.strip()
    )
    rows = [row for row in decoded if row is not None]
    return pl.LazyFrame(rows, schema=LINE_SCHEMA, orient="row")

"""What the HTTP API makes of a request body: the records it holds, each accepted as the line
Track will write or rejected with the reason and message the pipeline's quarantine would give
(the same rules: `transforms.parse.read_record` and `schemas.records.record_problem`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from track.errors import BadRequest, TooLarge, UnsupportedEncoding
from track.schemas.constants import INVALID_JSON, MAX_BATCH_RECORDS, MAX_BODY_BYTES, RECEIVED_AT_KEY
from track.schemas.records import record_problem
from track.transforms.parse import object_record, read_record


@dataclass(frozen=True)
class Rejection:
    """A record the pipeline would quarantine: where it stood, why, and the message."""

    index: int
    reason: str
    message: str


def body_text(body: bytes, encoding: str | None) -> bytes:
    """The body's bytes, gunzipped when sent with `Content-Encoding: gzip`; at most
    MAX_BODY_BYTES either way."""
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is over {MAX_BODY_BYTES} bytes")
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding} is not taken: send gzip or none")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = inflate.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid gzip: {exc}") from exc
    if len(text) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is over {MAX_BODY_BYTES} bytes once gunzipped")
    if not inflate.eof:
        raise BadRequest("the body is not valid gzip: it ends before its stream does")
    return text


def received_at_text(moment: datetime) -> str:
    """An instant as the API writes `_received_at`: RFC 3339, UTC, milliseconds."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def as_line(record: dict[str, Any], received: str) -> bytes:
    """The NDJSON line Track writes for an accepted record: its fields as sent (every value
    the same JSON value), with `_received_at` (the API's instant replaces a sent one) before
    `metadata`, the plain shape the pipeline reads fastest (transforms.parse.FAST_LINE)."""
    line = {k: v for k, v in record.items() if k not in (RECEIVED_AT_KEY, "metadata")}
    line[RECEIVED_AT_KEY] = received
    if "metadata" in record:
        line["metadata"] = record["metadata"]
    return orjson.dumps(line) + b"\n"


def judge(value: dict[str, Any] | tuple[str, str] | None) -> dict[str, Any] | tuple[str, str]:
    """A decoded record, or the reason and message the quarantine would give it."""
    if value is None:
        return INVALID_JSON, "line is empty: send one JSON object"
    if isinstance(value, tuple):
        return value
    return record_problem(value) or value


def one_record(text: bytes) -> dict[str, Any] | tuple[str, str]:
    """The record of a `POST /track` body, or why the pipeline would reject it."""
    return judge(read_record(text))


def batch_records(text: bytes) -> list[dict[str, Any] | tuple[str, str]]:
    """The records of a `POST /batch` body (`{"batch": [...]}`, or NDJSON), each judged."""
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("batch"), list) and len(whole) == 1:
        values = whole["batch"]
        _check_size(len(values))
        return [judge(object_record(value)) for value in values]
    # Lines of only white space are skipped, as the pipeline skips them.
    records = [found for line in text.split(b"\n") if (found := read_record(line)) is not None]
    _check_size(len(records))
    return [judge(found) for found in records]


def _check_size(records: int) -> None:
    if records == 0:
        raise BadRequest('the batch holds no records: send {"batch": [...]} or NDJSON lines')
    if records > MAX_BATCH_RECORDS:
        raise TooLarge(f"a batch holds at most {MAX_BATCH_RECORDS} records, got {records}")

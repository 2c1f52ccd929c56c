"""Turn the bytes of one raw NDJSON file into one row per non-blank line.

Polars' NDJSON reader re-escapes metadata wrongly and infers structs that drop keys
(shared/ECOSYSTEM.md), so it is not used. Two paths give the same rows:

- the fast path reads the lines in the plain shape most producers write (`FAST_LINE`: the
  fields in order, a flat metadata object of plain strings, short numbers, booleans and nulls,
  no escapes, no key twice) in one pass each, in C (`transforms/_plain.c`), without the GIL:
  for those, the compact metadata and the parts of the dedup fingerprint are the text as sent
  without its spaces, exactly what orjson would give;
- every other line is decoded with orjson, strict RFC 8259 and exact: escapes, nesting,
  exponents, long numbers, other key orders, keys named twice, bad input.

tests/transforms/test_parse.py checks on generated lines that both paths agree, and that the
fast path takes exactly the lines FAST_LINE matches (but for those naming a key twice, or more
than 64 keys).
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import polars_hash as plh
import pyarrow as pa

from track.schemas.constants import (
    INVALID_JSON,
    INVALID_UTF8,
    MAX_DEPTH,
    NOT_AN_OBJECT,
    RECEIVED_AT_KEY,
    TOO_DEEP,
)
from track.schemas.records import json_type
from track.transforms import _plain

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
    "received_at_text": pl.String(),
    "record": pl.String(),
    "pairs": pl.List(pl.String()),
}
"""What each path gives; decode_ndjson then replaces `record` and `pairs` (the parts of the
dedup key, `dedup_parts`) with their `fingerprint`."""

# A string with nothing to unescape, and that orjson writes back as it is.
_PLAIN = r'[^"\\\x00-\x1f]*'
# Numbers that orjson writes back as they are, and whose double keeps every digit (the
# fingerprint compares numbers as doubles): at most 15 significant digits, no exponent, no
# trailing zero but `N.0`, at least 0.0001 (orjson writes smaller ones with an exponent).
_NUMBER = (
    r"0|-?[1-9][0-9]{0,14}|(?:0|-?[1-9][0-9]{0,14})\.0"
    r"|-?(?:[1-9][0-9]{0,6}\.[0-9]{0,7}[1-9]|0\.0{0,3}[1-9](?:[0-9]{0,13}[1-9])?)"
)
_PAIR = rf'"{_PLAIN}": ?(?:"{_PLAIN}"|true|false|null|{_NUMBER})'
_HEAD = rf'^\{{"event": ?"{_PLAIN}", ?"user_id": ?"{_PLAIN}"(?:, ?"timestamp": ?"{_PLAIN}")?'
FAST_LINE = (
    rf'{_HEAD}(?:, ?"{RECEIVED_AT_KEY}": ?"{_PLAIN}")?'
    rf'(?:, ?"metadata": ?\{{(?:{_PAIR}(?:, ?{_PAIR})*)?\}})?\}}\r?$'
)
"""The plain shape: event and user_id, then timestamp, the HTTP API's `_received_at` and
metadata if present, in that order (the API writes its lines so)."""


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


def dedup_parts(event: Any, user_id: Any, metadata: Any) -> tuple[str, list[str] | None]:
    """The texts that make two records alike, apart from their instant (SPEC 3.6): equal JSON
    values give equal texts.

    `record`: compact JSON of [event, user_id, metadata], every number a double, with `{}` for
    any metadata object; `pairs`: for an object, each `key":value` (compact, the key's opening
    quote left out, nested keys sorted, numbers as doubles: a value that is one without its
    trailing `.0`, as the fast path reads `1` and `1.0`), in any order; else None.
    """
    if not isinstance(metadata, dict):
        return _sorted_json([event, user_id, canonical(metadata)]), None
    pairs = [
        orjson.dumps(key).decode()[1:] + ":" + _value_text(value) for key, value in metadata.items()
    ]
    return _sorted_json([event, user_id, {}]), pairs


def _value_text(value: Any) -> str:
    """A metadata value as its pair holds it: a number without a trailing `.0`."""
    value = canonical(value)
    text = _sorted_json(value)
    return text.removesuffix(".0") if isinstance(value, float) else text


def _sorted_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def fingerprint(record: pl.Expr, pairs: pl.Expr) -> pl.Expr:
    """64 bits that are equal for records alike: the sum (modulo 2**64) of the XXH3-64 of
    `record` and of each of `pairs` (`dedup_parts`). XXH3 is a published algorithm, stable
    across versions, unlike Polars' own `hash`; a sum needs no sorting of the pairs, so key
    order cannot matter. Records are alike when fingerprint and instant are equal. Stored as
    a signed Int64 (the same 64 bits): Delta tables have no unsigned integers."""
    each = pairs.list.eval(plh.col("").nchash.xxh3_64()).list.sum().fill_null(0)
    total = plh.col(record.meta.output_name()).nchash.xxh3_64() + each
    return total.reinterpret(signed=True).alias("fingerprint")


def _bad(line_no: int, raw: str, reason: str, message: str) -> tuple[Any, ...]:
    return (line_no, raw, reason, message) + (None,) * (len(LINE_SCHEMA) - 4)


def read_record(data: bytes) -> dict[str, Any] | tuple[str, str] | None:
    """The JSON object one line holds, or the reason and message of why it is bad input; None
    for a line of only white space (any Unicode white space, such as a no-break space)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as utf:
            return INVALID_UTF8, f"line is not valid UTF-8 ({utf.reason})"
        if not raw.strip():
            return None
        if "depth limit" in str(exc) and raw.lstrip().startswith("{"):
            # orjson stops at 1024 levels, long before it could tell whether the rest is valid.
            return TOO_DEEP, TOO_DEEP_MESSAGE
        return INVALID_JSON, f"line is not valid JSON: {exc}"
    # Only a line with more than MAX_DEPTH openers can be too deep; skip the walk otherwise.
    deep = data.count(b"{") + data.count(b"[") > MAX_DEPTH
    return object_record(value, deep=deep)


def object_record(value: Any, *, deep: bool = True) -> dict[str, Any] | tuple[str, str]:
    """A decoded JSON value as a record, or the reason and message of why it is not one
    (`deep=False` when it cannot be nested deeper than MAX_DEPTH)."""
    if not isinstance(value, dict):
        return NOT_AN_OBJECT, f"line must be a JSON object, got {json_type(value)}"
    if deep and nesting_depth(value) > MAX_DEPTH:
        return TOO_DEEP, TOO_DEEP_MESSAGE
    return value


def decode_line(line_no: int, data: bytes) -> tuple[Any, ...] | None:
    """One LINE_SCHEMA row for one line: the decoded fields, or a reason it is bad input.

    None for a line of only white space (any Unicode white space, such as a no-break space).
    """
    record = read_record(data)
    if record is None:
        return None
    raw = data.decode("utf-8", errors="backslashreplace")
    if isinstance(record, tuple):
        return _bad(line_no, raw, *record)
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
        received_at if isinstance(received_at := record.get(RECEIVED_AT_KEY), str) else None,
        *dedup_parts(event, user_id, metadata),
    )


def _decode_lines(lines: list[tuple[int, bytes]]) -> pl.DataFrame:
    """LINE_SCHEMA rows of these (number, bytes) lines, each decoded with orjson."""
    # Blank ASCII lines are skipped here, cheaply; other white space only once JSON fails.
    decoded = (decode_line(number, line) for number, line in lines if line.strip())
    rows = [row for row in decoded if row is not None]
    return pl.DataFrame(rows, schema=LINE_SCHEMA, orient="row")


def _line_rows(plain: pl.DataFrame) -> pl.DataFrame:
    """LINE_SCHEMA rows of lines in the plain shape, from their parts (`_scanned`)."""
    text = pl.String()
    return plain.select(
        *_IDS,
        "raw",
        reason=pl.lit(None, text),
        message=pl.lit(None, text),
        event="event",
        event_type=pl.lit("string"),
        user_id="user_id",
        user_id_type=pl.lit("string"),
        timestamp="timestamp",
        timestamp_type=pl.when(pl.col("timestamp").is_null())
        .then(pl.lit("null"))
        .otherwise(pl.lit("string")),
        metadata="metadata",
        metadata_type=pl.when(pl.col("metadata").is_null())
        .then(pl.lit("null"))
        .otherwise(pl.lit("object")),
        received_at_text="received_at_text",
        record=pl.concat_str(
            pl.lit('["'),
            "event",
            pl.lit('","'),
            "user_id",
            pl.when(pl.col("metadata").is_null())
            .then(pl.lit('",null]'))
            .otherwise(pl.lit('",{}]')),
        ),
        pairs="pairs",
    )


def _is_utf8(data: bytes) -> bool:
    if data.isascii():  # a fifth of the cost of decoding, and most files are
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_IDS = ["row", "piece", "line"]
"""A line's place among the lines decoded together: its row, its piece (file or chunk of
one) and its number in that file."""


def decode_pieces(pieces: list[tuple[int, bytes]], *, fast: bool = True) -> pl.LazyFrame:
    """One row per non-blank line of many pieces of NDJSON (files, or chunks of a file, each
    given as the number of its first line and its bytes), decoded together: per-call costs are
    paid once however small the files. LINE_SCHEMA with `piece` (the index of the piece) and
    the `fingerprint` of the dedup key in place of the key. A byte-order mark is dropped only
    at the start of a file (a piece whose first line is 1).

    `fast=False` decodes every line with orjson: the reference the fast path is tested against.
    A piece that is not valid UTF-8 as a whole, or of more bytes than the scanner's views can
    point into (`_plain.TEXT_MAX`, 2 GiB: a single line that long), is decoded line by line too.
    """
    texts: list[bytes] = []
    places: list[tuple[int, int]] = []  # piece, first line
    frames = [pl.DataFrame(schema={"piece": pl.UInt32(), **LINE_SCHEMA})]
    for piece, (first_line, data) in enumerate(pieces):
        if first_line == 1 and data.startswith(BOM):
            data = data[len(BOM) :]
        if fast and len(data) <= _plain.TEXT_MAX and _is_utf8(data):
            texts.append(bytes(data))  # the scanner takes bytes, which cannot change under it
            places.append((piece, first_line))
        else:
            rows = _decode_lines(list(enumerate(data.split(b"\n"), start=first_line)))
            frames.append(rows.select(pl.lit(piece, pl.UInt32).alias("piece"), pl.all()))
    if texts:
        frames.append(_decode_texts(texts, places))
    rows = pl.concat(frames)
    parts = pl.col("record"), pl.col("pairs")
    return rows.lazy().with_columns(fingerprint(*parts)).drop("record", "pairs")


def _decode_texts(texts: list[bytes], places: list[tuple[int, int]]) -> pl.DataFrame:
    """The texts' lines, each with its piece and number (`places`: each text's piece and first
    line)."""
    lines = _scanned(texts, places)
    plain = lines["plain"]
    if plain.all():  # the usual case: every line is read, in order
        return _line_rows(lines).select("piece", *LINE_SCHEMA)
    slow = lines.filter(~plain).select("row", "raw")
    slow_rows = _decode_lines([(row, raw.encode()) for row, raw in slow.iter_rows()])
    slow_rows = (
        slow_rows.rename({"line": "row"})
        .with_columns(pl.col("row").cast(pl.UInt32))
        .join(lines.select(_IDS), on="row")
    )
    fast_rows = _line_rows(lines.filter(plain))
    return (
        pl.concat([fast_rows, slow_rows.select(fast_rows.columns)])
        .sort("row")
        .select("piece", *LINE_SCHEMA)
    )


def _scanned(texts: list[bytes], places: list[tuple[int, int]]) -> pl.DataFrame:
    """The lines of UTF-8 texts, each split as `bytes.split` splits it but for the blank line
    after a final newline (`raw`, a CR before a newline kept; `row`, `piece` and `line`: see
    _IDS), whether each has the plain shape (`plain`), and the parts of those that do (null or
    empty on the others): `event`, `user_id`, `timestamp`, `received_at_text`, the compact
    `metadata` and its `pairs` (`dedup_parts`). Read by `_plain.scan`; the lines and the fields
    as sent are views into the texts, not copies."""
    count, plain, text, index, *views, metadata, pairs, pair_texts = _plain.scan(texts)
    buffers = [pa.py_buffer(t) for t in texts]
    raw, event, user_id, timestamp, received_at = (
        pa.Array.from_buffers(pa.string_view(), count, [*_buffers(v), *buffers]) for v in views
    )
    strings = pa.large_string()
    texts_of_pairs = pa.Array.from_buffers(
        strings, len(pair_texts[1]) // 8 - 1, _buffers(pair_texts)
    )
    columns = {
        "text": pa.Array.from_buffers(pa.uint32(), count, [None, pa.py_buffer(text)]),
        "index": pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(index)]),
        "raw": raw,
        "plain": pa.Array.from_buffers(pa.bool_(), count, [None, pa.py_buffer(plain)]),
        "event": event,
        "user_id": user_id,
        "timestamp": timestamp,
        "received_at_text": received_at,
        "metadata": pa.Array.from_buffers(strings, count, _buffers(metadata)),
        "pairs": pa.Array.from_buffers(
            pa.large_list(strings), count, _buffers(pairs)[:2], children=[texts_of_pairs]
        ),
    }
    frame = pl.from_arrow(pa.table(columns))
    assert isinstance(frame, pl.DataFrame)
    pieces = pl.Series([piece for piece, _ in places], dtype=pl.UInt32)
    first_lines = pl.Series([first for _, first in places], dtype=pl.Int64)
    of = frame["text"]
    return frame.with_row_index("row").select(
        "row",
        pieces.gather(of).alias("piece"),
        (first_lines.gather(of) + frame["index"]).alias("line"),
        *frame.columns[2:],
    )


def plain_shape(text: bytes) -> pl.Series:
    """Whether each line of UTF-8 text is read by the fast path (FAST_LINE, no key twice)."""
    return _scanned([text], [(0, 1)])["plain"]


def _buffers(column: tuple[bytes | None, ...]) -> list[pa.Buffer | None]:
    """Arrow buffers of bytes (None: a null buffer)."""
    return [None if part is None else pa.py_buffer(part) for part in column]


def decode_ndjson(data: bytes, *, first_line: int = 1, fast: bool = True) -> pl.LazyFrame:
    """One row per non-blank line of NDJSON bytes (a file's, or its chunk starting at line
    `first_line`): `decode_pieces` of one piece, without `piece`."""
    return decode_pieces([(first_line, data)], fast=fast).drop("piece")

"""Turn the bytes of one raw NDJSON file into one row per non-blank line.

Polars' NDJSON reader re-escapes metadata wrongly and infers structs that drop keys
(shared/ECOSYSTEM.md), so it is not used. Two paths give the same rows:

- the fast path, Polars string expressions over every line at once, takes the lines in the
  plain shape most producers write (`FAST_LINE`: the fields in order, a flat metadata
  object of plain strings, short numbers, booleans and nulls, no escapes). For those, the
  compact metadata and the parts of the dedup fingerprint are text operations, exactly what
  orjson would give: literal replaces and a split for the lines in the simple shape
  (`SIMPLE_LINE`, no metadata string starting with `:` or ending with `,` or a space), which
  are most, and a regex that finds each pair for the others;
- every other line is decoded with orjson, strict RFC 8259 and exact: escapes, nesting,
  exponents, long numbers, other key orders, bad input.

tests/transforms/test_parse.py checks on generated lines that both paths agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson
import polars as pl
import polars_hash as plh

from track.schemas.constants import (
    INVALID_JSON,
    INVALID_UTF8,
    MAX_DEPTH,
    NOT_AN_OBJECT,
    RECEIVED_AT_KEY,
    TOO_DEEP,
)
from track.schemas.records import json_type

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
# A metadata string that does not start with `:` nor end with `,` or a space.
_SIMPLE = r'(?:[^"\\\x00-\x1f:, ]|[^"\\\x00-\x1f:][^"\\\x00-\x1f]*[^"\\\x00-\x1f, ])?'
_SIMPLE_PAIR = rf'"{_SIMPLE}": ?(?:"{_SIMPLE}"|true|false|null|{_NUMBER})'
SIMPLE_LINE = (
    rf'{_HEAD}(?:, ?"{RECEIVED_AT_KEY}": ?"{_PLAIN}")?'
    rf'(?:, ?"metadata": ?\{{(?:{_SIMPLE_PAIR}(?:, ?{_SIMPLE_PAIR})*)?\}})?\}}\r?$'
)
"""The simple shape, most lines of the plain shape: no metadata string that starts with `:` or
ends with `,` or a space, so that in the metadata every `": ` and `, ` is a separator."""
_METADATA_FIELD = '"metadata":'
_RECEIVED_AT_FIELD = f'"{RECEIVED_AT_KEY}":'
"""Where a line in the plain shape has its `_received_at`: before its metadata (a metadata key
of that name comes after)."""
_PAIR_TOKEN = r'"[^"]*": ?(?:"[^"]*"|[^,}]+)'
"""A pair of a metadata object in the plain shape, as sent."""
_QUOTED_FIELDS = [
    "open",
    "event_key",
    "event_colon",
    "event",
    "event_comma",
    "user_id_key",
    "user_id_colon",
    "user_id",
    "user_id_comma",
    "third_key",
    "third_colon",
    "third_value",
]
"""A line in the plain shape, split on its quotes (no string in it holds one): the pieces
before and between them, to the third field's value (what follows is not split). The third
field is `timestamp`, `_received_at` or `metadata`, whichever comes first."""


@dataclass(frozen=True)
class Marks:
    """Whether any of the lines decoded together holds a `_received_at` (`stamped`) or a CR
    before its newline (`crlf`), known from their bytes at once: where none does, the fast
    paths do not look for it in each line (about 50 of the decode's 1,000 ms of CPU on 321k
    lines, by those steps' own timings)."""

    stamped: bool
    crlf: bool

    @classmethod
    def of(cls, data: bytes) -> Marks:
        # What `_received_at_text` looks for: where no line holds it, it would find nothing.
        return cls(stamped=_RECEIVED_AT_FIELD.encode() in data, crlf=b"\r" in data)


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


def _compact_pair(pair: pl.Expr) -> pl.Expr:
    """`key":value` of a pair as sent without its opening quote (`key": value` or
    `key":value`). A key holds no quote, so the pair's first `":` is its separator, and a space
    right after it is the separator's (a value may hold `": ` too): the separator is marked with
    a NUL, which no line in the plain shape holds, to drop the space after it and only that.
    Three literal replaces cost half one regex replace with a capture."""
    marked = pair.str.replace('":', '":\x00', literal=True, n=1)
    return marked.str.replace("\x00 ", "", literal=True, n=1).str.replace(
        "\x00", "", literal=True, n=1
    )


def _received_at_text(raw: pl.Expr, at_metadata: pl.Expr) -> pl.Expr:
    """The `_received_at` of lines in the plain shape, or null: found with literal searches
    (a regex with a capture costs three times the whole shape check)."""
    at = raw.str.find(_RECEIVED_AT_FIELD, literal=True)
    value = _after(raw, _RECEIVED_AT_FIELD, at).str.strip_prefix(" ").str.strip_prefix('"')
    top_level = at.is_not_null() & (at_metadata.is_null() | (at < at_metadata))
    return pl.when(top_level).then(value.str.split_exact('"', 1).struct.field("field_0"))


def _after(text: pl.Expr, mark: str, at: pl.Expr) -> pl.Expr:
    """The text after `mark`, found at `at` (`str.find`: a byte offset), or null. Sliced as
    bytes: `str.slice` counts characters, so it would disagree with `find` after any character
    of several bytes (and a split costs twice as much)."""
    return text.cast(pl.Binary).bin.slice(at + len(mark.encode())).cast(pl.String)


def _head(lines: pl.DataFrame, marks: Marks) -> pl.DataFrame:
    """Lines in the plain shape with `event`, `user_id`, `timestamp` and `received_at_text`
    as sent, and `sent_metadata`, the text of the metadata object as sent (null without one).

    With no quote inside any string, splitting on `"` finds the fields (the rest of the line,
    unsplit, is not copied: about a seventh of the split's cost); the metadata object is the last
    field, from after the line's first `"metadata":` (no string before it holds one) to before
    the line's closing brace."""
    fields = pl.col("raw").str.split_exact('"', len(_QUOTED_FIELDS) - 1)
    raw = pl.col("raw")
    at_metadata = raw.str.find(_METADATA_FIELD, literal=True)
    sent = _after(raw, _METADATA_FIELD, at_metadata).str.strip_prefix(" ")
    if marks.crlf:
        sent = sent.str.strip_suffix("\r")
    received_at = _received_at_text(raw, at_metadata) if marks.stamped else pl.lit(None, pl.String)
    field = pl.col("fields").struct.field
    # Materialised once: each `struct.field` of an expression would split the lines again.
    return lines.with_columns(
        fields=fields.struct.rename_fields(_QUOTED_FIELDS),
        received_at_text=received_at,
        sent_metadata=sent.str.strip_suffix("}"),
    ).select(
        *_IDS,
        "raw",
        "received_at_text",
        "sent_metadata",
        event=field("event"),
        user_id=field("user_id"),
        timestamp=pl.when(field("third_key") == "timestamp").then(field("third_value")),
    )


def _simple_rows(lines: pl.DataFrame, marks: Marks) -> pl.DataFrame:
    """LINE_SCHEMA rows of lines in the simple shape (`SIMPLE_LINE`, no duplicate keys).

    There, every `": ` of the metadata is a key's closing quote and its separator, and every
    `, ` a separator between pairs (no string starts with `:` or ends with `,` or a space), so
    the compact text is two literal replaces away, and the pairs are that text split on `,"`.
    A pair that ends in `.0` before a separator or the end is a number's (a string ends in a
    quote)."""
    sent = pl.col("sent_metadata")
    compact = sent.str.replace_all('": ', '":', literal=True).str.replace_all(
        ', "', ',"', literal=True
    )
    metadata = pl.col("metadata")
    body = (
        metadata.str.strip_suffix("}")
        .str.replace_all('.0,"', ',"', literal=True)
        .str.strip_suffix(".0")
        .str.strip_prefix('{"')
    )
    parsed = (
        _head(lines, marks)
        .with_columns(metadata=compact)
        .with_columns(
            pairs=pl.when(metadata == "{}")
            .then(pl.lit([], pl.List(pl.String)))
            .when(metadata.is_not_null())
            .then(body.str.split(',"'))
        )
    )
    return _line_rows(parsed)


def _fast_rows(lines: pl.DataFrame, marks: Marks) -> pl.DataFrame:
    """LINE_SCHEMA rows of lines in the plain shape (`FAST_LINE`, no duplicate keys).

    A pair is a quoted key, a colon and a value that holds no quote or is quoted: the pairs
    are found by `_PAIR_TOKEN`, and a pair's separator is the colon after its key's closing
    quote (a key or a string may hold `, ` or `": ` too, so spaces are never replaced across
    the whole text).
    """
    pairs = (
        pl.col("sent_metadata")
        .str.extract_all(_PAIR_TOKEN)
        .list.eval(_compact_pair(pl.element().str.strip_prefix('"')))
    )
    parsed = (
        _head(lines, marks)
        .with_columns(pairs=pairs)
        .with_columns(
            metadata=pl.when(pl.col("pairs").list.len() == 0)
            .then(pl.lit("{}"))
            .otherwise('{"' + pl.col("pairs").list.join(',"') + "}"),
            # A pair ends in `.0` only if its value is a number (a string ends in a quote).
            pairs=pl.col("pairs").list.eval(pl.element().str.strip_suffix(".0")),
        )
    )
    return _line_rows(parsed)


def _line_rows(parsed: pl.DataFrame) -> pl.DataFrame:
    """LINE_SCHEMA rows of parsed plain lines (`event`, `user_id`, `timestamp`,
    `received_at_text`, compact `metadata` and its `pairs`), but those whose metadata names a
    key twice: orjson keeps the last value; let it decide."""
    # A key is the bytes before its closing quote (`str.find`: a byte offset), compared as
    # bytes: a split into a struct cost 60% more (321k lines: 111 against 64 ms of CPU).
    pair = pl.element()
    keys = pl.col("pairs").list.eval(
        pair.cast(pl.Binary).bin.slice(0, pair.str.find('"', literal=True))
    )
    parsed = parsed.filter(
        pl.col("metadata").is_null() | (keys.list.n_unique() == pl.col("pairs").list.len())
    )
    text = pl.String()
    return parsed.select(
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


def _lines(data: bytes, marks: Marks) -> pl.Series:
    """UTF-8 bytes split on newlines, as `bytes.split` would split them, but for the blank
    line after a final newline (or of no bytes); `marks`: the bytes' own."""
    if marks.crlf:  # Polars' line reader drops the CR of CRLF; a line as sent keeps it
        return pl.Series("raw", [data.decode()]).str.split("\n").explode()
    return pl.read_lines(data, name="raw")["raw"]


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
    A piece that is not valid UTF-8 as a whole is decoded line by line too.
    """
    texts: list[bytes] = []
    places: list[tuple[int, int]] = []  # piece, first line
    frames = [pl.DataFrame(schema={"piece": pl.UInt32(), **LINE_SCHEMA})]
    for piece, (first_line, data) in enumerate(pieces):
        if first_line == 1 and data.startswith(BOM):
            data = data[len(BOM) :]
        if fast and _is_utf8(data):
            texts.append(data)
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
    """Joined with newlines, the texts split back into exactly their lines, each with its
    piece and number (`places`: each text's piece and first line)."""
    joined = b"\n".join(texts)
    marks = Marks.of(joined)
    lines = _with_places(_lines(joined, marks).to_frame().with_row_index("row"), texts, places)
    # Each shape is checked only on the lines the simpler one left.
    simple = lines.select(pl.col("raw").str.contains(SIMPLE_LINE)).to_series()
    rest = lines.filter(~simple)
    plain = rest.select(pl.col("raw").str.contains(FAST_LINE)).to_series()
    fast_rows = _simple_rows(lines.filter(simple), marks)
    if plain.any():
        fast_rows = pl.concat([fast_rows, _fast_rows(rest.filter(plain), marks)]).sort("row")
    if len(fast_rows) == len(lines) - len(rest) + plain.sum():
        slow = rest.filter(~plain)
    else:  # plain lines that name a key twice
        slow = lines.join(fast_rows.select("row"), on="row", how="anti")
    slow_rows = _decode_lines(
        [(row, raw.encode()) for row, raw in slow.select("row", "raw").iter_rows()]
    ).rename({"line": "row"})
    if slow_rows.is_empty():  # the usual case: the fast rows are all, in order
        return fast_rows.select("piece", *LINE_SCHEMA)
    slow_rows = slow_rows.with_columns(pl.col("row").cast(pl.UInt32)).join(
        lines.select(_IDS), on="row"
    )
    return (
        pl.concat([fast_rows, slow_rows.select(fast_rows.columns)])
        .sort("row")
        .select("piece", *LINE_SCHEMA)
    )


def _with_places(
    lines: pl.DataFrame, texts: list[bytes], places: list[tuple[int, int]]
) -> pl.DataFrame:
    """The lines of the texts joined with newlines, each with its piece and its number: its
    text is the one its first byte falls in, found from the lines' lengths (counting each
    text's newlines in Python cost as much as reading the lines, and held the GIL)."""
    ends = pl.Series(list(accumulate(len(text) + 1 for text in texts)), dtype=pl.Int64)
    width = pl.col("raw").str.len_bytes().cast(pl.Int64) + 1
    starts = lines.select(width.cum_sum() - width).to_series()
    text = ends.search_sorted(starts, side="right")  # the texts that end at or before a line
    first_rows = starts.search_sorted(ends.shift(1, fill_value=0), side="left")
    pieces = pl.Series([piece for piece, _ in places], dtype=pl.UInt32)
    first_lines = pl.Series([first for _, first in places], dtype=pl.Int64)
    row = pl.col("row").cast(pl.Int64)
    return lines.with_columns(
        piece=pieces.gather(text),
        line=first_lines.gather(text) + row - first_rows.gather(text).cast(pl.Int64),
    )


def decode_ndjson(data: bytes, *, first_line: int = 1, fast: bool = True) -> pl.LazyFrame:
    """One row per non-blank line of NDJSON bytes (a file's, or its chunk starting at line
    `first_line`): `decode_pieces` of one piece, without `piece`."""
    return decode_pieces([(first_line, data)], fast=fast).drop("piece")

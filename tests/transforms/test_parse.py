"""Decoding lines: nothing lost, nothing altered, every kind of bad line named."""

from __future__ import annotations

import json

import orjson
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from track.api.records import as_line
from track.transforms.parse import FAST_LINE, decode_ndjson, decode_pieces, plain_shape


def _rows(data: bytes) -> list[dict]:
    return decode_ndjson(data).collect().to_dicts()


def test_metadata_text_keeps_backslashes_quotes_unicode_and_long_doubles():
    meta = {
        "path": "C:\\tmp\\new",
        "quote": 'say "hi"',
        "text": "naïve ☕ 🎷",
        "pi": 3.141592653589793,
        "small": 1.5e-7,
        "big": 12345678901234567,
    }
    (row,) = _rows(json.dumps({"event": "e", "user_id": "u", "metadata": meta}).encode())
    assert json.loads(row["metadata"]) == meta
    # Compact, with non-ASCII kept as is.
    assert row["metadata"] == orjson.dumps(meta).decode()
    assert "☕" in row["metadata"]


def test_keys_that_first_appear_after_row_1000_are_kept():
    lines = [{"event": "e", "user_id": "u", "metadata": {"a": i}} for i in range(1500)]
    lines.append({"event": "e", "user_id": "u", "metadata": {"late_key": "here"}})
    rows = _rows(b"\n".join(json.dumps(x).encode() for x in lines))
    assert json.loads(rows[-1]["metadata"]) == {"late_key": "here"}


def test_bom_blank_lines_and_crlf():
    data = (
        b'\xef\xbb\xbf{"event":"a","user_id":"u"}\r\n\r\n   \n\t\n'
        + "\u00a0\u3000\u2028\n".encode()
        + b'{"event":"b","user_id":"u"}'
    )
    rows = _rows(data)
    assert [(r["line"], r["event"], r["reason"]) for r in rows] == [(1, "a", None), (6, "b", None)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "invalid_json"),
        (b'{"event":"a","user_id":"u","n":NaN}', "invalid_json"),
        (b'{"event":"a","user_id":"u","n":Infinity}', "invalid_json"),
        (b'{"event":"a","user_id":"u","s":"\\ud800"}', "invalid_json"),
        (b'{"event":"a","user_id":"u"', "invalid_json"),
        (b'{"event":"caf\xe9","user_id":"u"}', "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"null", "not_an_object"),
    ],
)
def test_bad_lines_get_a_reason(line, reason):
    (row,) = _rows(line)
    assert row["reason"] == reason
    assert row["message"]


def test_depth_limit_is_64_levels_counting_the_record():
    def nested(levels: int) -> bytes:
        # The record is level 1; metadata adds levels - 1 more objects.
        inner = "{}"
        for _ in range(levels - 2):
            inner = '{"x":' + inner + "}"
        return ('{"event":"a","user_id":"u","metadata":' + inner + "}").encode()

    assert _rows(nested(64))[0]["reason"] is None
    assert _rows(nested(65))[0]["reason"] == "too_deep"
    # Far deeper than the JSON decoder's own limit is still too deep, not invalid JSON.
    assert _rows(nested(3000))[0]["reason"] == "too_deep"


def test_invalid_utf8_raw_text_is_kept_readable():
    (row,) = _rows(b'{"event":"\xff"}')
    assert row["raw"] == '{"event":"\\xff"}'


def test_fields_and_their_json_types():
    (row,) = _rows(b'{"event":5,"user_id":"u","timestamp":null,"metadata":[1]}')
    assert (row["event"], row["event_type"]) == (None, "number")
    assert (row["user_id"], row["user_id_type"]) == ("u", "string")
    assert row["timestamp_type"] == "null"
    assert (row["metadata"], row["metadata_type"]) == (None, "array")
    (row,) = _rows(b'{"user_id":"u"}')
    assert row["event_type"] == "missing"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": 1, "y": [1.0]}, {"y": [1e0], "x": 1.0}, True),
        ({"x": 0}, {"x": -0.0}, True),
        ({"x": 1}, {"x": "1"}, False),
        ({"x": 1}, {"x": 1, "z": None}, False),
        (None, {}, False),
    ],
)
def test_fingerprint_compares_metadata_as_json_values(a, b, same):
    lines = [json.dumps({"event": "e", "user_id": "u", "metadata": m}) for m in (a, b)]
    rows = decode_ndjson("\n".join(lines).encode()).collect()
    assert (rows["fingerprint"][0] == rows["fingerprint"][1]) is same


def test_empty_file_gives_no_rows():
    assert decode_ndjson(b"").collect().height == 0
    assert decode_ndjson(b"\n\n").collect().schema["fingerprint"] == pl.Int64


# The fast path must give exactly what orjson gives, on lines it takes and lines near them.
# Mostly plain (the fast path's), sometimes what only orjson can take.
_plain_text = st.text(
    st.sampled_from(["a", "b", "é", "☕", "0", "-", ":", ",", "{", " "]), max_size=5
)
_other_text = st.text(st.sampled_from(["a", " ", "!", '"', "\\", "\t", "\x7f"]), max_size=4)
_text = st.one_of(_plain_text, _plain_text, _plain_text, _other_text)
_plain_number = st.sampled_from(
    [
        "0",
        "7",
        "-12",
        "123456789012345",
        "1.5",
        "-0.5",
        "154.0",
        "-154.0",
        "0.0",
        "0.0001",
        "1234567.12345678",
        "-0.000123456789012345",
    ]
)
_other_number = st.sampled_from(
    [
        "-0",
        "1234567890123456",
        "-0.0",
        "1.50",
        "1e5",
        "0.00001",
        "0.000001",
        "0.1000000000000000055511",
        "123456789012345.6",
        "3.14159265358979",
        "12345678.1234567",
        "0.0001234567890123456",
    ]
)


def _json(text: str) -> str:
    """A JSON string as producers write it: characters of several bytes as they are."""
    return json.dumps(text, ensure_ascii=False)


_scalar = st.one_of(
    _plain_text.map(_json),
    _plain_number,
    _plain_number,
    st.sampled_from(["true", "false", "null"]),
    _other_text.map(_json),
    _other_number,
)


@st.composite
def _line(draw) -> bytes:
    colon, comma = draw(st.sampled_from([(":", ","), (": ", ", "), (":", ", "), (" : ", " , ")]))
    pairs = draw(st.lists(st.tuples(_text, _scalar), max_size=4))
    if pairs and draw(st.integers(0, 9)) == 0:
        pairs[0] = (pairs[0][0], '{"n": [1]}')  # nested: orjson's
    meta = "{" + comma.join(f"{_json(k)}{colon}{v}" for k, v in pairs) + "}"
    fields = [
        ("event", _json(draw(_text))),
        ("user_id", _json(draw(_text))),
        (
            "timestamp",
            draw(st.sampled_from(['"2025-01-18T14:30:00.250Z"', '"2025-01-18"', "null"])),
        ),
        # As Track's HTTP API writes it, before metadata; sometimes odd, as others may send it.
        (
            "_received_at",
            draw(st.sampled_from(['"2025-01-18T14:30:00.250Z"', '"x}"', "17", "null"])),
        ),
        ("metadata", meta),
    ]
    fields = [f for f in fields if f[0] in ("event", "user_id") or draw(st.integers(0, 3))]
    if draw(st.integers(0, 3)) == 0:
        fields = draw(st.permutations(fields))
    line = "{" + comma.join(f'"{k}"{colon}{v}' for k, v in fields) + "}"
    return (line + draw(st.sampled_from(["", "\r"]))).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(_line(), min_size=1, max_size=5))
@example([b'{"event":"e","user_id":"u","timestamp":"t","metadata":{"b":1,"a":2.5,"ab":"x"}}'])
@example([b'{"event": "e", "user_id": "u", "timestamp": "t", "metadata": {"a": 1, "a": 2}}'])
@example([b'{"event":"timestamp","user_id":"metadata"}\n{"event":"e","user_id":"u","metadata":{}}'])
@example([b'{"event": "e", "user_id": "u", "metadata": {"k": "a, ", "j": ": "}}'])
@example([b'{"event":"","user_id":"","metadata":{",":""}}'])
@example([b'{"event":"e","user_id":"u","metadata":{"_received_at":"x"},"_received_at":"y"}'])
@example([b'{"event":"e","user_id":"u","metadata":{"_received_at":"x"}}'])
@example([b'{"event":"","user_id":"","metadata":{": ":""}}'])  # a key that starts with `: `
@example([b'{"event":"","user_id":"","metadata":{"a":": y","b": ": "}}'])  # values that hold it
@example([b'{"event": "", "user_id": "", "metadata": {": ": ": "}}'])
@example([b'{"event":"e","user_id":"u","metadata":{"a":"x,","b":1.0,"c":"y ","d":2.0}}'])
# Characters of several bytes before a field found by its place: Polars finds bytes, slices chars.
@example(['{"event":"é☕é","user_id":"ü","metadata":{"ab":"x","c":2}}'.encode()])
@example(
    ['{"event":"☕","user_id":"ü","_received_at":"2025-01-18T14:30:00Z","metadata":{}}'.encode()]
)
def test_fast_path_gives_what_orjson_gives(lines):
    data = b"\n".join(lines)
    fast = decode_ndjson(data).collect()
    assert_frame_equal(fast, decode_ndjson(data, fast=False).collect())


def test_key_order_and_spacing_do_not_change_the_fingerprint():
    lines = [
        b'{"event":"e","user_id":"u","timestamp":"t","metadata":{"b":1,"ab":"x","a":2.5}}',
        b'{"event": "e", "user_id": "u", "timestamp": "t", '
        b'"metadata": {"a": 2.5, "ab": "x", "b": 1.0}}',
        b'{"user_id":"u","event":"e","timestamp":"t","metadata":{"ab":"x","a":25e-1,"b":1}}',
    ]
    rows = decode_ndjson(b"\n".join(lines)).collect()
    assert rows["fingerprint"].n_unique() == 1
    assert rows["metadata"][0] == '{"b":1,"ab":"x","a":2.5}'


_EDGE_NUMBERS = [
    *["0", "-0", "0.0", "-0.0", "0.00010", "0.0001", "0.00001", "-0.5", "1e5", "01", "1.", ".5"],
    *["1.2.3", "--1", "123456789012345", "1234567890123456", "123456789012345.0"],
    *["1234567890123456.0", "1234567.12345678", "1234567.123456789", "12345678.5", "1.50"],
    *["0.123456789012345", "0.1234567890123456", "0.0001234567890123", "-12.0"],
]


def _with_number(number: str) -> bytes:
    return b'{"event":"e","user_id":"u","metadata":{"a":' + number.encode() + b"}}"


_MANY_KEYS = (
    '{"event":"e","user_id":"u","metadata":{' + ",".join(f'"k{i}":{i}' for i in range(70)) + "}}"
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line(), min_size=1, max_size=5))
@example([b'{"event":"e","user_id":"u","metadata":{"a":1,"b":2,"a":3}}'])
@example([b'{"event":"e","user_id":"u","metadata":{"a":1,"b":2}}\r'])
# Numbers at each edge of the plain shape's, one a line: a line is plain only if all its are.
@example([_with_number(n) for n in _EDGE_NUMBERS])
@example([b'{"event":"e","user_id":"u","_received_at":"x","_received_at":"y"}'])
@example([b'{"event":"e","user_id":"u","timestamp":"t","timestamp":"t"}'])
@example([b'{"event":"e","user_id":"u","metadata":{"a":truex}}', b'{"event":"e","user_id":"u"} '])
@example([_MANY_KEYS])
def test_the_fast_path_takes_exactly_the_lines_in_the_plain_shape(lines):
    # FAST_LINE is the plain shape's grammar; the scanner reads those lines but for a key
    # named twice (orjson decides which value is kept) or more than 64 keys.
    lines = [line.encode() if isinstance(line, str) else line for line in lines]
    data = b"\n".join(lines)

    def reads(line: bytes) -> bool:
        keys: list[list[str]] = []
        if not pl.Series([line.decode()]).str.contains(FAST_LINE).item():
            return False
        json.loads(line, object_pairs_hook=lambda pairs: keys.append([k for k, _ in pairs]))
        metadata = keys[0] if len(keys) == 2 else []  # the inner object is decoded first
        return len(set(metadata)) == len(metadata) <= 64

    assert plain_shape(data).to_list() == [reads(line) for line in lines]


def test_generated_bench_lines_and_the_apis_lines_take_the_simplest_path():
    record = {
        "event": "play",
        "user_id": "user-1",
        "timestamp": "2026-11-01T12:04:24.097Z",
        "metadata": {"device": "ios", "track": "t-1", "position": 152.231},
    }
    line = json.dumps(record)
    api = as_line(dict(record), "2026-11-01T12:04:25.000Z").decode().rstrip("\n")
    lines = [line, line.replace(" ", ""), api]
    assert plain_shape("\n".join(lines).encode()).all()


@pytest.mark.parametrize(
    "line",
    [
        b'{"event":"e","user_id":"u","_received_at":"2025-01-18T14:30:00Z","metadata":{"a":1}}',
        b'{"event":"e","user_id":"u","metadata":{"a":1},"_received_at":"2025-01-18T14:30:00Z"}',
    ],
)
def test_a_lines_received_at_is_read_on_both_paths(line):
    for fast in (True, False):
        (row,) = decode_ndjson(line, fast=fast).collect().to_dicts()
        assert row["received_at_text"] == "2025-01-18T14:30:00Z"
        assert row["metadata"] == '{"a":1}'


def test_a_metadata_key_named_received_at_is_not_the_lines():
    line = b'{"event":"e","user_id":"u","metadata":{"_received_at":"2025-01-18T14:30:00Z"}}'
    (row,) = decode_ndjson(line).collect().to_dicts()
    assert row["received_at_text"] is None


def test_fingerprint_is_the_sum_of_the_xxh3_of_its_parts():
    # The definition the README gives, pinned to the published XXH3-64 of each part (as the
    # xxhash package computes them): a change would split old copies from new ones.
    parts = {'["e","u",{}]': 4458556886839030400, 'a":1': 13843063122327762745}
    parts['b":"x"'] = 16719185209099012845
    line = b'{"event":"e","user_id":"u","metadata":{"b":"x","a":1}}'
    for fast in (True, False):
        found = decode_ndjson(line, fast=fast).collect()["fingerprint"].item()
        assert found % 2**64 == sum(parts.values()) % 2**64 and -(2**63) <= found < 2**63


_piece = st.tuples(
    st.integers(1, 3),
    st.lists(st.one_of(_line(), st.sampled_from([b"", b" ", b"\r", b"\xff{}"])), max_size=4),
    st.sampled_from([b"", b"\n", b"\r\n"]),
).map(lambda p: (p[0], b"\n".join(p[1]) + p[2]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_piece, min_size=1, max_size=4))
@example([(1, b'{"event":"e","user_id":"u"}\n'), (1, b'{"event":"e","user_id":"v"}')])
@example([(1, b"\n\n"), (2, b""), (1, b'{"event":"e","user_id":"u"}\r\n')])
def test_pieces_decoded_together_keep_their_lines_and_numbers(pieces):
    # Small files are decoded together; each line must keep its piece and number, as when
    # every piece is split and decoded on its own (a piece that is not UTF-8 comes first).
    together = decode_pieces(pieces).collect().sort("piece", "line")
    assert_frame_equal(together, decode_pieces(pieces, fast=False).collect().sort("piece", "line"))


def test_a_piece_longer_than_the_scanner_takes_is_decoded_line_by_line(monkeypatch):
    # The scanner's views point into a text with 32-bit offsets: a piece of 2 GiB or more (a
    # single line that long) goes to orjson, with its rows as the fast path would give them.
    from track.transforms import parse

    data = b'{"event":"e","user_id":"u","metadata":{"a":1.0}}\n{"event":"e","user_id":"v"}'
    expected = decode_ndjson(data).collect()
    # Bytes that could change under the scan (a bytearray) are read as a copy.
    assert_frame_equal(decode_ndjson(bytearray(data)).collect(), expected)  # type: ignore[arg-type]
    monkeypatch.setattr(parse._plain, "TEXT_MAX", 10)
    assert_frame_equal(decode_ndjson(data).collect(), expected)

"""Dedup: the copy from the earliest received_at is kept, then the first path, then line."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from track.transforms.dedup import deduplicate

AT = datetime(2025, 1, 1, tzinfo=UTC)
LATER = datetime(2025, 1, 2, tzinfo=UTC)
SCHEMA = {
    "fingerprint": pl.Int64,
    "sent_at": pl.Datetime("ms", "UTC"),
    "received_at": pl.Datetime("ms", "UTC"),
    "source": pl.String,
    "line": pl.Int64,
}


def _copies(*rows) -> pl.LazyFrame:
    return pl.LazyFrame(list(rows), schema=SCHEMA, orient="row")


NO_TOMBSTONES = pl.LazyFrame(schema={"fingerprint": pl.Int64, "sent_at": SCHEMA["sent_at"]})


def _kept(copies, tombstones=NO_TOMBSTONES):
    out = deduplicate(copies, tombstones=tombstones).filter("kept").collect()
    return sorted(out.select("source", "line").rows())


def test_earliest_received_wins_then_path_byte_order_then_line():
    copies = _copies(
        (7, AT, LATER, "a.ndjson", 1),  # later file
        (7, AT, AT, "b.ndjson", 9),
        (7, AT, AT, "B.ndjson", 9),  # "B" < "b" in byte order
        (7, AT, AT, "B.ndjson", 3),
        (9, AT, LATER, "a.ndjson", 2),
    )
    assert _kept(copies) == [("B.ndjson", 3), ("a.ndjson", 2)]


def test_same_content_at_another_instant_is_not_a_duplicate():
    copies = _copies((7, AT, AT, "a", 1), (7, LATER, AT, "a", 2))
    assert _kept(copies) == [("a", 1), ("a", 2)]


def test_tombstoned_records_are_never_kept_again():
    copies = _copies((7, AT, LATER, "late.ndjson", 1), (8, AT, LATER, "late.ndjson", 2))
    tombstones = pl.LazyFrame(
        {"fingerprint": [7], "sent_at": [AT]},
        schema={"fingerprint": pl.Int64, "sent_at": SCHEMA["sent_at"]},
    )
    assert _kept(copies, tombstones) == [("late.ndjson", 2)]

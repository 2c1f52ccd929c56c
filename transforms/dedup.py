"""Which copy of a record is kept (SPEC 3.6): earliest received_at, then path, then line."""

from __future__ import annotations

import polars as pl

RECORD_KEY = ["fingerprint", "sent_at"]
"""What makes two rows copies of one record: alike as sent, and the same instant as sent."""

COPY_ORDER = ["received_at", "source", "line"]


def deduplicate(copies: pl.LazyFrame, *, tombstones: pl.LazyFrame) -> pl.LazyFrame:
    """Add `kept`: true for the first copy of each record whose key is not a tombstone.

    A tombstone is the key of a record counted once whose kept copy has since expired: no later
    copy of it is ever kept again.
    """
    gone = tombstones.select(RECORD_KEY).unique().with_columns(_gone=pl.lit(True))
    # Most records have one copy: only those with several are sorted (rows come out unsorted).
    marked = copies.with_columns(_several=pl.struct(RECORD_KEY).is_duplicated())
    several = (
        marked.filter("_several")
        .sort(*RECORD_KEY, *COPY_ORDER)
        .with_columns(kept=pl.struct(RECORD_KEY).is_first_distinct())
    )
    alone = marked.filter(~pl.col("_several")).with_columns(kept=pl.lit(True))
    return (
        pl.concat([several, alone])
        .join(gone, on=RECORD_KEY, how="left")
        .with_columns(kept=pl.col("kept") & pl.col("_gone").is_null())
        .drop("_gone", "_several")
    )

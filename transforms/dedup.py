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
    return (
        copies.sort(*RECORD_KEY, *COPY_ORDER)
        .with_columns(kept=pl.struct(RECORD_KEY).is_first_distinct())
        .join(gone, on=RECORD_KEY, how="left")
        .with_columns(kept=pl.col("kept") & pl.col("_gone").is_null())
        .drop("_gone")
    )

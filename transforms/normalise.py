"""Valid records to events: missing and future timestamps, metadata warnings, expiry (SPEC 3)."""

from __future__ import annotations

from datetime import date

import polars as pl

from track.schemas.tables import UTC_MS, Events, polars_schema
from track.transforms.metadata import apply_warnings

EVENT_COLUMNS = list(polars_schema(Events))
"""The columns stored in events/ and duplicates/ (the date is the partition)."""
EVENT_SCHEMA = pl.Schema(
    {
        **polars_schema(Events),
        "date": pl.Date(),
        "clamped": pl.Boolean(),
        "truncated": pl.Boolean(),
        "expired": pl.Boolean(),
    }
)
"""What normalise_events gives: the stored columns, then `date` and what happened to the row."""


def clamp_future_timestamps(records: pl.LazyFrame) -> pl.LazyFrame:
    """`timestamp` = the instant sent, or `received_at` when absent or later; `clamped` flags it."""
    received = pl.col("received_at").cast(UTC_MS)
    return records.with_columns(
        sent_at=pl.coalesce("sent_at", received),
        clamped=pl.col("sent_at").is_not_null() & (pl.col("sent_at") > received),
        received_at=received,
    ).with_columns(
        timestamp_text=pl.col("timestamp"),
        timestamp=pl.min_horizontal("sent_at", "received_at"),
    )


def truncate_metadata(records: pl.LazyFrame) -> pl.LazyFrame:
    """Apply the clamp warnings and the 4096-byte rule to `metadata`; add `truncated`."""
    return records.pipe(apply_warnings).drop("timestamp_text")


def mark_expired(records: pl.LazyFrame, *, window_start: date) -> pl.LazyFrame:
    """Add `date` (UTC date of `timestamp`) and `expired` (before the retention window)."""
    return records.with_columns(date=pl.col("timestamp").dt.date()).with_columns(
        expired=pl.col("date") < pl.lit(window_start)
    )


def normalise_events(records: pl.LazyFrame, *, window_start: date) -> pl.LazyFrame:
    """Events of valid records (each with its file's `source` and `received_at`), with `date`,
    `clamped`, `truncated`, `expired`."""
    return (
        records.pipe(clamp_future_timestamps)
        .pipe(truncate_metadata)
        .pipe(mark_expired, window_start=window_start)
        .select(pl.col(name).cast(dtype) for name, dtype in EVENT_SCHEMA.items())
    )

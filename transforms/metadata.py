"""The metadata rules of SPEC section 3: clamp warnings and the exact 4096-byte truncation."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl

from track.schemas.constants import (
    MAX_METADATA_BYTES,
    METADATA_TRUNCATED,
    ORIGINAL_SIZE_KEY,
    ORIGINAL_TIMESTAMP_KEY,
    TIMESTAMP_CLAMPED,
    WARNINGS_KEY,
)


def compact(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept as is), the form metadata is sized in."""
    return orjson.dumps(value)


def _object_size(entries: list[bytes]) -> int:
    # `{` + entries joined by `,` + `}`
    return 2 + sum(len(e) for e in entries) + max(len(entries) - 1, 0)


def _entry(key: str, value: Any) -> bytes:
    return compact(key) + b":" + compact(value)


def _with_warnings(
    user: dict[str, Any], pipeline: dict[str, Any]
) -> tuple[list[bytes], list[bytes]]:
    """Entries of the user's keys not overridden by the pipeline, and of the pipeline's own."""
    kept = [_entry(k, v) for k, v in user.items() if k not in pipeline]
    return kept, [_entry(k, v) for k, v in pipeline.items()]


def warn_metadata(metadata: str | None, original_timestamp: str | None) -> tuple[str | None, bool]:
    """Metadata with clamp warnings added and cut to MAX_METADATA_BYTES; and whether it was cut.

    `metadata` is the compact JSON of the metadata as sent (or None); `original_timestamp` is the
    timestamp as sent when it was clamped (else None). The pipeline's keys replace user keys of the
    same name; truncation keeps the longest run of leading user keys that fits with the warnings.
    """
    user: dict[str, Any] = orjson.loads(metadata) if metadata is not None else {}
    warnings: list[str] = []
    pipeline: dict[str, Any] = {}
    if original_timestamp is not None:
        warnings.append(TIMESTAMP_CLAMPED)
        pipeline = {WARNINGS_KEY: warnings, ORIGINAL_TIMESTAMP_KEY: original_timestamp}
    user_entries, own_entries = _with_warnings(user, pipeline)
    if _object_size(user_entries + own_entries) <= MAX_METADATA_BYTES:
        if not pipeline:
            return metadata, False
        return _join(user_entries + own_entries), False
    warnings.append(METADATA_TRUNCATED)
    original_size = len(metadata.encode()) if metadata is not None else 2
    pipeline = {WARNINGS_KEY: warnings, **pipeline, ORIGINAL_SIZE_KEY: original_size}
    user_entries, own_entries = _with_warnings(user, pipeline)
    budget = MAX_METADATA_BYTES - _object_size(own_entries)
    kept: list[bytes] = []
    for entry in user_entries:
        if len(entry) + 1 > budget:
            break
        kept.append(entry)
        budget -= len(entry) + 1
    return _join(kept + own_entries), True


def _join(entries: list[bytes]) -> str:
    return (b"{" + b",".join(entries) + b"}").decode()


def apply_warnings(records: pl.LazyFrame) -> pl.LazyFrame:
    """Rewrite `metadata` of clamped or oversized rows by warn_metadata; add `truncated`.

    Needs `metadata`, `clamped` and `timestamp_text` (the timestamp as sent).
    """
    oversized = (pl.col("metadata").str.len_bytes() > MAX_METADATA_BYTES).fill_null(False)
    needs = pl.col("clamped") | oversized
    fixed = (
        records.filter(needs)
        .with_columns(
            pl.struct("metadata", "timestamp_text", "clamped")
            .map_batches(_warn_batch, return_dtype=_WARNED)
            .alias("_warned")
        )
        .with_columns(
            metadata=pl.col("_warned").struct["metadata"],
            truncated=pl.col("_warned").struct["truncated"],
        )
        .drop("_warned")
    )
    untouched = records.filter(~needs).with_columns(truncated=pl.lit(False))
    return pl.concat([untouched, fixed], how="vertical")


_WARNED = pl.Struct({"metadata": pl.String, "truncated": pl.Boolean})


def _warn_batch(rows: pl.Series) -> pl.Series:
    # Only clamped or oversized rows come here: rare, so a Python loop is cheap.
    out = [
        warn_metadata(r["metadata"], r["timestamp_text"] if r["clamped"] else None)
        for r in rows.to_list()
    ]
    return pl.Series([{"metadata": m, "truncated": t} for m, t in out], dtype=_WARNED)

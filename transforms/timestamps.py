"""RFC 3339 timestamps (SPEC section 2) to UTC instants at millisecond precision."""

from __future__ import annotations

import polars as pl

from track.schemas.constants import RECEIVED_AT_SLACK_MS, RFC3339
from track.schemas.tables import UTC_MS

COMMON_SHAPE = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$"
)
"""The shape most timestamps come in (JavaScript's `toISOString`, the API's `_received_at`):
milliseconds in UTC, each part at a fixed place (`_common_instant`)."""


def parse_rfc3339(text: pl.Expr) -> pl.Expr:
    """The UTC instant a timestamp string names, cut to milliseconds; null if it is not one.
    Texts in the common shape are read as a date and a time of day (`_common_instant`); only
    the others are taken apart (a null costs the general path next to nothing)."""
    common = text.str.contains(COMMON_SHAPE)
    quick = _common_instant(text)
    return pl.when(common).then(quick).otherwise(_parse_any(pl.when(~common).then(text)))


def _common_instant(text: pl.Expr) -> pl.Expr:
    """The instant of a text in the common shape (whose digits COMMON_SHAPE has checked), or
    null on a day its month does not have: its date read with the ISO date format (a tenth of
    the cost of `strptime` with the whole format), and its time of day added from the
    fixed-width numbers. About half the cost in all (428,572 timestamps: 0.10 against 0.19 s of
    CPU)."""

    def number(at: int, width: int) -> pl.Expr:
        return text.str.slice(at, width).cast(pl.Int64, strict=False)

    day = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64)
    millis = (
        day * 86_400_000
        + number(11, 2) * 3_600_000
        + number(14, 2) * 60_000
        + number(17, 2) * 1_000
        + number(20, 3)
    )
    return millis.cast(UTC_MS)


def _parse_any(text: pl.Expr) -> pl.Expr:
    """The UTC instant of a timestamp in any shape RFC3339 allows, from its parts."""
    part = text.str.extract_groups(RFC3339).struct.field
    wall = pl.concat_str(
        part("year"),
        pl.lit("-"),
        part("month"),
        pl.lit("-"),
        part("day"),
        pl.lit("T"),
        part("hour"),
        pl.lit(":"),
        part("minute"),
        pl.lit(":"),
        part("second"),
    ).str.strptime(pl.Datetime(UTC_MS.time_unit), "%Y-%m-%dT%H:%M:%S", strict=False)
    # Finer digits are cut, not rounded: keep the first three, padded.
    millis = part("fraction").fill_null("").str.slice(0, 3).str.pad_end(3, "0").cast(pl.Int64)
    offset = part("offset").fill_null("Z")
    sign = pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
    offset_minutes = (
        pl.when(offset == "Z")
        .then(0)
        .otherwise(
            sign
            * (
                offset.str.slice(1, 2).cast(pl.Int64, strict=False) * 60
                + offset.str.slice(4, 2).cast(pl.Int64, strict=False)
            )
        )
    )
    local = wall + pl.duration(milliseconds=millis)
    return (local - pl.duration(minutes=offset_minutes)).dt.replace_time_zone("UTC")


def with_sent_at(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Add `sent_at`: the instant of `timestamp` as sent (null when absent or not a timestamp)."""
    return lines.with_columns(sent_at=parse_rfc3339(pl.col("timestamp")))


def with_line_received_at(lines: pl.LazyFrame) -> pl.LazyFrame:
    """`received_at` of each line: its own `_received_at` (SPEC section 2) where that is an RFC
    3339 date-time with an offset, less than RECEIVED_AT_SLACK_MS after its file's
    `received_at`; else its file's. Drops `received_at_text`."""
    text = pl.col("received_at_text")
    offset = text.str.extract_groups(RFC3339).struct.field("offset")
    own = pl.when(offset.is_not_null()).then(parse_rfc3339(text))
    files = pl.col("received_at")
    before_file = own < files + pl.duration(milliseconds=RECEIVED_AT_SLACK_MS)
    return lines.with_columns(
        received_at=pl.when(before_file).then(own).otherwise(files).cast(UTC_MS)
    ).drop("received_at_text")

"""RFC 3339 timestamps (SPEC section 2) to UTC instants at millisecond precision."""

from __future__ import annotations

import polars as pl

# RFC 3339 section 5.6 date-time with `T`, `t` or a space, offset `Z`, +hh:mm, -hh:mm or none.
# Field ranges are in the pattern; whether the day exists in its month is checked by parsing.
# Second 60 (a leap second) has no instant in UTC milliseconds and is refused.
RFC3339 = (
    r"^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]"
    r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]+))?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)

UTC_MS = pl.Datetime("ms", "UTC")


def parse_rfc3339(text: pl.Expr) -> pl.Expr:
    """The UTC instant a timestamp string names, cut to milliseconds; null if it is not one."""
    parts = text.str.extract_groups(RFC3339)
    wall = pl.concat_str(
        parts.struct["1"],
        pl.lit("-"),
        parts.struct["2"],
        pl.lit("-"),
        parts.struct["3"],
        pl.lit("T"),
        parts.struct["4"],
        pl.lit(":"),
        parts.struct["5"],
        pl.lit(":"),
        parts.struct["6"],
    ).str.strptime(pl.Datetime("ms"), "%Y-%m-%dT%H:%M:%S", strict=False)
    # Finer digits are cut, not rounded: keep the first three, padded.
    millis = parts.struct["7"].fill_null("").str.slice(0, 3).str.pad_end(3, "0").cast(pl.Int64)
    offset = parts.struct["8"].fill_null("Z")
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

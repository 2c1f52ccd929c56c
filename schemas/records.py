"""The contract of an incoming record (SPEC section 2), and the reasons a line breaks it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from schemas.constants import (
    INVALID_EVENT,
    INVALID_METADATA,
    INVALID_TIMESTAMP,
    INVALID_USER_ID,
    MAX_STRING_CHARS,
    RESERVED_EVENT,
)
from transforms.timestamps import RFC3339

STRING_RULE = f"must be a string of 1 to {MAX_STRING_CHARS} characters"


class ParsedRecord(pa.DataFrameModel):
    """A decoded JSON object line, before normalisation: one row per line that is an object."""

    line: int
    event: str = pa.Field(
        nullable=False,
        str_length={"min_value": 1, "max_value": MAX_STRING_CHARS},
        notin=[RESERVED_EVENT],
    )
    user_id: str = pa.Field(
        nullable=False, str_length={"min_value": 1, "max_value": MAX_STRING_CHARS}
    )
    timestamp_type: str = pa.Field(isin=["string", "null"])
    timestamp: str = pa.Field(nullable=True, str_matches=RFC3339)
    sent_at: Annotated[pl.Datetime, "ms", "UTC"] = pa.Field(nullable=True)
    metadata_type: str = pa.Field(isin=["object", "null"])

    @pa.dataframe_check(name="timestamp_is_a_real_instant")
    @classmethod
    def timestamp_is_a_real_instant(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A timestamp that matches the grammar must also name a real date (no 2025-02-30)."""
        return data.lazyframe.select(
            pl.col("timestamp").is_null()
            | ~pl.col("timestamp").str.contains(RFC3339)
            | pl.col("sent_at").is_not_null()
        )

    class Config:
        strict = "filter"


# The column a failure is reported on -> (reason, order of precedence).
_FIELD_REASON = {
    "event": (INVALID_EVENT, 0),
    "user_id": (INVALID_USER_ID, 1),
    "timestamp_type": (INVALID_TIMESTAMP, 2),
    "timestamp": (INVALID_TIMESTAMP, 3),
    "metadata_type": (INVALID_METADATA, 5),
}


def _string_problem(field: str) -> pl.Expr:
    """`<field> must be a string of 1 to 256 characters, got ...` for the row's value."""
    value, kind = pl.col(field), pl.col(f"{field}_type")
    got = (
        pl.when(value.is_null())
        .then(kind)
        .when(value == "")
        .then(pl.lit("an empty string"))
        .otherwise(pl.format("{} characters", value.str.len_chars()))
    )
    return pl.format(f"{field} {STRING_RULE}, got {{}}", got)


def _messages() -> dict[str, pl.Expr]:
    timestamp_rule = "timestamp must be an RFC 3339 date-time"
    return {
        "event": pl.when(pl.col("event") == RESERVED_EVENT)
        .then(pl.lit(f'event must not be "{RESERVED_EVENT}": the answers use that key'))
        .otherwise(_string_problem("event")),
        "user_id": _string_problem("user_id"),
        "timestamp_type": pl.format(
            f"{timestamp_rule} string or null, got {{}}", pl.col("timestamp_type")
        ),
        "timestamp": pl.format(
            f'{timestamp_rule} such as "2025-01-18T14:30:00Z", got "{{}}"',
            pl.col("timestamp").str.slice(0, 64),
        ),
        "sent_at": pl.format(
            'timestamp names no real date (its month has no such day), got "{}"',
            pl.col("timestamp").str.slice(0, 64),
        ),
        "metadata_type": pl.format(
            "metadata must be a JSON object or null, got {}", pl.col("metadata_type")
        ),
    }


def validate_records(records: pl.DataFrame, key: Sequence[str] = ("line",)) -> pl.DataFrame:
    """The `key` columns (what names a line), `reason` and `message` of every record that
    breaks ParsedRecord (one row a line)."""
    empty = (
        records.select(*key)
        .clear()
        .with_columns(reason=pl.lit(None, pl.String), message=pl.lit(None, pl.String))
    )
    try:
        ParsedRecord.validate(records, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null())
    else:
        return empty
    # A dataframe-level check names no column: it is about the parsed instant.
    cases = cases.with_columns(
        column=pl.when(pl.col("check") == "timestamp_is_a_real_instant")
        .then(pl.lit("sent_at"))
        .otherwise(pl.col("column"))
    )
    precedence = {**{k: v[1] for k, v in _FIELD_REASON.items()}, "sent_at": 4}
    reasons = {**{k: v[0] for k, v in _FIELD_REASON.items()}, "sent_at": INVALID_TIMESTAMP}
    first = (
        cases.select(
            pl.col("index").cast(pl.Int64),
            pl.col("column"),
            pl.col("column").replace_strict(precedence, return_dtype=pl.Int64).alias("rank"),
        )
        .sort("index", "rank")
        .unique("index", keep="first")
    )
    rows = records.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    joined = first.join(rows, on="index", how="left")
    messages = _messages()
    message = pl.lit(None, pl.String)
    for column, expr in messages.items():
        message = pl.when(pl.col("column") == column).then(expr).otherwise(message)
    if joined.is_empty():
        return empty
    return joined.select(
        *key,
        pl.col("column").replace_strict(reasons, return_dtype=pl.String).alias("reason"),
        message.alias("message"),
    ).sort(*key)

"""The table contracts: rows the commit moves keep every table's names and types."""

from __future__ import annotations

import polars as pl
import pytest

from track.schemas.tables import Counts, conform


def test_rows_moved_between_tables_must_keep_the_tables_names_and_types():
    rows = pl.DataFrame({"count": [2], "user_id": ["u"], "event": ["play"], "extra": [1]})
    assert conform(rows, Counts).columns == ["event", "user_id", "count"]
    with pytest.raises(TypeError, match="types"):
        conform(rows.with_columns(pl.col("count").cast(pl.Int32)), Counts)
    with pytest.raises(TypeError, match="lack columns"):
        conform(rows.drop("user_id"), Counts)

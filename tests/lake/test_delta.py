"""Every table is a Delta table a notebook reads without Track (`pl.scan_delta`), and its
Parquet files read with a plain `pl.scan_parquet` glob give the same rows once a run committed;
on a local folder and on the S3 API."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import polars as pl
import polars.selectors as cs
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from tests.lakes import drop, ndjson
from track.flows.pipeline import pipeline
from track.lake.delta import SNAPSHOT_KEY, storage_options
from track.lake.store import TABLES, Lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)


def _drop_and_run(lake: str) -> None:
    play = {"path": "C:\\tmp", "q": '"quoted"', "text": "naïve"}
    drop(
        lake,
        "date=2025-03-05/a.ndjson",
        ndjson(
            {
                "event": "play",
                "user_id": "u",
                "timestamp": "2025-03-05T12:00:00Z",
                "metadata": play,
            },
            {"event": "stop", "user_id": "u", "timestamp": "2025-03-05T13:00:00Z"},
            "nope",
        ),
        modified=datetime(2025, 3, 6, tzinfo=UTC),
    )
    pipeline(lake=lake, now=NOW)


def test_every_table_reads_with_scan_delta(lake_url):
    _drop_and_run(lake_url)
    options = storage_options(lake_url)
    events = pl.scan_delta(f"{lake_url}/events", storage_options=options).collect()
    assert events.schema["date"] == pl.Date
    play = events.filter(pl.col("event") == "play")["metadata"].item()
    assert json.loads(play) == {"path": "C:\\tmp", "q": '"quoted"', "text": "naïve"}
    assert events.height == 2
    quarantine = pl.scan_delta(f"{lake_url}/quarantine", storage_options=options).collect()
    assert quarantine.select("line", "raw", "reason").rows() == [(3, "nope", "invalid_json")]
    counts = pl.scan_delta(f"{lake_url}/counts", storage_options=options).collect()
    expected = pl.DataFrame(
        {"date": [date(2025, 3, 5)] * 2, "event": ["play", "stop"], "count": [1, 1]}
    )
    assert_frame_equal(counts.select("date", "event", "count").sort("event"), expected)
    sessions = pl.scan_delta(f"{lake_url}/sessions", storage_options=options).collect()
    assert sessions["duration_ms"].to_list() == [3_600_000]
    plays = pl.scan_delta(f"{lake_url}/plays", storage_options=options).collect()
    assert plays.sort("timestamp").select("date", "user_id", "event").rows() == [
        (date(2025, 3, 5), "u", "play"),
        (date(2025, 3, 5), "u", "stop"),
    ]
    nothing = pl.scan_delta(f"{lake_url}/duplicates", storage_options=options).collect()
    assert (nothing.height, nothing.columns) == (0, events.columns)


def test_a_scan_parquet_glob_of_a_table_reads_what_scan_delta_reads(lake_url):
    _drop_and_run(lake_url)
    drop(  # a second run replaces the partition of 2025-03-05, adds one, and a duplicate
        lake_url,
        "date=2025-03-07/b.ndjson",
        ndjson(
            {"event": "stop", "user_id": "u", "timestamp": "2025-03-05T13:00:00Z"},
            {"event": "pause", "user_id": "w", "timestamp": "2025-03-05T14:00:00Z"},
            {"event": "play", "user_id": "w", "timestamp": "2025-03-07T14:00:00Z"},
        ),
        modified=datetime(2025, 3, 8, tzinfo=UTC),
    )
    pipeline(lake=lake_url, now=NOW)
    options = storage_options(lake_url)
    for table in TABLES:
        parquet = pl.scan_parquet(
            f"{lake_url}/{table}/date=*/*.parquet",
            hive_partitioning=True,
            hive_schema={"date": pl.Date()},
            storage_options=options,
        )
        # Delta's timestamps are microseconds: the same instants.
        delta = pl.scan_delta(f"{lake_url}/{table}", storage_options=options).with_columns(
            cs.datetime().dt.cast_time_unit("ms")
        )
        rows = delta.collect()
        assert_frame_equal(parquet.collect().sort(rows.columns), rows.sort(rows.columns))


def test_each_run_that_changes_a_table_adds_a_delta_version_naming_its_snapshot(lake_url):
    def latest() -> tuple[int, str | None]:
        table = DeltaTable(f"{lake_url}/events", storage_options=storage_options(lake_url))
        if "://" in lake_url:  # history() hangs on moto's S3 (a list request that never ends)
            return table.version(), None
        (info,) = table.history(1)
        return table.version(), info[SNAPSHOT_KEY]

    def committed() -> str | None:
        """The current snapshot, just after a run that changed the lake committed it."""
        return None if "://" in lake_url else str(Lake(lake_url).current().number)

    _drop_and_run(lake_url)
    version, snapshot = latest()
    assert snapshot == committed()
    pipeline(lake=lake_url, now=NOW)  # nothing new: no version
    assert latest() == (version, snapshot)
    drop(
        lake_url,
        "date=2025-03-07/c.ndjson",
        ndjson({"event": "play", "user_id": "z", "timestamp": "2025-03-07T09:00:00Z"}),
        modified=datetime(2025, 3, 8, tzinfo=UTC),
    )
    pipeline(lake=lake_url, now=NOW)
    assert latest() == (version + 1, committed())

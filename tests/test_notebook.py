"""The notebook (notebooks/explore.py) on the sample lake: it runs as a script, and what its
cells find is what the lake holds."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from tests.lakes import SAMPLE_NOW, drop_sample
from track import reader
from track.flows.pipeline import pipeline
from track.lake.store import Lake
from track.schemas.tables import Quarantine

pytestmark = pytest.mark.usefixtures("prefect_harness")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.py"


def _cells(lake: str, monkeypatch) -> dict:
    """The notebook's cells run in this process: what they defined, by name."""
    monkeypatch.setenv("TRACK_LAKE", lake)
    spec = importlib.util.spec_from_file_location("explore", NOTEBOOK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, defined = module.app.run()
    return defined


def test_the_notebook_runs_as_a_script_on_the_sample_lake(tmp_path):
    lake = str(tmp_path / "lake")
    drop_sample(lake)
    pipeline(lake=lake, now=SAMPLE_NOW)
    env = dict(os.environ, TRACK_LAKE=lake)
    done = subprocess.run(
        [sys.executable, str(NOTEBOOK)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def test_what_the_notebook_finds_is_what_the_lake_holds(lake_url, monkeypatch):
    drop_sample(lake_url)
    pipeline(lake=lake_url, now=SAMPLE_NOW)
    cells = _cells(lake_url, monkeypatch)
    start, end = cells["start"].isoformat(), cells["end"].isoformat()
    # The last 30 of the sample's days (on S3, records without a timestamp count on the day
    # they were written).
    days = Lake(lake_url).partitions("counts")
    first = max(days[0], days[-1] - timedelta(days=29))
    assert (start, end) == (first.isoformat(), days[-1].isoformat())
    answer = reader.users(start, end, lake=lake_url)["data"]
    assert [(d.isoformat(), n) for d, n in cells["daily_users"].iter_rows()] == [
        (row["date"], row["users"]) for row in answer
    ]
    sunday = reader.users(start, end, "week", week_start="sunday", lake=lake_url)["data"]
    assert cells["weekly_users"]["users"].to_list() == [row["users"] for row in sunday]
    assert cells["per_day"]["count"].sum() == sum(
        n
        for row in reader.metrics(start, end, lake=lake_url)["data"]
        for k, n in row.items()
        if k != "date"
    )
    quarantined = Lake(lake_url).scan("quarantine", Quarantine).collect()
    assert dict(cells["by_reason"].iter_rows()) == dict(
        quarantined.group_by("reason").len().iter_rows()
    )
    # The raw lines behind the reason chosen (the first): read again from raw/, they are the
    # lines the quarantine kept.
    found = cells["found"]
    reason = cells["reason"].value
    assert len(found) == quarantined.filter(pl.col("reason") == reason).height > 0
    assert found["in_file"].to_list() == found["raw"].to_list()

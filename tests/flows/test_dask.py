"""Scale-out: the ingest tasks on a Dask LocalCluster of two worker processes give the same
lake answers and report as the default thread runner."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.lakes import drop, ndjson
from track import reader
from track.flows.pipeline import LOCAL_DASK, pipeline

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODIFIED = datetime(2025, 3, 2, tzinfo=UTC)
NOW = datetime(2025, 3, 5, tzinfo=UTC)


def _fill(lake: str) -> None:
    for number in range(6):
        day = f"2025-03-0{1 + number % 2}"
        drop(
            lake,
            f"date={day}/f{number}.ndjson",
            ndjson(
                {"event": "play", "user_id": f"u{number}", "timestamp": f"{day}T10:00:00Z"},
                {"event": "stop", "user_id": f"u{number}", "timestamp": f"{day}T10:0{number}:00Z"},
                {"event": "stop", "user_id": "u0", "timestamp": "2025-03-01T10:00:00Z"},
                "bad",
            ),
            modified=MODIFIED,
        )


def _answers(lake: str) -> list:
    return [
        query("2025-03-01", "2025-03-31", group, lake=lake)
        for query in (reader.metrics, reader.sessions)
        for group in ("day", "month")
    ]


def test_dask_local_cluster_gives_the_same_answers(tmp_path):
    threads, dask = str(tmp_path / "threads"), str(tmp_path / "dask")
    _fill(threads)
    _fill(dask)
    expected = pipeline(lake=threads, now=NOW)
    report = pipeline(lake=dask, now=NOW, dask_address=LOCAL_DASK)
    for key in ("files", "lines", "accepted", "duplicates", "quarantined", "sessions"):
        assert report[key] == expected[key]
    # Every file repeats u0's stop, which f0 also holds: one kept, six duplicates.
    assert (report["files"], report["duplicates"], report["quarantined"]) == (6, 6, 6)
    assert _answers(dask) == _answers(threads)
    assert _answers(dask)[0]["data"][0] == {"date": "2025-03-01", "play": 3, "stop": 3}

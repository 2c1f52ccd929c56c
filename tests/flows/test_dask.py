"""Scale-out: on a Dask LocalCluster of two worker processes, the ingest batches, the change of
each event date and the sessions of each shard of users run as tasks on the cluster, and give
the same lake answers and report as the default thread runner, on a local lake and on S3."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.lakes import drop, ndjson
from track import reader, settings
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


def _more(lake: str) -> None:
    """A later file over both days: new events (added to their dates), a copy of a stored
    record (its date rewritten), a stop that ends u1's session earlier."""
    drop(
        lake,
        "date=2025-03-02/late.ndjson",
        ndjson(
            {"event": "like", "user_id": "u9", "timestamp": "2025-03-01T12:00:00Z"},
            {"event": "stop", "user_id": "u1", "timestamp": "2025-03-02T10:00:30Z"},
            {"event": "play", "user_id": "u2", "timestamp": "2025-03-01T10:00:00Z"},
        ),
        modified=MODIFIED,
    )


def _answers(lake: str) -> list:
    return [
        query("2025-03-01", "2025-03-31", group, lake=lake)
        for query in (reader.metrics, reader.sessions)
        for group in ("day", "month")
    ]


def _task_names(state) -> list[str]:
    """The names of the task runs of a flow run (its final state), without their suffixes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=only)
    return sorted(run.name.rsplit("-", 1)[0] for run in runs)


def test_dask_local_cluster_gives_the_same_answers(lake_url):
    dask, threads = lake_url, f"{lake_url.rsplit('/', 1)[0]}/threads"
    _fill(threads)
    _fill(dask)
    expected = pipeline(lake=threads, now=NOW)
    state = pipeline(lake=dask, now=NOW, dask_address=LOCAL_DASK, return_state=True)
    report = state.result()
    for key in ("files", "lines", "accepted", "duplicates", "quarantined", "sessions"):
        assert report[key] == expected[key]
    # Every file repeats u0's stop, which f0 also holds: one kept, six duplicates.
    assert (report["files"], report["duplicates"], report["quarantined"]) == (6, 6, 6)
    assert _answers(dask) == _answers(threads)
    assert _answers(dask)[0]["data"][0] == {"date": "2025-03-01", "play": 3, "stop": 3}
    names = _task_names(state)
    assert names.count("change_date") == 2  # one a date
    assert names.count("deal_date") == 2  # one a date
    assert names.count("match_dealt") == settings.SESSION_SHARDS

    _more(threads)
    _more(dask)
    expected = pipeline(lake=threads, now=NOW)
    report = pipeline(lake=dask, now=NOW, dask_address=LOCAL_DASK)
    assert (report["accepted"], report["duplicates"]) == (expected["accepted"], 1) == (2, 1)
    assert _answers(dask) == _answers(threads)
    assert _answers(dask)[2]["data"][1]["sessionCount"] == 3

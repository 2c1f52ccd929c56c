"""How a run's raw files are dealt into ingest tasks."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from track import settings as track_settings
from track.lake.ingest import FilePlan, batches
from track.lake.store import RawFile

MB = 1024**2
AT = datetime(2026, 11, 1, tzinfo=UTC)


def _plans(sizes: list[int]) -> list[FilePlan]:
    return [
        FilePlan(RawFile(f"date=2026-11-01/{n:04d}.ndjson", size, AT), None)
        for n, size in enumerate(sizes)
    ]


def _bytes(group: list[FilePlan]) -> int:
    return sum(plan.raw.size for plan in group)


def test_equal_files_make_a_multiple_of_the_workers_in_tasks_of_about_equal_bytes():
    # 28 files of 15.7 MB: 7 tasks of 4 files would leave one of two workers idle while the
    # last ran; 8 tasks of 3 or 4 files keep both busy to the end.
    groups = batches(_plans([int(15.7 * MB)] * 28), workers=2)
    assert [len(g) for g in groups] == [4, 4, 4, 4, 3, 3, 3, 3]


def test_a_few_files_make_one_task_each():
    assert [len(g) for g in batches(_plans([MB, 2 * MB, 3 * MB]), workers=2)] == [1, 1, 1]
    assert batches([], workers=2) == []


def test_a_large_file_has_a_task_of_its_own_and_small_ones_share_the_rest():
    groups = batches(_plans([200 * MB] + [MB] * 30), workers=2)
    assert len(groups) == 4
    assert [len(g) for g in groups] == [1, 10, 10, 10]
    assert _bytes(groups[0]) == 200 * MB


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.just(0), st.integers(min_value=0, max_value=300 * MB)),
        min_size=1,
        max_size=600,
    ),
    st.integers(min_value=1, max_value=8),
)
def test_every_file_is_read_once_in_tasks_that_respect_the_limits(sizes, workers):
    plans = _plans(sizes)
    groups = batches(plans, workers=workers)
    paths = [plan.raw.path for group in groups for plan in group]
    assert sorted(paths) == [plan.raw.path for plan in plans]
    for group in groups:
        assert group == sorted(group, key=lambda plan: plan.raw.path)  # the plans' order
        assert 1 <= len(group) <= track_settings.BATCH_FILES
    assert len(groups) == len(plans) or len(groups) % workers == 0
    if len(groups) < len(plans):
        assert len(groups) >= track_settings.BATCHES_AT_LEAST
    total = sum(sizes)
    # No task holds more than its share and one file more (the rule deals the largest first).
    share = total / len(groups)
    assert max(_bytes(g) for g in groups) <= share + max(sizes)
    assert [_bytes(g) for g in groups] == sorted((_bytes(g) for g in groups), reverse=True)

"""What the lake's crash and lock tests share."""

from __future__ import annotations

import pytest

from tests.runs import NOW, answers, first_drop, second_drop
from track.flows.pipeline import pipeline


@pytest.fixture(scope="module")
def after_answers(prefect_harness, tmp_path_factory):
    """The answers of uninterrupted runs over the first two drops."""
    lake = str(tmp_path_factory.mktemp("after") / "lake")
    first_drop(lake)
    pipeline(lake=lake, now=NOW)
    second_drop(lake)
    pipeline(lake=lake, now=NOW)
    return answers(lake)

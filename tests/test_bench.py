"""The benchmark scripts still run end to end and report (on tiny inputs: what they measure
is only meaningful at their own sizes, see the README's Performance section)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench(name: str, tmp_path: Path, *args: str) -> dict:
    env = dict(os.environ, TRACK_BENCH_OUT=str(tmp_path), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"== {name}" in done.stdout
    return json.loads((tmp_path / "results" / f"{name}.json").read_text())


# What a script measures is only meaningful at its own sizes: these check that it still runs
# on what it was asked for, not its figures.
def test_throughput_runs_on_the_input_it_was_asked_for_in_the_rounds_asked(tmp_path):
    args = ["--events", "3000", "--files", "3", "--rounds", "2"]
    figures = _bench("throughput", tmp_path, *args)
    assert (figures["events"], figures["files"], len(figures["rounds"])) == (3000, 3, 2)
    assert figures["ratio"] in [r["ratio"] for r in figures["rounds"]]


def test_incremental_runs_end_to_end(tmp_path):
    _bench("incremental", tmp_path, "--events", "3000", "--files", "3", "--new", "200")


def test_queries_answer_as_polars_does_and_report_medians(tmp_path):
    # The script asserts that every answer equals Polars' own over the events.
    figures = _bench("queries", tmp_path, "--events", "3000", "--files", "3", "--repeat", "3")
    assert {"day, all users", "month, all users"} <= set(figures)
    assert all(f["reader_ms"] > 0 for k, f in figures.items() if k != "first_ms")


def test_history_asks_a_week_after_a_month_and_after_a_year(tmp_path):
    figures = _bench(
        "history", tmp_path, "--events", "3000", "--files", "3", "--months", "2", "--repeat", "1"
    )
    assert figures["time_ratio"] > 0 and figures["memory_ratio"] > 0


def test_lake_size_runs_a_file_of_one_day_and_one_of_every_day_on_both_lakes(tmp_path):
    args = ["--events", "8000", "--small", "1000", "--files", "3", "--new", "100", "--repeat", "1"]
    figures = _bench("lake_size", tmp_path, *args)
    assert set(figures) >= {"one day", "every day"}
    assert len(figures["empty_runs_s"]) == 1


def test_dask_gives_the_same_answers_as_threads(tmp_path):
    # The script asserts that both lakes answer alike.
    figures = _bench("dask", tmp_path, "--events", "3000", "--files", "3", "--new", "100")
    assert figures["late file"]["dask_s"] > 0

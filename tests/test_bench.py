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
def test_throughput_runs_on_the_input_it_was_asked_for(tmp_path):
    figures = _bench("throughput", tmp_path, "--events", "3000", "--files", "3")
    assert (figures["events"], figures["files"]) == (3000, 3)


def test_incremental_runs_end_to_end(tmp_path):
    _bench("incremental", tmp_path, "--events", "3000", "--files", "3", "--new", "200")


def test_queries_answer_as_polars_does_and_report_medians(tmp_path):
    # The script asserts that every answer equals Polars' own over the events.
    figures = _bench("queries", tmp_path, "--events", "3000", "--files", "3", "--repeat", "3")
    assert {"day, all users", "month, all users"} <= set(figures)
    assert all(f["reader_ms"] > 0 for k, f in figures.items() if k != "first_ms")

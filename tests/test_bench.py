"""The benchmark scripts still run end to end and report (on tiny inputs: what they measure
is only meaningful at their own sizes, see the README's Performance section)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_throughput_reports_a_ratio_to_the_copy_floor(tmp_path):
    figures = _bench("throughput", tmp_path, "--events", "3000", "--files", "3")
    assert (figures["events"], figures["files"]) == (3000, 3)
    assert figures["copy_s"] > 0 and figures["ratio"] == pytest.approx(
        figures["marginal_s"] / figures["copy_s"]
    )


def test_incremental_reports_the_new_files_share(tmp_path):
    figures = _bench("incremental", tmp_path, "--events", "3000", "--files", "3", "--new", "200")
    assert figures["ratio"] == pytest.approx(figures["new_marginal_s"] / figures["full_marginal_s"])


def test_queries_answer_as_polars_does_and_report_medians(tmp_path):
    # The script asserts that every answer equals Polars' own over the events.
    figures = _bench("queries", tmp_path, "--events", "3000", "--files", "3", "--repeat", "3")
    assert {"day, all users", "month, all users"} <= set(figures)
    assert all(f["reader_ms"] > 0 for k, f in figures.items() if k != "first_ms")

"""What every benchmark shares: cached seeded input, a timed `track run`, the copy floor.

These machines are noisy, so every figure is a ratio against a floor or a peer measured in the
same run on the same files. Inputs, lakes and results live under bench/out/ (not in git).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

BENCH = Path(__file__).resolve().parent
OUT = Path(os.environ.get("TRACK_BENCH_OUT", BENCH / "out"))
"""Inputs, lakes and results (TRACK_BENCH_OUT: elsewhere, as the tests' smoke runs do)."""
NOW = "2026-11-29T00:00:00Z"
"""A run at this time keeps all 28 generated days (2026-11-01 to 2026-11-28)."""
RAW_SCHEMA = dict.fromkeys(["event", "user_id", "timestamp", "metadata"], pl.String)

sys.path.insert(0, str(BENCH))
import generate  # noqa: E402  (bench/ is a folder of scripts, not a package)


def arguments(doc: str | None, *, events: int, files: int, **more: int) -> argparse.Namespace:
    """A script's options: --events and --files of its input, and any more it names."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--events", type=int, default=events)
    parser.add_argument("--files", type=int, default=files)
    for name, default in more.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def inputs(events: int, files: int, *, seed: int = 7) -> Path:
    """A lake holding only raw/: `events` generated events in `files` files (made once)."""
    lake = OUT / "inputs" / f"{events}-{files}-{seed}"
    done = lake / ".complete"
    if not done.exists():
        shutil.rmtree(lake, ignore_errors=True)
        print(f"  generating {events:,} events in {files:,} files ...", flush=True)
        generate.write(lake, events, files, seed=seed)
        done.touch()
    return lake


def fresh_lake(source: Path | None, name: str) -> Path:
    """A new lake under bench/out/lakes/ whose raw/ is `source`'s (hard links: same mtimes)."""
    lake = OUT / "lakes" / name
    shutil.rmtree(lake, ignore_errors=True)
    lake.mkdir(parents=True)
    if source is not None:
        shutil.copytree(source / "raw", lake / "raw", copy_function=os.link)
    return lake


def add_files(
    lake: Path, events: int, files: int, *, first: int, seed: int, spread: bool = False
) -> None:
    """Drop new generated files into an existing lake's raw/ (`spread`: each over all days)."""
    generate.write(lake, events, files, seed=seed, first=first, spread=spread)


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    report: dict[str, Any]
    cpu_seconds: float = 0.0
    """User and system CPU seconds of its process tree."""


PREFECT_HOME = OUT / "prefect-home"


def track_run(
    lake: Path, extra_env: dict[str, str] | None = None, options: tuple[str, ...] = ()
) -> Run:
    """`track run --json` on `lake` in a new process: wall time, peak RSS of its process tree.

    Runs share one PREFECT_HOME under bench/out, made and warmed (its database created) by a
    first run that is not measured, as a user's ~/.prefect would be.
    """
    if not PREFECT_HOME.exists():
        PREFECT_HOME.mkdir(parents=True)
        track_run(fresh_lake(None, "warm-up"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(PREFECT_HOME),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **(extra_env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "track.cli",
        "run",
        "--lake",
        str(lake),
        "--now",
        NOW,
        *options,
    ]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(
            [*command, "--json"], stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=BENCH.parent
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"track run failed on {lake} (exit {child.returncode}):\n{text[-2000:]}")
    report = json.loads(text.strip().splitlines()[-1])
    # ru_maxrss: KiB, the largest of the process and the children it waited for.
    return Run(seconds, usage.ru_maxrss / 1024, report, usage.ru_utime + usage.ru_stime)


def empty_run(repeat: int = 2) -> Run:
    """The fastest of `repeat` runs over an empty lake: Prefect's start-up and the pipeline's
    fixed cost (the fastest, so that marginal times are never flattered)."""
    return min(
        (track_run(fresh_lake(None, "empty")) for _ in range(repeat)), key=lambda r: r.seconds
    )


def marginal(full: Run, empty: Run) -> tuple[float, str]:
    """A run's time minus the empty-lake run's, and a line saying so."""
    seconds = full.seconds - empty.seconds
    times = f"run {full.seconds:.1f} s - empty lake {empty.seconds:.1f} s"
    return seconds, f"track marginal {seconds:.1f} s ({times})"


def copy_floor(source: Path, repeat: int = 3) -> float:
    """Seconds of a plain Polars copy of the raw files: read_ndjson (metadata as text), concat,
    write_parquet. The fastest of `repeat` (a floor: ratios to it are never flattered)."""
    files = sorted((source / "raw").glob("date=*/*.ndjson"))
    target = OUT / "copy.parquet"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        frames = [pl.read_ndjson(f, schema=RAW_SCHEMA) for f in files]
        pl.concat(frames).write_parquet(target)
        times.append(time.perf_counter() - start)
        del frames
        target.unlink()
    return min(times)


def against_copy_floor(name: str, events: int, files: int, target: float, rounds: int) -> None:
    """The marginal time of a run over generated input against the plain Polars copy of the
    same files, both measured here; the result recorded as `name`.

    In `rounds` rounds, each a copy floor then a run on a fresh lake, so that a floor and its
    run see the machine alike: this machine's noise moved one run's marginal from 7.8 to 13.3 s
    within an hour, more than a ratio near its target can bear. The verdict is on the median
    round's ratio; every round's is printed, with the run's CPU seconds (its process tree's,
    less the empty run's) against the floor's.
    """
    source = inputs(events, files)
    empty = empty_run()
    figures = []
    for number in range(rounds):
        cpu = _cpu_seconds()
        floor = copy_floor(source)
        floor_cpu = (_cpu_seconds() - cpu) / 3  # copy_floor copies three times
        full = track_run(fresh_lake(source, name))
        assert (full.report["files"], full.report["accepted"]) == (files, events), full.report
        seconds, _ = marginal(full, empty)
        run_cpu = full.cpu_seconds - empty.cpu_seconds
        figures.append(
            {
                "run_s": full.seconds,
                "marginal_s": seconds,
                "copy_s": floor,
                "ratio": seconds / floor,
                "run_cpu_s": run_cpu,
                "copy_cpu_s": floor_cpu,
                "cpu_ratio": run_cpu / floor_cpu,
            }
        )
        print(
            f"  round {number + 1}: marginal {seconds:.1f} s / copy {floor:.2f} s"
            f" = {seconds / floor:.2f}x; CPU {run_cpu:.1f} s / {floor_cpu:.2f} s"
            f" = {run_cpu / floor_cpu:.2f}x",
            flush=True,
        )
    median = sorted(figures, key=lambda f: f["ratio"])[len(figures) // 2]
    ratios = ", ".join(f"{f['ratio']:.2f}x" for f in figures)
    cpu_ratios = ", ".join(f"{f['cpu_ratio']:.2f}x" for f in figures)
    record(
        name,
        [
            f"{events:,} events in {files:,} files; empty-lake run {empty.seconds:.1f} s",
            f"median round: track marginal {median['marginal_s']:.1f} s"
            f" ({events / median['marginal_s']:,.0f} events/s),"
            f" plain Polars copy {median['copy_s']:.2f} s (the fastest of three)",
            f"ratio {median['ratio']:.2f}x at the median of {rounds} rounds ({ratios}):"
            f" {verdict(median['ratio'], target)}",
            f"CPU seconds, run / copy: {cpu_ratios}",
        ],
        {
            "events": events,
            "files": files,
            "empty_s": empty.seconds,
            **median,
            "events_per_s": events / median["marginal_s"],
            "rounds": figures,
        },
    )


def _cpu_seconds() -> float:
    """CPU seconds this process has used, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def verdict(ratio: float, target: float, *, percent: bool = False) -> str:
    """Whether a ratio is within its target (at most `target`)."""
    limit = f"{target:.0%}" if percent else f"{target:g}x"
    return f"{'met' if ratio <= target else 'NOT met'} (target <= {limit})"


def record(name: str, lines: list[str], figures: dict[str, Any]) -> None:
    """Print a benchmark's result and keep its figures in bench/out/results/<name>.json."""
    print(f"\n== {name}")
    for line in lines:
        print(f"   {line}")
    folder = OUT / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")

"""Figure 7: the time of `track run` over an empty lake, and where it goes: the interpreter and
imports, Prefect's temporary API server, the flow itself; and the same run against a Prefect
server that is already up (PREFECT_API_URL), as a scheduled deployment runs.

    python bench/fixed_cost.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import BENCH, PREFECT_HOME, empty_run, fresh_lake, record, track_run

from track.flows.server import TemporaryServer


def seconds_of(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=BENCH.parent)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    empty = statistics.median(empty_run(1).seconds for _ in range(args.repeat))
    bare = statistics.median(seconds_of("pass") for _ in range(args.repeat))
    imports = statistics.median(
        seconds_of("import track.flows.pipeline") for _ in range(args.repeat)
    )
    rest = empty - imports
    server_start = time.perf_counter()
    os.environ["PREFECT_HOME"] = str(PREFECT_HOME)
    server = TemporaryServer()
    server.wait_until_ready()
    server_s = time.perf_counter() - server_start
    with_server = statistics.median(
        track_run(fresh_lake(None, "empty"), {"PREFECT_API_URL": server.api_url}).seconds
        for _ in range(args.repeat)
    )
    server.stop()
    record(
        "fixed_cost",
        [
            f"track run over an empty lake: {empty:.1f} s (median of {args.repeat})",
            f"python start {bare:.2f} s; importing the pipeline (Prefect, Polars, pandera)"
            f" {imports - bare:.1f} s",
            f"the rest, {rest:.1f} s: waiting for Prefect's temporary server (alone it takes"
            f" {server_s:.1f} s to answer), the flow run, the server's stop",
            f"against a Prefect server already up: {with_server:.1f} s",
        ],
        {
            "empty_s": empty,
            "python_s": bare,
            "imports_s": imports - bare,
            "rest_s": rest,
            "server_start_s": server_s,
            "with_server_s": with_server,
        },
    )


if __name__ == "__main__":
    main()

"""Figure 7: the time of `track run` over an empty lake, and where it goes: the interpreter and
imports, Prefect's temporary API server, the flow itself.

    python bench/fixed_cost.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import BENCH, empty_run, record


def seconds_of(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=BENCH.parent)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    empty = statistics.median(empty_run().seconds for _ in range(args.repeat))
    bare = statistics.median(seconds_of("pass") for _ in range(args.repeat))
    imports = statistics.median(seconds_of("import flows.pipeline") for _ in range(args.repeat))
    rest = empty - imports
    record(
        "fixed_cost",
        [
            f"track run over an empty lake: {empty:.1f} s (median of {args.repeat})",
            f"python start {bare:.2f} s; importing the pipeline (Prefect, Polars, pandera)"
            f" {imports - bare:.1f} s",
            f"the rest, {rest:.1f} s: Prefect's temporary server start and stop, the flow run",
        ],
        {"empty_s": empty, "python_s": bare, "imports_s": imports - bare, "rest_s": rest},
    )


if __name__ == "__main__":
    main()

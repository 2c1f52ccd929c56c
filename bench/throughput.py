"""Figure 1: marginal time of `track run` over 3 million events in 28 files, against a plain
Polars NDJSON-to-Parquet copy of the same files (target: at most 2.0 times); events a second.

    python bench/throughput.py [--events N] [--files N]
"""

from __future__ import annotations

import argparse

from common import copy_floor, empty_run, fresh_lake, inputs, marginal, record, track_run, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--files", type=int, default=28)
    args = parser.parse_args()
    source = inputs(args.events, args.files)
    floor = copy_floor(source)
    empty = empty_run()
    full = track_run(fresh_lake(source, "throughput"))
    assert full.report["accepted"] == args.events, full.report
    seconds, line = marginal(full, empty)
    ratio = seconds / floor
    record(
        "throughput",
        [
            f"{args.events:,} events in {args.files} files",
            f"{line}: {args.events / seconds:,.0f} events/s",
            f"plain Polars copy {floor:.2f} s",
            f"ratio {ratio:.1f}x: {verdict(ratio, 2.0)}",
        ],
        {
            "events": args.events,
            "files": args.files,
            "run_s": full.seconds,
            "empty_s": empty.seconds,
            "marginal_s": seconds,
            "copy_s": floor,
            "ratio": ratio,
            "events_per_s": args.events / seconds,
        },
    )


if __name__ == "__main__":
    main()

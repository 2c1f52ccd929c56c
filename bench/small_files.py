"""Figure 3: marginal time of `track run` over 1 million events in 2,000 files, against a plain
Polars copy of the same files (target: at most 3.0 times). Per-file overhead (tasks, listing,
opening) must not dominate.

    python bench/small_files.py [--events N] [--files N]
"""

from __future__ import annotations

import argparse

from common import copy_floor, empty_run, fresh_lake, inputs, marginal, record, track_run, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=2_000)
    args = parser.parse_args()
    source = inputs(args.events, args.files)
    floor = copy_floor(source)
    empty = empty_run()
    full = track_run(fresh_lake(source, "small-files"))
    assert full.report["files"] == args.files, full.report
    seconds, line = marginal(full, empty)
    ratio = seconds / floor
    record(
        "small_files",
        [
            f"{args.events:,} events in {args.files:,} files",
            line,
            f"plain Polars copy {floor:.2f} s",
            f"ratio {ratio:.1f}x: {verdict(ratio, 3.0)}",
        ],
        {
            "events": args.events,
            "files": args.files,
            "marginal_s": seconds,
            "copy_s": floor,
            "ratio": ratio,
        },
    )


if __name__ == "__main__":
    main()

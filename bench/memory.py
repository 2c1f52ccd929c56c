"""Figure 6: peak RSS of `track run` over 1 million and 4 million events in 8 files (target:
it grows at most 1.5 times while the input grows 4 times: the pipeline streams).

    python bench/memory.py [--small N] [--large N] [--files N]
"""

from __future__ import annotations

import argparse

from common import fresh_lake, inputs, record, track_run, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=4_000_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    runs = {
        n: track_run(fresh_lake(inputs(n, args.files), f"memory-{n}"))
        for n in (args.small, args.large)
    }
    small, large = runs[args.small], runs[args.large]
    ratio = large.peak_rss_mb / small.peak_rss_mb
    record(
        "memory",
        [
            f"{args.small:,} events in {args.files} files: peak RSS {small.peak_rss_mb:,.0f} MB"
            f" ({small.seconds:.1f} s)",
            f"{args.large:,} events in {args.files} files: peak RSS {large.peak_rss_mb:,.0f} MB"
            f" ({large.seconds:.1f} s)",
            f"input x{args.large / args.small:g}, peak RSS x{ratio:.2f}: {verdict(ratio, 1.5)}",
        ],
        {"small_mb": small.peak_rss_mb, "large_mb": large.peak_rss_mb, "ratio": ratio},
    )


if __name__ == "__main__":
    main()

"""Figure 6: peak RSS of `track run` over 1 million and 4 million events in 8 files (target:
it grows at most 1.5 times while the input grows 4 times: the pipeline streams).

    python bench/memory.py [--events N] [--large N] [--files N]
"""

from __future__ import annotations

from common import arguments, fresh_lake, inputs, record, track_run, verdict


def main() -> None:
    args = arguments(__doc__, events=1_000_000, files=8, large=4_000_000)
    runs = {
        n: track_run(fresh_lake(inputs(n, args.files), f"memory-{n}"))
        for n in (args.events, args.large)
    }
    small, large = runs[args.events], runs[args.large]
    ratio = large.peak_rss_mb / small.peak_rss_mb
    record(
        "memory",
        [
            f"{args.events:,} events in {args.files} files: peak RSS {small.peak_rss_mb:,.0f} MB"
            f" ({small.seconds:.1f} s)",
            f"{args.large:,} events in {args.files} files: peak RSS {large.peak_rss_mb:,.0f} MB"
            f" ({large.seconds:.1f} s)",
            f"input x{args.large / args.events:g}, peak RSS x{ratio:.2f}: {verdict(ratio, 1.5)}",
        ],
        {"small_mb": small.peak_rss_mb, "large_mb": large.peak_rss_mb, "ratio": ratio},
    )


if __name__ == "__main__":
    main()

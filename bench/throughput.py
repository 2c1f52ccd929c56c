"""Figure 1: marginal time of `track run` over 3 million events in 28 files, against a plain
Polars NDJSON-to-Parquet copy of the same files (target: at most 3 times; 2 remains the goal);
events a second. In `--rounds` rounds of a copy floor then a run, the verdict on the median.

    python bench/throughput.py [--events N] [--files N] [--rounds N]
"""

from __future__ import annotations

from common import against_copy_floor, arguments

if __name__ == "__main__":
    args = arguments(__doc__, events=3_000_000, files=28, rounds=3)
    against_copy_floor("throughput", args.events, args.files, target=3.0, rounds=args.rounds)

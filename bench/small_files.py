"""Figure 3: marginal time of `track run` over 1 million events in 2,000 files, against a plain
Polars copy of the same files (target: at most 3.0 times). Per-file overhead (tasks, listing,
opening) must not dominate. In `--rounds` rounds of a copy floor then a run, the verdict on the
median.

    python bench/small_files.py [--events N] [--files N] [--rounds N]
"""

from __future__ import annotations

from common import against_copy_floor, arguments

if __name__ == "__main__":
    args = arguments(__doc__, events=1_000_000, files=2_000, rounds=1)
    against_copy_floor("small_files", args.events, args.files, target=3.0, rounds=args.rounds)

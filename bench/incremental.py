"""Figure 4: after a full run over 3 million events, the marginal time of a run that finds one
new file of 20,000 events, against the full run's marginal time (target: at most 15%).

    python bench/incremental.py [--events N] [--files N] [--new N]
"""

from __future__ import annotations

from common import add_files, arguments, empty_run, fresh_lake, inputs, record, track_run, verdict


def main() -> None:
    args = arguments(__doc__, events=3_000_000, files=28, new=20_000)
    source = inputs(args.events, args.files)
    lake = fresh_lake(source, "incremental")
    empty = empty_run()
    full = track_run(lake)
    add_files(lake, args.new, 1, first=args.files, seed=99)
    again = track_run(lake)
    assert again.report["files"] == 1 and again.report["lines"] == args.new, again.report
    full_marginal = full.seconds - empty.seconds
    new_marginal = again.seconds - empty.seconds
    ratio = new_marginal / full_marginal
    record(
        "incremental",
        [
            f"full run over {args.events:,} events: marginal {full_marginal:.1f} s",
            f"then one new file of {args.new:,} events: marginal {new_marginal:.2f} s"
            f" (run {again.seconds:.1f} s - empty {empty.seconds:.1f} s)",
            f"ratio {ratio:.0%}: {verdict(ratio, 0.15, percent=True)}",
        ],
        {"full_marginal_s": full_marginal, "new_marginal_s": new_marginal, "ratio": ratio},
    )


if __name__ == "__main__":
    main()

"""Figure 10: an incremental run costs what is new, not what the lake holds. On a lake holding
1 million events in its window (the floor) and on one holding 8 million, the marginal time of
a run that finds one new file of 20,000 events, all of one day, and of one whose events are
spread over every day of the window (a late upload or a backfill); ratio large / small for
each (target: at most 1.5). Marginal here is the run's own time (the steps of its report's
`seconds`) less an empty-lake run's: a Prefect server's start-up, seconds that vary from run to
run, is left out of both. An empty run is made beside each round of runs, and the fastest
subtracted, as the fastest of the others is counted: one empty run before all of them was
subtracted from runs made at another speed of the machine (0.19 to 0.71 s of steps within
one evening). Each kind is run `--repeat` times (a new file each time, the same
on both lakes, each run on one lake followed by its run on the other) and the fastest
counted; the steps of the fastest are printed, and the mean and slowest of the runs of each
kind: with `--repeat 8` or more, they carry the merging of a date's appended files
(APPENDED_FILES_AT_MOST), the cost a run of such files pays on average.

    python bench/lake_size.py [--events N] [--small N] [--files N] [--new N] [--repeat N]
"""

from __future__ import annotations

from typing import Any

from common import (
    Run,
    add_files,
    arguments,
    fresh_lake,
    inputs,
    record,
    track_run,
    verdict,
)

KINDS = ("one day", "every day")


def work(run: Run) -> float:
    """The seconds of a run's steps (its process's start-up and Prefect's left out)."""
    return float(sum(run.report["seconds"].values()))


def incremental_runs(
    sizes: list[int], files: int, new: int, repeat: int
) -> tuple[list[Run], dict[int, dict[str, list[Run]]]]:
    """The empty-lake runs, one a round, and the runs of each kind of new file on a lake of
    each size of `sizes` (events), each fastest first. The lakes take the same new files, each
    run on one lake followed by its run on the other: the machine's speed drifts over the
    minutes the runs take, and runs of one size after all those of the other carried that
    drift into the ratio (a file of one day measured 1.85x that way, 0.79x in the next run of
    the same code)."""
    lakes = {}
    for events in sizes:
        lakes[events] = fresh_lake(inputs(events, files), f"lake-size-{events}")
        track_run(lakes[events])
    runs: dict[int, dict[str, list[Run]]] = {
        events: {kind: [] for kind in KINDS} for events in sizes
    }
    number, empties = files, []
    for attempt in range(repeat):
        empties.append(track_run(fresh_lake(None, "empty")))
        for kind in KINDS:
            seed = 1000 + 2 * attempt + KINDS.index(kind)
            for events, lake in lakes.items():
                add_files(lake, new, 1, first=number, seed=seed, spread=kind == "every day")
                run = track_run(lake)
                assert (run.report["files"], run.report["lines"]) == (1, new), run.report
                runs[events][kind].append(run)
            number += 1
    return sorted(empties, key=work), {
        events: {kind: sorted(done, key=work) for kind, done in by_kind.items()}
        for events, by_kind in runs.items()
    }


def main() -> None:
    args = arguments(__doc__, events=8_000_000, small=1_000_000, files=28, new=20_000, repeat=2)
    empties, both = incremental_runs([args.small, args.events], args.files, args.new, args.repeat)
    small, large, empty = both[args.small], both[args.events], empties[0]
    lines = [
        f"empty run {work(empty):.2f} s of steps, the fastest of {len(empties)} (slowest"
        f" {work(empties[-1]):.2f} s; {empty.seconds:.1f} s in all); one new file of"
        f" {args.new:,} events"
    ]
    figures: dict[str, Any] = {
        "empty_s": work(empty),
        "empty_runs_s": [work(run) for run in empties],
        "empty_process_s": empty.seconds,
    }
    for kind in KINDS:
        small_s, large_s = work(small[kind][0]) - work(empty), work(large[kind][0]) - work(empty)
        ratio = large_s / small_s
        lines.append(
            f"{kind:<9}: marginal {small_s:.2f} s on {args.small:,} events,"
            f" {large_s:.2f} s on {args.events:,}: {ratio:.2f}x: {verdict(ratio, 1.5)}"
        )
        for size, runs in ((args.small, small[kind]), (args.events, large[kind])):
            steps = ", ".join(f"{k} {v:.2f}" for k, v in runs[0].report["seconds"].items())
            lines.append(f"    {size:>9,} events: {steps} (process {runs[0].seconds:.1f} s)")
        spent = {
            size: [work(run) - work(empty) for run in runs]
            for size, runs in (("small", small[kind]), ("large", large[kind]))
        }
        means = {size: sum(seconds) / len(seconds) for size, seconds in spent.items()}
        lines.append(
            f"    mean of {args.repeat} runs {means['small']:.2f} s and {means['large']:.2f} s"
            f" ({means['large'] / means['small']:.2f}x); slowest {spent['small'][-1]:.2f} s and"
            f" {spent['large'][-1]:.2f} s"
        )
        figures[kind] = {
            "small_s": small_s,
            "large_s": large_s,
            "ratio": ratio,
            "mean_small_s": means["small"],
            "mean_large_s": means["large"],
            "runs_s": spent,
            "steps": {
                "small": small[kind][0].report["seconds"],
                "large": large[kind][0].report["seconds"],
            },
        }
    record("lake_size", lines, figures)


if __name__ == "__main__":
    main()

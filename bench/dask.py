"""Figure 11: the run on a Dask cluster. The same 3M-event input run with `--dask local` (a
LocalCluster of two worker processes, started by the run: ingest batches, each event date's
change and the sessions of each shard of users are its tasks) and with the default thread runner,
then one new file of 20,000 events spread over every day on each; the answers of both lakes are
checked equal. Prints the cluster's marginal time against the threads' (no target: on two
cores a cluster can only add what it costs, moving rows between processes and starting
workers; this is that cost, the price of scaling out past one machine).

    python bench/dask.py [--events N] [--files N] [--new N]
"""

from __future__ import annotations

from typing import Any

from common import add_files, arguments, empty_run, fresh_lake, inputs, record, track_run

from track import reader

MONTH = ("2026-11-01", "2026-11-30")


def answers(lake: str) -> list[Any]:
    """Every kind of answer over the month, as the reader gives it."""
    return [
        ask(*MONTH, group_by, lake=lake)
        for ask in (reader.metrics, reader.sessions, reader.users)
        for group_by in ("day", "week", "month")
    ]


def main() -> None:
    args = arguments(__doc__, events=3_000_000, files=28, new=20_000)
    source = inputs(args.events, args.files)
    empty = empty_run()
    lakes = {"threads": fresh_lake(source, "dask-threads"), "dask": fresh_lake(source, "dask")}
    options = {"threads": (), "dask": ("--dask", "local")}
    full = {kind: track_run(lake, options=options[kind]) for kind, lake in lakes.items()}
    for lake in lakes.values():
        add_files(lake, args.new, 1, first=args.files, seed=99, spread=True)
    late = {kind: track_run(lake, options=options[kind]) for kind, lake in lakes.items()}
    same = answers(str(lakes["threads"])) == answers(str(lakes["dask"]))
    assert same, "the cluster's lake answers differently"
    lines, figures = [], {}
    for name, runs in (("full run", full), ("late file", late)):
        threads_s = runs["threads"].seconds - empty.seconds
        dask_s = runs["dask"].seconds - empty.seconds
        steps = {k: r.report["seconds"] for k, r in runs.items()}
        lines.append(
            f"{name:<9}: marginal {dask_s:.1f} s on the cluster, {threads_s:.1f} s on threads:"
            f" {dask_s / threads_s:.2f}x"
        )
        for kind in runs:
            each = ", ".join(f"{k} {v:.2f}" for k, v in steps[kind].items())
            lines.append(f"    {kind:<7}: {each}")
        figures[name] = {"dask_s": dask_s, "threads_s": threads_s, "steps": steps}
    lines.append("answers of the two lakes: identical")
    record("dask", lines, figures)


if __name__ == "__main__":
    main()

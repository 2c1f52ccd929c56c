"""The lake as one self-contained HTML page (`track report`): charts of events, unique users,
sessions, what was quarantined and why (with examples), and the last runs.

The charts are Altair (Vega-Lite) specifications rendered to SVG by vl-convert, in this process,
and put inline into the page: it holds no script and fetches nothing, so it opens offline, in a
mail attachment or a CI artifact, and looks the same everywhere.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import altair as alt
import polars as pl
import vl_convert

from track import reader
from track.errors import ReportError
from track.lake.store import RUNS, Lake
from track.schemas.tables import Duplicates, Events, Quarantine
from track.settings import resolve_lake

EXAMPLES_PER_REASON = 3
"""Quarantined lines shown under the chart, for each reason."""
RAW_CHARS = 160
"""How much of a quarantined line an example shows."""
LAST_RUNS = 12
"""Runs in the chart of the last runs."""
WIDTH = 860
RUN_MEASURES = ("lines", "accepted", "duplicates", "expired", "quarantined")


@dataclass(frozen=True)
class Figures:
    """What the page shows, as tables (one per chart), all of one lake's snapshot."""

    start: date
    end: date
    as_of: str | None
    events: pl.DataFrame
    """date, event, count: accepted events per day and event."""
    users: pl.DataFrame
    """date, period ("that day" or "that week"), users: distinct users of each day, and of
    its ISO week."""
    sessions: pl.DataFrame
    """date, sessions, average_seconds."""
    quarantined: pl.DataFrame
    """date, reason, lines: quarantined lines per day (received) and reason."""
    share: pl.DataFrame
    """date, share: quarantined lines over all lines received that day (still in the window)."""
    examples: pl.DataFrame
    """reason, source, line, message, raw: a few quarantined lines of each reason."""
    runs: pl.DataFrame
    """run, measure, value: the last runs' lines, accepted, duplicates, expired, quarantined."""


def _data(answer: dict[str, Any], what: str) -> list[dict[str, Any]]:
    if answer["status"] != "success":
        raise ReportError(f"{what}: {answer['message']}")
    return list(answer["data"])


def _frame(rows: list[tuple[Any, ...]], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def figures(start: date, end: date, *, lake: str | None = None) -> Figures:
    """Everything the page of [start, end] shows, read from the lake's current snapshot."""
    url = resolve_lake(lake)
    store = Lake(url).pin()
    days = (start.isoformat(), end.isoformat())
    counts = _data(reader.metrics(*days, lake=url), "events per day")
    events = _frame(
        [(row["date"], e, n) for row in counts for e, n in row.items() if e != "date"],
        {"date": pl.String, "event": pl.String, "count": pl.Int64},
    )
    users = _users_by_day(
        _data(reader.users(*days, lake=url), "daily users"),
        _data(reader.users(*days, "week", lake=url), "weekly users"),
        start,
        end,
    )
    sessions = _frame(
        [
            (r["date"], r["sessionCount"], r["averageDuration"])
            for r in _data(reader.sessions(*days, lake=url), "sessions per day")
        ],
        {"date": pl.String, "sessions": pl.Int64, "average_seconds": pl.Int64},
    )
    quarantine = store.scan("quarantine", Quarantine).filter(pl.col("date").is_between(start, end))
    quarantined = (
        quarantine.group_by("date", "reason").agg(lines=pl.len().cast(pl.Int64)).sort("date")
    ).collect()
    examples = (
        quarantine.sort("received_at", "source", "line", descending=[True, False, False])
        .group_by("reason", maintain_order=True)
        .head(EXAMPLES_PER_REASON)
        .select("reason", "source", "line", "message", "raw")
        .sort("reason")
        .collect()
    )
    return Figures(
        start=start,
        end=end,
        as_of=store.pinned.committed_at if store.pinned else None,
        events=events.with_columns(pl.col("date").str.to_date()),
        users=users,
        sessions=sessions.with_columns(pl.col("date").str.to_date()),
        quarantined=quarantined,
        share=_share(store, quarantined, start, end),
        examples=examples,
        runs=_last_runs(store),
    )


def _users_by_day(
    daily: list[dict[str, Any]], weekly: list[dict[str, Any]], start: date, end: date
) -> pl.DataFrame:
    """date, period, users: each day's distinct users ("that day"), and its ISO week's
    ("that week": the week's users inside the range, the same on each of its days)."""
    schema = {"date": pl.String, "users": pl.Int64}
    days = pl.DataFrame({"date": pl.date_range(start, end, eager=True)})
    week = _frame([(r["date"], r["users"]) for r in weekly], schema).with_columns(
        pl.col("date").str.to_date()
    )
    per_week = (
        days.with_columns(monday=pl.col("date").dt.truncate("1w"))
        .join(week, left_on="monday", right_on="date")
        .select("date", period=pl.lit("that week"), users="users")
    )
    per_day = _frame([(r["date"], r["users"]) for r in daily], schema).select(
        pl.col("date").str.to_date(), period=pl.lit("that day"), users="users"
    )
    return pl.concat([per_day, per_week]).sort("period", "date")


def _share(store: Lake, quarantined: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    """Quarantined lines per day over all lines received that day: accepted events, their
    duplicates and quarantined lines alike carry the instant their file was received. An
    event is stored under a date at or before it (its timestamp is clamped to it), so only the
    partitions up to `end` are read, and of them one column."""
    received = [
        store.scan(table, model)
        .filter(pl.col("date") <= end)
        .select(date=pl.col("received_at").dt.date())
        .filter(pl.col("date").is_between(start, end))
        for table, model in (("events", Events), ("duplicates", Duplicates))
    ]
    kept = pl.concat(received).group_by("date").agg(kept=pl.len().cast(pl.Int64)).collect()
    rejected = quarantined.group_by("date").agg(rejected=pl.col("lines").sum())
    return (
        rejected.join(kept, on="date", how="left")
        .select(
            "date", share=pl.col("rejected") / (pl.col("rejected") + pl.col("kept").fill_null(0))
        )
        .sort("date")
    )


def _last_runs(store: Lake) -> pl.DataFrame:
    """The last runs' reports (a run's id starts with its time, so names sort by it)."""
    folder = store.path(RUNS)
    names = sorted(store.fs.ls(folder, detail=False)) if store.fs.exists(folder) else []
    rows = []
    for name in names[-LAST_RUNS:]:
        report = json.loads(store.fs.cat_file(name))
        if report.get("skipped"):
            continue
        run = f"{report['now'][:16].replace('T', ' ')} ({report['run_id'][-8:]})"
        rows += [(run, measure, int(report[measure])) for measure in RUN_MEASURES]
    return _frame(rows, {"run": pl.String, "measure": pl.String, "value": pl.Int64})


# The charts ------------------------------------------------------------------------------------


def _svg(chart: alt.TopLevelMixin) -> str:
    return vl_convert.vegalite_to_svg(chart.to_dict())


def _days(f: Figures) -> alt.X:
    """The x axis of the charts by day: every day of the range, in order, with or without data
    (labelled by month and day)."""
    days = pl.date_range(f.start, f.end, eager=True).dt.strftime("%Y-%m-%d").to_list()
    axis = alt.Axis(labelExpr="slice(datum.value, 5)", labelAngle=-45, labelOverlap=True)
    return alt.X("day:O", title=None, scale=alt.Scale(domain=days), axis=axis)


def _base(rows: pl.DataFrame, title: str) -> alt.Chart:
    if "date" in rows.columns:
        rows = rows.with_columns(day=pl.col("date").dt.strftime("%Y-%m-%d"))
    return alt.Chart(rows, title=title).properties(width=WIDTH, height=220)


def _events_chart(f: Figures) -> alt.TopLevelMixin:
    return (
        _base(f.events, "Events per day, by event")
        .mark_bar()
        .encode(x=_days(f), y=alt.Y("count:Q", title="events"), color=alt.Color("event:N"))
    )


def _users_chart(f: Figures) -> alt.TopLevelMixin:
    return (
        _base(f.users, "Unique users per day, and in each day's ISO week")
        .mark_line(point=True)
        .encode(
            x=_days(f),
            y=alt.Y("users:Q", title="distinct users"),
            color=alt.Color("period:N", title=None),
        )
    )


def _sessions_chart(f: Figures) -> alt.TopLevelMixin:
    base = _base(f.sessions, "Sessions per day and their average duration")
    bars = base.mark_bar(opacity=0.7).encode(x=_days(f), y=alt.Y("sessions:Q", title="sessions"))
    line = base.mark_line(point=True, color="#d62728").encode(
        x=_days(f), y=alt.Y("average_seconds:Q", title="average duration (s)")
    )
    return alt.layer(bars, line).resolve_scale(y="independent")


def _quarantine_chart(f: Figures) -> alt.TopLevelMixin:
    title = "Quarantined lines per day (received), by reason, and their share of all lines"
    bars = (
        _base(f.quarantined, title)
        .mark_bar()
        .encode(x=_days(f), y=alt.Y("lines:Q", title="lines"), color=alt.Color("reason:N"))
    )
    share = (
        _base(f.share, title)
        .mark_line(point=True, color="black")
        .encode(
            x=_days(f),
            y=alt.Y(
                "share:Q",
                title="share of all lines",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1.25 * max(f.share["share"].to_list(), default=0.01)]),
            ),
        )
    )
    return alt.layer(bars, share).resolve_scale(y="independent")


def _runs_chart(f: Figures) -> alt.TopLevelMixin:
    return (
        _base(f.runs, f"The last runs (at most {LAST_RUNS}): what became of their lines")
        .mark_bar()
        .encode(
            x=alt.X("run:N", title=None, axis=alt.Axis(labelAngle=-30)),
            xOffset=alt.XOffset("measure:N", sort=list(RUN_MEASURES)),
            y=alt.Y("value:Q", title="lines"),
            color=alt.Color("measure:N", sort=list(RUN_MEASURES), title=None),
        )
    )


CHARTS = {
    "events": _events_chart,
    "users": _users_chart,
    "sessions": _sessions_chart,
    "quarantine": _quarantine_chart,
    "runs": _runs_chart,
}
"""Every chart of the page, by the id of its figure."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #222; }
h1 { margin-bottom: 0.2rem; } p.when { color: #666; margin-top: 0; }
figure { margin: 2rem 0; } svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; }
td.raw { font-family: ui-monospace, monospace; word-break: break-all; }
p.none { color: #666; font-style: italic; }
"""


def _examples_table(examples: pl.DataFrame) -> str:
    if examples.is_empty():
        return '<p class="none">No line was quarantined in this range.</p>'
    rows = []
    for reason, source, line, message, raw in examples.iter_rows():
        cut = raw if len(raw) <= RAW_CHARS else raw[:RAW_CHARS] + "…"
        cells = [reason, source, str(line), message]
        rows.append(
            "<tr>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + f'<td class="raw">{html.escape(cut)}</td></tr>'
        )
    head = "<tr><th>reason</th><th>source</th><th>line</th><th>message</th><th>raw</th></tr>"
    return f'<table id="examples">{head}{"".join(rows)}</table>'


def page(f: Figures) -> str:
    """The HTML page of `figures`: every chart as inline SVG, and the quarantine's examples."""
    when = f"as of the run committed {f.as_of}" if f.as_of else "no run has committed yet"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Track report {f.start} to {f.end}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Track: {f.start} to {f.end}</h1>",
        f'<p class="when">{html.escape(when)}; made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>',
    ]
    for name, chart in CHARTS.items():
        parts.append(f'<figure id="{name}">{_svg(chart(f))}')
        if name == "quarantine":
            parts.append("<figcaption><h3>Examples of each reason</h3>")
            parts.append(f"{_examples_table(f.examples)}</figcaption>")
        parts.append("</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(start: date, end: date, out: str, *, lake: str | None = None) -> str:
    """Write the page of [start, end] of a lake to the file `out`; its path."""
    text = page(figures(start, end, lake=lake))
    with open(out, "w", encoding="utf-8") as file:
        file.write(text)
    return out

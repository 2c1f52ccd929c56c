"""A Track lake in a notebook: its tables as Delta, the reader's answers, trends, daily users,
sessions, what was rejected and the raw lines behind it.

    .venv/bin/marimo edit notebooks/explore.py    # the notebook, in a browser
    .venv/bin/python notebooks/explore.py         # its cells as a script

The lake is $TRACK_LAKE, else data/lake (`make demo` makes it from the bundled sample).
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import os
    from datetime import date, timedelta

    import altair as alt
    import marimo as mo
    import polars as pl

    from track import reader
    from track.lake.delta import scan_table

    return alt, date, mo, os, pl, reader, scan_table, timedelta


@app.cell
def _(mo, os):
    lake = os.environ.get("TRACK_LAKE", "data/lake")
    mo.md(f"# Track: the lake at `{lake}`")
    return (lake,)


@app.cell
def _(lake, mo, scan_table):
    # Every table is a Delta table: scan_table is pl.scan_delta with the store's options (on S3,
    # from the AWS variables).
    events = scan_table(lake, "events")
    quarantine = scan_table(lake, "quarantine")
    counts = scan_table(lake, "counts")
    days = counts.select("date").unique().sort("date").collect()["date"]
    mo.md(f"Counted days: **{len(days)}**, from {days.min()} to {days.max()}.")
    return counts, days, events, quarantine


@app.cell
def _(days, timedelta):
    # The range the reader is asked about: the last 30 counted days.
    end = days.max()
    start = max(days.min(), end - timedelta(days=29))
    return end, start


@app.cell
def _(end, lake, pl, reader, start):
    def answer(name, **query):
        """The reader's answer as a DataFrame (its `data`), raising on an error answer."""
        got = getattr(reader, name)(start.isoformat(), end.isoformat(), lake=lake, **query)
        if got["status"] != "success":
            raise RuntimeError(got["message"])
        frame = pl.DataFrame(got["data"])
        return frame.with_columns(pl.col("date").str.to_date()) if len(frame) else frame

    per_day = answer("metrics").unpivot(index="date", variable_name="event", value_name="count")
    daily_users = answer("users")
    weekly_users = answer("users", group_by="week", week_start="sunday")
    sessions = answer("sessions")
    return daily_users, per_day, sessions, weekly_users


@app.cell
def _(alt, per_day):
    trends = (
        alt.Chart(per_day.drop_nulls(), title="Events per day")
        .mark_line(point=True)
        .encode(x="date:T", y="count:Q", color="event:N")
    )
    trends
    return


@app.cell
def _(alt, daily_users, weekly_users):
    dau = alt.Chart(daily_users, title="Daily users").mark_bar().encode(x="date:T", y="users:Q")
    wau = (
        alt.Chart(weekly_users, title="Weekly users (weeks from Sunday)")
        .mark_bar()
        .encode(x="date:T", y="users:Q")
    )
    dau | wau
    return


@app.cell
def _(alt, sessions):
    session_chart = (
        alt.Chart(sessions, title="Sessions per day and their average duration (s)")
        .mark_bar()
        .encode(x="date:T", y="sessionCount:Q", tooltip=["averageDuration", "totalDuration"])
    )
    session_chart
    return


@app.cell
def _(alt, events, pl, quarantine):
    # Rejections: lines quarantined per day they were received, by reason, and their share of
    # those lines and the events accepted from lines received that day.
    rejected = quarantine.group_by(day=pl.col("received_at").dt.date(), reason="reason").agg(
        lines=pl.len()
    )
    accepted = events.group_by(day=pl.col("received_at").dt.date()).agg(accepted=pl.len())
    rejections = rejected.collect().sort("day", "reason")
    shares = (
        rejected.group_by("day")
        .agg(quarantined=pl.col("lines").sum())
        .join(accepted, on="day", how="left")
        .with_columns(share=pl.col("quarantined") / (pl.col("quarantined") + pl.col("accepted")))
        .sort("day")
        .collect()
    )
    rejection_chart = (
        alt.Chart(rejections, title="Quarantined lines per day, by reason")
        .mark_bar()
        .encode(x="day:T", y="lines:Q", color="reason:N")
    )
    rejection_chart
    return rejections, shares


@app.cell
def _(mo, pl, rejections):
    by_reason = rejections.group_by("reason").agg(pl.col("lines").sum()).sort("reason")
    reasons = by_reason["reason"].to_list()
    reason = mo.ui.dropdown(reasons, value=reasons[0] if reasons else None, label="reason")
    reason
    return by_reason, reason


@app.cell
def _(lake, mo, pl, quarantine, reason):
    # The raw lines behind a reason: the quarantine names each line's file and number; the line
    # is read again from that file under raw/ (gzip or not; on S3 with the AWS variables).
    import fsspec

    behind = (
        quarantine.filter(pl.col("reason") == reason.value)
        .select("source", "line", "message", "raw")
        .sort("source", "line")
        .collect()
    )

    def raw_line(source, number):
        path = f"{lake.rstrip('/')}/raw/{source}"
        with fsspec.open(path, "rb", compression="infer") as file:
            for at, line in enumerate(file, start=1):
                if at == number:
                    return line.rstrip(b"\n").decode("utf-8", errors="backslashreplace")
        return None

    found = behind.with_columns(
        in_file=pl.struct("source", "line").map_elements(
            lambda row: raw_line(row["source"], row["line"]), return_dtype=pl.String
        )
    )
    mo.vstack([mo.md(f"Lines quarantined as **{reason.value}**"), found])
    return (found,)


if __name__ == "__main__":
    app.run()

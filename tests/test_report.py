"""`track report`: the figures of a lake, and its page as a person sees it in a browser."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from tests.lakes import drop, ndjson
from track.cli import main
from track.flows.pipeline import pipeline
from track.lake.store import Lake
from track.report import CHARTS, RAW_CHARS, figures

pytestmark = pytest.mark.usefixtures("prefect_harness")

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)
LONG = f'{{"event": "play", "user_id": "u4", "timestamp": "{"x" * RAW_CHARS}"}}'


def _lake_of_two_days(lake: str) -> tuple[date, date]:
    """Two files received on 2025-03-03 and 2025-03-04 (on S3: when they were written): plays,
    stops and bad lines. The days they were received."""
    first = drop(
        lake,
        "date=2025-03-03/a.ndjson",
        ndjson(
            {"event": "play", "user_id": "u1", "timestamp": "2025-03-03T10:00:00Z"},
            {"event": "stop", "user_id": "u1", "timestamp": "2025-03-03T10:02:00Z"},
            {"event": "play", "user_id": "u2", "timestamp": "2025-03-03T11:00:00Z"},
            "not json",
        ),
        modified=datetime(2025, 3, 3, 23, tzinfo=UTC),
    )
    second = drop(
        lake,
        "date=2025-03-04/b.ndjson",
        ndjson(
            {"event": "play", "user_id": "u2", "timestamp": "2025-03-04T09:00:00Z"},
            {"event": "stop", "user_id": "u2", "timestamp": "2025-03-04T09:01:00Z"},
            {"event": "pause", "user_id": "u3", "timestamp": "2025-03-04T09:30:00Z"},
            {"event": "pause", "user_id": "u3", "timestamp": "2025-03-04T09:30:00Z"},
            LONG,
            "[1, 2]",
        ),
        modified=datetime(2025, 3, 4, 23, tzinfo=UTC),
    )
    report = pipeline(lake=lake, now=NOW)
    assert (report["lines"], report["accepted"], report["duplicates"]) == (10, 6, 1)
    return first.date(), second.date()


def test_the_figures_are_the_lakes_answers(lake_url):
    got_a, got_b = _lake_of_two_days(lake_url)
    f = figures(date(2025, 3, 1), max(got_b, date(2025, 3, 9)), lake=lake_url)
    day3, day4 = date(2025, 3, 3), date(2025, 3, 4)
    assert sorted(f.events.iter_rows()) == [
        (day3, "play", 2),
        (day3, "stop", 1),
        (day4, "pause", 1),
        (day4, "play", 1),
        (day4, "stop", 1),
    ]
    users = {(d, p): n for d, p, n in f.users.iter_rows()}
    assert {k: n for k, n in users.items() if k[1] == "that day"} == {
        (day3, "that day"): 2,
        (day4, "that day"): 2,
    }
    # 2025-03-03 is a Monday: u1, u2 and u3 in its week, on each of its days in the range.
    assert {users[date(2025, 3, d), "that week"] for d in range(3, 10)} == {3}
    assert (date(2025, 3, 2), "that week") not in users  # its week, from 2025-02-24, had none
    assert f.sessions.rows() == [(day3, 1, 120), (day4, 1, 60)]
    # By the day each line was received.
    assert sorted(
        f.quarantined.group_by("date", "reason").agg(pl.col("lines").sum()).rows()
    ) == sorted(
        [(got_a, "invalid_json", 1), (got_b, "invalid_timestamp", 1), (got_b, "not_an_object", 1)]
    )
    # Of the lines received each day: 1 of 4, then 2 of 6 (the duplicate counts as a line).
    if got_a != got_b:
        assert f.share.rows() == [(got_a, 1 / 4), (got_b, 2 / 6)]
    else:  # S3 stamps its own LastModified: both files were received today
        assert f.share.rows() == [(got_a, 3 / 10)]
    assert f.examples.select("reason", "source", "line").rows() == [
        ("invalid_json", "date=2025-03-03/a.ndjson", 4),
        ("invalid_timestamp", "date=2025-03-04/b.ndjson", 5),
        ("not_an_object", "date=2025-03-04/b.ndjson", 6),
    ]
    (run,) = f.runs["run"].unique()
    assert run.startswith("2025-03-10 12:00")
    assert dict(f.runs.select("measure", "value").iter_rows()) == {
        "lines": 10,
        "accepted": 6,
        "duplicates": 1,
        "expired": 0,
        "quarantined": 3,
    }


def test_an_empty_lake_has_empty_figures(lake_url):
    f = figures(date(2025, 3, 1), date(2025, 3, 9), lake=lake_url)
    for rows in (f.events, f.sessions, f.quarantined, f.share, f.examples, f.runs):
        assert rows.is_empty()
    assert f.as_of is None


def test_the_page_opens_offline_and_shows_every_chart(tmp_path, capsys):
    from tests.browser import boxes, pixels, render

    lake = str(tmp_path / "lake")
    _lake_of_two_days(lake)
    out = tmp_path / "report.html"
    query = ["--start-date", "2025-03-01", "--end-date", "2025-03-09", "--out", str(out)]
    assert main(["report", "--lake", lake, *query]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    text = out.read_text()
    # Self-contained: no script, and no address but the SVG namespaces.
    assert "<script" not in text
    assert set(re.findall(r"https?://[^\"' )]+", text)) <= {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    assert html.escape(LONG) not in text and html.escape(LONG[:RAW_CHARS]) + "…" in text
    size = "1100,4000"
    shown = render(out.as_uri(), tmp_path, size=size)
    assert shown.console == []
    for name in CHARTS:
        assert re.search(f'<figure id="{name}"><svg', shown.dom), name
    assert "line must be a JSON object, got array" in shown.dom
    # Each chart's area of the screenshot holds colored marks, not only axes and white.
    image = pixels(shown.screenshot)
    for name, (x, y, width, height) in boxes(out, "figure", tmp_path, size=size).items():
        assert y + height <= len(image), f"{name} is below the screenshot"
        area = [
            pixel
            for row in image[int(y) : int(y + height)]
            for pixel in row[int(x) : int(x + width)]
        ]
        colored = sum(1 for pixel in area if max(pixel) - min(pixel) > 60)
        assert colored > 0.002 * len(area), (name, colored, len(area))


def test_a_range_backwards_is_a_usage_error(tmp_path, capsys):
    query = ["--start-date", "2025-03-09", "--end-date", "2025-03-01"]
    assert main(["report", "--lake", str(tmp_path), *query, "--out", str(tmp_path / "r")]) == 2
    assert "--start-date must be on or before --end-date" in capsys.readouterr().err
    assert not Path(tmp_path / "r").exists()


def test_the_users_figure_repeats_each_weeks_users_on_its_days(tmp_path):
    from track.report import _users_by_day

    daily = [{"date": "2025-03-02", "users": 1}, {"date": "2025-03-03", "users": 2}]
    weekly = [{"date": "2025-02-24", "users": 1}, {"date": "2025-03-03", "users": 3}]
    rows = _users_by_day(daily, weekly, date(2025, 3, 1), date(2025, 3, 4))
    assert rows.filter(pl.col("period") == "that week").select("date", "users").rows() == [
        (date(2025, 3, 1), 1),
        (date(2025, 3, 2), 1),
        (date(2025, 3, 3), 3),
        (date(2025, 3, 4), 3),
    ]


def test_a_failing_store_is_named_and_exits_1(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    _lake_of_two_days(lake)
    store = Lake(lake)
    for names in store.current().tables["counts"].values():
        (name,) = names
        store.fs.pipe_file(store.path(name), b"not parquet")
    out = tmp_path / "report.html"
    query = ["--start-date", "2025-03-01", "--end-date", "2025-03-09", "--out", str(out)]
    assert main(["report", "--lake", lake, *query]) == 1
    assert "track report: events per day: Failed to fetch metrics" in capsys.readouterr().err
    assert not out.exists()

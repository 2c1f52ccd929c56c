"""The pipeline against the reference model of the spec, on generated messy input, over several
runs with a moving `now`: every report count, every answer and every stored event must agree."""

from __future__ import annotations

import gzip
import json
import os
import re
from datetime import UTC, date, datetime, timedelta
from unittest import mock

import polars as pl
import pytest
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

import track.settings
from tests.lakes import SPEC_REPORT_KEYS, drop
from tests.reference import Reference, _canon
from track import reader
from track.flows.pipeline import pipeline
from track.lake.store import Lake
from track.schemas.tables import Events, Keys, Plays

pytestmark = pytest.mark.usefixtures("prefect_harness")

T0 = datetime(2025, 3, 1, tzinfo=UTC)
USERS = ["u1", "u2", "ü3"]
EVENTS = ["play", "stop", "pause"]
# Metadata strings: escapes, quotes and wide characters for the slow path, and for the fast one
# texts that look like the separators it cuts at (a string ending in ", ", holding ": " or braces).
TRICKY = ["C:\\tmp\\new", 'say "hi"', "naïve ☕ 🎷", "\\u00e9", "tab\there", "x" * 50]
SEPARATORS = ["x, ", ": y", "a, b: c}", "{"]


@st.composite
def timestamps(draw):
    day = draw(st.integers(-40, 45))
    moment = T0 + timedelta(days=day, milliseconds=draw(st.integers(0, 86_400_000 - 1)))
    kind = draw(st.sampled_from(["Z"] * 6 + ["offset"] * 3 + ["none", "future", "bad", "unreal"]))
    if kind == "bad":
        return draw(
            st.sampled_from(
                [
                    "yesterday",
                    "2025-03-01",
                    "2025-03-01T10:00Z",
                    "2025-03-01T24:00:00Z",
                    "2025-03-01T10:00:00z",
                    17,
                ]
            )
        )
    if kind == "unreal":
        return "2025-02-29T10:00:00Z"
    if kind == "future":
        moment = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 9)))
    sep = draw(st.sampled_from(["T", "t", " "]))
    digits = draw(st.sampled_from(["", ".5", ".123", ".123999", ".0001"]))
    if kind == "offset":
        minutes = draw(st.sampled_from([-330, -60, 0, 120, 345]))
        local = moment + timedelta(minutes=minutes)
        sign = "+" if minutes >= 0 else "-"
        suffix = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    else:
        local, suffix = moment, ("Z" if kind != "none" else "")
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + digits + suffix


metadata = st.one_of(
    st.none(),
    st.just("absent"),
    st.just("absent"),
    st.dictionaries(
        st.sampled_from(["a", "b", "_warnings", "k\\ey", "ключ", "k,", "k: v", "a b"]),
        st.one_of(
            st.sampled_from(TRICKY),
            st.sampled_from(SEPARATORS),
            st.sampled_from([1, 1.0, 1e0, -0.0, 0, 2.5, 10**20]),
            st.lists(st.integers(0, 3), max_size=3),
            st.booleans(),
            st.none(),
        ),
        max_size=3,
    ),
    st.integers(40, 90).map(lambda n: {f"f{i:02d}": "é" * 30 for i in range(n)}),
    st.just([1]),
)


@st.composite
def received_ats(draw):
    """A `_received_at` as the HTTP API writes it, or not: `@<ms>` for that many milliseconds
    after the first file of its run was written (filled in when the file is dropped)."""
    kind = draw(st.sampled_from(["before", "before", "edge", "late", "bad"]))
    if kind == "bad":
        return draw(st.sampled_from(["yesterday", "2025-03-01T10:00:00", 17, None, "@0"]))
    if kind == "before":
        delta = -draw(st.integers(0, 40 * 86_400_000))
    elif kind == "edge":
        delta = draw(st.sampled_from([-1, 0, 999, 1000]))
    else:
        delta = draw(st.integers(1000, 2 * 86_400_000))
    return f"@{delta}{draw(st.sampled_from(['Z', '+02:00', '-05:30']))}"


RECEIVED_AT_TOKEN = re.compile(rb"@(-?[0-9]+)(Z|[+-][0-9]{2}:[0-9]{2})")


def _fill_received_at(data: bytes, base: datetime) -> bytes:
    def instant(match: re.Match[bytes]) -> bytes:
        offset = match.group(2).decode()
        zone = UTC if offset == "Z" else datetime.fromisoformat("2000-01-01T00:00" + offset).tzinfo
        moment = (base + timedelta(milliseconds=int(match.group(1)))).astimezone(zone)
        return (
            moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}" + offset
        ).encode()

    return RECEIVED_AT_TOKEN.sub(instant, data)


@st.composite
def records(draw):
    record = {"event": draw(st.sampled_from(EVENTS)), "user_id": draw(st.sampled_from(USERS))}
    ts = draw(st.one_of(timestamps(), timestamps(), timestamps(), st.none(), st.just("absent")))
    if ts != "absent":
        record["timestamp"] = ts
    meta = draw(metadata)
    if meta != "absent":
        record["metadata"] = meta
    if draw(st.integers(0, 3)) == 0:
        record["_received_at"] = draw(received_ats())
    if draw(st.integers(0, 30)) == 0:
        record[draw(st.sampled_from(["event", "user_id"]))] = draw(
            st.sampled_from(["", "date", 5, None, "z" * 257])
        )
    return json.dumps(record, ensure_ascii=draw(st.booleans()))


BAD_LINES = [
    "not json",
    "[1, 2]",
    '{"event": "play", "user_id": "u1", "x": NaN}',
    "   ",
    "\u00a0\t",
    '{"event": "play", "user_id": "u1"',
    '"just a string"',
    "{}",
]


@st.composite
def files(draw, pool):
    lines = []
    for _ in range(draw(st.integers(1, 25))):
        choice = draw(st.integers(0, 14))
        if choice == 0:
            lines.append(draw(st.sampled_from(BAD_LINES)))
        elif choice == 1 and pool:
            lines.append(draw(st.sampled_from(pool)))  # a copy of an earlier line: a duplicate
        else:
            lines.append(draw(records()))
        pool.append(lines[-1])
    day = (T0 + timedelta(days=draw(st.integers(-35, 40)))).date()
    name = draw(
        st.sampled_from(
            ["a.ndjson", "b.jsonl", "c.ndjson.gz", "a.ndjson", "b.jsonl", "_up.ndjson", "n.txt"]
        )
    )
    return f"date={day.isoformat()}/{name}", ("\n".join(lines) + "\n").encode()


@st.composite
def scenarios(draw):
    pool: list[str] = []
    steps, day = [], 0
    for _ in range(draw(st.integers(1, 3))):
        day += draw(st.integers(-3, 25))
        drops = draw(st.lists(files(pool), min_size=1, max_size=4))
        if draw(st.integers(0, 3)) == 0:
            # The same bytes dropped again under another name, in the same run.
            path, data = drops[0]
            folder, name = path.rsplit("/", 1)
            drops.append((f"{folder}/again-{name}", data))
        steps.append((day, drops))
    return steps


PERIODS = [("day", "monday"), ("week", "monday"), ("week", "sunday"), ("month", "monday")]


def _answers(lake_or_model, start: date, end: date):
    out = {}
    s, e = start.isoformat(), end.isoformat()
    for group, first in PERIODS:
        for user in [None, *USERS]:
            if isinstance(lake_or_model, Reference):
                out[group, first, user] = (
                    lake_or_model.metrics(start, end, group, user, first),
                    lake_or_model.session_metrics(start, end, group, user, first),
                )
            else:
                m = reader.metrics(s, e, group, user, week_start=first, lake=lake_or_model)
                x = reader.sessions(s, e, group, user, week_start=first, lake=lake_or_model)
                assert m["status"] == x["status"] == "success", (m, x)
                out[group, first, user] = (m["data"], x["data"])
        for event in [None, *EVENTS]:
            if isinstance(lake_or_model, Reference):
                out[group, first, "users", event] = lake_or_model.users(
                    start, end, group, event, first
                )
            else:
                u = reader.users(s, e, group, event, week_start=first, lake=lake_or_model)
                assert u["status"] == "success", u
                out[group, first, "users", event] = u["data"]
    return out


def _event_row(event, user, moment_ms: int, source: str, line: int, metadata) -> tuple:
    # Metadata compared as JSON values (1 and 1.0 alike, key order aside), as the spec does.
    return event, user, moment_ms, source, line, json.dumps(_canon(metadata), sort_keys=True)


def _stored_events(lake: str) -> list[tuple]:
    """Every row of the lake's events table: which copy was kept, and what it holds."""
    events = (
        Lake(lake)
        .scan("events", Events)
        .select(
            "event", "user_id", pl.col("timestamp").dt.epoch("ms"), "source", "line", "metadata"
        )
    )
    return sorted(
        _event_row(*row[:-1], None if row[-1] is None else json.loads(row[-1]))
        for row in events.collect().iter_rows()
    )


def _stored_plays(lake: str) -> list[tuple]:
    """Every row of the lake's plays table, each under the date of its instant."""
    plays = Lake(lake).scan("plays", Plays).collect()
    assert plays.filter(pl.col("date") != pl.col("timestamp").dt.date()).is_empty()
    return sorted(plays.select("user_id", "event", pl.col("timestamp").dt.epoch("ms")).iter_rows())


def _keys_match_the_copies(lake: str) -> None:
    """The keys table holds the record mix of every stored copy, under the copy's date."""
    store = Lake(lake)
    mix = (pl.col("fingerprint") ^ pl.col("sent_at").dt.epoch("ms")).alias("mix")
    copies = [store.scan(t, Events).select("date", mix).collect() for t in ("events", "duplicates")]
    keys = store.scan("keys", Keys).select("date", "mix").collect()
    assert sorted(pl.concat(copies).rows()) == sorted(keys.rows())


def _model_plays(model: Reference) -> list[tuple]:
    kept = model.kept().values()
    return sorted((r.user, r.event, r.ts) for r in kept if r.event in ("play", "stop"))


def _model_events(model: Reference) -> list[tuple]:
    kept = model.kept().values()
    return sorted(_event_row(r.event, r.user, r.ts, r.path, r.line, r.metadata) for r in kept)


def _dump(folder: str, lake: str, steps, model: Reference) -> None:
    """Leave the failing lake and input behind for a developer to look at: the last failing
    example's, as hypothesis shrinks towards the smallest."""
    import shutil

    shutil.rmtree(f"{folder}/lake", ignore_errors=True)
    if os.path.isdir(lake):
        shutil.copytree(lake, f"{folder}/lake")
    with open(f"{folder}/steps.txt", "w") as f:
        f.write(repr(steps))
    with open(f"{folder}/model.txt", "w") as f:
        f.write(repr(model.kept()))


REPORT_KEYS = [k for k in SPEC_REPORT_KEYS if k != "partitions_deleted"]


@settings(
    max_examples=int(os.environ.get("TRACK_PROPERTY_EXAMPLES", "12")),
    deadline=None,
    print_blob=True,
    verbosity=Verbosity.quiet,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(), st.booleans())
def test_pipeline_agrees_with_the_reference_model(tmp_path_factory, steps, match_everyone):
    # Sessions are matched again for the users whose plays or stops changed, or for everyone
    # beyond MATCH_USERS_AT_MOST users on more than MATCH_DATES_AT_MOST dates: both ways must
    # give the model's answers.
    users = 0 if match_everyone else track.settings.MATCH_USERS_AT_MOST
    dates = -1 if match_everyone else track.settings.MATCH_DATES_AT_MOST
    with (
        mock.patch.object(track.settings, "MATCH_USERS_AT_MOST", users),
        mock.patch.object(track.settings, "MATCH_DATES_AT_MOST", dates),
    ):
        _agrees_with_the_model(steps, str(tmp_path_factory.mktemp("example") / "lake"))


def _agrees_with_the_model(steps, lake: str) -> None:
    model = Reference()
    present: dict[str, tuple[bytes, datetime]] = {}
    try:
        for number, (day, drops) in enumerate(steps):
            now = T0 + timedelta(days=day, hours=12)
            for offset, (path, data) in enumerate(drops):
                modified = now - timedelta(hours=1, seconds=offset)
                data = _fill_received_at(data, now - timedelta(hours=1))
                gz = path.endswith(".gz")
                payload = gzip.compress(data, mtime=0) if gz else data
                drop(lake, path, payload, modified=modified)
                present[path] = (payload, modified)
            report = pipeline(lake=lake, now=now)
            expected = model.run(present, now)
            got = {key: report[key] for key in REPORT_KEYS}
            want = {key: expected[key] for key in REPORT_KEYS}
            assert got == want, f"run {number}: pipeline {got} != model {want}"
            assert report["lines"] == (
                report["accepted"]
                + report["duplicates"]
                + report["expired"]
                + report["quarantined"]
            )
            window = date.fromisoformat(report["window_start"])
            assert window == model.window_start
            present = {
                p: v
                for p, v in present.items()
                if date.fromisoformat(p.split("/")[0][5:]) >= window
            }
            start, end = (T0 - timedelta(days=60)).date(), (T0 + timedelta(days=120)).date()
            assert _answers(lake, start, end) == _answers(model, start, end), number
            assert _stored_events(lake) == _model_events(model), number
            assert _stored_plays(lake) == _model_plays(model), number
            _keys_match_the_copies(lake)
    except Exception:  # a wrong answer or a failed run alike
        if os.environ.get("TRACK_DEBUG_DIR"):
            _dump(os.environ["TRACK_DEBUG_DIR"], lake, steps, model)
        raise

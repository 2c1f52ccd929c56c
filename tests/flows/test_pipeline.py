"""The pipeline flow end to end, under Prefect, on a local folder and on the S3 API."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import fsspec
import polars as pl
import pytest

import track.lake.raw
import track.settings
from tests.lakes import SPEC_REPORT_KEYS, drop, ndjson
from track import reader
from track.errors import LakeFormatError, LakeRootError
from track.flows.pipeline import pipeline
from track.flows.progress import STEPS
from track.lake.delta import storage_options
from track.lake.store import CLAMPED, MANIFEST, Lake
from track.schemas.tables import Clamped, Events, Manifest, Plays, Sessions, polars_schema

pytestmark = pytest.mark.usefixtures("prefect_harness")

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def day(n: int, hh: int = 12, mm: int = 0, ss: float = 0) -> str:
    """An ISO timestamp n days before today (UTC)."""
    return (
        (TODAY - timedelta(days=n, hours=-hh, minutes=-mm, seconds=-ss))
        .isoformat()
        .replace("+00:00", "Z")
    )


def d(n: int) -> str:
    return (TODAY - timedelta(days=n)).date().isoformat()


def ev(event: str, user: str, ts: str | None, **meta) -> dict:
    record = {"event": event, "user_id": user}
    if ts is not None:
        record["timestamp"] = ts
    if meta:
        record["metadata"] = meta
    return record


def _table_files(lake: str, table: str) -> list:
    """Open files of a table's Parquet partitions (local or S3)."""
    fs, root = fsspec.core.url_to_fs(lake)
    return [fs.open(p, "rb") for p in sorted(fs.find(f"{root}/{table}")) if p.endswith(".parquet")]


def run(lake: str, now: datetime | None = None, **kwargs) -> dict:
    report = pipeline(lake=lake, now=now or datetime.now(UTC) + timedelta(minutes=1), **kwargs)
    # The conservation law of SPEC section 4, on every run.
    assert report["lines"] == (
        report["accepted"] + report["duplicates"] + report["expired"] + report["quarantined"]
    )
    assert report["quarantined"] == sum(report["quarantined_by_reason"].values())
    return report


def answers(lake: str, start: str, end: str, **kwargs) -> tuple[list, list]:
    m = reader.metrics(start, end, lake=lake, **kwargs)
    s = reader.sessions(start, end, lake=lake, **kwargs)
    assert m["status"] == s["status"] == "success", (m, s)
    return m["data"], s["data"]


def test_messy_input_gives_the_documented_answers(lake_url, file_reads):
    drop(
        lake_url,
        f"date={d(5)}/app.ndjson",
        ndjson(
            ev("play", "alice", day(5, 23, 50), track="t1"),
            ev("stop", "alice", day(4, 0, 20, 0.5)),  # across midnight: 30 min 0.5 s
            ev("play", "bob", day(5, 10).replace("Z", "+02:00")),  # 08:00 UTC
            ev("play", "bob", day(5, 9)),  # play, play, stop
            ev("stop", "bob", day(5, 9, 30)),  # -> 30 min from 09:00
            ev("stop", "bob", day(5, 9, 40)),  # stop with no open play
            ev("stop", "carol", day(5, 7)),  # stop without play
            ev("pause", "carol", day(5, 23, 30).replace("Z", "-05:00")),  # 04:30 UTC next day
            "not json",
            '{"event": "date", "user_id": "x"}',
            "",
        ),
    )
    drop(
        lake_url,
        f"date={d(4)}/more.jsonl.gz",
        gzip.compress(
            ndjson(
                ev("stop", "bob", day(5, 9, 30)),  # duplicate across files
                ev("play", "dave", day(4, 6)),
                ev("stop", "dave", day(4, 6)),  # zero-length
                ev("play", "erin", "2099-01-01T00:00:00Z", note="skew"),  # clamped to received_at
                ev("purchase", "erin", day(4, 8), blob="x" * 5000),  # truncated
                [1, 2],
            )
        ),
    )
    drop(lake_url, f"date={d(4)}/_partial.ndjson", ndjson(ev("play", "zed", day(4))))
    drop(lake_url, f"date={d(4)}/notes.txt", b"hello")
    drop(lake_url, "loose.ndjson", ndjson(ev("play", "zed", day(4))))
    report = run(lake_url)
    assert {
        k: report[k]
        for k in (
            "files",
            "lines",
            "accepted",
            "duplicates",
            "expired",
            "quarantined",
            "clamped",
            "truncated",
            "sessions",
        )
    } == {
        "files": 2,
        "lines": 16,
        "accepted": 12,
        "duplicates": 1,
        "expired": 0,
        "quarantined": 3,
        "clamped": 1,
        "truncated": 1,
        "sessions": 3,
    }
    assert report["quarantined_by_reason"] == {
        "invalid_json": 1,
        "invalid_event": 1,
        "not_an_object": 1,
    }
    assert report["ignored"] == [f"date={d(4)}/notes.txt", "loose.ndjson"]
    quarantine = pl.read_parquet(_table_files(lake_url, "quarantine"))
    assert sorted(quarantine.select("source", "line", "reason").rows()) == [
        (f"date={d(5)}/app.ndjson", 9, "invalid_json"),
        (f"date={d(5)}/app.ndjson", 10, "invalid_event"),
        (f"date={d(4)}/more.jsonl.gz", 6, "not_an_object"),
    ]
    metrics, sessions = answers(lake_url, d(5), d(4))
    assert metrics == [
        {"date": d(5), "play": 3, "stop": 3},
        {"date": d(4), "pause": 1, "play": 1, "purchase": 1, "stop": 2},
    ]
    assert sessions == [
        # 1800.5 s + 1800 s: the total rounds half up, the average of 1800.25 s down.
        {"date": d(5), "totalDuration": 3601, "sessionCount": 2, "averageDuration": 1800},
        {"date": d(4), "totalDuration": 0, "sessionCount": 1, "averageDuration": 0},
    ]
    # The clamped play lands on the day its file was received.
    received = datetime.now(UTC).date().isoformat()
    all_metrics, _ = answers(lake_url, d(10), received, user_id="erin")
    assert {"date": received, "play": 1} in all_metrics


def test_reruns_and_the_same_bytes_again_change_nothing(lake_url):
    data = ndjson(ev("play", "u", day(3, 1)), ev("stop", "u", day(3, 2)), ev("view", "u", None))
    drop(lake_url, f"date={d(3)}/a.ndjson", data)
    first = run(lake_url)
    before = answers(lake_url, d(40), d(-1))
    assert first["accepted"] == 3
    again = run(lake_url)
    assert (again["files"], again["lines"]) == (0, 0)
    # Rewritten with the same bytes (new mtime), and dropped again under another name.
    drop(lake_url, f"date={d(3)}/a.ndjson", data)
    drop(lake_url, f"date={d(2)}/copy.ndjson", data)
    third = run(lake_url)
    assert (third["files"], third["accepted"], third["duplicates"]) == (1, 0, 3)
    assert answers(lake_url, d(40), d(-1)) == before


def test_a_replaced_file_replaces_its_contribution(lake_url):
    drop(
        lake_url,
        f"date={d(3)}/a.ndjson",
        ndjson(ev("play", "u", day(3, 1)), ev("stop", "u", day(3, 2)), ev("pause", "u", day(2))),
    )
    drop(lake_url, f"date={d(3)}/b.ndjson", ndjson(ev("stop", "u", day(3, 2))))
    run(lake_url)
    assert answers(lake_url, d(3), d(2))[0] == [
        {"date": d(3), "play": 1, "stop": 1},
        {"date": d(2), "pause": 1},
    ]
    # a.ndjson loses its stop and pause: b's copy of the stop is counted instead.
    drop(lake_url, f"date={d(3)}/a.ndjson", ndjson(ev("play", "u", day(3, 1)), "bad"))
    report = run(lake_url)
    assert (report["files"], report["accepted"], report["quarantined"]) == (1, 1, 1)
    metrics, sessions = answers(lake_url, d(3), d(2))
    assert metrics == [{"date": d(3), "play": 1, "stop": 1}]
    assert sessions == [
        {"date": d(3), "totalDuration": 3600, "sessionCount": 1, "averageDuration": 3600}
    ]


def test_a_file_rewritten_with_as_many_bytes_at_the_same_time_is_read_again(lake_url):
    # S3 keeps last-modified times to the second: two writes of one file within a second, of
    # equal size, list alike but for their ETag (locally: their inode change time).
    path, modified = f"date={d(1)}/a.ndjson", datetime.now(UTC) - timedelta(hours=1)
    first = drop(lake_url, path, ndjson(ev("play", "u1", day(1))), modified=modified)
    run(lake_url)
    again = drop(lake_url, path, ndjson(ev("play", "u2", day(1))), modified=modified)
    if "://" not in lake_url:
        assert again == first  # listed alike but for the version
    report = run(lake_url)
    assert (report["files"], report["accepted"]) == (1, 1)
    stored = Lake(lake_url).scan("events", Events).collect()
    assert stored["user_id"].to_list() == ["u2"]
    # Listed alike again: nothing to read.
    assert run(lake_url)["files"] == 0


def test_a_manifest_from_before_versions_has_each_file_checked_once(lake_url):
    drop(lake_url, f"date={d(1)}/a.ndjson", ndjson(ev("play", "u1", day(1))))
    run(lake_url)
    before = answers(lake_url, d(1), d(0))
    # The manifest as a lake made before this version wrote it: no `version` column.
    lake = Lake(lake_url).begin()
    lake.write_state(MANIFEST, lake.read_state(MANIFEST, Manifest).drop("version"))
    lake.commit()
    report = run(lake_url)  # each file hashed again: unchanged, so nothing counted again
    assert (report["files"], report["lines"]) == (0, 0)
    assert answers(lake_url, d(1), d(0)) == before
    assert Lake(lake_url).read_manifest()["version"].null_count() == 0
    assert run(lake_url)["files"] == 0


def test_a_lake_an_older_track_ran_on_gets_its_plays_and_keys_made_again(lake_url):
    play = ev("play", "u", day(2, 23))
    drop(lake_url, f"date={d(2)}/a.ndjson", ndjson(play, ev("pause", "u", day(2, 23, 10))))
    run(lake_url)
    # A Track from before the plays and keys tables drops the snapshot's note that they are
    # kept, and leaves their partitions as they were while it changes the events: here a date
    # of each is gone, and another date of plays holds a play no event has.
    lake = Lake(lake_url).begin()
    assert lake.holds("plays") and lake.holds("keys")
    lake.run.kept.clear()
    lake.delete_partition("plays", TODAY.date() - timedelta(days=2))
    lake.delete_partition("keys", TODAY.date() - timedelta(days=2))
    ghost = {"user_id": ["u"], "event": ["play"], "timestamp": [datetime.fromisoformat(day(3))]}
    rows = pl.DataFrame(ghost, schema=polars_schema(Plays))
    lake.write_partition("plays", TODAY.date() - timedelta(days=3), rows)
    lake.commit()
    # The stop's play is stored only among the events, and so is the first copy of the play.
    drop(lake_url, f"date={d(1)}/b.ndjson", ndjson(ev("stop", "u", day(1, 0, 30)), play))
    report = run(lake_url)
    assert (report["accepted"], report["duplicates"], report["sessions"]) == (1, 1, 1)
    found = reader.sessions(d(3), d(1), user_id="u", lake=lake_url)["data"]
    assert found == [
        {"date": d(2), "totalDuration": 5400, "sessionCount": 1, "averageDuration": 5400}
    ]
    plays = Lake(lake_url).scan("plays", Plays).sort("timestamp").collect()
    assert plays.select("date", "event").rows() == [
        (TODAY.date() - timedelta(days=2), "play"),
        (TODAY.date() - timedelta(days=1), "stop"),
    ]
    assert Lake(lake_url).holds("plays") and Lake(lake_url).holds("keys")


def test_a_file_set_back_to_bytes_read_before_keeps_their_first_received_at(lake_url):
    # SPEC 1: received_at is the last-modified time when the pipeline first reads those bytes.
    # The manifest holds a path's current bytes only; bytes a file held before a replacement
    # are remembered too, so setting a file back to them changes nothing.
    path = f"date={d(1)}/a.ndjson"
    first = ndjson(ev("play", "u", None), ev("stop", "u", day(1, 13)))
    received = drop(lake_url, path, first, modified=datetime.now(UTC) - timedelta(hours=3))
    run(lake_url)
    drop(lake_url, path, ndjson(ev("pause", "u", day(1))))
    run(lake_url)
    before = answers(lake_url, d(1), d(0))
    drop(lake_url, path, first, modified=datetime.now(UTC) - timedelta(hours=1))
    report = run(lake_url)
    assert (report["files"], report["accepted"]) == (1, 2)
    stored = Lake(lake_url).scan("events", Events).collect()
    assert stored["received_at"].to_list() == [received, received]
    assert stored.filter(pl.col("event") == "play")["timestamp"].to_list() == [received]
    metrics, _ = answers(lake_url, d(1), d(0))
    assert metrics != before[0]  # the pause went, the play and stop came back as first read
    assert sum(n for row in metrics for k, n in row.items() if k != "date") == 2


def test_a_replaced_file_without_a_users_plays_ends_their_sessions(lake_url):
    drop(
        lake_url,
        f"date={d(3)}/a.ndjson",
        ndjson(ev("play", "gone", day(3, 1)), ev("stop", "gone", day(3, 2))),
    )
    drop(lake_url, f"date={d(3)}/b.ndjson", ndjson(ev("play", "stays", day(3, 3))))
    drop(lake_url, f"date={d(3)}/c.ndjson", ndjson(ev("stop", "stays", day(3, 4))))
    run(lake_url)
    assert answers(lake_url, d(3), d(3))[1][0]["sessionCount"] == 2
    # Only "gone" had plays or stops in a.ndjson: the new a.ndjson names another user.
    drop(lake_url, f"date={d(3)}/a.ndjson", ndjson(ev("pause", "other", day(3, 5))))
    assert run(lake_url)["sessions"] == 1
    _, sessions = answers(lake_url, d(3), d(3))
    assert sessions == [
        {"date": d(3), "totalDuration": 3600, "sessionCount": 1, "averageDuration": 3600}
    ]
    assert reader.sessions(d(3), d(3), user_id="gone", lake=lake_url)["data"] == []


@pytest.mark.parametrize("everyone", [False, True], ids=["in-spans", "whole-window"])
def test_a_run_rewrites_only_the_session_dates_whose_sessions_change(
    lake_url, monkeypatch, everyone
):
    # Matched again for the changed users' spans, or for everyone (beyond MATCH_USERS_AT_MOST
    # users on more than MATCH_DATES_AT_MOST dates): the dates are written two at a time, and
    # a date whose sessions stay as they were keeps its file.
    if everyone:
        monkeypatch.setattr(track.settings, "MATCH_USERS_AT_MOST", 0)
        monkeypatch.setattr(track.settings, "MATCH_DATES_AT_MOST", -1)
    lake = Lake(lake_url)

    def session_files() -> dict:
        return {str(k): v for k, v in lake.partition_files("sessions").items()}

    plays = [ev("play", f"u{n}", day(n, 1)) for n in range(2, 7)]
    stops = [ev("stop", f"u{n}", day(n, 2)) for n in range(2, 5)]
    drop(lake_url, f"date={d(2)}/a.ndjson", ndjson(*plays, *stops))
    assert run(lake_url)["sessions"] == 3
    before = session_files()
    assert sorted(before) == [d(4), d(3), d(2)]
    # u5 and u6 stop: their dates get sessions; u2 stops earlier: that date's session shortens.
    later = [ev("stop", "u5", day(5, 3)), ev("stop", "u6", day(6, 3))]
    drop(lake_url, f"date={d(1)}/b.ndjson", ndjson(*later, ev("stop", "u2", day(2, 1, 30))))
    assert run(lake_url)["sessions"] == 5
    after = session_files()
    assert sorted(after) == [d(6), d(5), d(4), d(3), d(2)]
    assert after[d(3)] == before[d(3)] and after[d(4)] == before[d(4)]
    assert after[d(2)] != before[d(2)]
    fs, _ = fsspec.core.url_to_fs(lake_url)
    fs.invalidate_cache()
    assert [fs.exists(lake.url_of(name)) for name in before[d(2)] + after[d(2)]] == [False, True]
    _, sessions = answers(lake_url, d(6), d(2))
    assert [(s["date"], s["totalDuration"]) for s in sessions] == [
        (d(6), 7200),
        (d(5), 7200),
        (d(4), 3600),
        (d(3), 3600),
        (d(2), 1800),
    ]


def test_a_play_or_stop_far_from_its_users_others_is_matched_with_them(lake_url):
    # A run reads a user's events around their changed plays and stops, wider and wider until
    # it finds their neighbours: here 10 days back (the third width), 5 ahead, and 23 back
    # (the whole window).
    def sessions_of(user: str) -> list[tuple[str, int]]:
        data = reader.sessions(d(30), d(0), user_id=user, lake=lake_url)["data"]
        return [(row["date"], row["totalDuration"]) for row in data]

    hours = 3600
    drop(
        lake_url,
        f"date={d(20)}/a.ndjson",
        ndjson(
            ev("play", "u", day(20, 1)),
            ev("stop", "u", day(6, 1)),
            ev("play", "x", day(25, 1)),
            ev("play", "w", day(20)),
            ev("stop", "w", day(20, 13)),
        ),
    )
    run(lake_url)
    assert sessions_of("u") == [(d(20), 14 * 24 * hours)]
    drop(lake_url, f"date={d(10)}/b.ndjson", ndjson(ev("play", "u", day(10))))
    run(lake_url)
    assert sessions_of("u") == [(d(10), 3 * 24 * hours + 13 * hours)]
    drop(lake_url, f"date={d(15)}/c.ndjson", ndjson(ev("stop", "u", day(15))))
    drop(lake_url, f"date={d(2)}/d.ndjson", ndjson(ev("stop", "x", day(2))))
    assert run(lake_url)["sessions"] == 4
    assert sessions_of("u") == [(d(20), 5 * 24 * hours + 11 * hours), (d(10), 85 * hours)]
    assert sessions_of("x") == [(d(25), 23 * 24 * hours + 11 * hours)]
    assert sessions_of("w") == [(d(20), hours)]
    lake = Lake(lake_url)  # each date's sessions stay sorted by user and play, as readers expect
    for day_ in lake.partitions("sessions"):
        rows = lake.read_partition("sessions", day_, Sessions)
        assert rows.equals(rows.sort("user_id", "play_at")), day_


def test_retention_freezes_old_answers_and_a_late_stop_completes_nothing(lake_url):
    now = datetime.now(UTC) + timedelta(minutes=1)
    drop(
        lake_url,
        f"date={d(10)}/a.ndjson",
        ndjson(
            ev("play", "u", day(10, 1)), ev("stop", "u", day(10, 2)), ev("play", "u", day(10, 3))
        ),
    )
    drop(lake_url, f"date={d(2)}/b.ndjson", ndjson(ev("play", "v", day(2))))
    run(lake_url, now)
    frozen = answers(lake_url, d(12), d(0))
    assert frozen[1] == [
        {"date": d(10), "totalDuration": 3600, "sessionCount": 1, "averageDuration": 3600}
    ]
    # 25 days later day -10 has left the 30-day window; a late stop for its open play and a late
    # event for that day arrive.
    later = now + timedelta(days=25)
    drop(
        lake_url,
        f"date={d(1)}/late.ndjson",
        ndjson(ev("stop", "u", day(1)), ev("pause", "u", day(10, 5)), ev("stop", "v", day(2, 13))),
    )
    report = run(lake_url, later)
    assert report["window_start"] == (later - timedelta(days=30)).date().isoformat()
    assert report["expired"] == 1
    assert report["partitions_deleted"] == 2  # raw/ and events/ of day -10; rollups stay
    metrics, sessions = answers(lake_url, d(12), d(0))
    assert metrics == [
        {"date": d(10), "play": 2, "stop": 1},
        {"date": d(2), "play": 1, "stop": 1},
        {"date": d(1), "stop": 1},
    ]
    assert sessions == [
        {"date": d(10), "totalDuration": 3600, "sessionCount": 1, "averageDuration": 3600},
        {"date": d(2), "totalDuration": 3600, "sessionCount": 1, "averageDuration": 3600},
    ]
    fs, root = fsspec.core.url_to_fs(lake_url)
    assert not fs.exists(f"{root}/raw/date={d(10)}")
    assert not fs.exists(f"{root}/events/date={d(10)}")
    # A run with an earlier now keeps the later window.
    earlier = run(lake_url, now)
    assert earlier["window_start"] == report["window_start"]
    assert answers(lake_url, d(12), d(0)) == (metrics, sessions)


@pytest.fixture(params=["whole", "streamed"])
def file_reads(request, monkeypatch) -> str:
    """Raw files read whole, or (as files above RAW_WHOLE_BYTES are) a block at a time: here
    reads of 24 bytes and chunks of 64, so lines, gzip streams and characters straddle them."""
    if request.param == "streamed":
        monkeypatch.setattr(track.settings, "RAW_WHOLE_BYTES", 0)
        monkeypatch.setattr(track.settings, "PARSE_CHUNK_BYTES", 64)
        monkeypatch.setattr(track.settings, "RAW_BLOCK_BYTES", 24)
    return request.param


def test_unreadable_files_are_quarantined_whole_and_the_run_goes_on(lake_url, file_reads):
    drop(lake_url, f"date={d(1)}/broken.ndjson.gz", b"this is not gzip")
    cut = gzip.compress(ndjson(*[ev("play", "v", day(1))] * 20))[:-12]
    drop(lake_url, f"date={d(1)}/truncated.ndjson.gz", cut)
    drop(lake_url, f"date={d(1)}/binary.ndjson", b"\x00\x01\xff\xfe\x00")
    # Not UTF-8 long before its first NUL byte.
    drop(lake_url, f"date={d(1)}/late-nul.ndjson", b"\xff" + b"x" * 150 + b"\n\x00\n")
    drop(lake_url, f"date={d(1)}/fine.ndjson", ndjson(ev("play", "u", day(1))))
    # A NUL byte in UTF-8 text: only its line is bad (a character straddles the blocks).
    text = ndjson(ev("play", "w", day(1), note="é" * 40), '{"x": "\x00"}')
    drop(lake_url, f"date={d(1)}/nul-in-text.ndjson.gz", gzip.compress(text))
    report = run(lake_url)
    assert report["quarantined_by_reason"] == {"unreadable_file": 4, "invalid_json": 1}
    assert (report["files"], report["lines"], report["accepted"]) == (6, 7, 2)
    assert answers(lake_url, d(1), d(1))[0] == [{"date": d(1), "play": 2}]


def test_a_large_file_rewritten_between_its_two_reads_is_hashed_and_parsed_as_one(
    lake_url, monkeypatch
):
    # Above RAW_WHOLE_BYTES a file is read twice: hash and check, then parse. A producer
    # rewrites it in between: the manifest's hash must still be of the bytes parsed.
    import hashlib

    from track.lake.store import MANIFEST, Lake
    from track.schemas.tables import Manifest

    monkeypatch.setattr(track.settings, "RAW_WHOLE_BYTES", 0)
    old = ndjson(ev("play", "u", day(1)))
    new = ndjson(ev("stop", "u", day(1, 13)), ev("pause", "v", day(1, 14)))
    drop(lake_url, f"date={d(1)}/a.ndjson", old)
    real = track.lake.raw.check_large_file
    rewrites = []

    def then_rewrite(name, rewound):
        found = real(name, rewound)
        if not rewrites:
            rewrites.append(name)
            drop(lake_url, f"date={d(1)}/a.ndjson", new)  # in place, as a careless producer
        return found

    monkeypatch.setattr(track.lake.raw, "check_large_file", then_rewrite)

    def stored() -> tuple:
        (sha,) = Lake(lake_url).read_state(MANIFEST, Manifest)["sha256"]
        return sha, answers(lake_url, d(1), d(1))[0]

    was = hashlib.sha256(old).hexdigest(), [{"date": d(1), "play": 1}]
    now = hashlib.sha256(new).hexdigest(), [{"date": d(1), "pause": 1, "stop": 1}]
    run(lake_url)
    assert rewrites == [f"date={d(1)}/a.ndjson"]  # rewritten once, mid-read
    # One version or the other (S3 fails the read, which is retried; a local file renamed
    # over is still the old one to the open file), never the hash of one and rows of another.
    assert stored() in (was, now)
    run(lake_url)
    assert stored() == now


def test_the_report_is_stored_in_the_lake_and_published_as_an_artifact(lake_url):
    from prefect.artifacts import Artifact

    drop(lake_url, f"date={d(1)}/a.ndjson", ndjson(ev("play", "u", day(1)), "bad"))
    report = run(lake_url)
    fs, root = fsspec.core.url_to_fs(lake_url)
    stored = json.loads(fs.cat_file(f"{root}/runs/{report['run_id']}.json"))
    assert stored == report
    artifact = Artifact.get("track-run-report")
    assert artifact is not None
    assert f"| run_id | {report['run_id']} |" in artifact.data
    assert "| quarantined: invalid_json | 1 |" in artifact.data
    # Where the run's time went, step by step.
    assert list(report["seconds"]) == list(STEPS)
    assert all(seconds >= 0 for seconds in report["seconds"].values())
    assert f"| seconds: merge | {report['seconds']['merge']} |" in artifact.data


def test_a_run_with_nothing_new_changes_nothing(lake_url):
    drop(
        lake_url,
        f"date={d(2)}/a.ndjson",
        ndjson(ev("play", "u", day(2, 1)), ev("stop", "u", day(2, 2)), "bad line"),
    )
    first = run(lake_url)
    fs, root = fsspec.core.url_to_fs(lake_url)
    # Every table and all the pipeline's state; only the lock is taken and released again,
    # and the run's claim on the lake is a new snapshot file, a copy of the current one.
    tables = ("events", "duplicates", "quarantine", "counts", "sessions", "plays", "keys", "_state")

    def snapshot() -> dict[str, bytes]:
        fs.invalidate_cache()
        files = {
            p: fs.cat_file(p)
            for t in tables
            for p in fs.find(f"{root}/{t}")
            if "/_state/lock/" not in p and "/_state/snapshots/" not in p
        }
        return {**files, "current": fs.cat_file(max(fs.ls(f"{root}/_state/snapshots")))}

    before = snapshot()
    second = run(lake_url)
    assert snapshot() == before
    assert (second["files"], second["lines"], second["accepted"]) == (0, 0, 0)
    assert second["sessions"] == first["sessions"] == 1


def test_local_and_s3_lakes_give_the_same_answers(tmp_path, s3_endpoint):
    import uuid
    from pathlib import Path

    import s3fs

    bucket = f"track-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    lakes = [str(tmp_path / "lake"), f"s3://{bucket}/some/prefix"]
    sample = Path(__file__).parents[2] / "data" / "sample" / "raw"
    for lake in lakes:
        for path in sorted(sample.rglob("*")):
            if path.is_file():
                drop(lake, path.relative_to(sample).as_posix(), path.read_bytes())
    now = datetime(2026, 11, 20, 6, tzinfo=UTC)
    reports = [run(lake, now) for lake in lakes]
    keys = (*SPEC_REPORT_KEYS, "sessions", "ignored")
    assert {k: reports[0][k] for k in keys} == {k: reports[1][k] for k in keys}
    assert reports[0]["accepted"] == 25
    for group in ("day", "week", "month"):
        for user in (None, "alice", "bob"):
            local, remote = (
                answers(lake, "2026-11-01", "2026-12-31", group_by=group, user_id=user)
                for lake in lakes
            )
            assert local == remote
            assert local[0]


def test_a_lake_under_a_key_value_folder_runs_and_answers_as_any_other(lake_url):
    """A root such as `s3://bucket/env=prod/lake`: Polars reads every `key=value` folder of a
    file's path as a column; the lake's own scans (the dedup's, the sessions') must not trip."""
    plain, keyed = lake_url, f"{lake_url.rsplit('/', 1)[0]}/env=prod/lake"
    first = ndjson(
        ev("play", "u", day(3, 1)), ev("stop", "u", day(3, 2)), ev("play", "v", day(2, 5))
    )
    # A copy of a stored record (found by the dedup's read of the stored copies), and a stop
    # that ends v's session (matched again around it).
    later = ndjson(ev("play", "u", day(3, 1)), ev("stop", "v", day(2, 6)), ev("like", "w", None))
    reports: dict[str, list[dict]] = {plain: [], keyed: []}
    for lake in (plain, keyed):
        drop(lake, f"date={d(3)}/a.ndjson", first)
        reports[lake].append(run(lake))
        drop(lake, f"date={d(2)}/b.ndjson", later)
        reports[lake].append(run(lake))
    keys = (*SPEC_REPORT_KEYS, "sessions")
    assert [{k: r[k] for k in keys} for r in reports[keyed]] == [
        {k: r[k] for k in keys} for r in reports[plain]
    ]
    assert (reports[keyed][1]["duplicates"], reports[keyed][1]["sessions"]) == (1, 2)
    assert answers(keyed, d(40), d(-1)) == answers(plain, d(40), d(-1))
    assert answers(keyed, d(2), d(2))[1] == [
        {"date": d(2), "totalDuration": 3600, "sessionCount": 1, "averageDuration": 3600}
    ]


def test_a_lake_under_a_folder_named_after_a_column_is_refused(lake_url):
    parent = lake_url.rsplit("/", 1)[0]
    for folder in ("user_id=u", "date=2026-11-01"):
        with pytest.raises(LakeRootError, match=f"folder named {folder.split('=')[0]}="):
            run(f"{parent}/{folder}/lake")


def test_the_same_file_dropped_twice_in_one_run_counts_once(lake_url):
    data = ndjson(ev("play", "u", None), ev("view", "u", None), ev("stop", "u", day(1)))
    first = datetime.now(UTC) - timedelta(hours=3)
    drop(lake_url, f"date={d(1)}/b.ndjson", data, modified=first + timedelta(hours=1))
    drop(lake_url, f"date={d(1)}/a.ndjson", data, modified=first)
    report = run(lake_url)
    assert (report["files"], report["accepted"], report["duplicates"]) == (2, 3, 3)
    metrics, _ = answers(lake_url, d(3), d(-1))
    assert sum(n for row in metrics for k, n in row.items() if k != "date") == 3


def test_a_lake_fingerprinted_by_another_version_is_refused_untouched(lake_url):
    drop(lake_url, f"date={d(2)}/a.ndjson", ndjson(ev("play", "u", day(2, 1))))
    run(lake_url)
    fs, root = fsspec.core.url_to_fs(lake_url)
    pointer = max(fs.ls(f"{root}/_state/snapshots", detail=False))  # the current snapshot
    live = json.loads(fs.cat_file(pointer))
    assert live["fingerprint"] == "xxh3-64-sum-int64"
    del live["fingerprint"]  # as the versions before the marker wrote it
    fs.pipe_file(pointer, json.dumps(live).encode())
    before = reader.metrics(d(2), d(2), lake=lake_url)
    drop(lake_url, f"date={d(2)}/b.ndjson", ndjson(ev("play", "u", day(2, 1))))
    with pytest.raises(LakeFormatError, match="Rebuild it from raw/"):
        run(lake_url)
    assert json.loads(fs.cat_file(pointer)) == live
    assert max(fs.ls(f"{root}/_state/snapshots", detail=False)) == pointer  # no claim either
    assert reader.metrics(d(2), d(2), lake=lake_url) == before


@pytest.mark.parametrize("index", ["kept", "made again"])
def test_copies_of_a_clamped_record_stay_duplicates_when_their_date_changes(lake_url, index):
    # A future timestamp is clamped to each copy's received_at, so the copies of one record
    # lie under different dates. A later run that rewrites the date of the duplicates (for
    # another event) must not decide them without their kept copy: once, one was promoted.
    # The merge finds the other dates in the index of clamped copies, which a lake from before
    # it was kept makes again from its tables.
    future = (TODAY + timedelta(days=400)).isoformat().replace("+00:00", "Z")
    record = ev("play", "u", future)
    drop(lake_url, f"date={d(9)}/a.ndjson", ndjson(record), modified=TODAY - timedelta(days=9))
    run(lake_url)
    again = ndjson(record, record)
    drop(lake_url, f"date={d(2)}/b.ndjson", again, modified=TODAY - timedelta(days=2))
    assert run(lake_url)["duplicates"] == 2
    store = Lake(lake_url)
    copies = pl.concat([store.scan(t, Events).collect() for t in ("events", "duplicates")])
    assert copies["timestamp"].lt(copies["sent_at"]).all()  # all three copies were clamped
    listed = store.read_state(CLAMPED, Clamped)
    assert listed["date"].to_list() == copies["date"].unique().sort().to_list()
    if index == "made again":
        store.begin()
        assert store.run is not None
        del store.run.state[CLAMPED]
        store.commit()
    other = ndjson(ev("stop", "v", day(2, 13)))
    drop(lake_url, f"date={d(2)}/c.ndjson", other, modified=TODAY - timedelta(days=1))
    report = run(lake_url)
    assert (report["accepted"], report["duplicates"]) == (1, 0)
    counted = reader.metrics(d(30), d(0), "month", "u", lake=lake_url)["data"]
    assert sum(row.get("play", 0) for row in counted) == 1


def test_new_rows_that_displace_nothing_are_added_as_a_file_and_compacted_later(
    lake_url, monkeypatch
):
    monkeypatch.setattr(track.settings, "APPENDED_FILES_AT_MOST", 3)
    lake = Lake(lake_url)

    def event_files() -> list[str]:
        return lake.partition_files("events").get(TODAY.date() - timedelta(days=3), [])

    first_file = ndjson(ev("play", "u", day(3, 1)), ev("seek", "v", day(3, 2)))
    drop(lake_url, f"date={d(3)}/a.ndjson", first_file)
    run(lake_url)
    (first,) = event_files()
    # A later file of the same date: the stored file stays, the new rows are one more file,
    # and they complete a session with the stored play.
    later = ndjson(ev("stop", "u", day(3, 3)), ev("seek", "v", day(3, 4)))
    drop(lake_url, f"date={d(3)}/b.ndjson", later)
    assert run(lake_url)["accepted"] == 2
    assert event_files()[0] == first and len(event_files()) == 2
    drop(lake_url, f"date={d(3)}/c.ndjson", ndjson(ev("seek", "w", day(3, 5))))
    run(lake_url)
    assert event_files()[0] == first and len(event_files()) == 3
    metrics, sessions = answers(lake_url, d(3), d(3))
    assert metrics == [{"date": d(3), "play": 1, "seek": 3, "stop": 1}]
    assert sessions == [
        {"date": d(3), "totalDuration": 7200, "sessionCount": 1, "averageDuration": 7200}
    ]

    # Their counts are added as files too: a reader of the Delta table sums them.
    def counts() -> list[tuple]:
        rows = pl.read_delta(lake.url_of("counts"), storage_options=storage_options(lake_url))
        return rows.sort("event", "user_id", "count").select("event", "user_id", "count").rows()

    split = [
        ("play", "u", 1),
        ("seek", "v", 1),
        ("seek", "v", 1),
        ("seek", "w", 1),
        ("stop", "u", 1),
    ]
    assert counts() == split
    # A fourth file would make four: the date is rewritten as one file, its counts summed.
    drop(lake_url, f"date={d(3)}/d.ndjson", ndjson(ev("seek", "w", day(3, 6))))
    run(lake_url)
    (compacted,) = event_files()
    assert compacted != first
    assert answers(lake_url, d(3), d(3))[0] == [{"date": d(3), "play": 1, "seek": 4, "stop": 1}]
    assert len(pl.read_delta(lake.url_of("events"), storage_options=storage_options(lake_url))) == 6
    assert counts() == [("play", "u", 1), ("seek", "v", 2), ("seek", "w", 2), ("stop", "u", 1)]


def test_a_date_taking_a_few_rows_a_run_keeps_its_first_file_until_they_add_up(
    lake_url, monkeypatch
):
    # A late upload's few rows a run: past APPENDED_FILES_AT_MOST files, the date's files
    # after its first are merged into one, the first left as it is, while they hold at most
    # TAIL_SHARE of its rows; past that, the date is rewritten as one file.
    monkeypatch.setattr(track.settings, "APPENDED_FILES_AT_MOST", 3)
    monkeypatch.setattr(track.settings, "TAIL_SHARE", 0.5)
    lake = Lake(lake_url)

    def files(table: str) -> list[str]:
        return lake.partition_files(table).get(TODAY.date() - timedelta(days=3), [])

    def delta(table: str) -> pl.DataFrame:
        return pl.read_delta(lake.url_of(table), storage_options=storage_options(lake_url))

    bulk = [ev("seek", f"u{n % 3}", day(3, 0, n)) for n in range(8)]
    drop(lake_url, f"date={d(3)}/a.ndjson", ndjson(*bulk))
    run(lake_url)
    (first,) = files("events")
    (first_counts,) = files("counts")
    layouts = []
    for n in range(1, 8):  # one new row a run, each a file of its own
        drop(lake_url, f"date={d(3)}/late-{n}.ndjson", ndjson(ev("seek", "u0", day(3, 2, n))))
        assert run(lake_url)["accepted"] == 1
        layouts.append((files("events")[0] == first, len(files("events"))))
        assert answers(lake_url, d(3), d(3))[0] == [{"date": d(3), "seek": 8 + n}]
        counted = delta("counts").group_by("user_id").agg(pl.col("count").sum()).sort("user_id")
        assert counted.rows() == [("u0", 3 + n), ("u1", 3), ("u2", 2)]
        assert len(delta("events")) == 8 + n
    # Files after the first: 1, 2, 3 -> merged (3 rows, 1 file), +1 (4 rows in 2 files), then
    # those 4 and the new row are more than half of the first's 8: the date is rewritten whole
    # (the new rows count: a large batch is not merged into a small tail); then added to again.
    assert layouts == [
        (True, 2),
        (True, 3),
        (True, 2),
        (True, 3),
        (False, 1),
        (False, 2),
        (False, 3),
    ]
    assert files("counts")[0] != first_counts and len(files("counts")) == 3


def test_a_dates_new_rows_are_added_as_their_staged_file_or_as_one_file(lake_url, monkeypatch):
    # Every file read here is staged on its own, as a date's file of events/ is kept (sorted,
    # in the table's columns). A date's rows staged in one file are added as that file; staged
    # in several, they are written as one file: a run adds one file to a date.
    monkeypatch.setattr(track.settings, "STAGE_ROWS", 1)
    lake = Lake(lake_url)

    def event_files() -> list[str]:
        return lake.partition_files("events")[TODAY.date() - timedelta(days=3)]

    def add(*users: str) -> None:
        for user in users:  # each file's lines are out of time order
            lines = ndjson(ev("seek", user, day(3, 2)), ev("play", user, day(3, 1)))
            drop(lake_url, f"date={d(3)}/{user}.ndjson", lines)
            # A file is decoded as one piece, and staged as soon as it is.
            monkeypatch.setattr(track.settings, "PARSE_CHUNK_BYTES", len(lines) - 1)
        assert run(lake_url)["accepted"] == 2 * len(users)

    add("u", "v")
    (first,) = event_files()
    add("w")
    assert event_files()[0] == first and len(event_files()) == 2
    expected = (["play", "play", "seek", "seek"], ["play", "seek"])
    for name, events in zip(event_files(), expected, strict=True):
        rows = lake.read_parquet(name)
        assert rows.columns == list(Events.to_schema().columns)
        assert rows["event"].to_list() == events
    assert answers(lake_url, d(3), d(3))[0] == [{"date": d(3), "play": 3, "seek": 3}]
    assert len(pl.read_delta(lake.url_of("events"), storage_options=storage_options(lake_url))) == 6


def test_a_new_copy_of_a_stored_record_rewrites_its_date_as_one_file(lake_url):
    lake = Lake(lake_url)
    record = ev("play", "u", day(3, 1))
    drop(lake_url, f"date={d(3)}/a.ndjson", ndjson(record))
    drop(lake_url, f"date={d(3)}/b.ndjson", ndjson(ev("seek", "u", day(3, 2))))
    run(lake_url)
    drop(lake_url, f"date={d(3)}/c.ndjson", ndjson(record, ev("like", "u", day(3, 3))))
    report = run(lake_url)
    assert (report["accepted"], report["duplicates"]) == (1, 1)
    assert len(lake.partition_files("events")[TODAY.date() - timedelta(days=3)]) == 1
    assert len(lake.partition_files("duplicates")[TODAY.date() - timedelta(days=3)]) == 1
    assert answers(lake_url, d(3), d(3))[0] == [{"date": d(3), "like": 1, "play": 1, "seek": 1}]

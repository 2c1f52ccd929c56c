"""`track api` over HTTP: the original service's answers, errors, CORS, beacons, health, and
GET answers from the lake (SPEC section 11), on a local folder and on the S3 API."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import polars as pl
import pytest

from tests.api.conftest import Api
from track import reader
from track.flows.pipeline import pipeline
from track.lake.store import Lake, is_raw_name
from track.schemas.tables import Events

pytestmark = pytest.mark.usefixtures("prefect_harness")

ORIGINAL = Path(__file__).resolve().parents[3] / "shared" / "original-api"
LOGGED = {"status": "success", "message": "Event logged."}


def wait_for(condition, timeout: float = 30, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def raw_files(lake: str) -> dict[str, bytes]:
    """Every file under the lake's raw/ that the pipeline would read, by its path there (a local
    put_raw's in-progress `.tmp-` name is not one)."""
    fs, root = fsspec.core.url_to_fs(lake)
    fs.invalidate_cache()
    base = f"{root.rstrip('/')}/raw"
    if not fs.exists(base):
        return {}
    found = [p for p in fs.find(base) if is_raw_name(p.rsplit("/", 1)[-1])]
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in found}


def spooled(api: Api) -> list[str]:
    return [str(p) for p in Path(api.spool).rglob("*") if p.is_file()]


def stored_events(lake: str) -> pl.DataFrame:
    return Lake(lake).scan("events", Events).collect()


def _json_values(text: str) -> list:
    """The JSON documents printed one after another (curl prints bodies without newlines)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason="../shared/original-api is not beside the repo")
def test_the_original_readmes_curl_examples_get_the_original_answers(
    lake_url, api_factory, tmp_path
):
    api = api_factory(lake_url)
    # As its comments say to on Linux: the `date -d` lines in place of macOS's `date -v`.
    script = (ORIGINAL / "examples.sh").read_text()
    script = re.sub(r"^(START_DATE=\$\(date -v.*)$", r"# \1", script, flags=re.M)
    script = re.sub(r"^# (START_DATE=\$\(date -d.*)$", r"\1", script, flags=re.M)
    script = script.replace('API_URL="https://your-worker.workers.dev"', f'API_URL="{api.url}"')
    (tmp_path / "examples.sh").write_text(script)
    done = subprocess.run(["bash", str(tmp_path / "examples.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    answers = _json_values(done.stdout)
    empty = {"status": "success", "data": []}  # nothing is counted before a run
    assert answers == [
        LOGGED,
        LOGGED,
        empty,
        empty,
        {"status": "error", "message": "Invalid date format. Use YYYY-MM-DD"},
        {"status": "error", "message": "start_date and end_date are required"},
        LOGGED,
    ]
    assert api.stop() < 10
    report = pipeline(lake=lake_url)
    assert (report["accepted"], report["quarantined"]) == (3, 0)
    today = datetime.now(UTC).date().isoformat()
    week = (datetime.now(UTC).date() - timedelta(days=7)).isoformat()
    counted = reader.metrics(week, today, "day", "user123", lake=lake_url)
    assert counted == {
        "status": "success",
        "data": [{"date": today, "play": 1, "stop": 1, "test": 1}],
    }
    sessions = reader.sessions(week, today, "week", "user123", lake=lake_url)
    assert [row["sessionCount"] for row in sessions["data"]] == [1]
    # The 5,000-byte metadata was truncated with a warning, as the original README says.
    big = stored_events(lake_url).filter(pl.col("event") == "test")["metadata"].item()
    assert json.loads(big) == {"_warnings": ["metadata_truncated"], "_original_size": 5018}


def test_records_the_pipeline_would_reject_are_refused_with_its_message(lake_url, api_factory):
    api = api_factory(lake_url)
    cases = [
        (b'{"event":"play"}', "user_id must be a string of 1 to 256 characters, got missing"),
        (b'{"event":"date","user_id":"u"}', 'event must not be "date": the answers use that key'),
        (b'{"event":"a","user_id":"u","timestamp":"soon"}', 'got "soon"'),
        (b'{"event":"a","user_id":"u","metadata":[1]}', "metadata must be a JSON object"),
        (b"[1]", "line must be a JSON object, got array"),
        (b'{"event":"a",', "line is not valid JSON"),
        (b"", "line is empty"),
    ]
    for body, message in cases:
        answer = api.post("/track", body)
        assert answer.status_code == 400, body
        assert answer.json()["status"] == "error"
        assert message in answer.json()["message"], (body, answer.json())
    assert api.stop() < 10
    assert raw_files(lake_url) == {}  # nothing refused was written


def test_bodies_over_a_mebibyte_are_413_and_only_gzip_is_taken(tmp_path, api_factory):
    api = api_factory(str(tmp_path / "lake"))
    big = b'{"event":"a","user_id":"u","metadata":{"x":"' + b"x" * (1024 * 1024) + b'"}}'
    assert api.post("/track", big).status_code == 413
    answer = api.post("/track", gzip.compress(big), **{"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "gunzipped" in answer.json()["message"]
    assert api.post("/batch", json.dumps({"batch": [{}] * 501})).status_code == 413
    assert api.post("/track", b"{}", **{"Content-Encoding": "br"}).status_code == 415
    assert api.post("/track", b"not gzip", **{"Content-Encoding": "gzip"}).status_code == 400


def test_beacons_gzip_and_cors_as_browsers_send_them(tmp_path, api_factory):
    lake = str(tmp_path / "lake")
    api = api_factory(lake)
    record = {"event": "view", "user_id": "u1", "timestamp": "2025-03-01T10:00:00Z"}
    body = json.dumps(record).encode()
    # navigator.sendBeacon sends text/plain; some clients send no type; gzip is taken.
    assert api.post("/track", body, **{"Content-Type": "text/plain;charset=UTF-8"}).json() == LOGGED
    assert api.client.post("/track", content=body, headers={"Content-Type": ""}).json() == LOGGED
    zipped = api.post("/track", gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert zipped.json() == LOGGED
    # A preflight on any path, and every answer allows all origins.
    for path in ("/track", "/batch", "/metrics", "/anything"):
        preflight = api.client.options(
            path, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert preflight.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
        assert preflight.headers["access-control-allow-headers"] == "Content-Type"
    for answer in (zipped, api.get("/metrics"), api.get("/nowhere"), api.post("/track", b"[]")):
        assert answer.headers["access-control-allow-origin"] == "*"
    assert api.get("/nowhere").json() == {"status": "error", "message": "Not Found"}
    assert api.stop() < 10
    lines = [line for data in raw_files(lake).values() for line in data.splitlines()]
    assert len(lines) == 3
    for line in lines:  # as sent, with the instant the API received it
        written = json.loads(line)
        assert {k: v for k, v in written.items() if k != "_received_at"} == record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", written["_received_at"])


def test_a_batch_logs_the_valid_records_and_names_the_others(lake_url, api_factory):
    api = api_factory(lake_url)
    batch = {
        "batch": [{"event": "a", "user_id": "u"}, {"event": "a"}, {"event": "b", "user_id": "v"}]
    }
    answer = api.post("/batch", json.dumps(batch))
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "success",
        "message": "Logged 2 of 3 events.",
        "logged": 2,
        "rejected": [
            {
                "index": 1,
                "reason": "invalid_user_id",
                "message": "user_id must be a string of 1 to 256 characters, got missing",
            }
        ],
    }
    ndjson = b'{"event":"c","user_id":"u"}\nnope\n'
    assert api.post("/batch", ndjson).json()["rejected"][0]["index"] == 1
    assert api.stop() < 10
    report = pipeline(lake=lake_url)
    assert (report["lines"], report["accepted"]) == (3, 3)


def test_get_answers_come_from_the_last_run_and_say_when_it_committed(lake_url, api_factory):
    api = api_factory(lake_url)
    # Nothing run yet: an empty answer, no as-of.
    empty = api.get("/metrics", start_date="2025-03-01", end_date="2025-03-31")
    assert (empty.status_code, empty.json()) == (200, {"status": "success", "data": []})
    assert "track-as-of" not in empty.headers
    for event, ts in (("play", "2025-03-01T10:00:00Z"), ("stop", "2025-03-01T10:01:00.400Z")):
        body = json.dumps({"event": event, "user_id": "u", "timestamp": ts})
        assert api.post("/track", body).json() == LOGGED
    wait_for(lambda: not spooled(api) and raw_files(lake_url), what="the move into the lake")
    pipeline(lake=lake_url, now=datetime(2025, 3, 5, tzinfo=UTC))
    answer = api.get("/metrics", start_date="2025-03-01", end_date="2025-03-31", group_by="week")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "success",
        "data": [{"date": "2025-02-24", "play": 1, "stop": 1}],
    }
    committed = Lake(lake_url).current().committed_at
    assert committed and answer.headers["track-as-of"] == committed
    assert datetime.fromisoformat(committed) > datetime.now(UTC) - timedelta(minutes=5)
    sessions = api.get("/sessions", start_date="2025-03-01", end_date="2025-03-01", user_id="u")
    assert sessions.json()["data"] == [
        {"date": "2025-03-01", "totalDuration": 60, "sessionCount": 1, "averageDuration": 60}
    ]
    # 2025-03-01 is a Saturday: its Sunday week began on 2025-02-23.
    users = api.get(
        "/users",
        start_date="2025-03-01",
        end_date="2025-03-31",
        group_by="week",
        week_start="sunday",
        event="stop",
    )
    assert users.status_code == 200
    assert users.json() == {"status": "success", "data": [{"date": "2025-02-23", "users": 1}]}
    assert users.headers["track-as-of"] == committed
    assert api.get(
        "/users", start_date="2025-03-01", end_date="2025-03-01", event="pause"
    ).json() == {
        "status": "success",
        "data": [],
    }
    sunday = api.get("/sessions", start_date="2025-03-01", end_date="2025-03-01", week_start="x")
    assert (sunday.status_code, sunday.json()["message"]) == (
        400,
        "week_start must be one of: monday, sunday",
    )
    bad = api.get("/sessions", start_date="2025-03-01", end_date="2025-02-01")
    assert (bad.status_code, bad.json()["message"]) == (
        400,
        "start_date must be on or before end_date",
    )
    assert api.get("/metrics", start_date="2025-03-01", end_date="x").status_code == 400
    assert api.get(
        "/metrics", start_date="2025-03-01", end_date="2025-03-02", group_by="hour"
    ).json() == {
        "status": "error",
        "message": "group_by must be one of: day, week, month",
    }


def test_a_failing_store_is_500_and_not_ready(tmp_path, api_factory):
    lake = tmp_path / "lake"
    (lake / "_state").mkdir(parents=True)
    pointer = {
        "tables": {"counts": {"2025-03-01": "counts/date=2025-03-01/gone.parquet"}},
        "state": {},
    }
    (lake / "_state" / "snapshot.json").write_text(json.dumps(pointer))
    api = api_factory(str(lake))
    answer = api.get("/metrics", start_date="2025-03-01", end_date="2025-03-01")
    assert (answer.status_code, answer.json()) == (
        500,
        {"status": "error", "message": "Failed to fetch metrics"},
    )
    assert api.get("/health").status_code == 200
    assert api.get("/ready").status_code == 200  # the pointer answers; one file is gone
    (lake / "_state" / "snapshot.json").write_text("{not json")
    ready = api.get("/ready")
    assert ready.status_code == 503 and "the lake does not answer" in ready.json()["message"]


def test_a_spool_that_cannot_reach_the_lake_fills_up_then_answers_503(tmp_path, api_factory):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake's folder should be")
    api = api_factory(str(blocker / "lake"), max_age=0.2, extra=("--spool-limit", "2000"))
    body = json.dumps({"event": "e", "user_id": "u", "metadata": {"pad": "x" * 300}})
    answers = [api.post("/track", body) for _ in range(12)]
    codes = [a.status_code for a in answers]
    assert codes[:4] == [200] * 4 and codes[-1] == 503, codes
    refused = answers[-1]
    assert refused.headers["retry-after"] == "1"
    assert "is the lake reachable?" in refused.json()["message"]
    assert api.get("/ready").status_code == 503
    # What was acknowledged is still in the spool, for the next start to move.
    lines = sum(Path(p).read_bytes().count(b"\n") for p in spooled(api))
    assert lines == codes.count(200)
    assert api.stop() < 20
    assert sum(Path(p).read_bytes().count(b"\n") for p in spooled(api)) == lines


def test_the_docs_describe_every_endpoint(tmp_path, api_factory):
    api = api_factory(str(tmp_path / "lake"))
    described = api.get("/openapi.json").json()
    assert set(described["paths"]) == {
        "/track",
        "/batch",
        "/metrics",
        "/sessions",
        "/users",
        "/health",
        "/ready",
    }
    page = api.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in described["paths"]:
        assert f"<code>{path}</code>" in page.text
    assert "<script" not in page.text and "http" not in page.text.replace("/openapi.json", "")


def test_without_spool_the_api_spools_in_the_users_cache_one_folder_per_lake(tmp_path, monkeypatch):
    from track.settings import spool_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    here = spool_folder("data/lake")
    assert here.startswith(str(tmp_path / "cache" / "track" / "spool") + "/")
    assert spool_folder(str(tmp_path / "data" / "lake")) == here  # the same lake, named fully
    assert spool_folder("s3://bucket/lake") not in (here, spool_folder("s3://bucket/lake2"))


def test_the_docs_page_renders_in_a_browser_with_nothing_fetched(tmp_path, api_factory):
    from tests.browser import render

    api = api_factory(str(tmp_path / "lake"))
    shown = render(f"{api.url}/docs", tmp_path)
    assert shown.console == []
    assert shown.screenshot.startswith(b"\x89PNG") and len(shown.screenshot) > 50_000
    for path in ("/track", "/batch", "/metrics", "/sessions"):
        assert f"<code>{path}</code>" in shown.dom
    assert "Event logged." in shown.dom


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason="../shared/original-api is not beside the repo")
def test_the_original_postman_collection_gets_the_original_answers(tmp_path, api_factory):
    lake = str(tmp_path / "lake")
    api = api_factory(lake)
    collection = json.loads((ORIGINAL / "analytics-api.postman_collection.json").read_text())
    today = datetime.now(UTC).date()
    dynamic = {  # Postman's dynamic variables, as Postman would fill them in
        r"\{\{\$randomLoremParagraphs\(50\)\}\}": "Lorem ipsum dolor sit amet. " * 400,
        r"\{\{\$isoTimestamp -(\d+) days\}\}\}?": lambda m: (
            today - timedelta(days=int(m.group(1)))
        ).isoformat(),
        r"\{\{\$isoTimestamp\}\}": today.isoformat(),
        r"\{\{baseUrl\}\}": "",
    }

    def filled(text: str) -> str:
        for pattern, value in dynamic.items():
            text = re.sub(pattern, value, text)
        return text

    answers = {}
    for folder in collection["item"]:
        for item in folder["item"]:
            request = item["request"]
            url = filled(
                request["url"] if isinstance(request["url"], str) else request["url"]["raw"]
            )
            if request["method"] == "POST":
                body = filled(json.dumps(request["body"]["raw"]))  # objects, not strings (ABOUT.md)
                answers[item["name"]] = api.post(url, body, **{"Content-Type": "application/json"})
            else:
                answers[item["name"]] = api.client.get(url)
    for name in ("Track Play Event", "Track Stop Event", "Track with Future Timestamp"):
        assert answers[name].json() == LOGGED, name
    assert answers["Track with Large Metadata"].json() == LOGGED
    invalid = answers["Invalid Date Format"]
    assert (invalid.status_code, invalid.json()["message"]) == (
        400,
        "Invalid date format. Use YYYY-MM-DD",
    )
    for name in ("Daily Metrics", "Weekly Metrics", "Daily Sessions", "Weekly Sessions"):
        assert answers[name].json() == {"status": "success", "data": []}, name  # before a run
    assert api.stop() < 10
    report = pipeline(lake=lake)
    # Its "future" timestamp, 2025-12-31, has since passed: outside the window, that event is
    # expired (counted, not stored) whenever the test runs more than 30 days after it.
    expired = int(datetime(2025, 12, 31, tzinfo=UTC) < datetime.now(UTC) - timedelta(days=30))
    assert (report["accepted"], report["expired"]) == (4 - expired, expired)
    assert report["truncated"] == 1 and report["quarantined"] == 0

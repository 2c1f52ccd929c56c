"""The `track` command (SPEC section 10): run, metrics, sessions, users, report, serve, api."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from track.errors import ReportError, SettingsError
from track.flows.server import TemporaryServer
from track.settings import (
    ALERT_QUARANTINE,
    DEFAULT_CRON,
    LOCK_WAIT,
    SPOOL_LIMIT,
    SPOOL_MAX_AGE,
    Settings,
    prefect_api_url,
    prefect_home,
    spool_folder,
)


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--now must be an ISO 8601 date-time such as 2025-01-18T14:30:00Z, got {text!r}"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _percent(text: str) -> float:
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(
            f"expected a percent from 0 to 100 (1 or 1%), got {text!r}"
        )
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from exc


REPORT_FILE = "track-report.html"
"""Where `track report` writes its page unless told (in the current folder)."""
QUESTIONS = {"metrics": "user_id", "sessions": "user_id", "users": "event"}
"""The reader's questions (reader.QUESTIONS, not imported before it is needed: Polars takes a
third of a second), each with the name of its filter."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="track", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="ingest new raw files, rebuild rollups, apply retention")
    run.add_argument("--lake", help="lake root URL (default $TRACK_LAKE, else data/lake)")
    run.add_argument("--now", type=_instant, help="the run's time (default: now)")
    run.add_argument("--retention-days", type=int, help="days kept before now's date (default 30)")
    run.add_argument("--json", action="store_true", help="print the report as one JSON object")
    run.add_argument(
        "--wait",
        type=float,
        default=LOCK_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for another run on the same lake before skipping ({LOCK_WAIT:.0f})",
    )
    run.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the heavy steps (ingest, each date's change, sessions) on a Dask cluster"
        " (tcp://host:8786, or `local` for one here)",
    )
    alert: dict[str, Any] = {
        "type": _percent,
        "default": ALERT_QUARANTINE,
        "metavar": "PERCENT",
        "help": "emit the alert event when a run quarantines more than this share of its lines"
        f" (default {ALERT_QUARANTINE:g}%%)",
    }
    run.add_argument("--alert-quarantine", **alert)
    for name, filter_name in QUESTIONS.items():
        query = commands.add_parser(name, help=f"print the {name} answer as JSON")
        query.add_argument("--lake")
        query.add_argument("--start-date", default=None)
        query.add_argument("--end-date", default=None)
        query.add_argument("--group-by", default="day")
        query.add_argument("--week-start", default="monday", help="monday (ISO) or sunday")
        query.add_argument(f"--{filter_name.replace('_', '-')}", default=None)
    report = commands.add_parser("report", help="write the lake's charts as one HTML page")
    report.add_argument("--lake")
    report.add_argument("--start-date", required=True, type=_day)
    report.add_argument("--end-date", required=True, type=_day)
    report.add_argument("--out", default=REPORT_FILE, help=f"the page (default {REPORT_FILE})")
    serve = commands.add_parser("serve", help="serve the pipeline deployment on a schedule")
    serve.add_argument("--lake")
    serve.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (default {DEFAULT_CRON!r})")
    serve.add_argument("--alert-quarantine", **alert)
    api = commands.add_parser("api", help="serve the HTTP API (POST /track, GET /metrics, ...)")
    api.add_argument("--lake")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    api.add_argument("--spool", help="spool folder (default: one per lake in the user's cache)")
    api.add_argument(
        "--max-age",
        type=float,
        default=SPOOL_MAX_AGE,
        metavar="SECONDS",
        help="a spool file moves into the lake this long after its first record "
        f"({SPOOL_MAX_AGE:.0f})",
    )
    api.add_argument(
        "--spool-limit",
        type=int,
        default=SPOOL_LIMIT,
        metavar="BYTES",
        help="past this many bytes not yet in the lake, answer 503 (1 GiB)",
    )
    return parser


def _print_report(report: dict[str, Any]) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        print(f"{key:<{width}}  {value}")


_PREFECT_HOME_LOCK: list[Any] = []


def _needs_temporary_server() -> bool:
    """True when no Prefect server is configured (PREFECT_API_URL or the active profile)."""
    return prefect_api_url() is None


def _own_prefect_home_if_shared() -> None:
    """Give this run its own Prefect home when another `track run` is using the shared one.

    Without a Prefect server, each run starts a temporary one on the SQLite database in
    PREFECT_HOME, and two processes on one database fail with `database is locked`. The first run
    keeps the shared (warm) home; a run that finds it taken works in a fresh one of its own.
    Call before Prefect is imported, only when there is no server.
    """
    home = prefect_home()
    os.makedirs(home, exist_ok=True)
    handle = open(os.path.join(home, ".track-run.lock"), "w")  # held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="track-prefect-")
    else:
        _PREFECT_HOME_LOCK.append(handle)


def _run(args: argparse.Namespace, lake: str, server: TemporaryServer | None) -> int:
    from track.flows.pipeline import pipeline

    if server is not None:
        server.wait_until_ready()
    try:
        with _progress_display(sys.stderr.isatty()):
            report = pipeline(
                lake=lake,
                now=args.now,
                retention_days=args.retention_days,
                dask_address=args.dask,
                lock_wait=args.wait,
                alert_quarantine=args.alert_quarantine,
            )
    except Exception as exc:  # the flow's own log has the traceback
        from track.errors import LakeFormatError

        then = (
            "Nothing was changed."
            if isinstance(exc, LakeFormatError)
            else "Nothing of this run was committed: the reader still answers as before it, "
            "and the next run finishes the job."
        )
        print(f"track run failed: {type(exc).__name__}: {exc}\n{then}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 0


@contextmanager
def _progress_display(on_a_terminal: bool) -> Iterator[None]:
    """`track run`'s progress on a terminal (stderr): files and bytes ingested of the total,
    then each later step. Nothing at all when stderr is not a terminal (a log, a pipe, CI)."""
    if not on_a_terminal:
        yield
        return
    from rich.console import Console
    from rich.filesize import decimal
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from track.flows.progress import STEPS, watching

    display = Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    ingest = display.add_task("ingest", total=None, detail="listing raw/")
    later = display.add_task("then", total=len(STEPS) - 1, detail="", visible=False)

    def show(now: Any) -> None:
        size = f"{decimal(now.bytes)} of {decimal(now.bytes_total)}"
        display.update(
            ingest,
            total=max(now.bytes_total, 1),
            completed=now.bytes if now.bytes_total else int(now.step != "ingest"),
            detail=f"{now.files} of {now.files_total} files, {size}",
        )
        if now.step != "ingest":
            step = STEPS.index(now.step)
            detail = "done" if now.done else f"{now.step} ({step} of {len(STEPS) - 1})"
            completed = len(STEPS) - 1 if now.done else step - 1
            display.update(later, visible=True, completed=completed, detail=detail)

    with display, watching(show):
        yield


def _api(args: argparse.Namespace, lake: str) -> int:
    import logging

    import uvicorn

    from track.api.app import ApiSettings, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = ApiSettings(
        lake=lake,
        spool=args.spool or spool_folder(lake),
        max_age=args.max_age,
        max_spool_bytes=args.spool_limit,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        access_log=False,
        timeout_graceful_shutdown=5,
        log_level="info",
    )

    class Server(uvicorn.Server):
        """Uvicorn's, but a graceful stop on SIGTERM or SIGINT exits 0 (it would re-raise the
        signal once drained, and supervisors would see a death by signal)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `track` command; the process exit code (2 for a bad setting)."""
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except SettingsError as exc:
        print(f"track: {exc}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace) -> int:
    config = Settings.from_env()  # a setting Track cannot use stops every command at once
    lake = args.lake or config.lake
    if args.command in QUESTIONS:
        from track import reader

        answer, _ = reader.answer(args.command, vars(args), lake=lake)
        print(json.dumps(answer))
        return 0 if answer["status"] == "success" else 1
    if args.command == "api":
        return _api(args, lake)
    if args.command == "report":
        from track.report import write_report

        if args.start_date > args.end_date:
            print("track: --start-date must be on or before --end-date", file=sys.stderr)
            return 2
        try:
            out = write_report(args.start_date, args.end_date, args.out, lake=lake)
        except ReportError as exc:
            print(f"track report: {exc} (the track.reader log has the details)", file=sys.stderr)
            return 1
        print(f"wrote {out}")
        return 0
    if args.command == "run":
        server = None
        if "prefect" not in sys.modules and _needs_temporary_server():
            _own_prefect_home_if_shared()
            server = TemporaryServer()  # starts while the imports of _run go on
        return _run(args, lake, server)
    from prefect import serve
    from prefect.settings import get_current_settings

    from track.flows.pipeline import deployment

    if not get_current_settings().api.url:
        print(
            "track serve needs a Prefect server: schedules never run on the temporary one.\n"
            "Start one with `prefect server start`, then set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api and run `track serve` again.",
            file=sys.stderr,
        )
        return 2
    serve(deployment(lake, args.cron, args.alert_quarantine))
    return 0


if __name__ == "__main__":
    sys.exit(main())

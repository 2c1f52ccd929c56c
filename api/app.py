"""`track api`: the original Track API over HTTP, on a lake (SPEC section 11).

The app is one list of routes built in `create_app`; endpoints parse, judge each record with
the pipeline's own rules (`api.records`), hand accepted lines to the spool (`api.spool`) and
answer. Errors map to status codes in one place (`_request_error`). Start-up and shut-down
(the spool's threads, moving what is left into the lake) live in the lifespan.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from track import reader
from track.api.docs import OPENAPI, docs_page
from track.api.events import Announcer
from track.api.records import (
    as_line,
    batch_records,
    body_text,
    one_record,
    received_at_text,
)
from track.api.spool import Spool
from track.errors import RequestError, SpoolBroken, SpoolFull, TooLarge, Unavailable
from track.lake.store import Lake
from track.schemas.constants import MAX_BODY_BYTES
from track.settings import SPOOL_LIMIT, SPOOL_MAX_AGE, SPOOL_MAX_PENDING

log = logging.getLogger("track.api")

LOGGED = {"status": "success", "message": "Event logged."}
"""The original API's answer to an accepted POST /track."""
RETRY_FULL, RETRY_BROKEN = 1, 5
"""Seconds a client is asked to wait (Retry-After) when the spool is full, or its disk failed."""


@dataclass(frozen=True)
class ApiSettings:
    """What `track api` serves: the lake, the spool folder and its bounds."""

    lake: str
    spool: str
    max_age: float = SPOOL_MAX_AGE
    max_pending: int = SPOOL_MAX_PENDING
    max_spool_bytes: int = SPOOL_LIMIT


class JSONResponse(Response):
    """A JSON answer written by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status, headers=headers)


async def _request_error(request: Request, exc: Exception) -> Response:
    """The one place an error becomes an HTTP answer."""
    assert isinstance(exc, RequestError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return _error(exc.status, exc.message, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405) in the API's JSON shape."""
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


async def _body(request: Request) -> bytes:
    """The request body as NDJSON bytes (gunzipped), refused past MAX_BODY_BYTES as it
    streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge(f"the body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return body_text(b"".join(chunks), request.headers.get("content-encoding"))


async def _durable(request: Request, lines: bytes, day: str) -> None:
    spool: Spool = request.app.state.spool
    try:
        await spool.append(day, lines)
    except SpoolFull as exc:
        raise Unavailable(f"Failed to log event: {exc}", retry_after=RETRY_FULL) from exc
    except SpoolBroken as exc:
        raise Unavailable(f"Failed to log event: {exc}", retry_after=RETRY_BROKEN) from exc


async def track(request: Request) -> Response:
    """POST /track: one record, acknowledged once durable."""
    text = await _body(request)
    received = datetime.now(UTC)
    found = one_record(text)
    if isinstance(found, tuple):
        return _error(400, found[1])
    await _durable(request, as_line(found, received_at_text(received)), received.date().isoformat())
    return JSONResponse(LOGGED)


async def batch(request: Request) -> Response:
    """POST /batch: up to 500 records; the valid ones acknowledged once durable, the others
    named by position."""
    text = await _body(request)
    received = datetime.now(UTC)
    stamp = received_at_text(received)
    lines, rejected = [], []
    for index, found in enumerate(batch_records(text)):
        if isinstance(found, tuple):
            rejected.append({"index": index, "reason": found[0], "message": found[1]})
        else:
            lines.append(as_line(found, stamp))
    if lines:
        await _durable(request, b"".join(lines), received.date().isoformat())
    total = len(lines) + len(rejected)
    return JSONResponse(
        {
            "status": "success",
            "message": f"Logged {len(lines)} of {total} events.",
            "logged": len(lines),
            "rejected": rejected,
        }
    )


def _question(name: str) -> Any:
    async def ask(request: Request) -> Response:
        lake = request.app.state.settings.lake
        answer, as_of = await run_in_threadpool(
            reader.answer, name, request.query_params, lake=lake
        )
        if answer["status"] == "success":
            status = 200
        else:
            status = 500 if answer["message"] in reader.FAILURES else 400
        headers = {"Track-As-Of": as_of} if as_of else None
        return JSONResponse(answer, status, headers=headers)

    ask.__name__ = name
    ask.__doc__ = f"GET /{name}: the reader's answer."
    return ask


async def health(request: Request) -> Response:
    """GET /health: 200 while the process serves."""
    return JSONResponse({"status": "success", "message": "serving"})


async def ready(request: Request) -> Response:
    """GET /ready: 200 when the spool takes writes and the lake answers, else 503."""
    problem = request.app.state.spool.problem
    if problem is None:
        try:
            await run_in_threadpool(Lake(request.app.state.settings.lake).current)
        except Exception as exc:
            problem = f"the lake does not answer: {type(exc).__name__}: {exc}"
    if problem is not None:
        return _error(503, f"not ready: {problem}", {"Retry-After": str(RETRY_BROKEN)})
    return JSONResponse({"status": "success", "message": "ready"})


async def openapi(request: Request) -> Response:
    """GET /openapi.json: the API described."""
    return JSONResponse(OPENAPI)


async def docs(request: Request) -> Response:
    """GET /docs: the API described as a page (no script, nothing fetched)."""
    return HTMLResponse(docs_page())


class AllowAllOrigins:
    """CORS as SPEC section 11 says: every answer allows all origins, and OPTIONS on any
    path is a preflight. (Starlette's CORSMiddleware adds the header only to requests that
    send an Origin, and lets a bare OPTIONS through to the routes.)"""

    HEADERS = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", b"Content-Type"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            preflight = Response(status_code=204, headers={"Access-Control-Max-Age": "86400"})
            await preflight(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    def _with_headers(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        return sending


def create_app(settings: ApiSettings) -> Starlette:
    """The API app: its routes, its CORS, its error answers, and the spool's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lake = Lake(settings.lake)
        announcer = Announcer(settings.lake)
        spool = Spool(
            settings.spool,
            lake,
            max_age=settings.max_age,
            max_pending=settings.max_pending,
            max_bytes=settings.max_spool_bytes,
            on_moved=announcer.moved,
        )
        spool.start()
        app.state.settings, app.state.spool = settings, spool
        log.info("serving %s, spooling in %s", settings.lake, settings.spool)
        try:
            yield
        finally:
            moved = await run_in_threadpool(spool.close)
            await run_in_threadpool(announcer.close)
            log.info("stopped; %s", "all moved" if moved else "files left for the next start")

    routes = [
        Route("/track", track, methods=["POST"]),
        Route("/batch", batch, methods=["POST"]),
        *(Route(f"/{name}", _question(name), methods=["GET"]) for name in reader.QUESTIONS),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={RequestError: _request_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.add_middleware(AllowAllOrigins)
    return app

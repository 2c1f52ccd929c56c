"""The HTTP API described: an OpenAPI 3.1 document (GET /openapi.json) and the same as a
self-contained page (GET /docs: no script, no style or font fetched, so it opens offline)."""

from __future__ import annotations

import html
from typing import Any

from track.schemas.constants import MAX_BATCH_RECORDS, MAX_BODY_BYTES, REASONS

_ERROR = {
    "type": "object",
    "properties": {"status": {"const": "error"}, "message": {"type": "string"}},
}
_RECORD = {
    "type": "object",
    "required": ["event", "user_id"],
    "properties": {
        "event": {"type": "string", "minLength": 1, "maxLength": 256, "not": {"const": "date"}},
        "user_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "timestamp": {
            "type": ["string", "null"],
            "description": "RFC 3339 date-time; absent, null or in the future: the time the"
            " API received it",
        },
        "metadata": {"type": ["object", "null"], "description": "truncated past 4096 bytes"},
    },
}
_PERIODS = [
    {"name": "start_date", "in": "query", "required": True, "schema": {"type": "string"}},
    {"name": "end_date", "in": "query", "required": True, "schema": {"type": "string"}},
    {
        "name": "group_by",
        "in": "query",
        "schema": {"enum": ["day", "week", "month"], "default": "day"},
    },
    {
        "name": "week_start",
        "in": "query",
        "description": "monday: ISO weeks; sunday: the original service's weeks",
        "schema": {"enum": ["monday", "sunday"], "default": "monday"},
    },
]
_QUERY = [*_PERIODS, {"name": "user_id", "in": "query", "schema": {"type": "string"}}]
_USERS_QUERY = [
    *_PERIODS,
    {
        "name": "event",
        "in": "query",
        "description": "count only the users who sent this event",
        "schema": {"type": "string"},
    },
]


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or _ERROR}},
    }


_UNAVAILABLE = _answer("the record cannot be made durable now; see Retry-After")
_TOO_LARGE = _answer(f"the body is over {MAX_BODY_BYTES} bytes (after gzip too)")
_GET_ANSWERS = {
    "200": _answer("the answer, as of the run named in Track-As-Of", {"type": "object"}),
    "400": _answer("the query breaks a rule: the message says which"),
    "500": _answer("the store failed"),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Track",
        "version": "1",
        "description": "The original Track analytics API, on a lake. Bodies are read as JSON"
        " whatever their Content-Type, and may be sent with Content-Encoding: gzip. Every"
        " answer allows all origins.",
    },
    "paths": {
        "/track": {
            "post": {
                "summary": "Log one event",
                "description": "Answered once the record is written and flushed to the API's"
                " disk; a record the pipeline would quarantine is refused with its message"
                f" (reasons: {', '.join(REASONS[1:])}).",
                "requestBody": {"content": {"application/json": {"schema": _RECORD}}},
                "responses": {
                    "200": _answer("Event logged.", {"type": "object"}),
                    "400": _answer("the record breaks a rule: the quarantine's message"),
                    "413": _TOO_LARGE,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/batch": {
            "post": {
                "summary": f"Log up to {MAX_BATCH_RECORDS} events",
                "description": 'A body {"batch": [record, ...]} or NDJSON lines. Answered once'
                " every valid record is durable: how many were logged, and by position"
                " (index, from 0) which were rejected and why.",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"batch": {"type": "array", "items": _RECORD}},
                            }
                        },
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    }
                },
                "responses": {
                    "200": _answer("logged and rejected", {"type": "object"}),
                    "400": _answer("the body holds no records"),
                    "413": _TOO_LARGE,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Event counts per day, week or month",
                "parameters": _QUERY,
                "responses": _GET_ANSWERS,
            }
        },
        "/sessions": {
            "get": {
                "summary": "Play/stop sessions per day, week or month",
                "parameters": _QUERY,
                "responses": _GET_ANSWERS,
            }
        },
        "/users": {
            "get": {
                "summary": "Distinct users per day, week or month (DAU, WAU, MAU)",
                "parameters": _USERS_QUERY,
                "responses": _GET_ANSWERS,
            }
        },
        "/health": {"get": {"summary": "200 while the process serves", "responses": {}}},
        "/ready": {
            "get": {
                "summary": "200 when the spool takes writes and the lake answers, else 503",
                "responses": {},
            }
        },
    },
}

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d2330; }
h1 { margin-bottom: 0 } .lead { color: #4a5468 }
section { border: 1px solid #d6dbe4; border-radius: 8px; padding: .6rem 1rem; margin: 1rem 0 }
.method { font: bold 13px monospace; padding: 2px 8px; border-radius: 4px; color: white }
.get { background: #2f7d4f } .post { background: #2d5fa8 }
code, td:first-child { font-family: ui-monospace, monospace }
table { border-collapse: collapse; margin: .4rem 0 } td, th { padding: 2px 12px 2px 0;
text-align: left; vertical-align: top }
"""


def _schema_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        text = " | ".join(schema["enum"])
        return f"{text} (default {schema['default']})" if "default" in schema else text
    return str(schema.get("type", ""))


def docs_page() -> str:
    """OPENAPI as one HTML page."""
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Track API</title>"
        '<link rel=icon href="data:,">'
        f"<style>{_STYLE}</style></head><body><h1>Track API</h1>"
        f"<p class=lead>{html.escape(OPENAPI['info']['description'])}</p>"
        "<p>Machine-readable: <a href=/openapi.json><code>/openapi.json</code></a></p>"
    ]
    for path, operations in OPENAPI["paths"].items():
        for method, op in operations.items():
            parts.append(
                f"<section><h2><span class='method {method}'>{method.upper()}</span> "
                f"<code>{html.escape(path)}</code></h2><p>{html.escape(op['summary'])}</p>"
            )
            if "description" in op:
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            if op.get("parameters"):
                rows = "".join(
                    f"<tr><td>{p['name']}</td><td>{'required' if p.get('required') else ''}</td>"
                    f"<td>{html.escape(_schema_text(p['schema']))}</td></tr>"
                    for p in op["parameters"]
                )
                parts.append(f"<table><tr><th>query</th><th></th><th></th></tr>{rows}</table>")
            if op["responses"]:
                rows = "".join(
                    f"<tr><td>{code}</td><td>{html.escape(answer['description'])}</td></tr>"
                    for code, answer in op["responses"].items()
                )
                parts.append(f"<table><tr><th>answer</th><th></th></tr>{rows}</table>")
            parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)

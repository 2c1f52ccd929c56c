"""The floor of bench/api.py: the same stack as `track api` (Starlette on uvicorn, orjson), with
an endpoint that reads the body and answers the same JSON, and writes nothing.

    python bench/bare_api.py PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

LOGGED = orjson.dumps({"status": "success", "message": "Event logged."})


async def track(request: Request) -> Response:
    await request.body()
    return Response(LOGGED, media_type="application/json")


app = Starlette(
    routes=[Route("/track", track, methods=["POST"]), Route("/batch", track, methods=["POST"])]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")

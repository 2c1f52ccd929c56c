"""`track api` as clients meet it: a real process on a loopback port, spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Api:
    """A running `track api` process."""

    url: str
    process: subprocess.Popen[bytes]
    spool: str
    log: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def post(self, path: str, body: bytes | str, **headers: str) -> httpx.Response:
        return self.client.post(path, content=body, headers=headers)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, params=params)

    def output(self) -> str:
        with open(self.log) as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Signal the process and wait for it to exit; the seconds that took."""
        self.client.close()
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=timeout)
        return time.monotonic() - began


def start_api(
    lake: str,
    spool: str,
    log: str,
    *,
    max_age: float = 0.5,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Api:
    """Start `track api` on a free loopback port and wait until it serves."""
    port = free_port()
    command = [sys.executable, "-m", "track.cli", "api", "--lake", lake, "--spool", spool]
    command += ["--port", str(port), "--max-age", str(max_age), *extra]
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env={**environment, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
    api = Api(f"http://127.0.0.1:{port}", process, spool, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"track api exited with {process.returncode}:\n{api.output()}")
        try:
            if httpx.get(f"{api.url}/health", timeout=1).status_code == 200:
                return api
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"track api did not serve within 60 s:\n{api.output()}")


@pytest.fixture
def api_factory(tmp_path) -> Iterator:
    """Start API processes (each killed at the end of the test if still running)."""
    started: list[Api] = []

    def factory(lake: str, spool: str | None = None, **options) -> Api:
        log = str(tmp_path / f"track-api-{len(started)}.log")
        api = start_api(lake, spool or str(tmp_path / "spool"), log, **options)
        started.append(api)
        return api

    yield factory
    for api in started:
        if api.process.poll() is None:
            api.process.kill()
            api.process.wait()

"""Prefect's temporary API server, started by `track run` before its own imports.

With no PREFECT_API_URL, Prefect starts a temporary server (its own app, `create_app`, under
uvicorn in a subprocess) when the flow starts: the run first pays for importing Polars,
pandera and Prefect, then for importing Prefect's server module in-process just to launch it,
then waits for the server to start. Starting the same subprocess first, before any of those
imports, lets the server start while they run, and the client never imports the server.
The flow then talks to it through PREFECT_API_URL, as it would to any server.

Imports nothing of Prefect: that is the point.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryServer:
    """One temporary Prefect API server for this process, on a free loopback port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        env = {
            **os.environ,
            # What Prefect sets for its own temporary server.
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        # A throwaway server has no use for telemetry (and offline it logs errors).
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
        )
        os.environ["PREFECT_API_URL"] = self.api_url
        # It serves no UI, so there is no run page to link to.
        os.environ.setdefault("PREFECT_UI_URL", "")
        # Stopped last at exit: Prefect's log and event workers, registered later, flush first.
        atexit.register(self.stop)

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the server answers its health check; RuntimeError if it cannot start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Prefect's temporary server exited with code {self.process.returncode}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Prefect's temporary server did not start within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server (as Prefect does: terminate, then kill after 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

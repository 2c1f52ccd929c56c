"""Figure 8: `track api` under load, against a bare endpoint of the same stack measured in the
same run with the same load generator (`hey`, Debian's package).

- POST /track requests a second, Track's against the bare endpoint's (target: at least half);
- p50 and p99 latency of POST /track at half Track's peak rate (target: p99 under 50 ms);
- POST /batch of 500 records: events a second (target: 50,000 or more);
- spool-to-lake delay: from a record's acknowledgement to its file in raw/, with --max-age 1.

    python bench/api.py [--seconds N] [--connections N]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import BENCH, OUT, record

RECORD = {
    "event": "play",
    "user_id": "user123",
    "metadata": {"song_id": "song456", "playlist": "workout_mix", "device": "iphone"},
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/track", content=json.dumps(RECORD), timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{command} did not serve within 60 s")


def _hey(url: str, body: Path, seconds: int, connections: int, rate: float = 0) -> dict:
    """hey's figures for POSTs of `body` to `url`: requests a second, p50 and p99 seconds."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST"]
    command += ["-T", "application/json", "-D", str(body)]
    if rate:
        command += ["-q", f"{rate / connections:.2f}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    found = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": float(re.search(r"50%+ in ([\d.]+) secs", out).group(1)),  # type: ignore[union-attr]
        "p99": float(re.search(r"99%+ in ([\d.]+) secs", out).group(1)),  # type: ignore[union-attr]
        "codes": {k: int(v) for k, v in codes.items()},
    }
    return found


def _spool_delay(url: str, lake: Path, samples: int) -> list[float]:
    """Seconds from an acknowledged POST /track to its file in the lake's raw/."""
    delays = []
    for _ in range(samples):
        before = set(lake.rglob("api-*.ndjson"))
        httpx.post(f"{url}/track", content=json.dumps(RECORD), timeout=10).raise_for_status()
        acknowledged = time.monotonic()
        while not set(lake.rglob("api-*.ndjson")) - before:
            time.sleep(0.005)
        delays.append(time.monotonic() - acknowledged)
        time.sleep(0.2)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--delay-samples", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("hey"):
        raise SystemExit("bench/api.py needs hey: apt-get install hey (make bench installs it)")
    work = Path(tempfile.mkdtemp(prefix="api-", dir=OUT if OUT.exists() else None))
    one, batch = work / "one.json", work / "batch.json"
    one.write_text(json.dumps(RECORD))
    batch.write_text(json.dumps({"batch": [RECORD] * 500}))
    seconds, connections = args.seconds, args.connections

    port = _free_port()
    bare = _serve([sys.executable, str(BENCH / "bare_api.py"), str(port)], port)
    try:
        floor = _hey(f"http://127.0.0.1:{port}/track", one, seconds, connections)
    finally:
        bare.terminate()
        bare.wait()

    lake, port = work / "lake", _free_port()
    command = [sys.executable, "-m", "track.cli", "api", "--lake", str(lake), "--port", str(port)]
    track = _serve([*command, "--spool", str(work / "spool"), "--max-age", "1"], port)
    url = f"http://127.0.0.1:{port}"
    try:
        peak = _hey(f"{url}/track", one, seconds, connections)
        half = _hey(f"{url}/track", one, seconds, max(2, connections // 2), rate=peak["rps"] / 2)
        batches = _hey(f"{url}/batch", batch, seconds, max(2, connections // 4))
        delays = sorted(_spool_delay(url, lake, args.delay_samples))
    finally:
        track.terminate()
        track.wait()
    shutil.rmtree(work, ignore_errors=True)

    share = peak["rps"] / floor["rps"]
    events = batches["rps"] * 500
    median_delay = delays[len(delays) // 2]
    lines = [
        f"POST /track: {peak['rps']:,.0f} requests/s, bare endpoint {floor['rps']:,.0f}/s:"
        f" {share:.0%} of the floor, {'met' if share >= 0.5 else 'NOT met'} (target >= 50%)"
        f"  [{connections} connections, {seconds} s each]",
        f"at half that rate ({half['rps']:,.0f}/s): p50 {half['p50'] * 1000:.1f} ms, p99"
        f" {half['p99'] * 1000:.1f} ms, {'met' if half['p99'] < 0.05 else 'NOT met'}"
        " (target p99 < 50 ms)",
        f"POST /batch of 500: {events:,.0f} events/s ({batches['rps']:.0f} requests/s, p99"
        f" {batches['p99'] * 1000:.0f} ms), {'met' if events >= 50_000 else 'NOT met'}"
        " (target >= 50,000)",
        f"spool to lake, --max-age 1: median {median_delay:.2f} s, worst {delays[-1]:.2f} s"
        f" (so {max(0.0, median_delay - 1):.2f} s past the age)",
        f"answers: track {peak['codes']}, half rate {half['codes']}, batch {batches['codes']}",
    ]
    record(
        "api",
        lines,
        {
            "floor": floor,
            "peak": peak,
            "half_rate": half,
            "batch": batches,
            "share_of_floor": share,
            "batch_events_per_s": events,
            "spool_delays_s": delays,
        },
    )


if __name__ == "__main__":
    main()

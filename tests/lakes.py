"""Test helpers that act as producers do: drop files into a lake's raw/ folder."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

SPEC_REPORT_KEYS = (
    "files",
    "lines",
    "accepted",
    "duplicates",
    "expired",
    "quarantined",
    "quarantined_by_reason",
    "clamped",
    "truncated",
    "partitions_deleted",
)
"""The keys SPEC section 10 says `track run --json` includes."""


def ndjson(*records: Any) -> bytes:
    """NDJSON bytes: dicts are dumped, strings and bytes are kept as the raw line."""
    lines = []
    for record in records:
        if isinstance(record, bytes):
            lines.append(record)
        elif isinstance(record, str):
            lines.append(record.encode())
        else:
            lines.append(json.dumps(record, ensure_ascii=False).encode())
    return b"\n".join(lines) + b"\n"


def drop(
    lake: str, path: str, data: bytes, *, modified: datetime | None = None, gz: bool = False
) -> datetime:
    """Write raw/<path>; on a local lake set its mtime. Returns its last-modified time (ms)."""
    fs, root = fsspec.core.url_to_fs(lake)
    target = f"{root.rstrip('/')}/raw/{path}"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(target, gzip.compress(data) if gz else data)
    if modified is not None and fs.protocol in ("file", ("file", "local")):
        stamp = modified.timestamp()
        os.utime(target, (stamp, stamp))
    fs.invalidate_cache()
    info = fs.info(target)
    moment = info.get("LastModified") or datetime.fromtimestamp(float(info["mtime"]), UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def remove(lake: str, path: str) -> None:
    """Delete raw/<path>."""
    fs, root = fsspec.core.url_to_fs(lake)
    fs.rm(f"{root.rstrip('/')}/raw/{path}")


SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "raw"
"""The bundled sample's raw files (`make demo` runs the pipeline on them)."""
SAMPLE_NOW = datetime(2026, 11, 20, 6, tzinfo=UTC)
"""The time of the demo's run (Makefile's DEMO_NOW)."""


def drop_sample(lake: str) -> None:
    """Drop the bundled sample's raw files into a lake, each modified at the end of its day (as
    `make demo` does; S3 stamps its own time)."""
    for path in sorted(SAMPLE.glob("date=*/*")):
        day = datetime.fromisoformat(path.parent.name.removeprefix("date="))
        end = day.replace(hour=23, minute=59, second=59, tzinfo=UTC)
        drop(lake, f"{path.parent.name}/{path.name}", path.read_bytes(), modified=end)

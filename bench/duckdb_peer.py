"""Figure 2: marginal time of `track run` over 3 million events in 28 files, against the same
job written as DuckDB SQL (bench/duckdb_job.sql) on the same files (target: Track faster).

    python bench/duckdb_peer.py [--events N] [--files N]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb
from common import (
    BENCH,
    OUT,
    arguments,
    empty_run,
    fresh_lake,
    inputs,
    marginal,
    record,
    track_run,
    verdict,
)


def duckdb_job(source: Path) -> float:
    """Seconds of bench/duckdb_job.sql over the raw files of `source`."""
    out = OUT / "duckdb"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sql = (BENCH / "duckdb_job.sql").read_text()
    sql = sql.replace("{raw}", str(source / "raw" / "*" / "*.ndjson")).replace("{out}", str(out))
    start = time.perf_counter()
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        db.execute(sql)
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds


def main() -> None:
    args = arguments(__doc__, events=3_000_000, files=28)
    source = inputs(args.events, args.files)
    peer = duckdb_job(source)
    empty = empty_run()
    full = track_run(fresh_lake(source, "duckdb-peer"))
    seconds, line = marginal(full, empty)
    ratio = seconds / peer
    record(
        "duckdb_peer",
        [
            f"{args.events:,} events in {args.files} files",
            line,
            f"DuckDB SQL job {peer:.1f} s (duckdb {duckdb.__version__})",
            f"ratio {ratio:.2f}x: {verdict(ratio, 1.0)}",
        ],
        {"events": args.events, "marginal_s": seconds, "duckdb_s": peer, "ratio": ratio},
    )


if __name__ == "__main__":
    main()

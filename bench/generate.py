"""Seeded generator of realistic raw input: `python bench/generate.py LAKE EVENTS FILES`.

Seven event names, 50,000 users, 28 days, metadata of 2 to 3 keys, ISO timestamps with
milliseconds; files spread over the days' raw/date=... partitions. Each file gets the
last-modified time of its day's end, as if dropped that day, so no event is in the future of
its file (`--now 2026-11-29T00:00:00Z` keeps them all).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

EVENTS = ["play", "stop", "pause", "seek", "purchase", "search", "like"]
START = datetime(2026, 11, 1, tzinfo=UTC)


def write(
    lake: Path,
    events: int,
    files: int,
    *,
    seed: int = 7,
    days: int = 28,
    first: int = 0,
    spread: bool = False,
) -> None:
    """Write `events` events in `files` NDJSON files under lake/raw/, numbered from `first`.
    Each file's events are of its day, or with `spread` of all the days (a late upload or a
    backfill: the file is in the last day's folder)."""
    rng = random.Random(seed)
    per_file, extra = divmod(events, files)
    for number in range(first, first + files):
        day = START + timedelta(days=days - 1 if spread else number % days)
        since, span = (START, days * 86_400_000) if spread else (day, 86_400_000)
        folder = lake / "raw" / f"date={day.date().isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{number:05d}.ndjson"
        with open(path, "w") as out:
            for _ in range(per_file + (1 if number - first < extra else 0)):
                moment = since + timedelta(milliseconds=rng.randrange(span))
                metadata = {
                    "device": rng.choice(["ios", "android", "web"]),
                    "track": f"t-{rng.randrange(5000)}",
                }
                if rng.random() < 0.5:
                    metadata["position"] = round(rng.random() * 300, 3)
                record = {
                    "event": rng.choice(EVENTS),
                    "user_id": f"user-{rng.randrange(50_000)}",
                    "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "metadata": metadata,
                }
                out.write(json.dumps(record) + "\n")
        end_of_day = (day + timedelta(days=1, seconds=-1)).timestamp()
        os.utime(path, (end_of_day, end_of_day))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lake", type=Path)
    parser.add_argument("events", type=int)
    parser.add_argument("files", type=int)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first", type=int, default=0, help="number of the first file")
    args = parser.parse_args()
    write(args.lake, args.events, args.files, seed=args.seed, first=args.first)


if __name__ == "__main__":
    main()

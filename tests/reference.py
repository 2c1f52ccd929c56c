"""A small, slow, obviously-correct model of SPEC sections 1 to 8, written straight from the
text with plain Python (json, re, datetime, loops) and no code of the pipeline's.

The pipeline must give the same answers and report counts on any input; the property tests
compare the two over generated messy input and several runs with a moving `now`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson  # the compact JSON form metadata is sized in (see README: compact JSON)

TS = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?", re.ASCII
)
SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")


class Bad(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 date-time; raises Bad."""
    m = TS.fullmatch(text)
    if not m:
        raise Bad("invalid_timestamp")
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= mo <= 12 and h <= 23 and mi <= 59 and s <= 59):
        raise Bad("invalid_timestamp")
    try:
        wall = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError:
        raise Bad("invalid_timestamp") from None
    ms = int((m.group(7) or ".0")[1:4].ljust(3, "0"))
    offset = m.group(8) or "Z"
    minutes = 0
    if offset != "Z":
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            raise Bad("invalid_timestamp")
        minutes = (oh * 60 + om) * (1 if offset[0] == "+" else -1)
    return int(wall.timestamp()) * 1000 + ms - minutes * 60_000


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def _integer(text: str) -> int | float:
    # As the README says: integers outside the 64-bit range are kept as doubles.
    number = int(text)
    return number if -(2**63) <= number < 2**64 else float(text)


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max([_depth(x) for x in v.values()] or [0])
    if isinstance(v, list):
        return 1 + max([_depth(x) for x in v] or [0])
    return 0


def _check_strings(v: Any) -> None:
    if isinstance(v, str):
        v.encode("utf-8")  # raises on a lone surrogate
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_strings(k)
            _check_strings(x)
    elif isinstance(v, list):
        for x in v:
            _check_strings(x)


def _canon(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v) + 0.0
    if isinstance(v, list):
        return [_canon(x) for x in v]
    return {k: _canon(x) for k, x in v.items()}


def size(v: Any) -> int:
    return len(orjson.dumps(v))


def decode(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("invalid_utf8") from None
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_int=_integer)
        _check_strings(value)
    except (ValueError, UnicodeEncodeError, RecursionError):
        raise Bad("invalid_json") from None
    if any(isinstance(x, float) and x in (float("inf"), float("-inf")) for x in _numbers(value)):
        raise Bad("invalid_json")
    if not isinstance(value, dict):
        raise Bad("not_an_object")
    if _depth(value) > 64:
        raise Bad("too_deep")
    return value


def _numbers(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [n for x in v.values() for n in _numbers(x)]
    if isinstance(v, list):
        return [n for x in v for n in _numbers(x)]
    return [v] if isinstance(v, float) else []


def line_received(obj: dict[str, Any], file_received: int) -> int:
    """SPEC 1 and 2: a line's received_at is its file's, unless it carries a valid
    `_received_at` (an RFC 3339 date-time with an offset) less than a second after it."""
    text = obj.get("_received_at")
    if not isinstance(text, str):
        return file_received
    m = TS.fullmatch(text)
    if not m or not m.group(8):
        return file_received
    try:
        moment = parse_timestamp(text)
    except Bad:
        return file_received
    return moment if moment < file_received + 1000 else file_received


def _good_string(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 256


@dataclass
class Rec:
    event: str
    user: str
    ts: int  # ms, stored (clamped)
    sent: int  # ms, as sent (received_at if none)
    key: tuple[Any, ...]
    received: int
    path: str
    line: int
    clamped: bool
    truncated: bool
    metadata: Any

    @property
    def day(self) -> date:
        return day_of(self.ts)


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def warn(meta: Any, clamped_from: str | None) -> tuple[Any, bool]:
    """The metadata rules of SPEC 3.2 to 3.4, by trying every cut from the longest."""
    own: dict[str, Any] = {}
    warnings: list[str] = []
    if clamped_from is not None:
        warnings.append("timestamp_clamped")
        own = {"_warnings": warnings, "_original_timestamp": clamped_from}
    if not own and (meta is None or size(meta) <= 4096):
        return meta, False
    user = [(k, v) for k, v in (meta or {}).items() if k not in own]
    whole = dict(user) | own
    if size(whole) <= 4096:
        return whole, False
    own = {
        "_warnings": warnings + ["metadata_truncated"],
        **{k: v for k, v in own.items() if k != "_warnings"},
        "_original_size": size(meta),
    }
    user = [(k, v) for k, v in (meta or {}).items() if k not in own]
    for cut in range(len(user), -1, -1):
        candidate = dict(user[:cut]) | own
        if size(candidate) <= 4096:
            return candidate, True
    raise AssertionError("the warnings alone do not fit")


@dataclass
class Reference:
    retention_days: int = 30
    window_start: date | None = None
    sha_of_path: dict[str, str] = field(default_factory=dict)
    received_of_sha: dict[str, int] = field(default_factory=dict)
    records: dict[str, list[Rec]] = field(default_factory=dict)
    tombstones: set[tuple[Any, ...]] = field(default_factory=set)
    counts: dict[date, Counter[tuple[str, str]]] = field(default_factory=dict)
    sessions: dict[date, list[tuple[str, int]]] = field(default_factory=dict)

    def parse_file(self, path: str, data: bytes, received: int, ws: date) -> dict[str, Any]:
        out: dict[str, Any] = {"lines": 0, "expired": 0, "bad": Counter(), "recs": []}
        if path.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except Exception:
                out["lines"], out["bad"]["unreadable_file"] = 1, 1
                return out
        if b"\x00" in data:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                out["lines"], out["bad"]["unreadable_file"] = 1, 1
                return out
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        for number, line in enumerate(data.split(b"\n"), start=1):
            try:
                if not line.decode("utf-8").strip():
                    continue
            except UnicodeDecodeError:
                pass
            out["lines"] += 1
            try:
                obj = decode(line)
                rec = self.record(obj, path, number, line_received(obj, received))
            except Bad as bad:
                out["bad"][bad.reason] += 1
                continue
            if rec.day < ws:
                out["expired"] += 1
            else:
                out["recs"].append(rec)
        return out

    def record(self, obj: dict[str, Any], path: str, number: int, received: int) -> Rec:
        event, user, ts, meta = (obj.get(k) for k in ("event", "user_id", "timestamp", "metadata"))
        if not _good_string(event) or event == "date":
            raise Bad("invalid_event")
        if not _good_string(user):
            raise Bad("invalid_user_id")
        if ts is not None and not isinstance(ts, str):
            raise Bad("invalid_timestamp")
        sent = parse_timestamp(ts) if ts is not None else received
        if meta is not None and not isinstance(meta, dict):
            raise Bad("invalid_metadata")
        clamped = sent > received
        stored_meta, truncated = warn(meta, ts if clamped else None)
        key = (event, user, sent, json.dumps(_canon(meta), sort_keys=True))
        return Rec(
            event,
            user,
            min(sent, received),
            sent,
            key,
            received,
            path,
            number,
            clamped,
            truncated,
            stored_meta,
        )

    def kept(self) -> dict[tuple[Any, ...], Rec]:
        best: dict[tuple[Any, ...], Rec] = {}
        for recs in self.records.values():
            for r in recs:
                if r.key in self.tombstones:
                    continue
                order = (r.received, r.path.encode(), r.line)
                if r.key not in best or order < (
                    best[r.key].received,
                    best[r.key].path.encode(),
                    best[r.key].line,
                ):
                    best[r.key] = r
        return best

    def run(self, files: dict[str, tuple[bytes, datetime]], now: datetime) -> dict[str, Any]:
        ws = (now - timedelta(days=self.retention_days)).date()
        if self.window_start:
            ws = max(ws, self.window_start)
        self.window_start = ws
        for key, rec in self.kept().items():
            if rec.day < ws and day_of(rec.sent) >= ws:
                self.tombstones.add(key)
        for path in self.records:
            self.records[path] = [r for r in self.records[path] if r.day >= ws]
        report: dict[str, Any] = dict(
            files=0, lines=0, accepted=0, duplicates=0, expired=0, clamped=0, truncated=0
        )
        bad: Counter[str] = Counter()
        new: list[Rec] = []
        changed = {}
        for path in sorted(files):
            parts = path.split("/")
            name = parts[-1]
            if len(parts) != 2 or name.startswith((".", "_")) or not name.endswith(SUFFIXES):
                continue
            sha = hashlib.sha256(files[path][0]).hexdigest()
            if self.sha_of_path.get(path) != sha:
                changed[path] = sha
        # Bytes first read in this run: the earliest mtime among the files that hold them.
        first_seen = {}
        for path, sha in changed.items():
            if sha not in self.received_of_sha:
                moment = to_ms(files[path][1])
                first_seen[sha] = min(first_seen.get(sha, moment), moment)
        self.received_of_sha.update(first_seen)
        for path, sha in changed.items():
            data = files[path][0]
            self.sha_of_path[path] = sha
            received = self.received_of_sha[sha]
            parsed = self.parse_file(path, data, received, ws)
            report["files"] += 1
            report["lines"] += parsed["lines"]
            report["expired"] += parsed["expired"]
            bad.update(parsed["bad"])
            self.records[path] = parsed["recs"]
            new.extend(parsed["recs"])
        kept = self.kept()
        for r in new:
            if kept.get(r.key) is r:
                report["accepted"] += 1
                report["clamped"] += r.clamped
                report["truncated"] += r.truncated
            else:
                report["duplicates"] += 1
        report["quarantined"] = sum(bad.values())
        report["quarantined_by_reason"] = dict(bad)
        self.rebuild(list(kept.values()), ws)
        return report

    def rebuild(self, events: list[Rec], ws: date) -> None:
        for d in [d for d in self.counts if d >= ws]:
            del self.counts[d]
        for d in [d for d in self.sessions if d >= ws]:
            del self.sessions[d]
        for r in events:
            self.counts.setdefault(r.day, Counter())[(r.event, r.user)] += 1
        by_user: dict[str, list[Rec]] = defaultdict(list)
        for r in events:
            if r.event in ("play", "stop"):
                by_user[r.user].append(r)
        for user, recs in by_user.items():
            recs.sort(key=lambda r: (r.ts, r.event != "play"))
            open_play: int | None = None
            for r in recs:
                if r.event == "play":
                    open_play = r.ts
                elif open_play is not None:
                    self.sessions.setdefault(day_of(open_play), []).append((user, r.ts - open_play))
                    open_play = None

    @staticmethod
    def period(d: date, group_by: str, week_start: str = "monday") -> date:
        if group_by == "week":
            first = {"monday": 0, "sunday": 6}[week_start]  # date.weekday(): Monday 0
            return d - timedelta(days=(d.weekday() - first) % 7)
        if group_by == "month":
            return d.replace(day=1)
        return d

    def metrics(
        self, start: date, end: date, group_by: str, user: str | None, week_start: str = "monday"
    ) -> list[dict]:
        out: dict[date, Counter[str]] = {}
        for d, counter in self.counts.items():
            if start <= d <= end:
                for (event, u), n in counter.items():
                    if user is None or u == user:
                        period = self.period(d, group_by, week_start)
                        out.setdefault(period, Counter())[event] += n
        return [{"date": p.isoformat(), **dict(c)} for p, c in sorted(out.items()) if c]

    def users(
        self, start: date, end: date, group_by: str, event: str | None, week_start: str = "monday"
    ) -> list[dict]:
        """Distinct users with at least one counted event (of `event`) per period (SPEC 7)."""
        out: dict[date, set[str]] = {}
        for d, counter in self.counts.items():
            if start <= d <= end:
                for (e, u), n in counter.items():
                    if n and (event is None or e == event):
                        out.setdefault(self.period(d, group_by, week_start), set()).add(u)
        return [{"date": p.isoformat(), "users": len(us)} for p, us in sorted(out.items())]

    def session_metrics(
        self, start: date, end: date, group_by: str, user: str | None, week_start: str = "monday"
    ) -> list:
        out: dict[date, list[int]] = {}
        for d, rows in self.sessions.items():
            if start <= d <= end:
                for u, ms in rows:
                    if user is None or u == user:
                        out.setdefault(self.period(d, group_by, week_start), []).append(ms)
        answer = []
        for p, durations in sorted(out.items()):
            total, n = sum(durations), len(durations)
            answer.append(
                {
                    "date": p.isoformat(),
                    "totalDuration": int((total + 500) // 1000),
                    "sessionCount": n,
                    "averageDuration": int((2 * total + 1000 * n) // (2000 * n)),
                }
            )
        return answer

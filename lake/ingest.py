"""Ingest: raw files to staged rows. A run plans which raw files to read, reads them in batches
(one Prefect task each), decodes their lines a chunk at a time, validates and normalises them,
and stages events and quarantine rows as Parquet under the run's staging folder
(`_state/staging/<run>/`), which the merge reads (`Staged`). Nothing else in the lake is
written here."""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl

from track import settings
from track.errors import UnreadableFileError
from track.lake.raw import Chunks, RawBytes, read_raw_file
from track.lake.store import EVENTS, REPLACED, STAGING, STATE, Lake, RawFile, partition_date
from track.schemas.constants import UNREADABLE_FILE
from track.schemas.records import validate_records
from track.schemas.tables import (
    EVENTS_ORDER,
    UTC_MS,
    Events,
    Quarantine,
    ReplacedBytes,
    conform,
    polars_schema,
)
from track.transforms.normalise import EVENT_COLUMNS, EVENT_SCHEMA, normalise_events
from track.transforms.parse import decode_pieces
from track.transforms.timestamps import with_line_received_at, with_sent_at

# Planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilePlan:
    """A raw file to read, what the manifest knew of its path, and bytes seen elsewhere (by
    sha256: the `received_at` they were first read with)."""

    raw: RawFile
    prior_sha256: str | None
    known_received_at: dict[str, datetime] = field(default_factory=dict)


def plan_files(lake: Lake, files: list[RawFile]) -> list[FilePlan]:
    """The listed files whose size, modified time or version differ from what the manifest
    holds (a file whose manifest row has no version is read again once: its bytes are hashed,
    and parsed only if they changed)."""
    manifest = lake.read_manifest()
    known = {row["path"]: row for row in manifest.iter_rows(named=True)}
    by_bytes = dict(lake.read_state(REPLACED, ReplacedBytes).iter_rows())
    by_bytes |= {row["sha256"]: row["received_at"] for row in known.values()}
    plans = []
    for raw in files:
        prior = known.get(raw.path)
        listed = (raw.size, raw.modified, raw.version)
        if prior and (prior["size"], prior["modified"], prior["version"]) == listed:
            continue
        plans.append(FilePlan(raw, prior["sha256"] if prior else None, by_bytes))
    return plans


def batches(plans: list[FilePlan], workers: int = settings.INGEST_WORKERS) -> list[list[FilePlan]]:
    """Plans dealt into groups of about equal bytes, the largest group first, so that one task
    reads many small files or a few large ones: about BATCH_BYTES and at most BATCH_FILES files
    each (a larger file alone), at least BATCHES_AT_LEAST groups when there are files enough,
    and a multiple of `workers` of them, so no worker idles at the end (seven equal tasks on two
    workers leave one idle while the seventh runs). Each group keeps the plans' order."""
    if not plans:
        return []
    total = sum(p.raw.size for p in plans)
    wanted = max(
        settings.BATCHES_AT_LEAST,
        -(-total // settings.BATCH_BYTES),
        -(-len(plans) // settings.BATCH_FILES),
    )
    count = min(len(plans), -(-wanted // workers) * workers)
    # The largest file first, each to the group with the fewest bytes so far (the LPT rule),
    # or with the fewest files of as many bytes.
    open_groups = [(0, 0, index) for index in range(count)]
    members: list[list[int]] = [[] for _ in range(count)]
    sizes = [0] * count
    for at in sorted(range(len(plans)), key=lambda i: -plans[i].raw.size):
        size, files, index = heapq.heappop(open_groups)
        members[index].append(at)
        sizes[index] = size + plans[at].raw.size
        if files + 1 < settings.BATCH_FILES:
            heapq.heappush(open_groups, (sizes[index], files + 1, index))
    order = sorted(range(count), key=lambda index: -sizes[index])
    return [[plans[at] for at in sorted(members[index])] for index in order if members[index]]


# Results ------------------------------------------------------------------------------------


@dataclass
class FileResult:
    """What one raw file gave."""

    path: str
    size: int
    modified: datetime
    sha256: str
    received_at: datetime
    version: str = ""
    unchanged: bool = False
    lines: int = 0
    expired: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Files a batch read and the staging files holding their rows (events/date=D/..., and
    quarantine/...), relative to the run's staging folder."""

    files: list[FileResult]
    events: list[str]
    quarantine: list[str]
    read_again: set[str] = field(default_factory=set)
    """Files read again later in the run: their staged rows here are not used."""


def same_bytes_again(plans: list[FilePlan], results: list[BatchResult]) -> list[FilePlan]:
    """Files whose bytes another file first read in this run holds with an earlier mtime.

    Bytes first read in one run get the earliest last-modified time among their files as
    `received_at`, so dropping a file twice at once changes no answer; these files are read again
    with it.
    """
    earliest: dict[str, datetime] = {}
    read = [f for r in results for f in r.files if not f.unchanged]
    for f in read:
        earliest[f.sha256] = min(earliest.get(f.sha256, f.received_at), f.received_at)
    late = {f.path: f.sha256 for f in read if f.received_at > earliest[f.sha256]}
    return [
        FilePlan(
            p.raw,
            p.prior_sha256,
            {**p.known_received_at, late[p.raw.path]: earliest[late[p.raw.path]]},
        )
        for p in plans
        if p.raw.path in late
    ]


def counted_files(results: list[BatchResult]) -> list[FileResult]:
    """The files whose results count: every file read, but for a first read of a file read
    again later in the run (the later read counts)."""
    return [f for r in results for f in r.files if f.path not in r.read_again]


# Decoding and parsing -----------------------------------------------------------------------

LINE_ID = ["source", "line"]
"""What names a line among the lines of many files."""


@dataclass(frozen=True)
class Piece:
    """A file's bytes, or a chunk of them, with where they come from."""

    source: str
    received_at: datetime
    first_line: int
    data: bytes


def decode_files(pieces: list[Piece]) -> pl.DataFrame:
    """The decoded lines of pieces of files, decoded together, each with its file's `source`
    and `received_at` (which a line's own `_received_at` may replace: `parse_lines`)."""
    lines = decode_pieces([(p.first_line, p.data) for p in pieces]).collect()
    sources = pl.Series([p.source for p in pieces], dtype=pl.String)
    received_at = pl.Series([p.received_at for p in pieces], dtype=UTC_MS)
    # Each line's piece is the index of its file's values (a join took twice as long).
    return lines.with_columns(
        source=sources.gather(lines["piece"]), received_at=received_at.gather(lines["piece"])
    ).drop("piece")


def parse_lines(lines: pl.DataFrame, *, window_start: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with `expired`) and quarantine rows of decoded lines, of any number of files:
    one validation for them all, however small the files."""
    sent = lines.lazy().pipe(with_sent_at)
    if lines["received_at_text"].null_count() == len(lines):  # no line carries its own:
        sent = sent.drop("received_at_text")  # 0.15 us a line saved
    else:
        sent = sent.pipe(with_line_received_at)
    lines = sent.collect()
    objects = lines.filter(pl.col("reason").is_null())
    rejected = validate_records(objects, key=LINE_ID)
    valid = objects.lazy()
    if len(rejected):  # the usual case has none: spare hashing every line's id
        valid = valid.join(rejected.lazy(), on=LINE_ID, how="anti")
    events = normalise_events(valid, window_start=window_start).collect()
    bad = pl.concat(
        [
            lines.filter(pl.col("reason").is_not_null()).select(*LINE_ID, "reason", "message"),
            rejected,
        ]
    )
    quarantine = (
        bad.join(lines.select(*LINE_ID, "raw", "received_at"), on=LINE_ID)
        .pipe(_as_quarantine)
        .sort(LINE_ID)
    )
    return events, quarantine


def parse_file(
    data: bytes, *, source: str, received_at: datetime, window_start: date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (with `expired`) and quarantine rows of one raw file's NDJSON bytes."""
    lines = decode_files([Piece(source, received_at, 1, data)])
    return parse_lines(lines, window_start=window_start)


def unreadable_file(source: str, message: str, received_at: datetime) -> pl.DataFrame:
    """The one quarantine row of a file rejected whole."""
    return pl.DataFrame(
        {
            "source": [source],
            "line": [1],
            "raw": [""],
            "reason": [UNREADABLE_FILE],
            "message": [message],
            "received_at": [received_at],
        }
    ).pipe(_as_quarantine)


def _as_quarantine(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(
        pl.col(name).cast(dtype) for name, dtype in polars_schema(Quarantine).items()
    )


Sink = Callable[[pl.DataFrame, pl.DataFrame], None]
"""Where a batch's parsed events and quarantine rows go (the Stager)."""
_NONE = pl.DataFrame(schema=polars_schema(Quarantine))


class Batch:
    """Where a batch's files go: their decoded lines, parsed together whenever they reach
    `rows` lines (one validation for many small files; a bound on memory for large ones)."""

    def __init__(self, *, window_start: date, rows: int, stage: Sink) -> None:
        self.window_start, self.limit, self.stage = window_start, rows, stage
        self.pieces: list[Piece] = []
        self.piece_bytes = 0
        self.lines: list[pl.DataFrame] = []
        self.rejected: list[pl.DataFrame] = []
        self.rows = 0
        self.files: dict[str, FileResult] = {}

    def add(self, piece: Piece) -> None:
        """Take a piece of a file; decode what is held once it makes a chunk."""
        self.pieces.append(piece)
        self.piece_bytes += len(piece.data)
        if self.piece_bytes >= settings.PARSE_CHUNK_BYTES:
            self._decode()

    def _decode(self) -> None:
        if self.pieces:
            lines = decode_files(self.pieces)
            self.pieces, self.piece_bytes = [], 0
            self.lines.append(lines)
            self.rows += len(lines)
        if self.rows >= self.limit:
            self._parse()

    def reject(self, quarantine: pl.DataFrame) -> None:
        self.rejected.append(quarantine)

    def flush(self) -> None:
        """Decode and parse all that is held, count it into the files' results, stage it."""
        self._decode()
        self._parse()

    def _parse(self) -> None:
        events, quarantine = pl.DataFrame(), pl.concat(self.rejected or [_NONE])
        if self.lines:
            events, bad = parse_lines(pl.concat(self.lines), window_start=self.window_start)
            quarantine = pl.concat([quarantine, bad])
        if len(events):
            counted = events.group_by("source").agg(pl.len(), pl.col("expired").sum())
            for source, lines, expired in counted.iter_rows():
                self.files[source].lines += lines
                self.files[source].expired += expired
        for source, reason, count in quarantine.group_by("source", "reason").len().iter_rows():
            found = self.files[source]
            found.lines += count
            found.quarantined[reason] = found.quarantined.get(reason, 0) + count
        self.stage(events, quarantine)
        self.lines, self.rejected, self.rows = [], [], 0


# Reading a file into a batch ----------------------------------------------------------------


def ingest_file(lake: Lake, plan: FilePlan, batch: Batch) -> FileResult:
    """Read one raw file and decode it into `batch`, a chunk of lines at a time; nothing when
    its bytes are unchanged."""
    with read_raw_file(lake, plan.raw.path, plan.raw.size) as (found, chunks):
        return _ingest(plan, batch, found, chunks)


def _ingest(
    plan: FilePlan, batch: Batch, found: RawBytes, chunks: Callable[[], Chunks]
) -> FileResult:
    """A file's result from what reading it found; its lines, from `chunks` (which raises
    UnreadableFileError for a file that cannot be read as lines), into `batch` unless its
    bytes are unchanged."""
    raw = plan.raw
    received_at = plan.known_received_at.get(found.sha256, raw.modified)
    result = FileResult(raw.path, found.size, raw.modified, found.sha256, received_at, raw.version)
    if found.sha256 == plan.prior_sha256:
        result.unchanged = True
        return result
    batch.files[raw.path] = result
    problem = found.problem
    lines: Chunks = iter(())
    if problem is None:
        try:
            lines = chunks()
        except UnreadableFileError as exc:
            problem = str(exc)
    if problem is not None:
        batch.reject(unreadable_file(raw.path, problem, received_at))
        return result
    for first_line, chunk in lines:
        batch.add(Piece(raw.path, received_at, first_line, chunk))
    return result


# Staging ------------------------------------------------------------------------------------


def staging_folder(run_id: str) -> str:
    """Where a run stages its rows, under the root."""
    return f"{STATE}/{STAGING}/{run_id}"


class Stager:
    """Writes a batch's parsed rows to staging: events split by date, without the expired, each
    date's as the event tables hold them (Events' columns, in order, zstd), so that the merge
    can add the file to its date as it is; each row's source as a category and what happened
    to it (`BESIDE`) in a file beside it."""

    def __init__(self, lake: Lake, folder: str) -> None:
        self.lake, self.folder = lake, folder
        self.written: list[str] = []
        self.rejected: list[str] = []

    def __call__(self, events: pl.DataFrame, quarantine: pl.DataFrame) -> None:
        name = uuid.uuid4().hex
        if len(events):
            events = events.filter(~pl.col("expired")).drop("expired")
            # The one validation of the values of these rows: the merge only moves them.
            Events.validate(events.select(EVENT_COLUMNS))
            for (day,), part in events.partition_by("date", as_dict=True).items():
                part = part.sort(EVENTS_ORDER)
                path = f"{EVENTS}/date={day.isoformat()}/{name}.parquet"
                rows = conform(part, Events)
                self.lake.write_parquet(rows, self.folder, path, compression="zstd")
                beside = part.select(pl.col("source").cast(pl.Categorical), *FLAGS)
                self.lake.write_parquet(beside, self.folder, beside_file(path))
                self.written.append(path)
        if len(quarantine):
            path = f"quarantine/{name}.parquet"
            self.lake.write_parquet(quarantine, self.folder, path)
            self.rejected.append(path)


FLAGS = ["clamped", "truncated"]
"""What happened to a staged row."""
BESIDE = ["source", *FLAGS]
"""A staged row's source as a category, and FLAGS, in a file of their own beside its date's
events file: the merge reads the source of every new row, as paths a third of the cost of its
deciding columns (3M rows: 0.30 s with the sources as paths, 0.23 s as categories)."""


def beside_file(events_file: str) -> str:
    """The staged file of BESIDE next to a staged events file, row for row."""
    return events_file.replace(f"{EVENTS}/", "beside/", 1)


def ingest_batch(
    lake_url: str, plans: list[FilePlan], window_start: date, run_id: str
) -> BatchResult:
    """Read and parse a batch of raw files; stage their rows in the run's staging folder."""
    lake = Lake(lake_url)
    stager = Stager(lake, staging_folder(run_id))
    batch = Batch(window_start=window_start, rows=settings.STAGE_ROWS, stage=stager)
    results = [ingest_file(lake, plan, batch) for plan in plans]
    batch.flush()
    return BatchResult(results, stager.written, stager.rejected)


STAGED_SCHEMA = {n: t for n, t in EVENT_SCHEMA.items() if n not in ("date", "expired")}
"""The columns of the staged events (their date is in their files' paths)."""


@dataclass
class Staged:
    """A run's staged rows, as the merge reads them: the retained events, as
    `events/date=D/<id>.parquet` files under `folder` (with their BESIDE next to them), each with
    the sources read again later in the run, whose rows in it are not used; and the quarantine
    files."""

    lake: Lake
    folder: str
    files: list[tuple[str, frozenset[str]]]
    rejected_files: list[tuple[str, frozenset[str]]]

    @classmethod
    def of(cls, lake: Lake, run_id: str, results: list[BatchResult]) -> Staged:
        """What the ingest tasks of a run staged."""
        events = [(name, frozenset(r.read_again)) for r in results for name in r.events]
        rejected = [(name, frozenset(r.read_again)) for r in results for name in r.quarantine]
        return cls(lake, staging_folder(run_id), events, rejected)

    def dates(self) -> set[date]:
        """The event dates of the staged rows."""
        return {_staged_date(name) for name, _ in self.files}

    def whole_file(self, day: date) -> str | None:
        """The path under the root of a date's staged events file, if its rows are all in that
        one file and all used (none of their sources was read again later in the run); else
        None."""
        files = [(name, again) for name, again in self.files if _staged_date(name) == day]
        if len(files) != 1 or files[0][1]:
            return None
        return f"{self.folder}/{files[0][0]}"

    def rows(
        self,
        day: date | None = None,
        columns: list[str] | None = None,
        *,
        categorical_source: bool = False,
    ) -> pl.DataFrame:
        """The staged events (of one date), with `date`; only `columns` if given."""
        wanted = columns or list(STAGED_SCHEMA)
        # Sources as categories come from the file beside, as they were staged.
        beside = [c for c in BESIDE if c in wanted and (c in FLAGS or categorical_source)]
        read = [c for c in wanted if c not in beside]
        kind = pl.Categorical if categorical_source else pl.String
        source = [pl.col("source").cast(kind)] if "source" in wanted else []
        empty = pl.LazyFrame(schema={**STAGED_SCHEMA, "date": pl.Date()})
        frames = [empty.select(*wanted, "date").with_columns(source)]
        for name, read_again in self.files:
            at = _staged_date(name)
            if day is not None and at != day:
                continue
            needs_source = read_again and "source" not in wanted  # to drop those sources' rows
            here = read + ["source"] if needs_source else read
            parts = [self.lake.scan_parquet(self.folder, name).select(here)] if here else []
            if beside:
                parts.append(self.lake.scan_parquet(self.folder, beside_file(name)).select(beside))
            rows = pl.concat(parts, how="horizontal")
            if read_again:
                rows = rows.filter(~pl.col("source").is_in(read_again))
            frames.append(rows.select(*wanted).with_columns(*source, date=pl.lit(at)))
        # Read together, not one file after another: the merge's first read of a run's rows.
        return pl.concat(frames).collect()

    def rejected(self) -> pl.DataFrame:
        """The staged quarantine rows."""
        frames = [_NONE]
        for name, read_again in self.rejected_files:
            rows = self.lake.read_parquet(self.folder, name)
            frames.append(rows.filter(~pl.col("source").is_in(read_again)))
        return pl.concat(frames)


def _staged_date(name: str) -> date:
    """The date of a staged file `events/date=D/<id>.parquet`."""
    found = partition_date(name.split("/")[1])
    if found is None:
        raise ValueError(f"not a staged events file: {name}")
    return found

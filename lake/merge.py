"""Fold a run's staged rows into the lake: dedup, events/duplicates/quarantine partitions,
the manifest; then retention and the rollups of what changed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from track.lake.faults import crash_point
from track.lake.ingest import FileResult
from track.lake.store import COUNTS, DUPLICATES, EVENTS, QUARANTINE, SESSIONS, Lake, partition_date
from track.schemas.tables import (
    UTC_MS,
    Counts,
    Duplicates,
    Events,
    Manifest,
    Quarantine,
    Sessions,
    Tombstones,
    conform,
    polars_schema,
)
from track.transforms.counts import daily_counts
from track.transforms.dedup import COPY_ORDER, RECORD_KEY, deduplicate
from track.transforms.normalise import EVENT_COLUMNS, EVENT_SCHEMA
from track.transforms.sessions import PLAY, STOP, match_sessions

MANIFEST = "files"
TOMBSTONES = "tombstones"
EVENT_SCHEMA_STAGED = {n: t for n, t in EVENT_SCHEMA.items() if n not in ("date", "expired")}
INDEX_SCHEMA = {n: EVENT_SCHEMA[n] for n in [*RECORD_KEY, *COPY_ORDER]}
DATES = pl.List(pl.Date())
INDEX = list(INDEX_SCHEMA)
"""The columns that decide which copy of a record is kept (RECORD_KEY, then COPY_ORDER)."""
WORKERS = 2
"""Event dates rewritten at once (Polars and Parquet encoding release the GIL)."""
PARALLEL_DATE_ROWS = 250_000
"""Dates with more new rows than this are rewritten one at a time (a date's rows are held
whole while it is rewritten)."""
MATCH_USERS_AT_MOST = 20_000
"""Beyond this many users with changed plays or stops, all sessions are matched again (a
filter on a long list of users costs more than it spares)."""


@dataclass
class Merged:
    """What the run's new lines became, which event dates changed, and where each file's
    retained rows went."""

    accepted: int
    duplicates: int
    clamped: int
    truncated: int
    changed_dates: list[date]
    session_users: list[str] | None = None
    """Users whose plays or stops changed (their sessions must be matched again); None: all."""
    dates_of_sources: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={"path": pl.String, "dates": DATES})
    )


@dataclass
class Staged:
    """The run's new retained events, staged by ingest as `events/date=D/<id>.parquet` files
    under `folder`; each file with the sources read again later in the run, whose rows in it
    are not used."""

    lake: Lake
    folder: str
    files: list[tuple[str, frozenset[str]]]

    def dates(self) -> set[date]:
        return {_staged_date(name) for name, _ in self.files}

    def rows(
        self,
        day: date | None = None,
        columns: list[str] | None = None,
        *,
        categorical_source: bool = False,
    ) -> pl.DataFrame:
        """The staged rows (of one date), with `date`; only `columns` if given."""
        # Each file's sources are cast as it is read: with categories, the paths of all the
        # new rows are never held at once.
        source = pl.col("source").cast(pl.Categorical if categorical_source else pl.String)
        empty = pl.DataFrame(schema={**EVENT_SCHEMA_STAGED, "date": pl.Date()})
        frames = [empty.select(*(columns or EVENT_SCHEMA_STAGED), "date").with_columns(source)]
        for name, read_again in self.files:
            at = _staged_date(name)
            if day is not None and at != day:
                continue
            rows = self.lake.read_parquet(self.folder, name, columns=columns)
            if read_again:
                rows = rows.filter(~pl.col("source").is_in(read_again))
            frames.append(rows.with_columns(source, date=pl.lit(at)))
        return pl.concat(frames)


def _staged_date(name: str) -> date:
    """The date of a staged file `events/date=D/<id>.parquet`."""
    found = partition_date(name.split("/")[1])
    if found is None:
        raise ValueError(f"not a staged events file: {name}")
    return found


def _stored_index(lake: Lake, days: set[date]) -> pl.DataFrame:
    """INDEX of every stored copy (kept or not) of these event dates, with `date` and `kept`."""
    frames = [pl.DataFrame(schema={**INDEX_SCHEMA, "date": pl.Date, "kept": pl.Boolean})]
    for day in sorted(days):
        for table, model, kept in ((EVENTS, Events, True), (DUPLICATES, Duplicates, False)):
            rows = lake.read_partition(table, day, model, columns=INDEX)
            frames.append(rows.with_columns(date=pl.lit(day), kept=pl.lit(kept)))
    return pl.concat(frames)


def _dates_holding(lake: Lake, keys: pl.DataFrame, window_start: date) -> set[date]:
    """Retained event dates holding a copy of any of these record keys."""
    found: set[date] = set()
    for table, model in ((EVENTS, Events), (DUPLICATES, Duplicates)):
        hits = (
            lake.scan(table, model)
            .filter(pl.col("date") >= window_start)
            .select(*RECORD_KEY, "date")
            .join(keys.lazy(), on=RECORD_KEY, how="semi")
            .select("date")
            .unique()
            .collect()
        )
        found.update(hits["date"].to_list())
    return found


def _dates_of_sources(lake: Lake, sources: set[str], window_start: date) -> set[date]:
    """Retained event dates the files in `sources` stored rows under before this run."""
    manifest = lake.read_state(MANIFEST, Manifest)
    listed = manifest.filter(pl.col("path").is_in(sources))["dates"].to_list()
    return {d for ds in listed for d in ds if d >= window_start}


def merge_events(lake: Lake, staged: Staged, *, sources: set[str], window_start: date) -> Merged:
    """Dedup the run's new events against the lake and rewrite the event dates this changes,
    with their daily counts.

    `staged` holds the retained events of the files in `sources`; any row those files stored
    before is replaced by them (a file replaced under its name replaces its contribution).
    Only records with a copy among these rows are decided again; every other row keeps its place.
    Only the deciding columns of all copies are held at once; the rows themselves are read,
    decided and written one date at a time.
    """
    # Sources as categories: four bytes a row, not the path (the index is the merge's
    # largest structure; it holds a row for every new event).
    new = staged.rows(columns=[*INDEX, "clamped", "truncated"], categorical_source=True)
    if new.is_empty() and not sources:
        return Merged(0, 0, 0, 0, [])
    touched = _dates_of_sources(lake, sources, window_start) | staged.dates()
    stored = _stored_index(lake, touched)
    others = [d for d in lake.partitions(EVENTS) if d >= window_start and d not in touched]
    others += [d for d in lake.partitions(DUPLICATES) if d >= window_start and d not in touched]
    affected = None  # every record: all its copies are here, when every date is
    if others:  # copies of these records stored under other dates (clamped timestamps)
        # The records this run can change: with a new copy, or a copy of a re-read file. Only
        # they are decided again, with every copy of theirs, wherever it is stored.
        replaced = stored.filter(pl.col("source").is_in(sources))
        affected = pl.concat([new.select(RECORD_KEY), replaced.select(RECORD_KEY)]).unique()
        del replaced
        elsewhere = _dates_holding(lake, affected, window_start) - touched
        stored = pl.concat([stored, _stored_index(lake, elsewhere)])
        touched |= elsewhere
    copies = pl.concat(
        [
            new.select(
                *INDEX, "date", "clamped", "truncated", was_kept=pl.lit(True), new=pl.lit(True)
            ),
            stored.filter(~pl.col("source").is_in(sources)).select(
                *(pl.col(c).cast(pl.Categorical) if c == "source" else c for c in INDEX),
                "date",
                clamped=pl.lit(False),
                truncated=pl.lit(False),
                was_kept="kept",
                new=pl.lit(False),
            ),
        ]
    )
    decided = _decide(copies, affected, lake.read_state(TOMBSTONES, Tombstones))
    del copies
    # Only rows whose place changes travel to the rewrite of their date (new rows come as kept).
    changes = decided.filter(pl.col("kept") != pl.col("was_kept"))
    verdicts = {
        day: rows.select("source", "line", "kept")
        for (day,), rows in changes.partition_by("date", as_dict=True).items()
    }
    empty = pl.DataFrame(schema={"source": pl.String, "line": pl.Int64, "kept": pl.Boolean})

    def rewrite(day: date) -> pl.Series:
        return _rewrite_date(lake, staged, day, sources, verdicts.get(day, empty))

    largest = new.group_by("date").len().select(pl.col("len").max()).item() or 0
    workers = WORKERS if largest <= PARALLEL_DATE_ROWS else 1  # memory: one large date at once
    with ThreadPoolExecutor(workers) as pool:
        none = pl.Series("user_id", [], pl.String)
        users = pl.concat([none, *pool.map(rewrite, sorted(touched))]).unique()
    lost = changes.filter("new")  # new rows come as kept: a change is a loss
    return Merged(
        accepted=len(new) - len(lost),
        duplicates=len(lost),
        clamped=int(new["clamped"].sum()) - int(lost["clamped"].sum()),
        truncated=int(new["truncated"].sum()) - int(lost["truncated"].sum()),
        changed_dates=sorted(touched),
        session_users=users.sort().to_list() if len(users) <= MATCH_USERS_AT_MOST else None,
        dates_of_sources=new.group_by("source")  # by category: a path is cast once, not a row
        .agg(dates=pl.col("date").unique().sort())
        .select(path=pl.col("source").cast(pl.String), dates="dates"),
    )


def _decide(
    copies: pl.DataFrame, affected: pl.DataFrame | None, tombstones: pl.DataFrame
) -> pl.DataFrame:
    """Which copies are kept, for the copies whose place may change: of a record `affected`
    (by key; None: any), one with several copies, a tombstoned one, or a copy not kept before.
    Every other copy keeps its place: an unaffected record's kept copy may be stored under a
    date that is not among `copies` (a clamped timestamp), so its copies here are never
    decided without it."""
    # Copies of one record share fingerprint and instant, so they share this 64-bit mix of
    # both; a clash of two records only adds candidates (deduplicate compares whole keys).
    instant = pl.col("sent_at").dt.epoch("ms")
    mix = pl.col("fingerprint") ^ instant
    several = mix.is_duplicated()
    if len(tombstones):
        gone = tombstones.select(RECORD_KEY).unique().with_columns(_gone=pl.lit(True))
        copies = (
            copies.join(gone, on=RECORD_KEY, how="left")
            .with_columns(several=several | pl.col("_gone").is_not_null())
            .drop("_gone")
        )
    else:
        copies = copies.with_columns(several=several)
    candidates = copies.filter(pl.col("several") | ~pl.col("was_kept")).drop("several")
    if affected is not None:
        candidates = candidates.join(affected, on=RECORD_KEY, how="semi")
    candidates = candidates.with_columns(pl.col("source").cast(pl.String))
    return deduplicate(candidates.lazy(), tombstones=tombstones.lazy()).collect()


def _rewrite_date(
    lake: Lake, staged: Staged, day: date, sources: set[str], verdicts: pl.DataFrame
) -> pl.Series:
    """Rewrite one event date: its stored rows but those of re-read sources, its new rows,
    each kept or not as decided (`verdicts` by source and line; the rest keep their place).
    The users with a play or stop among the rows that came, went or changed place."""
    stored = pl.concat(
        [
            lake.read_partition(EVENTS, day, Events).with_columns(kept=pl.lit(True)),
            lake.read_partition(DUPLICATES, day, Duplicates).with_columns(kept=pl.lit(False)),
        ]
    )
    new = staged.rows(day).select(EVENT_COLUMNS).with_columns(kept=pl.lit(True))
    replaced = pl.col("source").is_in(sources)
    rows = pl.concat([new, stored.filter(~replaced)])
    moved = [new.select("event", "user_id"), stored.filter(replaced).select("event", "user_id")]
    if len(verdicts):
        rows = rows.join(verdicts, on=["source", "line"], how="left", suffix="_decided")
        moved.append(rows.filter(pl.col("kept_decided").is_not_null()).select("event", "user_id"))
        rows = rows.with_columns(kept=pl.coalesce("kept_decided", "kept")).drop("kept_decided")
    users = pl.concat(moved).filter(pl.col("event").is_in([PLAY, STOP]))["user_id"].unique()
    everything_kept = bool(rows["kept"].all())  # the usual case: spare a copy of the date
    events = _validated(rows if everything_kept else rows.filter("kept"), Events)
    lake.write_partition(EVENTS, day, events)
    crash_point("partition-written")
    lake.write_partition(DUPLICATES, day, _validated(rows.filter(~pl.col("kept")), Duplicates))
    del rows
    counts = daily_counts(events.lazy().with_columns(date=pl.lit(day))).collect().drop("date")
    lake.write_partition(COUNTS, day, conform(counts, Counts))
    return users


def _validated(rows: pl.DataFrame, model: type[Events]) -> pl.DataFrame:
    """Rows of events or duplicates, in order. Every one was validated against Events as
    ingest staged it, or as an earlier run wrote it: here names and types are checked."""
    return conform(rows, model).sort("timestamp", "source", "line")


def merge_quarantine(
    lake: Lake, new: pl.DataFrame, *, sources: set[str], window_start: date
) -> None:
    """Add the run's rejected lines, replacing what re-read files rejected before."""
    manifest = lake.read_state(MANIFEST, Manifest)
    old = manifest.filter(pl.col("path").is_in(sources))["received_at"].dt.date().to_list()
    new = new.with_columns(date=pl.col("received_at").dt.date())
    for day in sorted(set(old) | set(new["date"].to_list())):
        if day < window_start:
            continue  # retention deletes it at the end of this run anyway
        kept = lake.read_partition(QUARANTINE, day, Quarantine).filter(
            ~pl.col("source").is_in(sources)
        )
        rows = pl.concat([kept, new.filter(pl.col("date") == day).drop("date")])
        lake.write_partition(QUARANTINE, day, Quarantine.validate(rows.sort("source", "line")))


def update_manifest(lake: Lake, files: list[FileResult], dates: pl.DataFrame) -> None:
    """Record the bytes each file was read as, when, and which event dates it stored rows in
    (`dates`: path, dates)."""
    if not files:
        return
    listed = pl.DataFrame(
        {
            "path": [f.path for f in files],
            "size": [f.size for f in files],
            "modified": [f.modified for f in files],
            "sha256": [f.sha256 for f in files],
            "received_at": [f.received_at for f in files],
            "unchanged": [f.unchanged for f in files],
        },
        schema_overrides={"modified": UTC_MS, "received_at": UTC_MS},
    )
    manifest = lake.read_state(MANIFEST, Manifest)
    # An unchanged file keeps its received_at and dates; only its listing details move on.
    unchanged = (
        listed.filter("unchanged")
        .select("path", "size", "modified")
        .join(manifest.drop("size", "modified"), on="path")
    )
    changed = (
        listed.filter(~pl.col("unchanged"))
        .drop("unchanged")
        .join(dates, on="path", how="left")
        .with_columns(pl.col("dates").fill_null(pl.lit([], dtype=pl.List(pl.Date))))
    )
    rest = manifest.filter(~pl.col("path").is_in(listed["path"].implode()))
    rows = pl.concat([rest, unchanged.select(manifest.columns), changed.select(manifest.columns)])
    lake.write_state(MANIFEST, Manifest.validate(rows.sort("path")))


def expire_events(lake: Lake, *, window_start: date) -> int:
    """Delete event and duplicate partitions before the window; the count deleted.

    Runs before new events are committed, so that a record whose kept copy just expired is
    never counted again: keys of expired kept events that could still arrive unexpired (their
    instant as sent is inside the window, i.e. a clamped future timestamp) become tombstones.
    """
    old = [d for d in lake.partitions(EVENTS) if d < window_start]
    stored = lake.read_state(TOMBSTONES, Tombstones)
    tombstones = [stored.filter(pl.col("sent_at").dt.date() >= window_start)]
    for day in old:
        rows = lake.read_partition(EVENTS, day, Events)
        tombstones.append(
            rows.filter(pl.col("sent_at").dt.date() >= window_start).select(
                list(polars_schema(Tombstones))
            )
        )
    if old or tombstones[0].height != stored.height:  # a run that expires nothing writes nothing
        lake.write_state(TOMBSTONES, Tombstones.validate(pl.concat(tombstones).unique()))
    return _delete_before(lake, (EVENTS, DUPLICATES), window_start)


def expire_quarantine(lake: Lake, *, window_start: date) -> int:
    """Delete quarantine partitions before the window (after this run's files were ingested)."""
    return _delete_before(lake, (QUARANTINE,), window_start)


def expire_raw(lake: Lake, *, window_start: date) -> int:
    """Delete raw partitions before the window: only once the run that read them is live."""
    old = [d for d in lake.raw_partitions() if d < window_start]
    for day in old:
        lake.delete_raw_partition(day)
    return len(old)


def _delete_before(lake: Lake, tables: tuple[str, ...], window_start: date) -> int:
    deleted = 0
    for table in tables:
        for day in lake.partitions(table):
            if day < window_start:
                lake.delete_partition(table, day)
                deleted += 1
    return deleted


def rebuild_sessions(lake: Lake, *, window_start: date, users: list[str] | None = None) -> int:
    """Match again the sessions of the window, of these users (None: all users); rewrite the
    session dates whose sessions changed. The number of sessions in the window.

    A user's sessions depend on that user's plays and stops only, and none before the window
    can change one in it, so matching again the users whose plays or stops changed is exact.
    """
    events = (
        lake.scan(EVENTS, Events)
        .filter(pl.col("date") >= window_start, pl.col("event").is_in([PLAY, STOP]))
        .select("user_id", "event", "timestamp")
    )
    if users is not None:
        events = events.filter(pl.col("user_id").is_in(users))
    sessions = match_sessions(events).collect()
    Sessions.validate(sessions.drop("date"))  # once for all dates
    days = set(sessions["date"].unique().to_list()) | {
        d for d in lake.partitions(SESSIONS) if d >= window_start
    }
    by_date = sessions.partition_by("date", as_dict=True, include_key=False)
    empty = sessions.clear().drop("date")
    total = 0
    for day in sorted(days):
        stored = lake.read_partition(SESSIONS, day, Sessions)
        rows = by_date.get((day,), empty)
        if users is not None:  # the other users' sessions stay
            kept = stored.filter(~pl.col("user_id").is_in(users))
            rows = pl.concat([kept, rows]).sort("user_id", "play_at")
        rows = conform(rows, Sessions)
        total += len(rows)
        # Most dates' sessions come out as they were: leave those files as they are.
        if not rows.equals(stored):
            lake.write_partition(SESSIONS, day, rows)
    return total


def count_sessions(lake: Lake, *, window_start: date) -> int:
    """Sessions whose play is inside the window."""
    table = lake.scan(SESSIONS, Sessions).filter(pl.col("date") >= window_start)
    return int(table.select(pl.len()).collect().item())

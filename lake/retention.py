"""Retention (SPEC section 8): the window a run keeps, and what leaves it. A run drops the event
partitions before its window before it merges anything (remembering the keys of counted records
that could come again as tombstones), the quarantine partitions before its commit, and the raw
partitions only once it committed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

from track.lake.store import DUPLICATES, EVENTS, KEYS, PLAYS, QUARANTINE, TOMBSTONES, Lake
from track.schemas.tables import Events, Tombstones, polars_schema


def window_start_for(lake: Lake, now: datetime, retention_days: int) -> date:
    """The first retained date of a run at `now`: never earlier than the last run's."""
    start = (now.astimezone(UTC) - timedelta(days=retention_days)).date()
    last = lake.window_start
    return max(start, last) if last else start


def expire_events(lake: Lake, *, window_start: date) -> int:
    """Delete event and duplicate partitions before the window, with their plays and keys (not
    counted again: PLAYS and KEYS are made from them); the count deleted.

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
    _delete_before(lake, (PLAYS, KEYS), window_start)
    return _delete_before(lake, (EVENTS, DUPLICATES), window_start)


def expire_quarantine(lake: Lake, *, window_start: date) -> int:
    """Delete quarantine partitions before the window (after this run's files were ingested)."""
    return _delete_before(lake, (QUARANTINE,), window_start)


def expire_raw(lake: Lake, *, window_start: date) -> int:
    """Delete raw partitions before the window: only once the run that read them committed."""
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

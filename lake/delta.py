"""Every table users read is also a Delta Lake table, so notebooks and other engines (Polars'
`scan_delta`, pandas, DuckDB, Spark, Trino) read the lake without Track and never see a run
half-done.

Track writes the Parquet files itself and commits them to each table's `_delta_log/` as add
and remove actions. Its own numbered snapshot (track.lake.store) stays the commit point of the lake
as a whole, for all tables at once; right after a run creates it, `publish` brings each
table's Delta log to it: the files the snapshot names are added, the others removed. A run
killed between the two leaves a table's latest Delta version one run behind the reader until
the next run begins, whose recovery publishes it before anything else. Files are deleted only
after both: a Delta reader never meets a missing file of the latest version.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import pandera.polars as pa
import polars as pl
from deltalake import DeltaTable, Schema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    create_table_with_add_actions,
)

from track.schemas.tables import TABLE_MODELS, polars_schema

if TYPE_CHECKING:  # the lake calls this module at its commit; this module never imports it
    from track.lake.store import Lake, Snapshot

PARTITION = "date"
SNAPSHOT_KEY = "track.snapshot"
"""The custom commit metadata naming the Track snapshot a Delta version holds."""
_AWS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
)


def storage_options(url: str) -> dict[str, str] | None:
    """What `deltalake` and `pl.scan_delta` need to reach a lake's store: for S3, the standard
    AWS variables that s3fs reads too (deltalake talks to S3 through its own client), and
    conditional PUTs for its commits. None for a local folder."""
    if "://" not in url or url.startswith("file://"):
        return None
    options = {name: os.environ[name] for name in _AWS if os.environ.get(name)}
    if "AWS_REGION" not in options and os.environ.get("AWS_DEFAULT_REGION"):
        options["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"]
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    options["AWS_CONDITIONAL_PUT"] = "etag"
    return options


def scan_table(lake: str, table: str) -> pl.LazyFrame:
    """A table of a lake as Delta (its latest version): `pl.scan_delta` with the storage
    options of the lake's store, for notebooks. `date` is a Date column."""
    return pl.scan_delta(f"{lake.rstrip('/')}/{table}", storage_options=storage_options(lake))


def delta_schema(model: type[pa.DataFrameModel]) -> Schema:
    """A table's Delta schema: its model's columns and the `date` partition."""
    empty = pl.DataFrame(schema={**polars_schema(model), PARTITION: pl.Date()})
    return Schema.from_arrow(empty.to_arrow().schema)


def publish(lake: Lake, snapshot: Snapshot) -> int:
    """Bring every table's Delta log to `snapshot`: one new version for each table whose files
    differ from its latest version's (a table not yet published is created). The count of
    versions made."""
    made = 0
    for table, model in TABLE_MODELS.items():
        made += _publish_table(lake, table, model, snapshot)
    return made


def _publish_table(
    lake: Lake, table: str, model: type[pa.DataFrameModel], snapshot: Snapshot
) -> int:
    uri, options = lake.url_of(table), storage_options(lake.url)
    prefix = f"{table}/"
    parts = snapshot.tables.get(table, {})
    wanted = {name[len(prefix) :]: day for day, names in parts.items() for name in names}
    try:
        log: DeltaTable | None = DeltaTable(uri, storage_options=options)
    except TableNotFoundError:
        log = None
    current = set() if log is None else set(_paths(log))
    if log is not None and current == set(wanted):
        return 0
    now = int(time.time() * 1000)
    new = sorted(set(wanted) - current)
    adds = [_add(lake, prefix + rel, rel, wanted[rel], now, snapshot) for rel in new]
    properties = CommitProperties(custom_metadata={SNAPSHOT_KEY: str(snapshot.number)})
    if log is None:
        create_table_with_add_actions(
            uri,
            delta_schema(model),
            adds,
            mode="error",
            partition_by=[PARTITION],
            commit_properties=properties,
            storage_options=options,
        )
        return 1
    actions: list[AddAction | RemoveAction] = [
        RemoveAction(path=rel, data_change=True, deletion_timestamp=now)
        for rel in sorted(current - set(wanted))
    ]
    actions += adds
    log.create_write_transaction(
        actions,
        mode="append",
        schema=delta_schema(model),
        partition_by=[PARTITION],
        commit_properties=properties,
    )
    return 1


def _paths(log: DeltaTable) -> list[str]:
    files = pl.DataFrame(log.get_add_actions(flatten=True))
    return files["path"].to_list() if len(files) else []


def _add(lake: Lake, name: str, rel: str, day: str, now: int, snapshot: Snapshot) -> AddAction:
    """The add action of a file: its size and row count as written by this run, or read from
    the store (a file a killed run left unpublished)."""
    facts = snapshot.written.get(name)
    if facts is None:
        facts = (lake.fs.size(lake.path(name)), lake.file_rows([name])[0])
    size, rows = facts
    return AddAction(
        path=rel,
        size=size,
        partition_values={PARTITION: day},
        modification_time=now,
        data_change=True,
        stats=json.dumps({"numRecords": rows}),
    )

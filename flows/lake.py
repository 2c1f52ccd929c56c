"""The one module that knows the lake: paths, partitions, listing raw files, atomic writes.

Layout under the root URL (local folder or any fsspec URL such as s3://bucket/prefix):

    raw/date=YYYY-MM-DD/*.ndjson[.gz]|*.jsonl[.gz]   dropped by producers
    events/date=D/part-0.parquet                     accepted events (schemas.tables.Events)
    duplicates/date=D/part-0.parquet                 copies that lost to an earlier one
    quarantine/date=D/part-0.parquet                 rejected lines, by date received
    counts/date=D/part-0.parquet                     daily counts per event and user
    sessions/date=D/part-0.parquet                   sessions, by date of their play
    runs/<run_id>.json                               one run report per run
    _state/files.parquet, _state/window.json,
    _state/tombstones.parquet                        what the pipeline remembers
"""

from __future__ import annotations

import io
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import fsspec
import pandera.polars as pa
import polars as pl

from schemas.constants import RAW_SUFFIXES
from schemas.tables import polars_schema

PART = "part-0.parquet"
RAW = "raw"
STATE = "_state"
RUNS = "runs"
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class RawFile:
    """A raw file as listed: its path relative to raw/, size and last-modified time."""

    path: str
    size: int
    modified: datetime


def _to_ms(moment: datetime) -> datetime:
    """A UTC instant cut to milliseconds, the precision of every instant in the lake."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _modified(info: dict[str, Any]) -> datetime:
    if "LastModified" in info:  # s3fs
        return _to_ms(info["LastModified"])
    if "mtime" in info:  # local and most others
        mtime = info["mtime"]
        if isinstance(mtime, datetime):
            return _to_ms(mtime if mtime.tzinfo else mtime.replace(tzinfo=UTC))
        return _to_ms(datetime.fromtimestamp(float(mtime), UTC))
    raise KeyError(f"the store gives no last-modified time for {info.get('name')}")


def partition_date(name: str) -> date | None:
    """The date of a `date=YYYY-MM-DD` folder name, or None if it is not a real one."""
    match = _DATE_DIR.match(name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def is_raw_name(name: str) -> bool:
    """Whether a file name is one producers may drop (SPEC 1), in-progress uploads excluded."""
    return not name.startswith((".", "_")) and name.endswith(RAW_SUFFIXES)


class Lake:
    """A lake at a root URL, through fsspec."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url)
        self.base = self.base.rstrip("/")
        self.local = (
            "file" in self.fs.protocol
            if isinstance(self.fs.protocol, tuple)
            else (self.fs.protocol == "file")
        )

    def path(self, *parts: str) -> str:
        """The store path of a location under the root."""
        return "/".join([self.base, *parts])

    # Raw files -------------------------------------------------------------------------------

    def list_raw(self) -> tuple[list[RawFile], list[str]]:
        """Raw files to consider, and the other paths under raw/ that are not (SPEC 1)."""
        self.fs.invalidate_cache()
        root = self.path(RAW)
        if not self.fs.exists(root):
            return [], []
        files, ignored = [], []
        for full, info in sorted(self.fs.find(root, detail=True).items()):
            rel = full[len(root) + 1 :]
            parts = rel.split("/")
            name = parts[-1]
            if len(parts) == 2 and partition_date(parts[0]) and is_raw_name(name):
                files.append(RawFile(rel, int(info["size"]), _modified(info)))
            elif not (len(parts) == 2 and name.startswith((".", "_"))):
                ignored.append(rel)
        return files, ignored

    def raw_info(self, rel: str) -> RawFile:
        """The raw file as it is now (size and last-modified time)."""
        info = self.fs.info(self.path(RAW, rel))
        return RawFile(rel, int(info["size"]), _modified(info))

    def read_raw(self, rel: str) -> bytes:
        """The bytes of a raw file."""
        return self.fs.cat_file(self.path(RAW, rel))

    # Partitioned tables ----------------------------------------------------------------------

    def partitions(self, table: str) -> list[date]:
        """The dates a table has partitions for, oldest first."""
        root = self.path(table)
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(root, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(d for d in map(partition_date, names) if d is not None)

    def _part(self, table: str, day: date) -> str:
        return self.path(table, f"date={day.isoformat()}", PART)

    def read_partition(self, table: str, day: date, model: type[pa.DataFrameModel]) -> pl.DataFrame:
        """One partition's rows (empty, with the model's columns, if there is none)."""
        try:
            with self.fs.open(self._part(table, day), "rb") as f:
                return pl.read_parquet(f)
        except FileNotFoundError:
            return pl.DataFrame(schema=polars_schema(model))

    def write_partition(self, table: str, day: date, rows: pl.DataFrame) -> None:
        """Replace a partition with `rows` in one atomic write; no rows removes it."""
        if rows.is_empty():
            self.delete_partition(table, day)
        else:
            self._write_bytes(self._part(table, day), _parquet_bytes(rows))

    def delete_partition(self, table: str, day: date) -> None:
        """Remove a partition folder, if it is there."""
        folder = self.path(table, f"date={day.isoformat()}")
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)

    def scan(self, table: str, model: type[pa.DataFrameModel]) -> pl.LazyFrame:
        """A table with its `date` key as a column, as `polars.scan_parquet` reads it."""
        self.fs.invalidate_cache()
        files = sorted(self.fs.glob(self.path(table, "date=*", "*.parquet")))
        schema = {**polars_schema(model), "date": pl.Date()}
        if not files:
            return pl.LazyFrame(schema=schema)
        if self.local:
            return pl.scan_parquet(files, hive_partitioning=True, hive_schema={"date": pl.Date()})
        frames = []
        for name in files:
            with self.fs.open(name, "rb") as f:
                day = partition_date(name.rsplit("/", 2)[-2])
                frames.append(pl.read_parquet(f).with_columns(date=pl.lit(day)))
        return pl.concat(frames).lazy().select(list(schema))

    # State and reports -----------------------------------------------------------------------

    def read_json(self, *parts: str) -> Any:
        """A JSON document under the root, or None if there is none."""
        try:
            return json.loads(self.fs.cat_file(self.path(*parts)))
        except FileNotFoundError:
            return None

    def write_json(self, value: Any, *parts: str) -> None:
        """Write a JSON document atomically."""
        self._write_bytes(self.path(*parts), json.dumps(value, indent=2, default=str).encode())

    def read_table_file(self, model: type[pa.DataFrameModel], *parts: str) -> pl.DataFrame:
        """A single-file Parquet table (empty with the model's columns if absent)."""
        try:
            with self.fs.open(self.path(*parts), "rb") as f:
                return pl.read_parquet(f)
        except FileNotFoundError:
            return pl.DataFrame(schema=polars_schema(model))

    def read_parquet(self, *parts: str) -> pl.DataFrame:
        """A Parquet file under the root that must exist."""
        with self.fs.open(self.path(*parts), "rb") as f:
            return pl.read_parquet(f)

    def remove(self, *parts: str) -> None:
        """Delete a file or folder under the root, if it is there."""
        target = self.path(*parts)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    def write_table_file(self, rows: pl.DataFrame, *parts: str) -> None:
        """Write a single-file Parquet table atomically."""
        self._write_bytes(self.path(*parts), _parquet_bytes(rows))

    def _write_bytes(self, target: str, data: bytes) -> None:
        # A single PUT is atomic on object stores; locally, write aside then rename.
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if not self.local:
            self.fs.pipe_file(target, data)
            return
        temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(temp, data)
        self.fs.mv(temp, target)


def _parquet_bytes(rows: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    rows.write_parquet(buffer)
    return buffer.getvalue()

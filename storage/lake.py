"""Writing the Parquet lake: atomic, date-partitioned, idempotent under replay.

Layout: `DATA_DIR/lake/<table>/date=YYYY-MM-DD/<part>-<seq>.parquet`.

Why the names: a writer (one per sink partition) numbers its files with a sequence number that
is saved in the Bytewax snapshot. After a crash the flow resumes from the last snapshot, so the
writer deletes every file of its own numbered at or above the saved sequence and the replayed
input rewrites them. The lake therefore never holds a row twice and never loses one.
Files are written under a temporary name that the `*.parquet` glob does not match, then
`os.replace`d, so a reader never sees a partial file.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.tables import TABLES, Table

EMPTY_PARTITION = "date=1970-01-01"
_FILE_RE = re.compile(r"^(?P<part>.+)-(?P<seq>\d{10})\.parquet$")


def table_dir(lake_dir: Path, table: str) -> Path:
    return lake_dir / table


def table_glob(lake_dir: Path, table: str) -> str:
    return str(table_dir(lake_dir, table).resolve() / "*" / "*.parquet")


def ensure_table(lake_dir: Path, table: Table) -> None:
    """Create the table's folder with a zero-row file, so a glob over it always matches."""
    d = table_dir(lake_dir, table.name) / EMPTY_PARTITION
    f = d / "empty.parquet"
    if not f.exists():
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write(table.schema.empty_table(), f)


def ensure_lake(lake_dir: Path) -> None:
    for t in TABLES.values():
        ensure_table(lake_dir, t)


def _atomic_write(data: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(data, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _date_key(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    raise TypeError(f"partition column holds {type(value).__name__}, not datetime")


class LakeWriter:
    """Writes numbered files for one (table, writer part); see the module docstring."""

    def __init__(self, lake_dir: Path, table: str, part: str):
        if not re.fullmatch(r"[A-Za-z0-9_.]+", part):
            raise ValueError(f"writer part name {part!r} must be [A-Za-z0-9_.]+")
        self.table = TABLES[table]
        self.dir = table_dir(lake_dir, table)
        self.part = part
        ensure_table(lake_dir, self.table)

    def _own_files(self) -> Iterable[tuple[Path, int | None]]:
        for f in self.dir.glob("*/*"):
            name = f.name
            if name.startswith(".") and name.endswith(".tmp"):
                m = _FILE_RE.match(name[1:-4])
                if m and m["part"] == self.part:
                    yield f, None
                continue
            m = _FILE_RE.match(name)
            if m and m["part"] == self.part:
                yield f, int(m["seq"])

    def next_seq_on_disk(self) -> int:
        """The first unused sequence number (used when there is no snapshot to resume from)."""
        return max((s + 1 for _, s in self._own_files() if s is not None), default=0)

    def discard_from(self, seq: int) -> int:
        """Delete this writer's files numbered >= seq and its temp files; return how many."""
        n = 0
        for f, s in list(self._own_files()):
            if s is None or s >= seq:
                f.unlink(missing_ok=True)
                n += 1
        return n

    def write(self, rows: list[Mapping[str, Any]], seq: int) -> list[Path]:
        """Write rows as file number `seq`, one file per date partition they touch."""
        by_date: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        col = self.table.date_column
        for r in rows:
            by_date[_date_key(r[col])].append(r)
        written = []
        for date, part_rows in sorted(by_date.items()):
            d = self.dir / f"date={date}"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{self.part}-{seq:010d}.parquet"
            _atomic_write(pa.Table.from_pylist(part_rows, schema=self.table.schema), path)
            written.append(path)
        return written

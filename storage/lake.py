"""Writing the Parquet lake: atomic, date-partitioned, idempotent under replay.

Layout: `DATA_DIR/lake/<table>/date=YYYY-MM-DD/<part>-<seq>.parquet`.

Why the names: a writer (one per sink partition) numbers its files with a sequence number that
is saved in the Bytewax snapshot. After a crash the flow resumes from the last snapshot, so the
writer deletes every file of its own numbered at or above the saved sequence and the replayed
input rewrites them. The lake therefore never holds a row twice and never loses one.
Files are written under a temporary name that the `*.parquet` glob does not match, then
`os.replace`d, so a reader never sees a partial file. Small files behind long-committed
snapshots are merged (`<part>-<first>-<last>.parquet`) so a long event does not leave tens of
thousands of tiny files for every query to open.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.tables import TABLES, Table

EMPTY_PARTITION = "date=1970-01-01"
_FILE_RE = re.compile(r"^(?P<part>[A-Za-z0-9_.]+)-(?P<seq>\d{10})(?:-(?P<last>\d{10}))?\.parquet$")


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


_EPOCH_DAY = date(1970, 1, 1)


def _day_number(value: Any) -> int:
    """UTC day since 1970 of an aware datetime (formatting a date string per row cost 2 µs)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError(f"partition column holds {value!r}, not an aware datetime")
    return int(value.timestamp() // 86400)


@dataclass(frozen=True, slots=True)
class OwnFile:
    """A file of one writer: numbers `first..last` (equal unless it is a compacted file)."""

    path: Path
    first: int
    last: int


class LakeWriter:
    """Writes numbered files for one (table, writer part); see the module docstring."""

    def __init__(self, lake_dir: Path, table: str, part: str):
        if not re.fullmatch(r"[A-Za-z0-9_.]+", part):
            raise ValueError(f"writer part name {part!r} must be [A-Za-z0-9_.]+")
        self.table = TABLES[table]
        self.dir = table_dir(lake_dir, table)
        self.part = part
        ensure_table(lake_dir, self.table)

    @property
    def fresh_marker(self) -> Path:
        """Present while this writer's first run has not yet committed a snapshot."""
        return self.dir / f".{self.part}.uncommitted"

    def _match(self, name: str) -> OwnFile | None:
        m = _FILE_RE.match(name)
        if not m or m["part"] != self.part:
            return None
        first = int(m["seq"])
        return OwnFile(Path(name), first, int(m["last"]) if m["last"] else first)

    def own_files(self) -> list[OwnFile]:
        """This writer's visible files."""
        out = []
        for f in self.dir.glob("*/*.parquet"):
            own = self._match(f.name)
            if own:
                out.append(OwnFile(f, own.first, own.last))
        return out

    def _hidden(self, suffix: str) -> list[tuple[Path, OwnFile]]:
        out = []
        for f in self.dir.glob(f"*/.*{suffix}"):
            own = self._match(f.name[1 : -len(suffix)])
            if own:
                out.append((f, own))
        return out

    def next_seq_on_disk(self) -> int:
        """The first unused sequence number (used when there is no snapshot to resume from)."""
        return max((f.last + 1 for f in self.own_files()), default=0)

    def recover(self) -> None:
        """Finish what a crash interrupted: drop temp files, complete interrupted compactions."""
        for f, _ in self._hidden(".tmp"):
            f.unlink(missing_ok=True)
        for intent, target in self._hidden(".compacting"):
            for f in self.own_files():
                if f.path.parent == intent.parent and target.first <= f.first <= target.last:
                    f.path.unlink()
            os.replace(intent, intent.parent / target.path.name)

    def discard_from(self, seq: int) -> int:
        """Delete this writer's files numbered >= seq (the replay rewrites them); count them."""
        self.recover()
        n = 0
        for f in self.own_files():
            if f.first >= seq:
                f.path.unlink(missing_ok=True)
                n += 1
            elif f.last >= seq:  # cannot happen: only files behind old snapshots are compacted
                raise RuntimeError(f"{f.path} spans resume point {seq}; refusing to guess")
        return n

    def write(self, rows: list[Mapping[str, Any]], seq: int) -> list[Path]:
        """Write rows as file number `seq`, one file per date partition they touch."""
        by_day: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
        col = self.table.date_column
        for r in rows:
            by_day[_day_number(r[col])].append(r)
        written = []
        for day, part_rows in sorted(by_day.items()):
            d = self.dir / f"date={_EPOCH_DAY + timedelta(days=day)}"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{self.part}-{seq:010d}.parquet"
            _atomic_write(pa.Table.from_pylist(part_rows, schema=self.table.schema), path)
            written.append(path)
        return written

    def compact(self, below: int, min_files: int, small_rows: int) -> int:
        """Merge small files numbered < `below` into one per date folder; return files merged.

        Only call with `below` from a snapshot that is certainly committed: those files can
        never be discarded by a resume. The merge is crash-safe: the merged file is written
        hidden, renamed to a `.compacting` intent, the sources are deleted, then it is renamed
        into view; `recover()` finishes an interrupted one. Readers may briefly miss those
        rows (between the deletes and the rename) but never see them twice.
        """
        by_dir: dict[Path, list[OwnFile]] = defaultdict(list)
        for f in self.own_files():
            if f.last < below and pq.ParquetFile(f.path).metadata.num_rows < small_rows:
                by_dir[f.path.parent].append(f)
        merged = 0
        for d, files in by_dir.items():
            if len(files) < min_files:
                continue
            files.sort(key=lambda f: f.first)
            first, last = files[0].first, files[-1].last
            name = f"{self.part}-{first:010d}-{last:010d}.parquet"
            data = pa.concat_tables(
                [pq.read_table(f.path, schema=self.table.schema) for f in files]
            )
            intent = d / f".{name}.compacting"
            _atomic_write(data, intent)
            for f in files:
                f.path.unlink()
            os.replace(intent, d / name)
            merged += len(files)
        return merged

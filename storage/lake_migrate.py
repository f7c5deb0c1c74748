"""Importing a lake of the old layout (numbered Parquet files per sink part) into Delta tables.

Old layout: `<lake>/<table>/date=YYYY-MM-DD/<part>-<seq>[-<last>].parquet`, a hidden
`.<name>.compacting` for an interrupted merge, `.<part>.uncommitted` first-run markers. Each
file's rows become rows of writer `<part>` (the sink's writer id is its old part name) with
flush number `<last>`, and the writer's committed version is its highest number — so a flow
resuming from a snapshot taken before the import replaces exactly the flushes the old design
would have rewritten. Rows are counted before and after; the old folder is moved aside to
`DATA_DIR/lake-old-layout/` only once the counts are equal.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, Transaction, write_deltalake

from storage.lake import (
    as_lake,
    first_run_app,
    old_layout_tables,
    open_table,
    with_lake_columns,
)
from storage.tables import TABLES

_FILE_RE = re.compile(r"^(?P<part>[A-Za-z0-9_.]+)-(?P<seq>\d{10})(?:-(?P<last>\d{10}))?\.parquet$")


class MigrationError(RuntimeError):
    pass


def _finish_compactions(table_dir: Path) -> None:
    """Complete a merge the old writer was killed in (as its `recover()` did)."""
    for intent in table_dir.glob("*/.*.parquet.compacting"):
        m = _FILE_RE.match(intent.name[1 : -len(".compacting")])
        if not m:
            continue
        first, last = int(m["seq"]), int(m["last"] or m["seq"])
        for f in intent.parent.glob(f"{m['part']}-*.parquet"):
            fm = _FILE_RE.match(f.name)
            if fm and fm["part"] == m["part"] and first <= int(fm["seq"]) <= last:
                f.unlink()
        intent.rename(intent.parent / intent.name[1 : -len(".compacting")])


def migrate_table(lake_dir: Path, name: str, aside: Path) -> tuple[int, int]:
    """Import one old-layout table; return (rows before, rows after)."""
    table = TABLES[name]
    old = lake_dir / name
    _finish_compactions(old)
    by_writer: dict[str, list[pa.Table]] = defaultdict(list)
    last_flush: dict[str, int] = {}
    before = 0
    for f in sorted(old.glob("date=*/*.parquet")):
        m = _FILE_RE.match(f.name)
        if not m:
            continue  # empty.parquet
        data = pq.read_table(f, schema=table.schema)
        before += data.num_rows
        flush = int(m["last"] or m["seq"])
        part = m["part"]
        by_writer[part].append(with_lake_columns(table, data, part, flush))
        last_flush[part] = max(flush, last_flush.get(part, -1))
    staging = lake_dir.parent / "lake-migrating"
    shutil.rmtree(staging / name, ignore_errors=True)
    staged = as_lake(staging)
    dt = open_table(staged, name)
    # a writer whose first run had not snapshotted: the mark moves into the table's log
    unfinished = sorted(mk.name[1 : -len(".uncommitted")] for mk in old.glob(".*.uncommitted"))
    if by_writer:
        txns = [Transaction(app_id=w, version=v) for w, v in sorted(last_flush.items())]
        txns += [Transaction(app_id=first_run_app(w), version=1) for w in unfinished]
        data = pa.concat_tables([t for ts in by_writer.values() for t in ts])
        write_deltalake(
            dt, data, mode="append", commit_properties=CommitProperties(app_transactions=txns)
        )
    dt.update_incremental()
    after = dt.count()
    if after != before:
        raise MigrationError(f"{name}: {before} rows in the old files but {after} imported")
    aside.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(aside / name, ignore_errors=True)
    old.rename(aside / name)
    (staging / name).rename(old)
    return before, after


def migrate(lake_dir: Path) -> dict[str, tuple[int, int]]:
    """Import every old-layout table of `lake_dir` (none: nothing to do)."""
    aside = lake_dir.parent / "lake-old-layout"
    staging = lake_dir.parent / "lake-migrating"
    for name in TABLES:  # killed between moving the old folder aside and the new one in
        if not (lake_dir / name).exists() and (staging / name / "_delta_log").is_dir():
            (staging / name).rename(lake_dir / name)
    out = {name: migrate_table(lake_dir, name, aside) for name in old_layout_tables(lake_dir)}
    shutil.rmtree(staging, ignore_errors=True)
    return out

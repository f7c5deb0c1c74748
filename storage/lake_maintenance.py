"""Lake maintenance with Delta's own tools: compaction, checkpoints, log cleanup, vacuum.

Each step is one Delta operation, so it is safe while flows commit and readers query, and safe
to kill at any point (a compaction is one commit; vacuum deletes only files that no version
within the retention references; a checkpoint is written before `_last_checkpoint` points to
it). A compaction that conflicts with a writer's commit is retried with backoff
(`storage.lake.retrying`); one that still fails leaves the small files, which are correct.

Measured reasons (in the lake prototype; operating notes in `docs/lake.md`):
- `optimize.compact` writes row groups of `ROW_GROUP_ROWS` (DuckDB reads one row group per
  thread; the default wrote one 1M-row group, so one thread);
- the log is checkpointed and entries older than `delta.logRetentionDuration` (2 days) are
  removed: at a commit every 2 s the default 30 days kept ~1.3M log files per writer-table;
- vacuum keeps replaced files for `LAKE_VACUUM_RETENTION_H` (default 1 h, longer than any
  query: a reader of an older version fails only if its files go while it runs). Vacuum runs
  in "lite" mode: it deletes only files a commit removed, never a file a writer has written
  but not yet committed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import WriterProperties

from storage.lake import Lake, open_table, retrying
from storage.tables import TABLES

log = logging.getLogger(__name__)

#: Rows per row group written by compaction (DuckDB's row-group size; parallel scans).
ROW_GROUP_ROWS = 122_880


@dataclass(frozen=True, slots=True)
class MaintainResult:
    table: str
    files_removed: int
    files_added: int
    vacuumed: int
    version: int


def maintain_table(lake: Lake, name: str, retention_h: int) -> MaintainResult:
    """Compact, checkpoint, clean the log and vacuum one table. Each step opens the table
    afresh: writers clean the log after their own checkpoints too, so a snapshot held across
    steps can fall behind it (see `storage.lake.stale_log`)."""
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="ZSTD")

    def compact() -> dict[str, Any]:
        return open_table(lake, name).optimize.compact(writer_properties=props)

    metrics = retrying(f"{name}: compaction", compact)
    checkpoint_table(lake, name)
    vacuumed = vacuum_table(lake, name, retention_h)
    dt = open_table(lake, name)
    return MaintainResult(
        name,
        int(metrics.get("numFilesRemoved", 0)),
        int(metrics.get("numFilesAdded", 0)),
        len(vacuumed),
        dt.version(),
    )


def checkpoint_table(lake: Lake, name: str) -> None:
    """Write a checkpoint and delete log entries older than the log retention."""

    def checkpoint() -> None:
        dt = open_table(lake, name)
        dt.create_checkpoint()
        dt.cleanup_metadata()

    retrying(f"{name}: checkpoint", checkpoint)


def vacuum_table(lake: Lake, name: str, retention_h: int) -> list[str]:
    """Delete files that commits removed more than `retention_h` hours ago (lite mode)."""

    def vacuum() -> list[str]:
        return open_table(lake, name).vacuum(
            retention_hours=retention_h, dry_run=False, enforce_retention_duration=False
        )

    return retrying(f"{name}: vacuum", vacuum)


def maintain(lake: Lake, retention_h: int, tables: list[str] | None = None) -> list[MaintainResult]:
    """Maintain every lake table (or `tables`); a table that fails is logged and skipped."""
    out = []
    for name in tables or list(TABLES):
        try:
            out.append(maintain_table(lake, name, retention_h))
        except Exception as exc:  # one table's trouble must not stop the others' upkeep
            log.warning("lake maintenance of %s failed: %s", name, exc)
    return out


@dataclass(frozen=True, slots=True)
class TableStatus:
    table: str
    version: int
    rows: int
    files: int
    data_bytes: int
    log_files: int | None  # local lakes only
    log_bytes: int | None
    last_commit: str

    def row(self) -> dict[str, Any]:
        return asdict(self)


def table_status(lake: Lake, name: str) -> TableStatus:
    dt = open_table(lake, name)
    d = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
    hist = dt.history(1)
    last = hist[0].get("timestamp") if hist else None
    log_files = log_bytes = None
    if lake.local:
        logs = [p for p in (Path(lake.table_uri(name)) / "_delta_log").iterdir() if p.is_file()]
        log_files, log_bytes = len(logs), sum(p.stat().st_size for p in logs)
    return TableStatus(
        name,
        dt.version(),
        int(sum(n or 0 for n in d["num_records"])),
        len(d["size_bytes"]),
        int(sum(d["size_bytes"])),
        log_files,
        log_bytes,
        _iso_ms(last) if last else "",
    )


def history(lake: Lake, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The table's versions, newest first: version, time, operation, writer, rows added."""
    out = []
    for h in open_table(lake, name).history(limit):
        metrics = h.get("operationMetrics") or {}
        out.append(
            {
                "version": h.get("version"),
                "time": _iso_ms(h["timestamp"]) if h.get("timestamp") else "",
                "operation": h.get("operation", ""),
                "rows_added": metrics.get("num_added_rows", metrics.get("numOutputRows")),
                "files_added": metrics.get("num_added_files", metrics.get("numFilesAdded")),
                "files_removed": metrics.get("num_removed_files", metrics.get("numFilesRemoved")),
            }
        )
    return out


def versions_as_of(lake: Lake, when: datetime) -> dict[str, int]:
    """Each table's version as of `when` (time travel); version 0 (empty, as created) for a
    table whose first commit is later than `when`."""
    out = {}
    for name in TABLES:
        dt = open_table(lake, name)
        try:
            dt.load_as_version(when)
            out[name] = dt.version()
        except Exception:  # no version at or before `when`
            out[name] = 0
    return out


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")

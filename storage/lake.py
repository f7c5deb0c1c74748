"""The lake: one Delta Lake table (delta-rs, the `deltalake` package) per table of
`storage.tables`, at `<lake>/<table>`, partitioned by the UTC date of the table's date column.

`<lake>` is `DATA_DIR/lake` by default, or `LAKE_URI=s3://bucket/prefix` (S3-compatible
object storage; see `Lake.from_settings`). Why Delta: `docs/lake.md` ("Why Delta").

Exactly once, by transaction. Every writer (one per sink partition of a flow) has an id, and
each row it writes carries that id and the writer's flush number (`_writer`, `_flush`; the
catalog's views hide both). A flush is one Delta commit that also records a Delta application
transaction `(app id = writer id, version = flush number)`, so "was flush N committed?" is
answered by the table itself, and survives checkpoints, log cleanup and vacuum.

After a crash the flow resumes from its last Bytewax snapshot, which holds the flush number N
it had reached. If the table's committed version for the writer is >= N, flushes after that
snapshot were committed and the replay will produce those rows again — possibly cut into
different batches, since flushes happen by age as well as size. So the first flush after such
a resume is an atomic delete-and-append: `write_deltalake(mode="overwrite",
predicate="_writer = '<id>' AND _flush >= N")` replaces exactly the rows written after the
snapshot in one commit. Readers never see a row twice, and nothing is deleted that the replay
does not write again. A commit that conflicts with another writer or with maintenance is
retried with backoff after refreshing the table; a retry first checks whether the flush did in
fact commit (its version is the writer's committed one) and then skips it.

Readers (DuckDB's `delta_scan`, see `storage.catalog`) read one committed version: no missing
file, no partial commit, no count going backwards while maintenance runs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from core.lake_location import Lake, as_lake
from storage.tables import TABLES, Table

log = logging.getLogger(__name__)

#: The partition column every lake table has: the UTC date of its `date_column`.
PARTITION = "date"
#: Bookkeeping columns of the exactly-once protocol (hidden by the catalog's views).
WRITER_COL, FLUSH_COL = "_writer", "_flush"
INTERNAL_COLUMNS = (WRITER_COL, FLUSH_COL)
_WRITER_RE = re.compile(r"[A-Za-z0-9_.]+")

#: Log entries older than this go at each checkpoint (every 100 commits). The Delta default,
#: 30 days, would keep ~1.3M log files per writer and table at one commit every 2 s.
LOG_RETENTION = "interval 2 days"
#: The table default for vacuum; `lake maintain` passes its own retention (>= 1 h default).
DELETED_FILE_RETENTION = "interval 1 hours"
CHECKPOINT_INTERVAL = 100
#: A writer reopens its table once it has carried this many commits forward (`LakeWriter`).
RELOAD_EVERY = 25

T = TypeVar("T")


def lake_schema(table: Table) -> pa.Schema:
    """The Delta table's schema: the table's columns, the date partition, the writer columns."""
    return (
        table.schema.append(pa.field(PARTITION, pa.date32()))
        .append(pa.field(WRITER_COL, pa.string()))
        .append(pa.field(FLUSH_COL, pa.int64()))
    )


def table_configuration(table: Table) -> dict[str, str]:
    """Delta table properties. Personal columns are kept out of file statistics (min/max in
    the log would otherwise keep a copy of a name after its erasure)."""
    stats = [c for c in lake_schema(table).names if c not in table.personal]
    return {
        "delta.logRetentionDuration": LOG_RETENTION,
        "delta.deletedFileRetentionDuration": DELETED_FILE_RETENTION,
        "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
        "delta.dataSkippingStatsColumns": ",".join(stats),
    }


def stale_log(exc: BaseException) -> bool:
    """Did an operation fail because log entries its table snapshot needs were cleaned up?

    Log cleanup (ours, and delta-rs's own after each checkpoint) deletes entries older than
    `delta.logRetentionDuration`; an open table whose version is older than that can no longer
    catch up incrementally and must be reloaded from the newest checkpoint (seen with the
    retention forced to 1 s: `Object at location .../00000000000000000034.json not found`)."""
    return isinstance(exc, FileNotFoundError) or (
        isinstance(exc, DeltaError) and "not found" in str(exc).lower()
    )


def retrying(
    what: str, fn: Callable[[], T], reload: Callable[[], None] | None = None, attempts: int = 30
) -> T:
    """Run a commit, retrying conflicts with backoff (5 ms doubling to 1 s), and reloading the
    table (`reload`) when its snapshot fell behind the cleaned log. delta-rs itself already
    retries plain appends that race (two writers: 58-79 of 500 commits)."""
    delay = 0.005
    for attempt in range(attempts):
        try:
            return fn()
        except (CommitFailedError, OSError, DeltaError) as exc:
            if attempt == attempts - 1:
                log.exception("%s: giving up after %d attempts", what, attempts)
                raise
            conflict = isinstance(exc, CommitFailedError)
            # Anything else (a stale snapshot after log cleanup, a log or checkpoint file read
            # while maintenance replaced it) is retried on a reloaded table: a commit checks
            # its own transaction version first, so a retry never writes a flush twice. Seen
            # once in CI with maintenance forced every 0.1 s; the message is logged to say which.
            log.log(logging.INFO if conflict else logging.WARNING,
                    "%s: %s (%s); retrying in %.0f ms", what,
                    "conflict" if conflict else "stale" if stale_log(exc) else "error",
                    exc, delay * 1e3)  # fmt: skip
            if not conflict and reload is not None:
                with contextlib.suppress(OSError, DeltaError):  # the next attempt says again
                    reload()
        time.sleep(delay)
        delay = min(1.0, delay * 2)
    raise AssertionError("unreachable")


#: Opening a table lists its `_delta_log`, then reads the entries after the newest
#: checkpoint; log cleanup (maintenance, or a writer's own after its checkpoint) may delete a
#: listed entry in between. Seen in CI: `run.py lake maintain` died at start with `Kernel
#: error: File not found: .../_delta_log/00000000000000000010.json` (maintenance every 0.1 s,
#: 1 s log retention, tests/test_lake_readers.py). Listing again finds the checkpoint that
#: replaced the entry, so such an open is retried.
OPEN_RETRIES = 5


def open_table(lake: Lake | Path, table: str, create: bool = True) -> DeltaTable:
    """Open a lake table, creating it empty (with its properties) if it does not exist."""
    lake = as_lake(lake)
    uri = lake.table_uri(table)
    for attempt in range(OPEN_RETRIES + 1):
        try:
            return DeltaTable(uri, storage_options=lake.options())
        except TableNotFoundError:
            if not create:
                raise
            break
        except DeltaError as exc:
            if attempt == OPEN_RETRIES or not stale_log(exc):
                raise
            log.warning("%s: a log entry vanished while the table opened (%s); again", table, exc)
            time.sleep(0.01 * (attempt + 1))
    if lake.local:
        Path(uri).mkdir(parents=True, exist_ok=True)
    try:
        return DeltaTable.create(
            uri,
            schema=lake_schema(TABLES[table]),
            partition_by=[PARTITION],
            mode="ignore",
            configuration=table_configuration(TABLES[table]),
            storage_options=lake.options(),
        )
    except (CommitFailedError, DeltaError):  # another process created it at the same moment
        return DeltaTable(uri, storage_options=lake.options())


class OldLayoutError(RuntimeError):
    """The lake folder holds tables written before the lake became Delta tables."""


def old_layout_tables(lake_dir: Path) -> list[str]:
    """Tables under `lake_dir` in the old layout (`date=*/*.parquet`, no `_delta_log`)."""
    return [
        name
        for name in TABLES
        if (lake_dir / name).is_dir()
        and not (lake_dir / name / "_delta_log").is_dir()
        and any((lake_dir / name).glob("date=*/*.parquet"))
    ]


def ensure_lake(lake: Lake | Path) -> None:
    """Create every lake table that does not exist yet (refusing an old-layout lake)."""
    lake = as_lake(lake)
    if lake.local:
        old = old_layout_tables(Path(lake.uri))
        if old:
            raise OldLayoutError(
                f"the lake {lake.uri} holds tables in the old numbered-Parquet layout "
                f"({', '.join(old)}); import them once with: uv run run.py lake migrate"
            )
    for name in TABLES:
        open_table(lake, name)


def to_arrow(table: Table, rows: list[Mapping[str, Any]], writer: str, flush: int) -> pa.Table:
    """Rows as the Delta table's Arrow table (date partition and writer columns added)."""
    data = pa.Table.from_pylist(rows, schema=table.schema)
    return with_lake_columns(table, data, writer, flush)


def with_lake_columns(table: Table, data: pa.Table, writer: str, flush: int) -> pa.Table:
    ts = data.column(table.date_column)
    if ts.null_count:
        raise TypeError(f"{table.name}.{table.date_column} holds nulls; it picks the partition")
    day = pc.cast(pc.cast(ts, pa.timestamp("us", tz="UTC")), pa.date32())
    n = data.num_rows
    return (
        data.append_column(pa.field(PARTITION, pa.date32()), day)
        .append_column(pa.field(WRITER_COL, pa.string()), pa.array([writer] * n, pa.string()))
        .append_column(pa.field(FLUSH_COL, pa.int64()), pa.array([flush] * n, pa.int64()))
    )


def first_run_app(writer: str) -> str:
    """The Delta application id recording writer `writer`'s first run: its version is odd
    while the run has not yet taken a snapshot, even after (each change one empty commit, the
    version only grows). In the table's log rather than in a local file so that a cluster
    across machines, whose writer may come back on another machine after dying before its
    first snapshot, finds it there (the local file left such a writer refusing to start).
    `:` is not allowed in writer ids, so no writer's own id can collide with it."""
    return f"first-run:{writer}"


class LakeWriter:
    """One writer of one table (a sink partition): commits flushes exactly once; see the
    module docstring. Keeps its `DeltaTable` open (reloading it per commit cost ~250 ms on
    S3), but opens it afresh once it has carried `reload_every` (`RELOAD_EVERY`) commits
    forward (issue 15).

    Why: delta-rs moves an open table to each new version incrementally, and the state it
    keeps that way grew with every commit carried forward; a table loaded afresh reads the
    newest checkpoint instead. Measured (2026-12-05, a script writing 2,000-row flushes of
    `events` into a fresh local table, RSS of the writing process): kept open, 207 -> 286 MiB
    over 600 commits, linear (+135 KiB per commit; checkpoints every 100 did not stop it);
    reopened every 100 commits 209 -> 243 MiB, every 25 210 -> 250 MiB (what is left grows
    with the table's files, which `lake maintain` compacts); a reopening took 6-14 ms. The
    events flow alone at 2,000 ev/s committed 15 times a minute to `events` and grew 253 ->
    269 MiB in 11 minutes while its Python objects, glibc's heap (mallinfo2: 17.4 -> 17.6 MiB
    in use) and Arrow's pool stayed flat: the growth was on the Rust side (delta-rs bundles
    jemalloc); in `bench.soak` the events and check-in flows grew +2.4 and +1.7 MiB/min.
    Between two reopenings the state grows by at most ~25 x 135 KiB. `reload_every` counts
    versions, so other writers' commits to a shared table count too."""

    def __init__(self, lake: Lake | Path, table: str, writer: str, reload_every: int | None = None):
        if not _WRITER_RE.fullmatch(writer):
            raise ValueError(f"writer id {writer!r} must be [A-Za-z0-9_.]+")
        self.lake = as_lake(lake)
        self.table = TABLES[table]
        self.writer = writer
        self.reload_every = reload_every or RELOAD_EVERY
        self.dt = open_table(self.lake, table)
        self.loaded_version = self.dt.version()

    @property
    def legacy_marker(self) -> Path:
        """The first-run marker as a local file (before it moved into the table's log); still
        honoured, and removed with the first run's end."""
        return self.lake.state_dir / self.table.name / f"{self.writer}.uncommitted"

    def first_run(self) -> bool:
        """Whether this writer's first run has not yet committed a snapshot. Read from the
        table's own log (`first_run_app`), so every machine of a cluster sees it."""
        self.refresh()
        version = self.dt.transaction_version(first_run_app(self.writer))
        return (version or 0) % 2 == 1 or self.legacy_marker.exists()

    def mark_first_run(self) -> None:
        """Record in the table that this writer's first run has begun (no rows: one commit
        holding only the application transaction)."""
        self._first_run_to(odd=True)

    def clear_first_run(self) -> None:
        """Record that the first run has snapshotted: from now on rows of this writer with no
        recovery state for them mean the state was lost (`LakeSink` refuses to guess)."""
        self._first_run_to(odd=False)
        self.legacy_marker.unlink(missing_ok=True)

    def _first_run_to(self, odd: bool) -> None:
        app = first_run_app(self.writer)
        empty = with_lake_columns(self.table, self.table.schema.empty_table(), self.writer, 0)

        def commit() -> None:
            self.refresh()
            version = self.dt.transaction_version(app) or 0
            if version % 2 == int(odd):
                return  # already so (a retried attempt that did commit, or nothing to do)
            txn = Transaction(app_id=app, version=version + 1)
            write_deltalake(
                self.dt,
                empty,
                mode="append",
                commit_properties=CommitProperties(app_transactions=[txn]),
            )

        retrying(f"{self.table.name}/{app}", commit, self.reload)

    def refresh(self) -> None:
        """Catch up with commits since our version (reload if the log they need is gone)."""
        try:
            self.dt.update_incremental()
        except (OSError, DeltaError) as exc:
            if not stale_log(exc):
                raise
            self.reload()

    def reload(self) -> None:
        self.dt = open_table(self.lake, self.table.name)
        self.loaded_version = self.dt.version()

    def carried(self) -> int:
        """Commits the open table has been moved forward by since it was loaded."""
        return self.dt.version() - self.loaded_version

    def _bound(self) -> None:
        """Reopen the table if it has carried `reload_every` commits (see the class)."""
        if self.carried() < self.reload_every:
            return
        try:
            self.reload()
        except (OSError, DeltaError) as exc:  # the flush is committed; reload at the next one
            log.warning("%s/%s: reopening the table failed (%s)", self.table.name,
                        self.writer, exc)  # fmt: skip

    def committed(self) -> int | None:
        """The newest flush number committed by this writer (None: none yet)."""
        retrying(f"{self.table.name}/{self.writer}", self.refresh, self.reload)
        return self.dt.transaction_version(self.writer)

    def _props(self, flush: int) -> CommitProperties:
        return CommitProperties(app_transactions=[Transaction(app_id=self.writer, version=flush)])

    def write(
        self, rows: list[Mapping[str, Any]], flush: int, replace_from: int | None = None
    ) -> None:
        """Commit `rows` as flush number `flush`. With `replace_from`, the same commit first
        deletes this writer's rows of flushes >= `replace_from` (the resume case)."""
        self.write_arrow(to_arrow(self.table, rows, self.writer, flush), flush, replace_from)

    def write_arrow(self, data: pa.Table, flush: int, replace_from: int | None = None) -> None:
        first = [True]

        def commit() -> None:
            if not first[0]:
                self.refresh()
                if self.dt.transaction_version(self.writer) == flush:
                    return  # the failed attempt did commit after all
            first[0] = False
            if replace_from is None:
                write_deltalake(self.dt, data, mode="append", commit_properties=self._props(flush))
            else:
                pred = f"{WRITER_COL} = '{self.writer}' AND {FLUSH_COL} >= {int(replace_from)}"
                write_deltalake(
                    self.dt,
                    data,
                    mode="overwrite",
                    predicate=pred,
                    commit_properties=self._props(flush),
                )

        retrying(f"{self.table.name}/{self.writer}", commit, self.reload)
        self._bound()

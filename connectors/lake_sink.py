"""An exactly-once Bytewax sink into one lake table (see `storage.lake` for the protocol).

Items are `(key, rows)` where `rows` is a list of dicts matching the table's schema, or
`Columns` (name → list of values; the events flow builds columns per batch: converting row
dicts cost 2.6 µs per event, see `flows.events_fast`). Consecutive `Columns` are buffered as
one (list extends) and converted to Arrow every `CHUNK_ROWS` rows — not one tiny Arrow table
per batch, which at 1k ev/s (a batch is an event or two) cost more than the events and made
snapshots pickle thousands of tables, and not all at flush time, which would hold the GIL
for one long conversion while the events flow's read-ahead thread waits to broadcast. The
key picks the sink partition, and each partition is one writer of the Delta table (writer id
= the flow's prefix + `p<i>`).

State kept in the snapshot: the next flush number and the rows not yet written. Rows are
committed when `flush_rows` are buffered, once the oldest buffered row is `flush_age` old, or
at a snapshot when more than `SNAPSHOT_KEEP_ROWS` are buffered (pickling many rows into every
snapshot cost 20% of the flow's throughput) — so a quiet flow does not commit a tiny file every
epoch and a busy one keeps its snapshots small. On resume, if the table has committed flushes
at or after the saved number, the first flush replaces them in one commit (the replay after the
snapshot rewrites those rows); nothing is deleted at resume time.

Bytewax calls `snapshot()` only for partitions that received items in the period, so a flow
sends `LakeSink.tick_items()` to every lake sink on each clock tick: rows buffered when input
stops are still written within `flush_age`. Maintenance (compaction, vacuum, checkpoints) is
not the sink's job: `storage.lake_maintenance`, run by `run.py up` and `run.py lake maintain`.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from storage.lake import Lake, LakeWriter, with_lake_columns

log = logging.getLogger(__name__)


class Columns(dict[str, list[Any]]):
    """Rows as columns: column name → values (every list of the same length)."""

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.values()))) if self else 0


Rows = list[Mapping[str, Any]] | Columns
#: What a sink partition buffers, in arrival order: row dicts, `Columns`, Arrow tables.
Pending = list[Mapping[str, Any] | pa.Table]
#: Buffered `Columns` are converted to one Arrow table per this many rows.
CHUNK_ROWS = 2_000

#: Rows a snapshot may carry instead of writing them out.
SNAPSHOT_KEEP_ROWS = 5_000
_TICK = "\x00tick:"


@dataclass
class LakeSinkState:
    next_seq: int
    pending: Pending = field(default_factory=list)


def _count(pending: Sequence[Mapping[str, Any] | pa.Table]) -> int:
    return sum(p.num_rows if isinstance(p, Columns | pa.Table) else 1 for p in pending)


def _arrow(schema: pa.Schema, cols: Columns) -> pa.Table:
    return pa.Table.from_pydict({n: cols[n] for n in schema.names}, schema=schema)


def as_table(schema: pa.Schema, pending: Pending) -> pa.Table:
    """The buffered rows as one Arrow table of `schema`."""
    parts: list[pa.Table] = []
    dicts: list[Mapping[str, Any]] = []
    for p in pending:
        if isinstance(p, Columns | pa.Table):
            if dicts:
                parts.append(pa.Table.from_pylist(dicts, schema=schema))
                dicts = []
            parts.append(p if isinstance(p, pa.Table) else _arrow(schema, p))
        else:
            dicts.append(p)
    if dicts:
        parts.append(pa.Table.from_pylist(dicts, schema=schema))
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


class _LakePartition(StatefulSinkPartition[Rows, LakeSinkState]):
    def __init__(
        self,
        writer: LakeWriter,
        state: LakeSinkState,
        flush_rows: int,
        flush_age: float,
        replace_from: int | None,
        fresh: bool,
    ):
        self._w = writer
        self._seq = state.next_seq
        self._pending: Pending = list(state.pending)
        self._rows = _count(self._pending)
        self._since = time.monotonic() if self._pending else None
        self._flush_rows, self._flush_age = flush_rows, flush_age
        self._replace_from = replace_from
        self._fresh = fresh  # its first run has not snapshotted yet
        self._started, self._snapshot_count = time.monotonic(), 0

    def _flush(self) -> None:
        if self._pending:
            table = self._w.table
            data = with_lake_columns(
                table, as_table(table.schema, self._pending), self._w.writer, self._seq
            )
            self._w.write_arrow(data, self._seq, self._replace_from)
            self._replace_from = None
            self._seq += 1
            self._pending = []
            self._rows = 0
            self._since = None

    def _old(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self._flush_age

    def write_batch(self, items: list[Rows]) -> None:
        pending = self._pending
        for rows in items:
            if isinstance(rows, Columns):
                n = rows.num_rows
                if not n:
                    continue
                last = pending[-1] if pending else None
                if isinstance(last, Columns) and last.keys() == rows.keys():
                    for k, v in rows.items():
                        last[k].extend(v)
                else:  # a copy: the item's lists are not ours to extend
                    last = Columns({k: list(v) for k, v in rows.items()})
                    pending.append(last)
                if last.num_rows >= CHUNK_ROWS:
                    pending[-1] = _arrow(self._w.table.schema, last)
                self._rows += n
            elif rows:
                self._pending.extend(rows)
                self._rows += len(rows)
            else:
                continue
            if self._since is None:
                self._since = time.monotonic()
        if self._rows >= self._flush_rows or self._old(time.monotonic()):
            self._flush()

    def snapshot(self) -> LakeSinkState:
        now = time.monotonic()
        if self._old(now) or self._rows > SNAPSHOT_KEEP_ROWS:
            self._flush()
        self._snapshot_count += 1
        if self._fresh and self._snapshot_count >= 3 and now - self._started > 30:
            self._w.clear_first_run()  # the first epochs are committed now
            self._fresh = False
        return LakeSinkState(self._seq, list(self._pending))

    def close(self) -> None:
        # Clean shutdown (SIGINT/EOF): commit what is buffered. Its number is >= the last
        # snapshot's, so a resume from that snapshot replaces it.
        self._flush()


class LakeSink(FixedPartitionedSink[Rows, LakeSinkState]):
    def __init__(
        self,
        lake: Lake | Path,
        table: str,
        parts: int = 1,
        flush_rows: int = 50_000,
        flush_age: float = 10.0,
        prefix: str = "",
    ):
        """`prefix` names this flow's writers apart from another flow's in a shared table
        (both the events and the check-in flow write `late_records` and `dead_letters`)."""
        self.lake, self.table, self.parts = lake, table, parts
        self.flush_rows, self.flush_age = flush_rows, flush_age
        self.prefix = prefix

    def list_parts(self) -> list[str]:
        return [f"{self.prefix}p{i}" for i in range(self.parts)]

    def part_fn(self, item_key: str) -> int:
        if item_key.startswith(_TICK):
            return int(item_key[len(_TICK) :])
        return zlib.crc32(item_key.encode())  # stable across processes, unlike hash()

    def tick_items(self) -> list[tuple[str, Rows]]:
        """One empty item per partition: lets each write aged rows and take its snapshot."""
        return [(f"{_TICK}{i}", []) for i in range(self.parts)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: LakeSinkState | None
    ) -> _LakePartition:
        writer = LakeWriter(self.lake, self.table, for_part)
        committed = writer.committed()
        if resume_state is None:
            state = LakeSinkState(0)
            replace_from = self._fresh_start(writer, committed)
            fresh = True  # `_fresh_start` marked it (or refused)
        else:
            state = resume_state
            replace_from = None
            fresh = writer.first_run()
            if committed is not None and committed >= state.next_seq:
                replace_from = state.next_seq
                log.info(
                    "%s/%s: resumed at flush %d; flushes %d..%d were committed after the "
                    "snapshot and are replaced by the replay's first flush",
                    self.table,
                    for_part,
                    state.next_seq,
                    state.next_seq,
                    committed,
                )
        return _LakePartition(writer, state, self.flush_rows, self.flush_age, replace_from, fresh)

    def _fresh_start(self, writer: LakeWriter, committed: int | None) -> int | None:
        """No snapshot to resume from: the sources start from the beginning of their input.

        Rows of an earlier run that never committed a snapshot (killed in its first seconds;
        the marker says so) are replaced by the first flush, since that input is replayed
        now. Rows without the marker mean the recovery store was lost or deleted: keeping
        them would duplicate whatever the replay rewrites, deleting them would lose what the
        input no longer holds — so refuse to start and say what to do.
        """
        if committed is None or writer.first_run():
            writer.mark_first_run()
            return None if committed is None else 0
        raise RuntimeError(
            f"lake table {self.table!r} holds rows of writer {writer.writer!r} but the flow "
            "has no recovery state for it, so its input would be replayed into the lake "
            "twice. Restore the flow's recovery directory, or delete that writer's rows "
            f"(DELETE WHERE _writer = '{writer.writer}') to rebuild them from the input."
        )

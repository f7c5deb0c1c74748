"""An exactly-once Bytewax sink into one lake table (see `storage.lake` for the file naming).

Items are `(key, rows)` where `rows` is a list of dicts matching the table's schema; the key
picks the sink partition, and each partition owns its own numbered files.

State kept in the snapshot: the next file number and the rows not yet written. Rows are written
when `flush_rows` are buffered, or at a snapshot once the oldest buffered row is `flush_age`
old, so a quiet flow does not write a tiny file every epoch. On resume the partition deletes
its files numbered at or above the saved number: the replay after the snapshot rewrites them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from storage.lake import LakeWriter

log = logging.getLogger(__name__)

Rows = list[Mapping[str, Any]]


@dataclass
class LakeSinkState:
    next_seq: int
    pending: Rows = field(default_factory=list)


class _LakePartition(StatefulSinkPartition[Rows, LakeSinkState]):
    def __init__(self, writer: LakeWriter, state: LakeSinkState, flush_rows: int, flush_age: float):
        self._w = writer
        self._seq = state.next_seq
        self._pending: Rows = list(state.pending)
        self._since = time.monotonic() if self._pending else None
        self._flush_rows, self._flush_age = flush_rows, flush_age

    def _flush(self) -> None:
        if self._pending:
            self._w.write(self._pending, self._seq)
            self._seq += 1
            self._pending = []
            self._since = None

    def write_batch(self, items: list[Rows]) -> None:
        for rows in items:
            if rows:
                if self._since is None:
                    self._since = time.monotonic()
                self._pending.extend(rows)
        if len(self._pending) >= self._flush_rows:
            self._flush()

    def snapshot(self) -> LakeSinkState:
        if self._since is not None and time.monotonic() - self._since >= self._flush_age:
            self._flush()
        return LakeSinkState(self._seq, list(self._pending))

    def close(self) -> None:
        # Clean shutdown (SIGINT/EOF): write what is buffered. Its number is >= the last
        # snapshot's, so a resume from that snapshot deletes and rewrites it.
        self._flush()


class LakeSink(FixedPartitionedSink[Rows, LakeSinkState]):
    def __init__(
        self,
        lake_dir: Path,
        table: str,
        parts: int = 1,
        flush_rows: int = 50_000,
        flush_age: float = 10.0,
    ):
        self.lake_dir, self.table, self.parts = lake_dir, table, parts
        self.flush_rows, self.flush_age = flush_rows, flush_age

    def list_parts(self) -> list[str]:
        return [f"p{i}" for i in range(self.parts)]

    def part_fn(self, item_key: str) -> int:
        # Stable across processes (Python's hash() is salted per process).
        import zlib

        return zlib.crc32(item_key.encode())

    def build_part(
        self, step_id: str, for_part: str, resume_state: LakeSinkState | None
    ) -> _LakePartition:
        writer = LakeWriter(self.lake_dir, self.table, for_part)
        if resume_state is None:
            state = LakeSinkState(writer.next_seq_on_disk())
        else:
            state = resume_state
            n = writer.discard_from(state.next_seq)
            if n:
                log.info(
                    "%s/%s: resumed at file %d, discarded %d newer file(s) to rewrite",
                    self.table,
                    for_part,
                    state.next_seq,
                    n,
                )
        return _LakePartition(writer, state, self.flush_rows, self.flush_age)

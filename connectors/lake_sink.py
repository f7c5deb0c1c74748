"""An exactly-once Bytewax sink into one lake table (see `storage.lake` for the file naming).

Items are `(key, rows)` where `rows` is a list of dicts matching the table's schema; the key
picks the sink partition, and each partition owns its own numbered files.

State kept in the snapshot: the next file number and the rows not yet written. Rows are written
when `flush_rows` are buffered, once the oldest buffered row is `flush_age` old, or at a
snapshot when more than `SNAPSHOT_KEEP_ROWS` are buffered (pickling many rows into every
snapshot cost 20% of the flow's throughput) — so a quiet flow does not write a tiny file every
epoch and a busy one keeps its snapshots small. On resume the partition deletes its files
numbered at or above the saved number: the replay after the snapshot rewrites them.

Bytewax calls `snapshot()` only for partitions that received items in the period, so a flow
sends `LakeSink.tick_items()` to every lake sink on each clock tick: rows buffered when input
stops are still written within `flush_age`.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from storage.lake import LakeWriter

log = logging.getLogger(__name__)

Rows = list[Mapping[str, Any]]

#: Rows a snapshot may carry instead of writing them out.
SNAPSHOT_KEEP_ROWS = 5_000
_TICK = "\x00tick:"


@dataclass
class LakeSinkState:
    next_seq: int
    pending: Rows = field(default_factory=list)


@dataclass(frozen=True)
class Compaction:
    """Merge files behind snapshots older than `after_s` (and at least 2 snapshots back, so
    certainly committed) once a date folder has `min_files` files of < `small_rows` rows."""

    after_s: float = 600.0
    min_files: int = 10
    small_rows: int = 50_000
    every_s: float = 60.0


class _LakePartition(StatefulSinkPartition[Rows, LakeSinkState]):
    def __init__(
        self,
        writer: LakeWriter,
        state: LakeSinkState,
        flush_rows: int,
        flush_age: float,
        compaction: Compaction,
    ):
        self._w = writer
        self._seq = state.next_seq
        self._pending: Rows = list(state.pending)
        self._since = time.monotonic() if self._pending else None
        self._flush_rows, self._flush_age = flush_rows, flush_age
        self._compaction = compaction
        self._snapshots: deque[tuple[float, int]] = deque()
        self._fresh = writer.fresh_marker.exists()
        self._started, self._snapshot_count = time.monotonic(), 0
        self._safe = 0  # files numbered below this are behind a certainly committed snapshot
        self._compacted_below = 0
        self._last_compaction = time.monotonic()

    def _flush(self) -> None:
        if self._pending:
            self._w.write(self._pending, self._seq)
            self._seq += 1
            self._pending = []
            self._since = None

    def _old(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self._flush_age

    def write_batch(self, items: list[Rows]) -> None:
        for rows in items:
            if rows:
                if self._since is None:
                    self._since = time.monotonic()
                self._pending.extend(rows)
        if len(self._pending) >= self._flush_rows or self._old(time.monotonic()):
            self._flush()

    def snapshot(self) -> LakeSinkState:
        now = time.monotonic()
        if self._old(now) or len(self._pending) > SNAPSHOT_KEEP_ROWS:
            self._flush()
        self._maybe_compact(now)
        self._snapshots.append((now, self._seq))
        self._snapshot_count += 1
        if self._fresh and self._snapshot_count >= 3 and now - self._started > 30:
            self._w.fresh_marker.unlink(missing_ok=True)  # the first epochs are committed now
            self._fresh = False
        return LakeSinkState(self._seq, list(self._pending))

    def _maybe_compact(self, now: float) -> None:
        c = self._compaction
        # Keep the two newest snapshots whatever their age: the newest may not be committed.
        while len(self._snapshots) > 2 and now - self._snapshots[0][0] > c.after_s:
            self._safe = self._snapshots.popleft()[1]
        safe = self._safe
        if safe <= self._compacted_below or now - self._last_compaction < c.every_s:
            return
        self._last_compaction = now
        try:
            n = self._w.compact(safe, c.min_files, c.small_rows)
        except OSError as exc:  # disk trouble: leave the small files, they are still correct
            log.warning("%s/%s: compaction failed: %s", self._w.table.name, self._w.part, exc)
            return
        self._compacted_below = safe
        if n:
            log.info("%s/%s: merged %d small files", self._w.table.name, self._w.part, n)

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
        compaction: Compaction | None = None,
        prefix: str = "",
    ):
        """`prefix` names this flow's files apart from another flow's in a shared table
        (both the events and the check-in flow write `late_records` and `dead_letters`)."""
        self.lake_dir, self.table, self.parts = lake_dir, table, parts
        self.flush_rows, self.flush_age = flush_rows, flush_age
        self.compaction = compaction or Compaction(small_rows=flush_rows)
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
        writer = LakeWriter(self.lake_dir, self.table, for_part)
        if resume_state is None:
            state = LakeSinkState(self._fresh_start(writer))
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
        return _LakePartition(writer, state, self.flush_rows, self.flush_age, self.compaction)

    def _fresh_start(self, writer: LakeWriter) -> int:
        """No snapshot to resume from: the sources start from the beginning of their input.

        Files left by an earlier run that never committed a snapshot (killed in its first
        seconds; the marker says so) are deleted, since that input is replayed now. Files
        without the marker mean the recovery store was lost or deleted: keeping them would
        duplicate whatever the replay rewrites, deleting them would lose what the input no
        longer holds — so refuse to start and say what to do.
        """
        writer.recover()
        if writer.fresh_marker.exists() or not writer.own_files():
            n = writer.discard_from(0)
            if n:
                log.info(
                    "%s/%s: discarded %d file(s) of a run that never committed",
                    self.table,
                    writer.part,
                    n,
                )
            writer.fresh_marker.touch()
            return 0
        raise RuntimeError(
            f"lake table {self.table!r} holds files of sink part {writer.part!r} but the flow "
            "has no recovery state for it, so its input would be replayed into the lake "
            "twice. Restore the flow's recovery directory, or move the table's folder "
            f"({writer.dir}) aside to rebuild it from the input."
        )

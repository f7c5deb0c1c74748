"""A tiny source that ticks every few seconds on worker 0.

The flow turns each tick into a `SET flow:<name>:heartbeat ... EX` through its Redis sink, so a
heartbeat proves the whole dataflow is turning (source → sink), not merely that a process exists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bytewax.inputs import DynamicSource, StatelessSourcePartition

from core.shutdown import stop_requested


class _Ticks(StatelessSourcePartition[datetime]):
    def __init__(self, every: timedelta, active: bool):
        self._every, self._active = every, active
        self._next = datetime.now(UTC)

    def next_batch(self) -> list[datetime]:
        if stop_requested():
            raise StopIteration
        now = datetime.now(UTC)
        if not self._active or now < self._next:
            return []
        self._next = now + self._every
        return [now]

    def next_awake(self) -> datetime | None:
        # Inactive workers still wake once a second to notice a stop request.
        return self._next if self._active else datetime.now(UTC) + timedelta(seconds=1)


class HeartbeatSource(DynamicSource[datetime]):
    def __init__(self, every: timedelta = timedelta(seconds=1)):
        self.every = every

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Ticks:
        return _Ticks(self.every, active=worker_index == 0)

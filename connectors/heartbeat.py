"""A tiny source that ticks every few seconds on worker 0.

The flow turns each tick into a `SET flow:<name>:heartbeat ... EX` through its Redis sink, so a
heartbeat proves the whole dataflow is turning (source → sink), not merely that a process exists.

It also wakes just after each of its epoch boundaries. Measured: Bytewax's inputs read nothing
new until every input of the flow has closed the previous epoch, and an input closes its epoch
only when it is woken. A tick source sleeping until its next tick (up to 1 s) held the check-in
flow's input at every epoch boundary: verdicts waited 260-870 ms every 2 s (p99 0.7-1.2 s at
1,000 check-ins/s). Polling every 10 ms instead bounded the wait but cost 24 % of a core while
idle; waking once per epoch, a moment after the boundary, costs nothing and closes this input's
epoch before the busy inputs reach theirs (they are woken later than exactly on time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bytewax.inputs import DynamicSource, StatelessSourcePartition

from core.settings import get_settings
from core.shutdown import stop_requested

#: Wake this long after the estimated epoch boundary, so that Bytewax (whose clock is read just
#: before ours) surely sees the interval elapsed.
_MARGIN = timedelta(milliseconds=2)


class _Ticks(StatelessSourcePartition[datetime]):
    def __init__(self, every: timedelta, active: bool, epoch: timedelta):
        self._every, self._active, self._epoch = every, active, epoch
        now = datetime.now(UTC)
        self._next = now
        # When Bytewax last closed this input's epoch (it does so in an activation at least
        # `epoch` after the previous close); a late estimate only costs one extra wake.
        self._epoch_started = now

    def next_batch(self) -> list[datetime]:
        if stop_requested():
            raise StopIteration
        now = datetime.now(UTC)
        if now - self._epoch_started >= self._epoch + _MARGIN / 2:
            self._epoch_started = now
        if not self._active or now < self._next:
            return []
        self._next = now + self._every
        return [now]

    def next_awake(self) -> datetime | None:
        boundary = self._epoch_started + self._epoch + _MARGIN
        # Inactive workers still wake once a second to notice a stop request.
        tick = self._next if self._active else datetime.now(UTC) + timedelta(seconds=1)
        return min(tick, boundary)


class HeartbeatSource(DynamicSource[datetime]):
    """Ticks every `every` on worker 0. `epoch`: the flow's epoch (snapshot) interval, by
    default `SNAPSHOT_INTERVAL_S` — the `-s` that run.py passes."""

    def __init__(self, every: timedelta = timedelta(seconds=1), epoch: timedelta | None = None):
        self.every = every
        self.epoch = epoch or timedelta(seconds=get_settings().snapshot_interval_s)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Ticks:
        return _Ticks(self.every, worker_index == 0, self.epoch)

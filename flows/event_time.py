"""Event-time tumbling counts with allowed lateness, as state for `op.stateful_flat_map`.

Why not Bytewax's `fold_window`: its clock and window state live per key, and a key whose
windows have all closed forgets its watermark — so an event that is hours late for that key
re-opens an old window instead of being reported late (measured in the prototype: after a
downtime, windows already emitted came out a second time as partial counts). Here one
watermark serves all keys of the operator, so lateness means the same thing for everyone.

The watermark follows Bytewax's EventClock: the largest event time seen, minus the allowed
lateness, plus the system time elapsed since it was seen (so windows close while input is
quiet). A window closes when the watermark passes its end; a group of events whose window has
already closed is *late*: it is reported (and counted as a correction), never dropped.
Across a restart the system time spent down does not count, so the backlog replayed after a
flow outage is not mistaken for late data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

#: Changes with every process start: lets restored state notice it was restored.
RUN_ID = f"{datetime.now(UTC).timestamp():.6f}"


class Countable(Protocol):
    window_start: datetime
    count: int
    max_ts: datetime


@dataclass
class WindowState:
    max_ts: datetime | None = None
    seen_at: datetime | None = None  # system time when max_ts was seen
    run_id: str = RUN_ID
    open: dict[tuple[str, datetime], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Closed:
    key: str
    window_start: datetime
    count: int


@dataclass(frozen=True, slots=True)
class Late:
    key: str
    group: Countable


class TumblingCounter:
    def __init__(self, length: timedelta, lateness: timedelta):
        self.length, self.lateness = length, lateness

    def watermark(self, st: WindowState, now: datetime) -> datetime | None:
        if st.max_ts is None or st.seen_at is None:
            return None
        return st.max_ts - self.lateness + (now - st.seen_at)

    def step(
        self,
        st: WindowState | None,
        groups: Iterable[tuple[str, Countable]],
        now: datetime | None = None,
    ) -> tuple[WindowState, list[Closed | Late]]:
        """Add pre-aggregated groups (may be empty: a clock tick) and close what is due."""
        now = now or datetime.now(UTC)
        st = st or WindowState()
        if st.run_id != RUN_ID:  # restored after a restart: downtime does not age the data
            st.run_id, st.seen_at = RUN_ID, now if st.max_ts is not None else None
        out: list[Closed | Late] = []
        for key, g in groups:
            wm = self.watermark(st, now)
            if wm is not None and g.window_start + self.length <= wm:
                out.append(Late(key, g))
                continue
            k = (key, g.window_start)
            st.open[k] = st.open.get(k, 0) + g.count
            if st.max_ts is None or g.max_ts > st.max_ts:
                st.max_ts, st.seen_at = g.max_ts, now
        wm = self.watermark(st, now)
        if wm is not None:
            due = [k for k in st.open if k[1] + self.length <= wm]
            for k in sorted(due, key=lambda k: k[1]):
                out.append(Closed(k[0], k[1], st.open.pop(k)))
        return st, out

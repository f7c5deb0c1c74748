"""The alarm flow's two clocks: event time (windows) and arrival time (absence).

Why two: windows and pending periods must be measured when things *happened* (`ts`), but
"no data for N s" must be measured when data *arrived* — an offline sensor uploading its
backlog is alive, and a sensor with a wrong clock is not silent.

Both clocks move the same way, like Bytewax's EventClock and `flows.event_time`: the newest
time seen, plus the wall time elapsed since it was seen. So they keep running while nothing
arrives at all (a silent source raises even when the whole venue is quiet: the flow ticks
every 250 ms), and a restart does not count the downtime (the restored clock restarts from
its newest time), so the backlog replayed after an outage is neither late nor "silent".
Arrival times are the Redis stream entry ids' milliseconds: a replay after a crash sees the
same arrival times as the first run, so its decisions repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flows.event_time import RUN_ID


@dataclass(slots=True)
class Clock:
    max_ts: datetime | None = None
    ts_seen_at: datetime | None = None  # wall time when max_ts was seen
    max_arrival: datetime | None = None
    arrival_seen_at: datetime | None = None
    run_id: str = RUN_ID

    def restored(self, now: datetime) -> bool:
        """True once after a restart; the downtime is then forgotten (see the module doc)."""
        if self.run_id == RUN_ID:
            return False
        self.run_id = RUN_ID
        if self.max_ts is not None:
            self.ts_seen_at = now
        if self.max_arrival is not None:
            self.arrival_seen_at = now
        return True

    def observe(self, ts: datetime, arrival: datetime, now: datetime) -> None:
        """A source clock running ahead moves the event clock no further than Redis's own:
        one sensor stamping minutes ahead would otherwise close every window early and make
        everyone else's data late."""
        ts = min(ts, arrival)
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts, self.ts_seen_at = ts, now
        if self.max_arrival is None or arrival > self.max_arrival:
            self.max_arrival, self.arrival_seen_at = arrival, now

    def event_now(self, now: datetime) -> datetime | None:
        if self.max_ts is None or self.ts_seen_at is None:
            return None
        return self.max_ts + max(now - self.ts_seen_at, timedelta(0))

    def watermark(self, lateness_s: float, now: datetime) -> datetime | None:
        """Windows ending at or before this are closed for a rule with this lateness."""
        t = self.event_now(now)
        return None if t is None else t - timedelta(seconds=lateness_s)

    def arrival_now(self, now: datetime) -> datetime:
        """ "Now" for absence: the newest arrival plus the wall time since (wall time before
        anything arrived)."""
        if self.max_arrival is None or self.arrival_seen_at is None:
            return now
        return self.max_arrival + max(now - self.arrival_seen_at, timedelta(0))

"""The dashboard's live events: one in-memory model of the events flow's live outputs.

`subscriber` (a `live.subscriber.LiveSubscriber`, the mechanism every live model shares)
listens to `live:events` (micro-batches of stored events) and `live:event_counts` (closed
windows), folds them into `model`, and fires `changed` at most 4 times a second when the
model moved (and once a second anyway, so ages on pages keep ticking). Pages subscribe to
`changed` and read the model.

On (re)connect the model is seeded from `events:recent` after subscribing, so a page opened
mid-stream shows the present at once and nothing falls in between; duplicates (the flow's live
outputs are at-least-once, and the seed overlaps the first messages) are dropped by id.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from core import keys
from core.records import LEVELS
from live.subscriber import LiveSubscriber, json_object, json_objects, minute_floor, parse_utc

log = logging.getLogger(__name__)

KEEP_EVENTS = 200
KEEP_MINUTES = 60
KEEP_WINDOWS = 200
KEEP_TYPES = 200  # filter options: the most recently seen types (a bad source cannot flood it)
_SEEN_IDS = 20_000


@dataclass
class LiveModel:
    """What the dashboard shows live; mutated only on the event loop (no locks needed)."""

    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_EVENTS))
    per_minute: dict[datetime, Counter[str]] = field(default_factory=dict)
    _types: OrderedDict[str, None] = field(default_factory=OrderedDict)
    total: int = 0  # stored events seen live since the app started
    level_totals: Counter[str] = field(default_factory=Counter)
    windows: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_WINDOWS))
    last_received_at: datetime | None = None
    connected: bool = False
    version: int = 0
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _arrivals: deque[tuple[float, int]] = field(default_factory=deque)

    def _remember(self, event_id: str) -> bool:
        """True if the id is new (and remember it, forgetting the oldest beyond a bound)."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)
        return True

    def add_events(
        self,
        events: list[dict[str, Any]],
        total: int | None,
        live: bool,
        minutes: list[Any] | None = None,
    ) -> int:
        """Fold stored events (newest first, as the flow sends them) in; return how many new.

        `total` is the batch's full size (the message carries at most 50 events); events not
        included still count towards the totals. `live=False` (a seed) updates the feed and the
        chart but not "since app start" totals, as those events came before. `minutes` are the
        whole batch's counts per (minute, level); when given, the chart uses them instead of
        counting the (at most 50) events included, so it stays exact at any rate.
        """
        new = [e for e in events if isinstance(e, dict) and self._remember(str(e.get("id")))]
        if total is not None and len(events) and not new:
            return 0  # a replayed batch (at-least-once live output): all seen already
        for ev in reversed(new):  # oldest first, so the newest ends up at the left
            self.recent.appendleft(ev)
            self._see_type(str(ev.get("type")))
            ts = parse_utc(ev.get("ts"))
            if ts is not None and minutes is None:
                self.per_minute.setdefault(minute_floor(ts), Counter())[str(ev.get("level"))] += 1
            got = parse_utc(ev.get("received_at"))
            if got is not None and (self.last_received_at is None or got > self.last_received_at):
                self.last_received_at = got
        for item in minutes or []:
            try:
                m, lv, n = parse_utc(item[0]), str(item[1]), int(item[2])
            except (TypeError, ValueError, IndexError):
                continue
            if m is not None:
                self.per_minute.setdefault(minute_floor(m), Counter())[lv] += n
        if live:
            dups = len(events) - len(new)
            n = max((total or 0) - dups, len(new))
            self.total += n
            self.level_totals.update(str(e.get("level")) for e in new)
            self._arrivals.append((time.monotonic(), n))
        self._prune()
        if new or live:
            self.version += 1
        return len(new)

    def _see_type(self, type_: str) -> None:
        self._types[type_] = None
        self._types.move_to_end(type_)
        if len(self._types) > KEEP_TYPES:
            self._types.popitem(last=False)

    @property
    def types(self) -> list[str]:
        """Event types seen recently, sorted (the page's type filter options)."""
        return sorted(self._types)

    def add_window(self, row: dict[str, Any]) -> None:
        self.windows.appendleft(row)
        self.version += 1

    def last_window(self) -> tuple[str, str, int] | None:
        """The newest closed event-count window (start, end, events over all types/levels)."""
        on_time = [w for w in self.windows if not w.get("late")]
        if not on_time:
            return None
        start = max(str(w.get("window_start")) for w in on_time)
        rows = [w for w in on_time if str(w.get("window_start")) == start]
        return start, str(rows[0].get("window_end")), sum(int(w.get("count", 0)) for w in rows)

    def _prune(self) -> None:
        oldest = minute_floor(datetime.now(UTC)) - timedelta(minutes=KEEP_MINUTES - 1)
        for m in [m for m in self.per_minute if m < oldest]:
            del self.per_minute[m]
        cutoff = time.monotonic() - 60
        while self._arrivals and self._arrivals[0][0] < cutoff:
            self._arrivals.popleft()

    def events_per_minute(self) -> int:
        """Stored events that arrived in the last 60 s (by arrival at the dashboard)."""
        self._prune()
        return sum(n for _, n in self._arrivals)

    def last_event_age_s(self) -> float | None:
        if self.last_received_at is None:
            return None
        return max(0.0, (datetime.now(UTC) - self.last_received_at).total_seconds())

    def feed(self, type_: str | None, level: str | None, limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for ev in self.recent:
            if (type_ and ev.get("type") != type_) or (level and ev.get("level") != level):
                continue
            out.append(ev)
            if len(out) >= limit:
                break
        return out

    def chart(self) -> tuple[list[str], dict[str, list[int]]]:
        """Minute labels (HH:MM UTC) of the last 60 minutes and counts per level, by event ts."""
        now = minute_floor(datetime.now(UTC))
        minutes = [now - timedelta(minutes=i) for i in range(KEEP_MINUTES - 1, -1, -1)]
        series = {lv: [self.per_minute.get(m, Counter())[lv] for m in minutes] for lv in LEVELS}
        return [m.strftime("%H:%M") for m in minutes], series


model = LiveModel()


def handle_message(channel: str, data: bytes | str) -> None:
    """Fold one pub/sub message into the model; bad messages are logged, never raised."""
    if (doc := json_object(channel, data)) is None:
        return
    if channel == keys.LIVE_EVENTS:
        events = doc.get("events") or []
        total = doc.get("total")
        minutes = doc.get("minutes") if isinstance(doc.get("minutes"), list) else None
        model.add_events(
            events, int(total) if isinstance(total, int) else None, live=True, minutes=minutes
        )
    elif channel == keys.LIVE_EVENT_COUNTS:
        model.add_window(doc)


async def _seed(r: aioredis.Redis) -> None:
    raw = await r.lrange(keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1)
    model.add_events(json_objects(raw), None, live=False)


subscriber = LiveSubscriber(
    "live", model, handle_message, channels=[keys.LIVE_EVENTS, keys.LIVE_EVENT_COUNTS], seed=_seed
)
changed = subscriber.changed  # fired (no arguments) when `model` moved, throttled: read it then
start, stop = subscriber.start, subscriber.stop  # from `app.on_startup` / `app.on_shutdown`

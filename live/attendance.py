"""Live attendance in the dashboard: one Redis subscriber, one model, one throttled event.

`subscriber` (the `live.subscriber.LiveSubscriber` every live model shares) listens to

- `live:attendance` — the check-in flow's totals document (≤ 4 Hz; also kept in
  `attendance:totals`, which seeds the model on every (re)connect);
- `live:attendance_counts` — closed per-minute windows per (gate, direction, status);
- `checkins:verdict:*` — every verdict of every gate (the gate page's history, the open-minute
  estimate, and the answers `wait_verdict` hands to HTTP requests and gate pages).

The arrivals chart shows closed windows where they exist (exact; late corrections added) and,
for minutes not closed yet, an estimate counted from the verdicts seen, so it moves at once
instead of a couple of minutes later when the flow's allowed lateness has passed. At start
the closed minutes of the last hour are read from the lake once, so a restarted dashboard does
not start with an empty chart.

`changed` fires at most 4 times a second when the model moved (and at 1 Hz anyway, so gate load
bars and ages keep ticking). Pages subscribe and read `model`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from nicegui import run

from core import contract, keys
from core.records import CheckIn
from core.tokens import fingerprint
from live.redis import redis_client
from live.subscriber import LiveSubscriber, json_object, json_objects, minute_floor, parse_utc
from storage.queries import attendance_minutes

log = logging.getLogger(__name__)

KEEP_MINUTES = 60
GATE_HISTORY = 10  # verdicts kept per gate (the gate page's history)
_SEEN = 50_000  # (nonce, revision) pairs remembered, to count each verdict once
VERDICT_PATTERN = keys.verdict_channel("*")
_POLL_S = 0.5  # wait_verdict also reads `verdict:<nonce>` this often (a missed message)

#: Statuses shown amber (the list is `core.contract.CHECKIN_WARNINGS`).
WARNING_STATUSES = contract.CHECKIN_WARNINGS


def verdict_tone(status: str | None) -> str:
    """`accepted`, `warning` or `refused`: how a gate shows a status."""
    if status == "accepted":
        return "accepted"
    if status in WARNING_STATUSES:
        return "warning"
    return "refused"


def _is_arrival(direction: Any, status: Any) -> bool:
    return direction == "in" and status == "accepted"


@dataclass
class AttendanceModel:
    """What the attendance pages show live; mutated only on the event loop (no locks)."""

    totals: dict[str, Any] | None = None
    #: minute → gate → accepted entries of closed windows (on-time rows set, late rows add)
    closed: dict[datetime, dict[str, int]] = field(default_factory=dict)
    late: dict[datetime, Counter[str]] = field(default_factory=dict)
    #: minute → gate → accepted entries counted from verdicts (for minutes not closed yet)
    estimate: dict[datetime, Counter[str]] = field(default_factory=dict)
    gate_recent: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    connected: bool = False
    version: int = 0
    _seen: OrderedDict[tuple[str, int], tuple[str, datetime] | None] = field(
        default_factory=OrderedDict
    )

    # --- input ---------------------------------------------------------------------------

    def set_totals(self, doc: dict[str, Any]) -> None:
        """The flow's totals document; its `recent` verdicts feed the estimate (seen once)."""
        self.totals = doc
        for v in reversed(doc.get("recent") or []):  # oldest first
            if isinstance(v, dict):
                self._count(v)
        self._prune()
        self.version += 1

    def add_verdict(self, v: dict[str, Any]) -> None:
        """One verdict from `checkins:verdict:<gate>`."""
        self._remember_gate(v)
        if not v.get("replayed"):  # a retried nonce is shown, never counted again
            self._count(v)
        self.version += 1

    def add_window(self, row: dict[str, Any]) -> None:
        """A closed (or late-corrected) minute window from `live:attendance_counts`."""
        if not _is_arrival(row.get("direction"), row.get("status")):
            return
        m = parse_utc(row.get("window_start"))
        if m is None:
            return
        gate = str(row.get("gate_id"))
        try:
            n = int(row.get("count", 0))
        except (TypeError, ValueError):
            return
        if row.get("late"):
            self.late.setdefault(m, Counter())[gate] += n
        else:
            self.closed.setdefault(m, {})[gate] = n
        self._prune()
        self.version += 1

    def seed_windows(self, rows: list[tuple[datetime, str, int]]) -> None:
        """Closed minutes from the lake (minute, gate, accepted entries incl. late ones)."""
        for m, gate, n in rows:
            mm = parse_utc(m)
            if mm is not None and gate not in self.closed.get(mm, {}):
                self.closed.setdefault(mm, {})[gate] = int(n)
        self._prune()
        self.version += 1

    def _count(self, v: dict[str, Any]) -> None:
        key = (str(v.get("nonce")), int(v.get("revision") or 0))
        if key in self._seen:
            return
        ts = parse_utc(v.get("ts"))
        gate = str(v.get("gate_id"))
        # A revision overturns the status of an earlier scan: undo what that one counted.
        if key[1] > 0:
            for rev in range(key[1] - 1, -1, -1):
                prev = self._seen.get((key[0], rev))
                if prev is not None:
                    self.estimate.setdefault(prev[1], Counter())[prev[0]] -= 1
                    self._seen[(key[0], rev)] = None
                    break
        counted = None
        if ts is not None and _is_arrival(v.get("direction"), v.get("status")):
            m = minute_floor(ts)
            self.estimate.setdefault(m, Counter())[gate] += 1
            counted = (gate, m)
        self._seen[key] = counted
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    def seed_gate_history(self, verdicts: list[dict[str, Any]]) -> None:
        """Verdicts from the totals' `recent` list (on connect: some may have been missed)."""
        for v in reversed(verdicts):
            self._remember_gate(v)
        far = datetime.min.replace(tzinfo=UTC)
        for gate, q in self.gate_recent.items():
            ordered = sorted(q, key=lambda v: parse_utc(v.get("decided_at")) or far, reverse=True)
            self.gate_recent[gate] = deque(ordered, maxlen=GATE_HISTORY)
        self.version += 1

    def _remember_gate(self, v: dict[str, Any]) -> None:
        """Newest first; a verdict already held (same nonce, revision, replay) is kept once."""
        gate = str(v.get("gate_id"))
        q = self.gate_recent.get(gate)
        if q is None:
            q = self.gate_recent[gate] = deque(maxlen=GATE_HISTORY)
        ident = (v.get("nonce"), v.get("revision") or 0, bool(v.get("replayed")))
        held = {(o.get("nonce"), o.get("revision") or 0, bool(o.get("replayed"))) for o in q}
        if ident not in held:
            q.appendleft(v)

    def _prune(self) -> None:
        oldest = minute_floor(datetime.now(UTC)) - timedelta(minutes=KEEP_MINUTES + 5)
        for d in (self.closed, self.late, self.estimate):
            for m in [m for m in d if m < oldest]:
                del d[m]

    # --- output --------------------------------------------------------------------------

    def gate_ids(self) -> list[str]:
        gates = (self.totals or {}).get("gates") or {}
        return list(gates)

    def gate_name(self, gate_id: str) -> str:
        g = ((self.totals or {}).get("gates") or {}).get(gate_id) or {}
        return str(g.get("name") or gate_id)

    def arrivals(self, minute: datetime, gate: str) -> int:
        """Accepted entries at `gate` in `minute`: the closed window, else the estimate."""
        closed = self.closed.get(minute)
        if closed is not None and gate in closed:
            return closed[gate] + self.late.get(minute, Counter())[gate]
        return max(0, self.estimate.get(minute, Counter())[gate])

    def chart(
        self, gates: list[str] | None = None, minutes: int = KEEP_MINUTES
    ) -> tuple[list[str], dict[str, list[int]]]:
        """Minute labels (HH:MM UTC) of the last `minutes` minutes; arrivals per gate."""
        gates = gates if gates is not None else self.gate_ids()
        now = minute_floor(datetime.now(UTC))
        ms = [now - timedelta(minutes=i) for i in range(minutes - 1, -1, -1)]
        series = {g: [self.arrivals(m, g) for m in ms] for g in gates}
        return [m.strftime("%H:%M") for m in ms], series

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(((self.totals or {}).get("recent") or [])[:limit])

    def gate_history(self, gate_id: str) -> list[dict[str, Any]]:
        return list(self.gate_recent.get(gate_id, ()))

    def refused(self) -> int:
        statuses = (self.totals or {}).get("statuses") or {}
        return sum(int(n) for s, n in statuses.items() if s != "accepted")


model = AttendanceModel()


# --- verdict waiters ------------------------------------------------------------------------

#: A scan as its verdict names it: (gate, nonce, direction, ticket fingerprint). A verdict
#: answers a waiting scan only if all four match: the same nonce at another gate, in the other
#: direction or with another ticket is another scan (refused as `nonce_conflict`), and its
#: verdict must never reach this one's sender (a gate-bound key would read another gate's).
ScanId = tuple[str, str, str, str]

_waiters: dict[ScanId, set[asyncio.Future[dict[str, Any]]]] = {}


def scan_id(checkin: CheckIn) -> ScanId:
    return (checkin.gate_id, checkin.nonce, checkin.direction, fingerprint(checkin.token))


def _verdict_scan(v: dict[str, Any]) -> ScanId:
    return (
        str(v.get("gate_id")),
        str(v.get("nonce")),
        str(v.get("direction")),
        str(v.get("token_fp")),
    )


def expect_verdict(scan: ScanId) -> asyncio.Future[dict[str, Any]]:
    """Register interest in a scan's verdict. Call BEFORE sending the check-in, so the
    verdict cannot be published in between; pass the future to `wait_verdict`."""
    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    _waiters.setdefault(scan, set()).add(fut)
    return fut


def forget_verdict(scan: ScanId, fut: asyncio.Future[dict[str, Any]]) -> None:
    futs = _waiters.get(scan)
    if futs is not None:
        futs.discard(fut)
        if not futs:
            del _waiters[scan]
    if not fut.done():
        fut.cancel()


def _resolve(v: dict[str, Any]) -> None:
    for fut in _waiters.pop(_verdict_scan(v), ()):
        if not fut.done():
            fut.set_result(v)


async def _stored(r: aioredis.Redis, nonce: str) -> bytes | None:
    return await r.get(keys.verdict_key(nonce))


async def wait_verdict(
    scan: ScanId,
    timeout: float,
    *,
    r: aioredis.Redis | None = None,
    future: asyncio.Future[dict[str, Any]] | None = None,
    stale: bytes | None = None,
) -> dict[str, Any] | None:
    """The verdict JSON for `scan` (see `ScanId`), or None if none came within `timeout` s.

    Answered by the first message for that very scan on a `checkins:verdict:*` channel, or by
    `verdict:<nonce>` if it holds that scan's verdict (read right after registering and every
    `_POLL_S`, in case the verdict was there already or its message was missed during a
    reconnect). A stored value equal to `stale` — what the key held before the check-in was
    sent, i.e. an earlier scan's verdict for a retried nonce — does not count: the flow's
    replay answer is awaited instead.
    """
    if r is None:
        r = redis_client()
    own = future is None
    fut = future if future is not None else expect_verdict(scan)
    deadline = time.monotonic() + max(0.0, timeout)
    try:
        while True:
            if fut.done():
                return fut.result()
            raw = await _stored(r, scan[1])
            if raw is not None and raw != stale:
                with contextlib.suppress(ValueError):
                    doc = json.loads(raw)
                    if isinstance(doc, dict) and _verdict_scan(doc) == scan:
                        return doc
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(fut), min(left, _POLL_S))
    finally:
        if own:
            forget_verdict(scan, fut)


# --- the subscriber -----------------------------------------------------------------------


def handle_message(channel: str, data: bytes | str) -> None:
    """Fold one pub/sub message into the model; bad messages are logged, never raised."""
    if (doc := json_object(channel, data)) is None:
        return
    if channel == keys.LIVE_ATTENDANCE:
        model.set_totals(doc)
    elif channel == keys.LIVE_ATTENDANCE_COUNTS:
        model.add_window(doc)
    elif channel.startswith(keys.VERDICT_CHANNEL_PREFIX):
        _resolve(doc)
        model.add_verdict(doc)


async def _seed_lake(lake_dir: Path) -> None:
    since = minute_floor(datetime.now(UTC)) - timedelta(minutes=KEEP_MINUTES)
    try:
        rows = await run.io_bound(attendance_minutes, lake_dir, since)
    except Exception as exc:  # the lake is an extra: never stop the live view for it
        log.info("attendance: no history from the lake (%s)", exc)
        return
    if rows:
        model.seed_windows(rows)


async def _seed(r: aioredis.Redis) -> None:
    raw = await r.get(keys.ATTENDANCE_TOTALS)
    if raw is None:
        return
    for doc in json_objects([raw]):
        model.set_totals(doc)
        model.seed_gate_history([v for v in doc.get("recent") or [] if isinstance(v, dict)])


subscriber = LiveSubscriber(
    "attendance",
    model,
    handle_message,
    channels=[keys.LIVE_ATTENDANCE, keys.LIVE_ATTENDANCE_COUNTS],
    patterns=[VERDICT_PATTERN],
    seed=_seed,
)
changed = subscriber.changed  # fired (no arguments) when `model` moved, throttled: read it then


async def start(url: str, lake_dir: Path | None = None) -> None:
    """Start the subscriber and the emitter (from `app.on_startup`) and the lake history read."""
    if subscriber.running:
        return
    await subscriber.start(url)
    if lake_dir is not None:
        subscriber.spawn(_seed_lake(lake_dir), "attendance-lake-seed")


async def stop() -> None:
    await subscriber.stop()
    for futs in list(_waiters.values()):
        for fut in futs:
            if not fut.done():
                fut.cancel()
    _waiters.clear()

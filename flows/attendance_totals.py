"""Live attendance totals: registered, checked in, inside now, per-gate counts and load.

One keyed state ("all") sums the changes each decision reports (`Outcome.delta` and the
+1/-1 `counts`), so the totals are exact across crashes (they are in the snapshot) and equal a
recount of the lake. On each live tick, if anything changed (or the gate load needs ageing),
it emits one document: `SET attendance:totals` (a page that opens mid-event shows the present)
and `PUBLISH live:attendance` (pages update without reload) — one message per tick, never one
per scan, because one Redis message per scan caps a dashboard subscriber at a few thousand/s.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from core import keys
from core.venue import Venue
from flows.checkins_logic import Outcome

RECENT = 50
RECENT_FIELDS = (
    "nonce", "gate_id", "direction", "status", "reason", "participant_id",
    "participant_name", "ts", "decided_at", "offline", "flagged", "revision",
)  # fmt: skip
LOAD_WINDOW_S = 60.0
_REFRESH_S = 5.0  # re-emit at least this often while gate load is non-zero (it decays)


@dataclass
class Totals:
    registered: int = 0
    checked_in: int = 0
    inside: int = 0
    by_gate: dict[str, Counter[str]] = field(default_factory=dict)  # "in:accepted" → n
    flagged: int = 0
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    #: Accepted scans per gate as `[second, count]`, oldest first: at most 61 per gate. (One
    #: time per scan held up to 60,000 floats per gate at 1,000/s, copied into every snapshot;
    #: measured: that stalled the flow for 60-230 ms at each epoch.)
    load: dict[str, deque[list[int]]] = field(default_factory=dict)
    dirty: bool = True
    emitted_at: float = 0.0


def add(st: Totals, out: Outcome) -> None:
    st.registered += out.delta[0]
    st.checked_in += out.delta[1]
    st.inside += out.delta[2]
    for c in out.counts:
        st.by_gate.setdefault(c.gate_id, Counter())[f"{c.direction}:{c.status}"] += c.delta
    now = time.time()
    for v in out.verdicts:
        if v["replayed"]:
            continue
        if v["flagged"]:
            st.flagged += 1
        if v["status"] == "accepted" and not v["revision"]:
            q = st.load.setdefault(v["gate_id"], deque())
            sec = int(now)
            if q and q[-1][0] == sec:
                q[-1][1] += 1
            else:
                q.append([sec, 1])
        st.recent.appendleft({k: v[k] for k in RECENT_FIELDS})
    if out.verdicts or out.delta != (0, 0, 0):
        st.dirty = True
    # A participant's new version renames their recent scans: an erased name must not stay in
    # this state (its snapshots) or in `attendance:totals` (`storage.erasure`).
    for p in out.participant_rows:
        for v in st.recent:
            if v["participant_id"] == p["id"] and v["participant_name"] != p["name"]:
                v["participant_name"] = p["name"]
                st.dirty = True


def document(st: Totals, venue: Venue, now: float) -> dict[str, Any]:
    gates = {}
    for g in venue.gates:
        c = st.by_gate.get(g.id, Counter())
        q = st.load.get(g.id, deque())
        while q and now - q[0][0] > LOAD_WINDOW_S:
            q.popleft()
        last_minute = sum(n for _, n in q)
        refused = sum(n for k, n in c.items() if not k.endswith(":accepted"))
        gates[g.id] = {
            "name": g.name,
            "capacity_per_minute": g.capacity_per_minute,
            "entries": c["in:accepted"],
            "exits": c["out:accepted"],
            "refused": refused,
            "last_minute": last_minute,
            "load": round(last_minute / g.capacity_per_minute, 3),
        }
    statuses: Counter[str] = Counter()
    for c in st.by_gate.values():
        for k, n in c.items():
            statuses[k.split(":", 1)[1]] += n
    return {
        "event": {"id": venue.event.id, "name": venue.event.name},
        "registered": st.registered,
        "checked_in": st.checked_in,
        "inside": st.inside,
        "flagged": st.flagged,
        "statuses": {k: n for k, n in statuses.items() if n},
        "gates": gates,
        "recent": list(st.recent),
        "updated_at": datetime.now(UTC),
    }


def totals_step(
    st: Totals | None, item: Outcome | None, venue: Venue
) -> tuple[Totals, list[list[tuple]]]:
    """Fold an outcome in, or on a tick (None) emit the document if it changed."""
    st = st or Totals()
    if item is not None:
        add(st, item)
        return st, []
    now = time.time()
    loaded = any(st.load.values())
    if not st.dirty and not (loaded and now - st.emitted_at >= _REFRESH_S):
        return st, []
    doc = to_json(document(st, venue, now))
    st.dirty, st.emitted_at = False, now
    return st, [[("SET", keys.ATTENDANCE_TOTALS, doc), ("PUBLISH", keys.LIVE_ATTENDANCE, doc)]]

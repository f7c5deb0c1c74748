"""Helpers for the check-in tests: a test venue file, participants and scans over real Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from core import keys
from tests.conftest import wait_for

EVENT_ID = "test-event"


def venue_yaml(allow_multiple_entries: bool = False, allow_entry_after_exit: bool = False) -> str:
    """Gates: `main` (in and out), `exit` (out only), `night` (closed right now)."""
    now = datetime.now(UTC)
    a, b = (
        (now + timedelta(hours=3)).strftime("%H:00"),
        (now + timedelta(hours=4)).strftime("%H:00"),
    )
    return f"""
event:
  id: {EVENT_ID}
  name: Test Event
  start: 2020-01-01T00:00:00+00:00
  end: 2040-01-01T00:00:00+00:00
  timezone: UTC
gates:
  - {{id: main, name: Main, capacity_per_minute: 100}}
  - {{id: exit, name: Exit, capacity_per_minute: 100}}
  - {{id: side, name: Side, capacity_per_minute: 100}}
  - {{id: night, name: Night, open_hours: ["{a}-{b}"]}}
checkin_rules:
  allow_multiple_entries: {str(allow_multiple_entries).lower()}
  allow_entry_after_exit: {str(allow_entry_after_exit).lower()}
  entry_gates: [main, side, night]
  exit_gates: [main, exit, side]
"""


def write_venue(path: Path, **rules: bool) -> Path:
    path.write_text(venue_yaml(**rules))
    return path


def add_participants(r: redis.Redis, ids: list[str], shards: int = 1) -> None:
    """Upsert `ids` on `participants:in` (or its shards, as the API routes them)."""
    pipe = r.pipeline(transaction=False)
    for pid in ids:
        op = {"op": "upsert", "participant": {"id": pid, "name": f"Name {pid}"}}
        pipe.xadd(keys.participants_in(pid, shards), {"data": json.dumps(op)})
    pipe.execute()


def wait_participants(r: redis.Redis, ids: list[str], timeout: float = 60) -> None:
    wait_for(
        lambda: all(r.hmget(keys.PARTICIPANTS_INDEX, ids)), timeout, what="participants applied"
    )


def scan(
    r: redis.Redis,
    token: str,
    gate: str = "main",
    direction: str = "in",
    nonce: str | None = None,
    ts: datetime | None = None,
    offline: bool = False,
    shards: int = 1,
) -> str:
    """XADD a check-in (to its shard of `checkins:in`, as the API routes it); return its nonce."""
    nonce = nonce or uuid.uuid4().hex
    doc: dict = {"gate_id": gate, "token": token, "direction": direction, "nonce": nonce}
    if ts is not None:
        doc["ts"] = ts.isoformat()
    if offline:
        doc["offline"] = True
    r.xadd(keys.checkins_in(token, gate, shards), {"data": json.dumps(doc)})
    return nonce


def verdict(r: redis.Redis, nonce: str, timeout: float = 30, revision: int = 0) -> dict:
    """The verdict stored for `nonce` (waiting for it, and for at least `revision`)."""

    def get() -> dict | None:
        raw = r.get(keys.verdict_key(nonce))
        if raw is None:
            return None
        v = json.loads(raw)
        return v if v["revision"] >= revision else None

    return wait_for(get, timeout, what=f"verdict for {nonce}")

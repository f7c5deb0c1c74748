"""The events flow's logic as plain functions.

The flow itself validates with `flows.events_fast.decode_batch` (a msgspec fast path, the
model only for what it refuses). `parse_batch`, `live_commands` and `preaggregate` here are the
per-event model path it replaced: the reference `tests/test_events_fast.py` checks the fast
path against (same rows, documents, window groups, dead letters), and what bench/ingest.py's
old baseline ran. Event times, window starts and late-record rows are shared by both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_json

from connectors.redis_streams import StreamBatch
from core import keys
from core.records import parse_event
from flows.dead_letters import DeadLetters, entry_data
from flows.event_time import Closed, Late

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Row key carrying the parsed payload next to its JSON text (the lake ignores extra keys).
PAYLOAD_OBJ = "_payload"


def entry_time(entry_id: str) -> datetime:
    """The time Redis accepted a stream entry (its ID's milliseconds); deterministic on replay."""
    ms = entry_id.split("-", 2)[-2] if entry_id.startswith("ps-") else entry_id.split("-", 1)[0]
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


@dataclass(slots=True)
class Parsed(DeadLetters):
    """One input batch after validation: lake rows, and dead letters both as Redis commands
    (`events:dead`, capped) and as rows for the lake's `dead_letters` table (kept for good)."""

    rows: list[dict[str, Any]] = field(default_factory=list)


def parse_batch(batch: StreamBatch, max_bytes: int) -> Parsed:
    """Validate every entry; valid ones become `events` rows, the rest dead letters.

    Never raises for bad input: each rejected entry keeps its original bytes and the reason.
    """
    out = Parsed()
    for entry_id, data in batch.entries:
        received = entry_time(entry_id)
        try:
            ev = parse_event(entry_data(data), max_bytes)
        except Exception as exc:  # every reason becomes a dead letter, never a crash
            out.refuse(keys.EVENTS_DEAD, exc, batch.stream, entry_id, data, received)
            continue
        out.rows.append(
            {
                "id": entry_id,
                "stream": batch.stream,
                "source": ev.source,
                "type": ev.type,
                "level": ev.level,
                "payload": to_json(ev.payload).decode(),
                PAYLOAD_OBJ: ev.payload,  # for the live JSON; not a lake column
                "ts": ev.ts or received,
                "received_at": received,
            }
        )
    return out


def live_commands(rows: list[dict[str, Any]]) -> list[tuple]:
    """Redis commands that broadcast stored events (seed 003) and feed the dashboard.

    One `events:new` message per event (the seed's contract), one `live:events` message per
    batch (the dashboard's path: one message per event would cap a subscriber at ~3k ev/s) with
    the batch's size, its counts per (minute, level) and its newest 50 events, and the newest
    50 in `events:recent`.
    """
    if not rows:
        return []
    docs = [to_json(_public(r)) for r in rows]
    cmds: list[tuple] = [("PUBLISH", keys.EVENTS_NEW, d) for d in docs]
    newest = docs[-keys.RECENT_SIZE :]
    newest.reverse()
    cmds.append(("LPUSH", keys.EVENTS_RECENT, *reversed(newest)))
    cmds.append(("LTRIM", keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1))
    per_minute: Counter[tuple[datetime, str]] = Counter(
        (r["ts"].replace(second=0, microsecond=0), r["level"]) for r in rows
    )
    minutes = to_json([[m, lv, n] for (m, lv), n in per_minute.items()])
    cmds.append(
        (
            "PUBLISH",
            keys.LIVE_EVENTS,
            b'{"total":%d,"minutes":%s,"events":[%s]}' % (len(docs), minutes, b",".join(newest)),
        )
    )
    return cmds


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """The stored event as broadcast (payload as an object), without re-parsing its JSON."""
    return {
        "id": row["id"],
        "stream": row["stream"],
        "source": row["source"],
        "type": row["type"],
        "level": row["level"],
        "payload": row[PAYLOAD_OBJ],
        "ts": row["ts"],
        "received_at": row["received_at"],
    }


def window_start(ts: datetime, length: timedelta) -> datetime:
    n = (ts - EPOCH) // length
    return EPOCH + n * length


@dataclass(slots=True)
class Group:
    """Events of one (type, level) in one window from one batch, pre-aggregated before the
    keyed exchange so the windowing operator sees one item per group instead of per event."""

    window_start: datetime
    count: int
    max_ts: datetime
    members: list[tuple[str, datetime]]  # (event id, ts), reported if the group comes late


def preaggregate(rows: Iterable[dict[str, Any]], length: timedelta) -> list[tuple[str, Group]]:
    groups: dict[tuple[str, str, datetime], Group] = {}
    for r in rows:
        ts = r["ts"]
        ws = window_start(ts, length)
        k = (r["type"], r["level"], ws)
        g = groups.get(k)
        if g is None:
            groups[k] = Group(ws, 1, ts, [(r["id"], ts)])
        else:
            g.count += 1
            if ts > g.max_ts:
                g.max_ts = ts
            g.members.append((r["id"], ts))
    return [(f"{t}\x1f{lv}", g) for (t, lv, _), g in groups.items()]


def split_key(key: str) -> tuple[str, str]:
    t, lv = key.split("\x1f", 1)
    return t, lv


def count_row(key: str, start: datetime, length: timedelta, count: int, late: bool) -> dict:
    t, lv = split_key(key)
    return {
        "window_start": start,
        "window_end": start + length,
        "type": t,
        "level": lv,
        "count": count,
        "late": late,
        "emitted_at": datetime.now(UTC),
    }


def window_row(res: Closed | Late, length: timedelta) -> dict:
    """The `event_counts` row of a closed window, or the correction for a late group."""
    if isinstance(res, Closed):
        return count_row(res.key, res.window_start, length, res.count, late=False)
    return count_row(res.key, res.group.window_start, length, res.group.count, late=True)


def late_rows(key: str, g: Group, table: str = "events") -> list[dict]:
    """`late_records` rows for a group that arrived after its window closed."""
    now = datetime.now(UTC)
    return [
        {
            "table_name": table,
            "record_id": rid,
            "key": key.replace("\x1f", "/"),
            "ts": ts,
            "window_start": g.window_start,
            "detected_at": now,
        }
        for rid, ts in g.members
    ]

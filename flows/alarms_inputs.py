"""The alarm flow's input: stream entries → observations (events, scans, verdicts) and commands.

Why an own parser rather than the events/check-in flows' outputs: the alarm flow reads the same
durable streams with its own resumable offset, so it depends on no other flow being up and a
replay after its own crash sees exactly the same entries. Entries those flows refuse (invalid
JSON, unknown fields) are *their* dead letters; here they are skipped and counted, so nothing
is dead-lettered twice. Only bad `alarms:commands` entries are this flow's dead letters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.redis_streams import StreamBatch
from core import keys
from core.records import CheckIn, Verdict, parse_event
from flows.events_logic import entry_time


@dataclass(slots=True)
class Obs:
    """One observation a rule may match. For scans `source` is the gate and `type` `scan`;
    for verdicts `source` is the gate and `type` the verdict's status."""

    stream: str  # "events" | "checkins" | "verdicts"
    entry_id: str
    source: str
    type: str
    level: str
    ts: datetime  # event time (the source's ts, else when Redis accepted it)
    arrival: datetime  # when Redis accepted it (the entry id)
    payload: dict[str, Any]
    dedupe: str | None = None  # scans: nonce; verdicts: checkin_id


@dataclass(slots=True)
class CommandIn:
    entry_id: str
    data: bytes | None
    arrival: datetime


Input = Obs | CommandIn


def parse_batch(
    batch: StreamBatch,
    event_streams: frozenset[str],
    max_bytes: int,
    checkin_streams: frozenset[str] | None = None,
) -> list[Input]:
    """Every entry of a batch that the alarm rules could use; others are skipped (see above).
    `checkin_streams`: the scans' streams (default `keys.checkin_streams()`, this deployment's
    `checkins:in` or its input shards)."""
    if checkin_streams is None:
        checkin_streams = frozenset(keys.checkin_streams())
    out: list[Input] = []
    stream = batch.stream
    for entry_id, data in batch.entries:
        arrival = entry_time(entry_id)
        if stream == keys.ALARMS_COMMANDS:
            out.append(CommandIn(entry_id, data, arrival))
            continue
        if data is None:
            continue
        try:
            obs = _parse(stream, event_streams, checkin_streams, entry_id, data, arrival,
                         max_bytes)  # fmt: skip
        except Exception:  # refused and dead-lettered by the owning flow
            continue
        if obs is not None:
            out.append(obs)
    return out


def _parse(
    stream: str,
    event_streams: frozenset[str],
    checkin_streams: frozenset[str],
    entry_id: str,
    data: bytes,
    arrival: datetime,
    max_bytes: int,
) -> Obs | None:
    if stream in event_streams:
        ev = parse_event(data, max_bytes)
        ts = ev.ts or arrival
        return Obs("events", entry_id, ev.source, ev.type, ev.level, ts, arrival, ev.payload)
    if stream in checkin_streams:
        c = CheckIn.model_validate(json.loads(data))
        return Obs("checkins", entry_id, c.gate_id, "scan", "INFO", c.ts or arrival, arrival, {},
                   c.nonce)  # fmt: skip
    if stream == keys.CHECKINS_VERDICTS:
        v = Verdict.model_validate_json(data)
        if v.replayed:  # the answer to a retried nonce: the scan was counted once already
            return None
        return Obs("verdicts", entry_id, v.gate_id, v.status, "INFO", v.ts, arrival, {},
                   v.checkin_id)  # fmt: skip
    return None

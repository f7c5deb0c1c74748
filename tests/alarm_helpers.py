"""Helpers for the alarm tests: a venue with alarm rules, inputs for the engine, commands."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core import keys
from core.venue import Venue, parse_venue
from flows.alarms_inputs import CommandIn, Obs

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

VENUE_HEAD = """
event:
  id: alarm-test
  name: Alarm Test
  start: 2020-01-01T00:00:00+00:00
  end: 2040-01-01T00:00:00+00:00
gates:
  - {id: main, name: Main, capacity_per_minute: 10}
  - {id: side, name: Side, capacity_per_minute: 5}
"""


def venue_with(rules_yaml: str) -> Venue:
    return parse_venue(VENUE_HEAD + "alarm_rules:\n" + rules_yaml)


def write_alarm_venue(path: Path, rules_yaml: str) -> Path:
    path.write_text(VENUE_HEAD + "alarm_rules:\n" + rules_yaml)
    return path


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def ev(
    source: str, typ: str, s: float, payload: dict[str, Any] | None = None, level: str = "INFO",
    arrival: float | None = None, eid: str | None = None,
) -> Obs:  # fmt: skip
    """An event observation at T0 + s seconds (arrives then, unless told otherwise)."""
    return Obs("events", eid or uuid.uuid4().hex, source, typ, level, at(s),
               at(s if arrival is None else arrival), payload or {})  # fmt: skip


def scan(gate: str, s: float, nonce: str | None = None) -> Obs:
    return Obs("checkins", uuid.uuid4().hex, gate, "scan", "INFO", at(s), at(s), {},
               nonce or uuid.uuid4().hex)  # fmt: skip


def verdict(gate: str, status: str, s: float, checkin_id: str | None = None) -> Obs:
    return Obs("verdicts", uuid.uuid4().hex, gate, status, "INFO", at(s), at(s), {},
               checkin_id or uuid.uuid4().hex)  # fmt: skip


def command(
    action: str, alarm_id: str, by: str = "olga", role: str = "organiser",
    command_id: str | None = None, comment: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "command_id": command_id or str(uuid.uuid4()),
        "action": action,
        "alarm_id": alarm_id,
        "by": by,
        "role": role,
        "comment": comment,
        "at": datetime.now(UTC).isoformat(),
    }


def command_in(doc: dict[str, Any] | bytes, s: float = 0) -> CommandIn:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return CommandIn(f"{int(at(s).timestamp() * 1000)}-0", data, at(s))


def xadd_command(r, doc: dict[str, Any] | bytes) -> str:
    data = doc if isinstance(doc, bytes) else json.dumps(doc)
    return r.xadd(keys.ALARMS_COMMANDS, {"data": data}).decode()

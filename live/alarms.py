"""Live alarms in the dashboard: one Redis subscriber, one model, one throttled event (the
person actions, acknowledge and clear, are `ui.alarm_actions`).

`subscriber` (the `live.subscriber.LiveSubscriber` every live model shares) listens to
`live:alarms` (`{"transition": ..., "alarm": <Alarm JSON>}` per change). On every (re)connect
it subscribes FIRST and then reads the `alarms:active` hash (every alarm not both cleared and
acknowledged), so nothing published in between is missed; messages that repeat what the seed
already holds are dropped (acknowledged, cleared, count only move forward). `changed` fires at
most 4 times a second when the model moved (and once a second anyway, so ages keep ticking); a
change after a quiet spell is emitted at once, so a new alarm is not held back by the throttle.
Pages and the CRITICAL banner subscribe and read `model`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis

from core import contract, keys
from live.subscriber import LiveSubscriber, json_object, json_objects, parse_utc

log = logging.getLogger(__name__)

KEEP_TRANSITIONS = 200
_GONE = 5_000  # alarm ids remembered after they left the active set (stale replays ignored)

SEVERITIES = contract.SEVERITIES
STATUSES = contract.ALARM_STATUSES
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
Action = Literal["ack", "clear"]
PERMISSION: dict[str, str] = {"ack": "alarms.ack", "clear": "alarms.clear"}


def _progress(alarm: dict[str, Any]) -> tuple[bool, bool, int]:
    """What only ever grows in an alarm's life: acknowledged, cleared, count. A message
    behind the held state in any of them is stale (a seed overlap or a replay). Wall times are
    not used: the flow stamps an acknowledgement with the command's time, which can be older
    than a repeat applied just before it."""
    status = str(alarm.get("status", ""))
    return (status.endswith("_ACK"), status.startswith("CLEARED"), int(alarm.get("count") or 0))


def _behind(new: dict[str, Any], held: dict[str, Any]) -> bool:
    return any(n < h for n, h in zip(_progress(new), _progress(held), strict=True))


def is_unacked(alarm: dict[str, Any]) -> bool:
    return str(alarm.get("status", "")).endswith("_UNACK")


def is_active(alarm: dict[str, Any]) -> bool:
    return str(alarm.get("status", "")).startswith("ACTIVE")


@dataclass
class AlarmsModel:
    """Open alarms (alarm id → Alarm JSON) and the newest transitions; event loop only."""

    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    transitions: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=KEEP_TRANSITIONS)
    )
    connected: bool = False
    version: int = 0
    _gone: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _seen_transitions: OrderedDict[tuple[str, str, str], None] = field(default_factory=OrderedDict)

    # --- input -----------------------------------------------------------------------------

    def apply(self, transition: str, alarm: dict[str, Any]) -> bool:
        """Fold one `live:alarms` message in; False if it was stale or a duplicate."""
        alarm_id = str(alarm.get("alarm_id") or "")
        if not alarm_id:
            return False
        held = self.open.get(alarm_id)
        if held is not None and _behind(alarm, held):
            return False  # older than what the seed or a later message already gave
        if held is None and alarm_id in self._gone:
            return False  # it left the active set for good (a new one gets a new id)
        if held == alarm:
            return False
        if alarm.get("status") == "CLEARED_ACK":
            self.open.pop(alarm_id, None)
            self._forget(alarm_id)
        else:
            self.open[alarm_id] = alarm
            self._gone.pop(alarm_id, None)
        if transition != "repeated":
            self._log(transition, alarm)
        self.version += 1
        return True

    def seed(self, alarms: list[dict[str, Any]]) -> None:
        """The `alarms:active` hash, read right after subscribing: it IS the present.

        An alarm held here but missing from the hash was cleared and acknowledged while we
        were not listening; a held one newer than its hash entry keeps the newer state.
        """
        fresh: dict[str, dict[str, Any]] = {}
        for a in alarms:
            alarm_id = str(a.get("alarm_id") or "")
            if alarm_id:
                held = self.open.get(alarm_id)
                fresh[alarm_id] = held if held and _behind(a, held) else a
        for alarm_id in self.open:
            if alarm_id not in fresh:
                self._forget(alarm_id)
        self.open = fresh
        self.version += 1

    def _forget(self, alarm_id: str) -> None:
        self._gone[alarm_id] = None
        self._gone.move_to_end(alarm_id)
        if len(self._gone) > _GONE:
            self._gone.popitem(last=False)

    def _log(self, transition: str, alarm: dict[str, Any]) -> None:
        ident = (str(alarm.get("alarm_id")), transition, str(alarm.get("updated_at")))
        if ident in self._seen_transitions:
            return
        self._seen_transitions[ident] = None
        if len(self._seen_transitions) > KEEP_TRANSITIONS * 4:
            self._seen_transitions.popitem(last=False)
        by = {
            "acknowledged": alarm.get("acked_by"),
            "cleared": alarm.get("cleared_by"),
        }.get(transition) or ("rule" if transition in ("raised", "escalated") else None)
        self.transitions.appendleft(
            {
                "transition": transition,
                "alarm_id": alarm.get("alarm_id"),
                "rule_id": alarm.get("rule_id"),
                "rule_name": alarm.get("rule_name"),
                "source": alarm.get("source"),
                "severity": alarm.get("severity"),
                "status": alarm.get("status"),
                "by": by,
                "comment": alarm.get("comment"),
                "at": alarm.get("updated_at"),
            }
        )

    # --- output ----------------------------------------------------------------------------

    def sorted_open(self) -> list[dict[str, Any]]:
        """Unacknowledged first, then by severity, then newest first."""
        far = datetime.min.replace(tzinfo=UTC)
        return sorted(
            self.open.values(),
            key=lambda a: (
                not is_unacked(a),
                SEVERITY_RANK.get(str(a.get("severity")), 9),
                -(parse_utc(a.get("raised_at")) or far).timestamp(),
            ),
        )

    def critical_unacked(self) -> list[dict[str, Any]]:
        """CRITICAL alarms still active and not acknowledged: what the banner shows."""
        return [
            a
            for a in self.sorted_open()
            if a.get("severity") == "CRITICAL" and a.get("status") == "ACTIVE_UNACK"
        ]

    def counts(self) -> dict[str, int]:
        """Open (not cleared-and-acknowledged) alarms per severity."""
        out = dict.fromkeys(SEVERITIES, 0)
        for a in self.open.values():
            sev = str(a.get("severity"))
            if sev in out:
                out[sev] += 1
        return out

    def unacked(self) -> int:
        return sum(1 for a in self.open.values() if is_unacked(a))


model = AlarmsModel()


def handle_message(channel: str, data: bytes | str) -> None:
    """Fold one `live:alarms` message into the model; bad messages are logged, never raised."""
    if (doc := json_object(channel, data)) is None:
        return
    if not isinstance(doc.get("alarm"), dict):
        log.warning("%s: message without an alarm; ignored", channel)
        return
    model.apply(str(doc.get("transition") or "changed"), doc["alarm"])


async def _seed(r: aioredis.Redis) -> None:
    model.seed(json_objects((await r.hgetall(keys.ALARMS_ACTIVE)).values()))


subscriber = LiveSubscriber(
    "alarms", model, handle_message, channels=[keys.LIVE_ALARMS], seed=_seed
)
changed = subscriber.changed  # fired (no arguments) when `model` moved, throttled: read it then
start, stop = subscriber.start, subscriber.stop  # from `app.on_startup` / `app.on_shutdown`

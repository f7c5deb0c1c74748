"""An alarm's lifecycle: rule signals and people's commands → transitions, Redis, lake rows.

ThingsBoard's model: one alarm per (rule, source) while it is not cleared; a repeat raises its
`count` / `last_at` (no new alarm, no new notification); a cleared alarm that triggers again
is a new alarm (`seq` + 1). Statuses ACTIVE_UNACK → ACTIVE_ACK → CLEARED_ACK, or
ACTIVE_UNACK → CLEARED_UNACK → CLEARED_ACK; CLEARED_ACK alarms leave the state and the
`alarms:active` hash (their history stays in the lake).

Anti-flap after a person's clear: the rule's condition usually still holds when someone clears
an alarm by hand. Re-raising at the next reading would flap, so the (rule, source) is
*latched*: fire signals are ignored until the rule itself has seen the condition end once
(its own clear, with hysteresis); the next breach then needs a fresh pending period.

Each function returns its outcome by name; `flush` turns what changed into Redis commands
(HSET/HDEL of the hash once per batch, `live:alarms` at once for raised/acknowledged/cleared,
throttled to one message per alarm per second for repeats).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from core import keys
from core.alarms import (
    Alarm,
    AlarmCommand,
    AlarmStatus,
    AlarmTransition,
    Transition,
    alarm_id,
    split_alarm_id,
)
from core.contract import ALARM_HEAD_FIELDS
from core.notify_plan import TransitionMsg

ACK_ROLES = frozenset({"organiser", "operator"})
CLEAR_ROLES = frozenset({"organiser"})
MAX_COMMAND_IDS = 5000  # command ids remembered for deduplication (a retry comes soon after)
REPEAT_PUBLISH_EVERY = timedelta(seconds=1)

Key = tuple[str, str]  # (rule id, source)
SignalOutcome = Literal[
    "raised", "repeated", "escalated", "cleared", "suppressed", "unlatched", "ignored"
]
CommandOutcome = Literal["acknowledged", "cleared", "duplicate_command", "refused"]


@dataclass(frozen=True, slots=True)
class Signal:
    """What a rule decided for one series: `fire` (condition began), `hold` (still holds:
    a repeat), `rearm` (a new occurrence although a person's clear holds: lifts the latch,
    then fires) or `resolve` (condition over)."""

    kind: Literal["fire", "hold", "rearm", "resolve"]
    rule_id: str
    source: str
    ts: datetime  # event time that caused it
    value: float | None = None
    threshold: float | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    transition: Transition
    doc: bytes  # the Alarm JSON right after the change
    row: dict[str, Any]  # the lake `alarms` row


@dataclass
class Life:
    alarms: dict[str, Alarm] = field(default_factory=dict)  # every alarm not CLEARED_ACK
    open: dict[Key, str] = field(default_factory=dict)  # (rule, source) → its uncleared alarm
    seq: dict[Key, int] = field(default_factory=dict)
    latched: set[Key] = field(default_factory=set)
    revisions: dict[str, int] = field(default_factory=dict)
    commands: dict[str, None] = field(default_factory=dict)  # recent command ids, in order
    dirty: set[str] = field(default_factory=set)  # changed since the last flush
    unpublished: set[str] = field(default_factory=set)  # repeats not yet on live:alarms
    last_pub: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    name: str
    kind: str
    severity: str
    escalate_at: float | None = None
    escalate_to: str | None = None
    below: bool = False  # a `below` threshold: escalates on values under escalate_at

    def escalates(self, value: float | None) -> bool:
        if self.escalate_at is None or value is None:
            return False
        return value < self.escalate_at if self.below else value > self.escalate_at


def on_signal(
    life: Life, rule: RuleInfo, sig: Signal, now: datetime
) -> tuple[SignalOutcome, Change | None]:
    """The one function deciding what a rule's signal does to the (rule, source)'s alarm."""
    key = (rule.id, sig.source)
    if sig.kind == "resolve":
        was_latched = key in life.latched
        life.latched.discard(key)
        aid = life.open.pop(key, None)
        if aid is None:
            return ("unlatched" if was_latched else "ignored"), None
        a = life.alarms[aid]
        status: AlarmStatus = "CLEARED_ACK" if a.acked else "CLEARED_UNACK"
        a.status, a.cleared_at, a.cleared_by, a.updated_at = status, now, "rule", now
        return "cleared", _change(life, a, "cleared", "rule", None, None, now, sig.ts, sig.value)
    if sig.kind == "rearm":
        life.latched.discard(key)
    aid = life.open.get(key)
    if aid is not None:
        a = life.alarms[aid]
        _repeat(life, a, sig, now)
        if rule.escalates(sig.value) and a.severity != rule.escalate_to:
            a.severity = rule.escalate_to  # type: ignore[assignment]
            change = _change(life, a, "escalated", "rule", None, None, now, sig.ts, sig.value)
            return "escalated", change
        return "repeated", None
    if sig.kind == "hold":
        return "ignored", None
    if key in life.latched:
        return "suppressed", None
    seq = life.seq[key] = life.seq.get(key, 0) + 1
    aid = alarm_id(rule.id, sig.source, seq)
    a = Alarm(
        alarm_id=aid, rule_id=rule.id, rule_name=rule.name, kind=rule.kind, source=sig.source,
        severity=rule.escalate_to if rule.escalates(sig.value) else rule.severity,
        status="ACTIVE_UNACK", message=sig.message, value=sig.value,
        threshold=sig.threshold, count=1, first_at=sig.ts, last_at=sig.ts, raised_at=now,
        updated_at=now,
    )  # fmt: skip
    life.alarms[aid] = a
    life.open[key] = aid
    return "raised", _change(life, a, "raised", "rule", None, None, now, sig.ts, sig.value)


def _repeat(life: Life, a: Alarm, sig: Signal, now: datetime) -> None:
    a.count += 1
    if sig.ts > a.last_at:
        a.last_at = sig.ts
    if sig.value is not None:
        a.value = sig.value
    if sig.message:
        a.message = sig.message
    a.updated_at = now
    life.dirty.add(a.alarm_id)
    life.unpublished.add(a.alarm_id)


def on_command(life: Life, cmd: AlarmCommand) -> tuple[CommandOutcome, Change | None, str | None]:
    """The one function deciding a person's ack/clear: applied, a no-op retry, or refused
    with the reason (→ `alarms:dead`)."""
    if cmd.command_id in life.commands:
        return "duplicate_command", None, None
    life.commands[cmd.command_id] = None
    while len(life.commands) > MAX_COMMAND_IDS:
        del life.commands[next(iter(life.commands))]
    refused = _refusal(life, cmd)
    if refused:
        return "refused", None, refused
    a = life.alarms[cmd.alarm_id]
    at = cmd.at
    if cmd.action == "ack":
        a.status = "CLEARED_ACK" if a.cleared else "ACTIVE_ACK"
        a.acked_at, a.acked_by = at, cmd.by
        transition: Transition = "acknowledged"
    else:
        a.status = "CLEARED_ACK" if a.acked else "CLEARED_UNACK"
        a.cleared_at, a.cleared_by = at, cmd.by
        key = (a.rule_id, a.source)
        life.open.pop(key, None)
        life.latched.add(key)  # no re-raise until the rule has seen the condition end
        transition = "cleared"
    if cmd.comment:
        a.comment = cmd.comment
    a.updated_at = at
    change = _change(life, a, transition, cmd.by, cmd.role, cmd.comment, at, None, a.value)
    return ("acknowledged" if cmd.action == "ack" else "cleared"), change, None


def _refusal(life: Life, cmd: AlarmCommand) -> str | None:
    allowed = ACK_ROLES if cmd.action == "ack" else CLEAR_ROLES
    if cmd.role not in allowed:
        return f"role {cmd.role!r} may not {cmd.action} alarms (allowed: {sorted(allowed)})"
    try:
        rule_id, source, seq = split_alarm_id(cmd.alarm_id)
    except ValueError as exc:
        return str(exc)
    a = life.alarms.get(cmd.alarm_id)
    if a is None:
        if 0 < seq <= life.seq.get((rule_id, source), 0):
            return f"alarm {cmd.alarm_id} is already cleared and acknowledged"
        return f"unknown alarm {cmd.alarm_id}"
    if cmd.action == "ack" and a.acked:
        return f"alarm {cmd.alarm_id} is already acknowledged ({a.status})"
    if cmd.action == "clear" and a.cleared:
        return f"alarm {cmd.alarm_id} is already cleared ({a.status})"
    return None


def _change(
    life: Life,
    a: Alarm,
    transition: Transition,
    by: str,
    role: str | None,
    comment: str | None,
    at: datetime,
    event_ts: datetime | None,
    value: float | None,
) -> Change:
    rev = life.revisions[a.alarm_id] = life.revisions.get(a.alarm_id, 0) + 1
    # The row is built with its model (the lake table is derived from it): a field added there
    # must be filled here, or validation fails at once (transitions are rare: cost is nil).
    row = AlarmTransition(
        **a.model_dump(include=ALARM_HEAD_FIELDS), transition=transition, status=a.status,
        by=by, role=role, comment=comment, at=at, event_ts=event_ts, value=value,
        count=a.count, message=a.message, revision=rev,
    ).model_dump()  # fmt: skip
    doc = a.model_dump_json().encode()
    life.dirty.add(a.alarm_id)
    life.unpublished.discard(a.alarm_id)
    life.last_pub[a.alarm_id] = at
    if a.status == "CLEARED_ACK":  # done: leaves the state and the hash
        del life.alarms[a.alarm_id]
        life.revisions.pop(a.alarm_id, None)
        life.last_pub.pop(a.alarm_id, None)
    return Change(transition, doc, row)


#: XADD to `alarms:transitions` once per (alarm id, revision, first_at): a replayed epoch after
#: a crash re-sends its commands (the sink is at-least-once), and this makes the stream exactly
#: once for the notifier. Keyed by the transition, not by a position, so a replay that decides
#: transitions in another order (clock ticks) still neither loses nor repeats one; `first_at`
#: (event time: the same in a replay) tells a state started afresh, whose alarm seqs begin at 1
#: again, from the old one. (A key made when the state began was tried first: a crash before
#: the first committed snapshot made a new one, and 122 of 375 transitions came twice.) The
#: keys are kept 7 days (Redis's clock).
_XADD_ONCE = (
    "local now = tonumber(redis.call('TIME')[1]) "
    "if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1]) == 0 then return 0 end "
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 604800) "
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'data', ARGV[2]) "
    "return 1"
)


#: The fields of an `alarms:transitions` entry taken from the history row (the rest is the
#: alarm itself): derived from the entry's model, so the two cannot drift.
TRANSITION_MSG_FIELDS: tuple[str, ...] = tuple(
    f for f in TransitionMsg.model_fields if f != "alarm"
)


def transition_command(change: Change) -> tuple:
    """The `alarms:transitions` entry of one change (`core.notify_plan.TransitionMsg`)."""
    row = change.row
    first_at = json.loads(change.doc)["first_at"]
    key = f"{row['alarm_id']}/{row['revision']}/{first_at}"
    meta = json.dumps({k: row[k] for k in TRANSITION_MSG_FIELDS}, separators=(",", ":")).encode()
    data = meta[:-1] + b',"alarm":' + change.doc + b"}"
    return ("EVAL", _XADD_ONCE, 2, keys.ALARMS_TRANSITIONS, keys.ALARMS_TRANSITIONS_SEEN,
            key, data, keys.ALARMS_TRANSITIONS_MAXLEN)  # fmt: skip


def live_message(transition: str, doc: bytes) -> bytes:
    return b'{"transition":"%s","alarm":%s}' % (transition.encode(), doc)


def flush(life: Life, now: datetime) -> list[tuple]:
    """Redis commands for what changed: the hash once per alarm, throttled repeat messages."""
    cmds: list[tuple] = []
    for aid in sorted(life.dirty):
        a = life.alarms.get(aid)
        if a is None:
            cmds.append(("HDEL", keys.ALARMS_ACTIVE, aid))
        else:
            cmds.append(("HSET", keys.ALARMS_ACTIVE, aid, a.model_dump_json()))
    life.dirty.clear()
    for aid in sorted(life.unpublished):
        a = life.alarms.get(aid)
        last = life.last_pub.get(aid)
        if a is None:
            life.unpublished.discard(aid)
        elif last is None or now - last >= REPEAT_PUBLISH_EVERY:
            cmds.append(
                (
                    "PUBLISH",
                    keys.LIVE_ALARMS,
                    live_message("repeated", a.model_dump_json().encode()),
                )
            )
            life.last_pub[aid] = now
            life.unpublished.discard(aid)
    return cmds


#: Replace the whole hash atomically with the flow's state (after a restart: whatever an
#: uncommitted epoch wrote before the crash is overwritten by what the replay decided).
_RESYNC = (
    "redis.call('DEL', KEYS[1]) "
    "for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end "
    "return #ARGV / 2"
)


def resync(life: Life) -> list[tuple]:
    args: list[str] = []
    for aid, a in sorted(life.alarms.items()):
        args += [aid, a.model_dump_json()]
    life.dirty.clear()
    return [("EVAL", _RESYNC, 1, keys.ALARMS_ACTIVE, *args)]

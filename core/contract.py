"""The contract lists and the lake's record rows, each defined once.

Every list that more than one process (or module) must agree on is written here and nowhere
else; what else needs it is derived from it:

- event levels (`Level`; `LEVELS` derived), check-in outcomes (`CHECKIN_OUTCOMES`, with the
  reason a gate shows; `CheckinStatus` derived), alarm severities, statuses and transitions
  (`Severity`, `AlarmStatus`, `Transition`; the tuples derived);
- the rows that are both a record crossing processes and a row of a lake table: `StoredEvent`
  (`events`), `EventCount` (`event_counts`), `DeadLetterRow` (`dead_letters`), `Verdict`
  (`checkins`), `RequestLog` (`request_logs`), `AlarmTransition` (`alarms`). The lake
  schemas in `storage.tables` are derived from these models (`storage.tables.columns_of`);
  `tests/test_contracts.py` proves each row builder writes exactly its table's columns.

Why a module of its own: it imports nothing of Venueflow, so `storage.tables` can derive the
lake schemas from it without an import cycle (`core.records` needs `core.keys`, which needs
`core.settings`, which needs `storage`). `core.records` and `core.alarms` re-export these
names for their users.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field, JsonValue

# --- lists ---------------------------------------------------------------------------------

Level = Literal["INFO", "WARN", "ERROR", "CRITICAL"]
#: The same list as a tuple, in order of severity (derived: one definition).
LEVELS: tuple[Level, ...] = get_args(Level)

#: Every outcome of a check-in, each with the reason a gate shows. `decide` in
#: `flows.checkins_logic` is the one function that picks among them.
CHECKIN_OUTCOMES: dict[str, str] = {
    "accepted": "welcome",
    "duplicate": "ticket already used: this person is inside",
    "reentry_not_allowed": "this ticket has left and may not enter again",
    "exit_without_entry": "this ticket has not entered (or has already left)",
    "unknown_token": "not a ticket of ours, or no such participant",
    "invalid_signature": "the ticket's signature is wrong: forged or altered",
    "revoked": "the ticket was revoked",
    "wrong_event": "the ticket is for another event",
    "unknown_gate": "no such gate in the venue file",
    "wrong_direction": "this gate may not scan in that direction",
    "gate_closed": "the gate is closed at this time",
    "nonce_conflict": "this nonce already names another scan (another ticket, gate or direction)",
}
#: The same list as a type (derived: one definition).
CheckinStatus = Literal[tuple(CHECKIN_OUTCOMES)]  # type: ignore[valid-type]
#: Outcomes where the ticket is fine but the movement is not (a gate shows them amber; every
#: other outcome but `accepted` is a refusal, shown red).
CHECKIN_WARNINGS: frozenset[str] = frozenset(
    {"duplicate", "reentry_not_allowed", "exit_without_entry"}
)
Direction = Literal["in", "out"]
CheckinMethod = Literal["qr_scan", "manual", "beacon"]

#: The contract lists of alarms, each written once; the tuples are derived from the types.
Severity = Literal["CRITICAL", "MAJOR", "MINOR", "WARNING"]
#: Most severe first (escalation moves towards the front).
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
AlarmStatus = Literal["ACTIVE_UNACK", "ACTIVE_ACK", "CLEARED_UNACK", "CLEARED_ACK"]
ALARM_STATUSES: tuple[AlarmStatus, ...] = get_args(AlarmStatus)
Transition = Literal["raised", "repeated", "acknowledged", "cleared", "escalated"]
TRANSITIONS: tuple[Transition, ...] = get_args(Transition)


# --- rows (each the source of its lake table) ------------------------------------------


class StoredEvent(BaseModel):
    """An event as stored in the lake and broadcast on `events:new` / kept in `events:recent`.

    The flow builds these documents on its hot path without the model (see
    `flows.events_logic`); this is their schema for consumers, checked by the tests, and the
    lake table `events` is derived from it (`storage.tables`; `payload` as JSON text).
    """

    id: str
    stream: str
    source: str
    type: str
    level: Level
    payload: dict[str, JsonValue]
    ts: datetime
    received_at: datetime


class DeadLetter(BaseModel):
    """An `events:dead` (`checkins:dead`, `video:dead`, ...) entry: the reason, where it came
    from, and the original bytes."""

    origin: str  # the stream key, or `pubsub:<channel>`
    origin_id: str  # the stream entry ID (or pub/sub message ID) that was refused
    reason: str
    data: bytes  # the original bytes, untouched (empty if the entry had no `data` field)


class DeadLetterRow(DeadLetter):
    """A row of the lake's `dead_letters` (the table is derived from it): the entry, kept for
    good, with the time its input arrived. `data` is null if the entry had no `data` field."""

    data: bytes | None
    received_at: datetime


class EventCount(BaseModel):
    """Events per (type, level) in one event-time window, as on `live:event_counts` and in the
    lake's `event_counts` parts (the table is derived from it). `late` rows are corrections for
    events after the window closed.
    """

    window_start: datetime
    window_end: datetime
    type: str
    level: Level
    count: int
    late: bool = False
    emitted_at: datetime


class Verdict(BaseModel):
    """The decision on one scan, on `checkins:verdict:<gate_id>` and in the lake `checkins`
    (the table is derived from it, without `replayed`: replayed answers are not stored).

    `revision` > 0 marks a later correction of an earlier verdict (an offline scan with an
    earlier time arrived: the earliest scan wins). `replayed` marks the answer to a retried
    nonce (the original verdict, counted once). `flagged`: a person went through on an offline
    gate's say-so although the ticket was not valid for it, or a verdict was overturned.
    `token_fp` is the scanned token's fingerprint (never the token itself).
    """

    checkin_id: str
    nonce: str
    gate_id: str
    direction: Direction
    status: CheckinStatus
    reason: str
    participant_id: str | None = None
    participant_name: str | None = None
    ts: datetime
    received_at: datetime
    decided_at: datetime
    method: CheckinMethod = "qr_scan"
    device_id: str | None = None
    offline: bool = False
    flagged: bool = False
    revision: int = 0
    replayed: bool = False
    token_fp: str | None = None


class RequestLog(BaseModel):
    """A `request_logs` row as `GET /logs` returns it (the lake table is derived from it;
    `metadata` as JSON text there). `origin` is the stream it came from (`activity:in` or
    `video:commands`); `id` its entry id there."""

    id: str
    origin: str
    ts: datetime
    event: str
    client_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    room_id: str | None = None
    camera_id: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    received_at: datetime


class AlarmHead(BaseModel):
    """What names an alarm and says how bad it is: the first fields of both `Alarm` (the live
    alarm) and `AlarmTransition` (its history row), defined once for both."""

    alarm_id: str
    rule_id: str
    rule_name: str
    kind: str
    source: str
    severity: Severity


#: The fields an `AlarmTransition` copies from its `Alarm` as they are at the transition.
ALARM_HEAD_FIELDS: frozenset[str] = frozenset(AlarmHead.model_fields)


class AlarmTransition(AlarmHead):
    """A row of the lake's `alarms` history: one per raised / acknowledged / cleared /
    escalated (repeats only raise the live alarm's count). The one definition of that row: the
    lake table (`storage.tables.ALARMS`) is derived from these fields, the alarm flow builds
    each row with this model (`flows.alarms_lifecycle`), the alarm API reads the history by
    them. `revision` numbers an alarm's transitions (1 = raised), so its latest status is the
    row with the highest revision."""

    transition: Transition
    status: AlarmStatus
    by: str
    role: str | None = None
    comment: str | None = None
    at: datetime
    event_ts: datetime | None = None
    value: float | None = None
    count: int
    message: str
    revision: int

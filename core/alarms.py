"""Alarm rules (the venue file's `alarm_rules:`) and the alarm records crossing processes.

Why one module: the venue file, the alarm flow, the dashboard and the tests must agree on what
a rule means and on the shape of an `Alarm` (the `alarms:active` hash, `live:alarms`), an
`AlarmCommand` (`alarms:commands`) and an `AlarmTransition` (a row of the lake's `alarms`
history; defined with the severity, status and transition lists in `core.contract`, from which
the lake table is derived, and re-exported here). Rules are validated when the venue file is
loaded, so a mistake stops the process at start with the path of the bad field
(`alarm_rules.2.threshold.clear_at: ...`).

Lifecycle (ThingsBoard's): ACTIVE_UNACK → ACTIVE_ACK (a person acknowledges) → CLEARED_ACK
(the rule or a person clears), or ACTIVE_UNACK → CLEARED_UNACK → CLEARED_ACK. One alarm per
(rule, source) while it is not cleared; its id is `<rule_id>|<source>|<seq>`, and a cleared
alarm that triggers again is a new alarm with seq + 1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The alarm lists and the history row are defined in `core.contract` (once; storage derives
# the lake table `alarms` from the row) and re-exported here, with the other alarm records.
from core.contract import ALARM_STATUSES as ALARM_STATUSES
from core.contract import SEVERITIES as SEVERITIES
from core.contract import TRANSITIONS as TRANSITIONS
from core.contract import AlarmHead as AlarmHead
from core.contract import AlarmStatus as AlarmStatus
from core.contract import AlarmTransition as AlarmTransition
from core.contract import Severity as Severity
from core.contract import Transition as Transition
from core.records import CHECKIN_OUTCOMES, CheckinStatus, Level, SourceTime

RuleId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
#: A source id or a shell-style glob (`gas-*`, `cam-?`); `*` matches every source.
SourceGlob = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^|\s]+$")]
EventType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-*?]+$")]
Seconds = Annotated[float, Field(ge=0, le=86_400)]

#: Verdicts that count as a refused token for `refused_burst` unless a rule lists its own:
#: every status but `accepted` and `duplicate` (a person scanned twice is no attack signal).
REFUSED_STATUSES: tuple[str, ...] = tuple(
    s for s in CHECKIN_OUTCOMES if s not in ("accepted", "duplicate")
)


class _Rule(BaseModel):
    """What every rule kind shares. A kind is a subclass with `kind: Literal["<name>"]`, listed
    in `AlarmRule`; its behaviour is `flows.alarm_kinds.<name>` (see that package's recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: False for kinds whose signals carry no value (escalation is refused at load).
    has_value: ClassVar[bool] = True

    id: RuleId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    severity: Severity
    enabled: bool = True
    #: How late (event time) data may arrive and still count; older data is reported in the
    #: lake's `late_records` (table_name `alarms`) and does not change any alarm.
    lateness_s: Seconds = 10.0
    #: Optional escalation: while the alarm is not cleared, a value beyond `escalate_at` (the
    #: reading of a threshold rule, the window's count of a windowed one) raises its severity
    #: to `escalate_to`, once (transition `escalated`). Not for absence / raise_clear.
    escalate_at: float | None = None
    escalate_to: Severity | None = None

    @model_validator(mode="after")
    def _escalation(self) -> _Rule:
        if (self.escalate_at is None) != (self.escalate_to is None):
            raise ValueError("give both escalate_at and escalate_to, or neither")
        if self.escalate_to is None:
            return self
        if not self.has_value:
            raise ValueError(f"{getattr(self, 'kind', '')} rules have no value to escalate on")
        if SEVERITIES.index(self.escalate_to) >= SEVERITIES.index(self.severity):
            raise ValueError("escalate_to must be more severe than severity")
        return self

    @property
    def escalates_below(self) -> bool:
        """True when lower values are worse (escalation then means below `escalate_at`)."""
        return False

    @property
    def named_gates(self) -> list[str]:
        """The gate ids the rule names (the venue checks that each exists)."""
        return []


class _GateRule(_Rule):
    """A rule over gates' scans or verdicts (source = gate id); `gates` unset = every gate."""

    gates: list[RuleId] | None = None
    lateness_s: Seconds = 30.0

    @property
    def named_gates(self) -> list[str]:
        return self.gates or []

    def watches(self, gate_id: str) -> bool:
        return self.gates is None or gate_id in self.gates


class ThresholdRule(_Rule):
    """A payload value beyond a limit for `for_s` seconds of event time (Grafana's pending
    period). Clears once the value is back past `clear_at` for `clear_for_s` (hysteresis)."""

    kind: Literal["threshold"]
    type: EventType
    source: SourceGlob = "*"
    field: Annotated[str, Field(min_length=1, max_length=64)]
    above: float | None = None
    below: float | None = None
    for_s: Seconds = 0.0
    clear_at: float | None = None
    clear_for_s: Seconds = 0.0

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` or `below`")
        if self.clear_at is not None:
            if self.above is not None and self.clear_at > self.above:
                raise ValueError("clear_at must be <= above (the clear level is on the safe side)")
            if self.below is not None and self.clear_at < self.below:
                raise ValueError("clear_at must be >= below (the clear level is on the safe side)")
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def clear_level(self) -> float:
        return self.clear_at if self.clear_at is not None else self.limit

    @property
    def escalates_below(self) -> bool:
        return self.below is not None

    def breaches(self, v: float) -> bool:
        return v > self.above if self.above is not None else v < self.below  # type: ignore[operator]

    def cleared(self, v: float) -> bool:
        """Back on the safe side of the clear level (inclusive)."""
        return v <= self.clear_level if self.above is not None else v >= self.clear_level


class RateRule(_Rule):
    """More than `count` matching events from one source in a `window_s` event-time window.
    Clears after `clear_windows` closed windows in a row with at most `count` events."""

    kind: Literal["rate"]
    type: EventType = "*"
    level: list[Level] | None = None
    source: SourceGlob = "*"
    count: Annotated[int, Field(ge=0, le=10_000_000)]
    window_s: Annotated[int, Field(gt=0, le=86_400)] = 60
    clear_windows: Annotated[int, Field(ge=1, le=1000)] = 1


class AbsenceRule(_Rule):
    """No data from a source for `after_s` seconds (Grafana's no-data state). `sources` are ids
    or globs; a plain id is watched from the flow's start even if it never sent anything, a glob
    only covers sources it has seen. `input: checkins` watches gates (by `gate_id`) instead."""

    kind: Literal["absence"]
    has_value: ClassVar[bool] = False
    input: Literal["events", "checkins"] = "events"
    sources: Annotated[list[SourceGlob], Field(min_length=1, max_length=1000)]
    type: EventType = "*"
    after_s: Annotated[float, Field(gt=0, le=86_400)]


class RaiseClearRule(_Rule):
    """Raised by one event type, cleared by another from the same source — e.g. the video
    flow's `camera.error` / `camera.recovered` (source = camera id). After a person's clear, a
    `raise_on` event coming `rearm_s` or more after the previous one is a new occurrence (a new
    alarm); closer ones are the same ongoing trouble (no re-raise: no flapping)."""

    kind: Literal["raise_clear"]
    has_value: ClassVar[bool] = False
    raise_on: EventType
    clear_on: EventType
    source: SourceGlob = "*"
    rearm_s: Seconds = 60.0


class GateCongestionRule(_GateRule):
    """Scans per gate per minute (event time, `checkins:in`) above `factor` x the gate's
    `capacity_per_minute` for `for_minutes` minutes in a row; clears after `clear_minutes`
    minutes at or below `clear_factor` x capacity (hysteresis)."""

    kind: Literal["gate_congestion"]
    factor: Annotated[float, Field(gt=0, le=1000)] = 1.0
    for_minutes: Annotated[int, Field(ge=1, le=1440)] = 1
    clear_factor: Annotated[float, Field(ge=0, le=1000)] | None = None
    clear_minutes: Annotated[int, Field(ge=1, le=1440)] = 1

    @model_validator(mode="after")
    def _hysteresis(self) -> GateCongestionRule:
        if self.clear_factor is not None and self.clear_factor > self.factor:
            raise ValueError("clear_factor must be <= factor")
        return self


class RefusedBurstRule(_GateRule):
    """More than `count` refused scans at one gate in a `window_s` event-time window
    (`checkins:verdicts`; a verdict counts once per check-in, however often it is re-sent)."""

    kind: Literal["refused_burst"]
    statuses: list[CheckinStatus] | None = None
    count: Annotated[int, Field(ge=0, le=10_000_000)]
    window_s: Annotated[int, Field(gt=0, le=86_400)] = 60
    clear_windows: Annotated[int, Field(ge=1, le=1000)] = 1

    @property
    def refused(self) -> frozenset[str]:
        return frozenset(self.statuses or REFUSED_STATUSES)


#: The one list of rule kinds (the venue file's `kind:`); `flows.alarm_kinds` has a handler
#: for each and checks so at import.
AlarmRule = Annotated[
    ThresholdRule | RateRule | AbsenceRule | RaiseClearRule | GateCongestionRule | RefusedBurstRule,
    Field(discriminator="kind"),
]


def rule_kind(model: type[BaseModel]) -> str:
    """A rule model's kind name (its `kind` literal)."""
    (name,) = get_args(model.model_fields["kind"].annotation)
    return name


#: Each kind's name → its model, derived from `AlarmRule`.
RULE_MODELS: dict[str, type[_Rule]] = {rule_kind(m): m for m in get_args(get_args(AlarmRule)[0])}


# --- records ------------------------------------------------------------------------------------


def alarm_id(rule_id: str, source: str, seq: int) -> str:
    """Deterministic: a replay after a crash reproduces the same id."""
    return f"{rule_id}|{source}|{seq}"


def split_alarm_id(aid: str) -> tuple[str, str, int]:
    """(rule_id, source, seq); ValueError if `aid` is not an alarm id."""
    parts = aid.split("|")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit():
        raise ValueError(f"{aid!r} is not an alarm id (rule|source|seq)")
    return parts[0], parts[1], int(parts[2])


class Alarm(AlarmHead):
    """One alarm: a value of the `alarms:active` hash and the `alarm` of a `live:alarms`
    message. Mutable on purpose: the flow updates count/last_at in place per repeat."""

    status: AlarmStatus
    message: str
    value: float | None = None
    threshold: float | None = None
    count: int = 1
    first_at: datetime
    last_at: datetime
    raised_at: datetime
    acked_at: datetime | None = None
    acked_by: str | None = None
    cleared_at: datetime | None = None
    cleared_by: str | None = None
    comment: str | None = None
    updated_at: datetime

    @property
    def cleared(self) -> bool:
        return self.status.startswith("CLEARED")

    @property
    def acked(self) -> bool:
        return self.status.endswith("_ACK")


class AlarmCommand(BaseModel):
    """An entry of `alarms:commands` (the dashboard XADDs it after checking the user's role;
    the flow checks the role again and applies each `command_id` once)."""

    model_config = ConfigDict(extra="forbid")
    command_id: Annotated[str, Field(min_length=8, max_length=128)]
    action: Literal["ack", "clear"]
    alarm_id: Annotated[str, Field(min_length=1, max_length=400)]
    by: Annotated[str, Field(min_length=1, max_length=128)]
    role: Annotated[str, Field(min_length=1, max_length=64)]
    comment: Annotated[str, Field(max_length=2000)] | None = None
    #: When the person acted (naive = UTC; not more than 5 minutes ahead of the flow's clock).
    at: SourceTime


class LiveAlarm(BaseModel):
    """A `live:alarms` message."""

    transition: Transition
    alarm: Alarm

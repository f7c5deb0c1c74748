"""The venue file (`VENUE_CONFIG`): the event, its gates and check-in rules, its cameras.

One YAML file describes what the organiser runs; every process reads it through `load_venue`
so the check-in flow, the video flow, the simulators and the dashboard agree on ids and rules.
A mistake in the file stops the process at start with the path of the bad field, never later.
The documented example is `venue.example.yaml` at the project root (the default).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.alarms import AlarmRule
from core.notify_config import FAILING_RULE_ID, Notifications, in_span, parse_span
from core.records import Id, reason_of

EXAMPLE_VENUE = Path(__file__).resolve().parent.parent / "venue.example.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventInfo(_Strict):
    """The event itself. Its `id` is signed into every token: a token of another event is
    refused as `wrong_event`."""

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=200)]
    start: datetime
    end: datetime
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        return tz

    @model_validator(mode="after")
    def _ordered(self) -> EventInfo:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a UTC offset, e.g. 2026-11-21T09:00:00+01:00")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Gate(_Strict):
    """A gate: where people are scanned. `open_hours` are daily local times of the event's time
    zone (`HH:MM-HH:MM`; `22:00-02:00` spans midnight; `00:00-24:00` is always open)."""

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=200)]
    capacity_per_minute: Annotated[int, Field(gt=0, le=100_000)] = 60
    open_hours: list[str] = Field(default_factory=lambda: ["00:00-24:00"], min_length=1)

    @field_validator("open_hours")
    @classmethod
    def _valid_hours(cls, spans: list[str]) -> list[str]:
        for span in spans:
            parse_span(span)
        return spans

    def is_open(self, ts: datetime, zone: ZoneInfo) -> bool:
        local = ts.astimezone(zone).time().replace(tzinfo=None)
        return any(in_span(local, span) for span in self.open_hours)


class CheckinRules(_Strict):
    """pretix's check-in list rules. `entry_gates`/`exit_gates`: which gates may scan people in
    or out (unset: every gate may do both)."""

    allow_multiple_entries: bool = False
    allow_entry_after_exit: bool = True
    entry_gates: list[Id] | None = None
    exit_gates: list[Id] | None = None


class Camera(_Strict):
    """An RTSP camera: captured once by the video flow, shared by every viewer."""

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=200)]
    rtsp_url: Annotated[str, Field(min_length=1, max_length=2000)]
    fps: Annotated[float, Field(gt=0, le=120)] = 15.0
    width: Annotated[int, Field(gt=0, le=7680)] = 640
    height: Annotated[int, Field(gt=0, le=4320)] = 480
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 75
    #: Start capturing when the video flow starts (else wait for a `start` command).
    autostart: bool = True


class Venue(_Strict):
    event: EventInfo
    gates: list[Gate] = Field(min_length=1)
    checkin_rules: CheckinRules = CheckinRules()
    cameras: list[Camera] = Field(default_factory=list)
    #: Alarm rules evaluated by the alarm flow (see core/alarms.py for each kind).
    alarm_rules: list[AlarmRule] = Field(default_factory=list)
    #: Where alarms are sent (core/notify_config.py; docs/notifications.md).
    notifications: Notifications = Notifications()

    @model_validator(mode="after")
    def _consistent(self) -> Venue:
        n = self.notifications
        if (n.targets or n.mail_url) and all(r.id != FAILING_RULE_ID for r in self.alarm_rules):
            # frozen model: set once here, before anything reads it
            object.__setattr__(self, "alarm_rules", [*self.alarm_rules, n.failing_rule()])
        for what, items in (("gate", self.gates), ("camera", self.cameras)):
            ids = [i.id for i in items]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {what} id(s): {', '.join(sorted(dup))}")
        gate_ids = {g.id for g in self.gates}
        for field in ("entry_gates", "exit_gates"):
            listed = getattr(self.checkin_rules, field) or []
            unknown = [g for g in listed if g not in gate_ids]
            if unknown:
                raise ValueError(f"checkin_rules.{field} names unknown gate(s): {unknown}")
        self._check_alarm_rules(gate_ids)
        return self

    def _check_alarm_rules(self, gate_ids: set[str]) -> None:
        ids = [r.id for r in self.alarm_rules]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate alarm rule id(s): {', '.join(dup)}")
        for i, rule in enumerate(self.alarm_rules):
            unknown = [g for g in rule.named_gates if g not in gate_ids]
            if unknown:
                raise ValueError(f"alarm_rules.{i}.gates names unknown gate(s): {unknown}")

    @cached_property
    def gate_index(self) -> dict[str, Gate]:
        return {g.id: g for g in self.gates}

    def gate(self, gate_id: str) -> Gate | None:
        return self.gate_index.get(gate_id)

    def camera(self, camera_id: str) -> Camera | None:
        return next((c for c in self.cameras if c.id == camera_id), None)

    def may_scan(self, gate_id: str, direction: Literal["in", "out"]) -> bool:
        allowed = (
            self.checkin_rules.entry_gates if direction == "in" else self.checkin_rules.exit_gates
        )
        return allowed is None or gate_id in allowed

    def minute_of(self, ts: datetime) -> datetime:
        return ts.astimezone(UTC).replace(second=0, microsecond=0)

    @property
    def span(self) -> timedelta:
        return self.event.end - self.event.start


class VenueError(ValueError):
    """The venue file is missing or invalid; the message names the file and each bad field."""


def parse_venue(text: str, where: str = "<venue>") -> Venue:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VenueError(f"{where}: not valid YAML: {exc}") from None
    try:
        return Venue.model_validate(doc)
    except ValidationError as exc:
        raise VenueError(f"{where}: {reason_of(exc)}") from None


def load_venue(path: Path | None = None) -> Venue:
    """The venue file at `path` (`VENUE_CONFIG`), or the shipped example when unset."""
    p = Path(path) if path else EXAMPLE_VENUE
    try:
        text = p.read_text()
    except OSError as exc:
        raise VenueError(f"venue file {p}: {exc.strerror or exc}") from None
    return parse_venue(text, str(p))


@lru_cache
def venue_for(path: Path | None) -> Venue:
    """`load_venue`, cached per path (the file is read once per process)."""
    return load_venue(path)

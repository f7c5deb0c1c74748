"""What to send, to whom, when: the notifier's pure decisions (no Redis, no network).

- `plan(...)`: one alarm transition (an `alarms:transitions` entry) → the notifications due
  (routes of the venue file, then people's subscriptions), the ones a route's quiet hours
  held back, and the escalations to start or stop.
- `escalation_step(...)`: an escalation whose time has come → the notifications of its next
  level, and when the one after is due (or None).
- `retry_delay(attempt)`, `health_after(...)`: retries with backoff, and when a target counts
  as failing / recovered.

Every notification has a stable id, `<alarm id>/<what>/<target>/<route>` (`what` is the
transition and its revision, or `escalation-<level>`): the outbox keys it, the receiver gets
it (`webhook-id`, e-mail `Message-ID`) to de-duplicate on, and a replayed transition maps to
the same id (so it is never planned twice).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.alarms import SEVERITIES, Alarm, Severity, Transition
from core.notify_config import Glob, Notifications, NotifyOn, Route

USER_TARGET_PREFIX = "user."
SUBSCRIPTION_ROUTE = "subscription"
EMAIL = re.compile(r"^[^@\s/:?&]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
BACKOFF_FIRST_S, BACKOFF_MAX_S = 2.0, 300.0
JobKind = Literal["transition", "escalation", "test"]


class TransitionMsg(BaseModel):
    """An `alarms:transitions` entry (`data`): written by the alarm flow once per transition."""

    transition: Transition
    revision: int
    by: str
    role: str | None = None
    comment: str | None = None
    alarm: Alarm


class Job(BaseModel):
    """One notification in the outbox (`notify:jobs`), with its attempts so far."""

    id: str
    kind: JobKind = "transition"
    transition: str  # raised / acknowledged / cleared / escalated / escalation / test
    level: int = 0  # escalation level (1 = first escalation)
    target: str  # a target name, or user.<username>
    route: str  # a route name, `subscription` or `test`
    alarm: Alarm | None = None
    by: str | None = None
    comment: str | None = None
    attempt: int = 0  # attempts made so far
    created_at: float  # epoch seconds when it was planned


class Subscription(BaseModel):
    """A person's own notifications (the Notifications page), kept in `notify:subscriptions`."""

    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(min_length=1, max_length=64)]
    address: Annotated[str, Field(min_length=3, max_length=2000)]
    severities: list[Severity] = Field(default_factory=lambda: ["CRITICAL", "MAJOR"])
    rules: list[Glob] = Field(default_factory=lambda: ["*"])
    send_on: list[NotifyOn] = Field(default_factory=lambda: ["raised", "cleared"])
    enabled: bool = True

    @field_validator("address")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @property
    def is_email(self) -> bool:
        return bool(EMAIL.match(self.address))

    def matches(self, severity: str, rule_id: str, transition: str) -> bool:
        return (
            self.enabled
            and transition in self.send_on
            and severity in self.severities
            and any(fnmatchcase(rule_id, g) for g in self.rules)
        )


def address_problem(address: str, n: Notifications) -> str | None:
    """Why a person's address cannot be used (None: it can)."""
    a = address.strip()
    if EMAIL.match(a):
        if not n.mail_url:
            return "e-mail needs `notifications.mail_url` in the venue file (ask an organiser)"
        return None
    scheme = a.split("://", 1)[0].lower() if "://" in a else ""
    if not scheme:
        return "give an e-mail address or an Apprise URL (e.g. ntfys://…, tgram://…)"
    if scheme not in n.user_schemes:
        return f"{scheme}:// is not allowed here (allowed: {', '.join(n.user_schemes)})"
    return None


def notification_id(alarm_id: str, what: str, target: str, route: str) -> str:
    return f"{alarm_id}/{what}/{target}/{route}"


def user_target(username: str) -> str:
    return f"{USER_TARGET_PREFIX}{username}"


class Escalation(BaseModel):
    """A running escalation (`notify:escalation`): `route` escalated to `to` every step."""

    key: str
    alarm: Alarm
    route: str
    to: str
    level: int = 0  # steps done
    due: float  # epoch seconds of the next step
    repeat_s: float | None = None


class Skipped(BaseModel):
    target: str
    route: str
    reason: str


class Plan(BaseModel):
    jobs: list[Job] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    escalations: list[Escalation] = Field(default_factory=list)
    stop_escalations: bool = False  # acknowledged / cleared: every escalation of it ends


def escalation_key(alarm_id: str, route: str) -> str:
    return f"{alarm_id}#{route}"


def _when(msg: TransitionMsg) -> datetime:
    a = msg.alarm
    at = {"acknowledged": a.acked_at, "cleared": a.cleared_at}.get(msg.transition)
    return at or a.updated_at


def plan(
    n: Notifications,
    subs: list[Subscription],
    msg: TransitionMsg,
    zone: ZoneInfo,
    now: float,
) -> Plan:
    """The notifications one transition causes. Repeats never notify (the flow does not write
    them to the stream). Quiet hours are judged at the transition's own time, so a backlog
    replayed later decides the same."""
    out = Plan()
    a, tr = msg.alarm, msg.transition
    what = f"{tr}-{msg.revision}"
    when = _when(msg)
    seen: set[str] = set()
    for route in n.routes:
        if route.escalation_only or not route.matches(a.severity, a.rule_id, a.source):
            continue
        if tr == "raised" and route.escalate_to and route.escalate_after_min:
            due = a.raised_at + timedelta(minutes=route.escalate_after_min)
            out.escalations.append(
                Escalation(
                    key=escalation_key(a.alarm_id, route.name), alarm=a, route=route.name,
                    to=route.escalate_to, due=due.timestamp(),
                    repeat_s=route.repeat_every_min * 60 if route.repeat_every_min else None,
                )
            )  # fmt: skip
        if tr not in route.send_on:
            continue
        quiet = route.quiet(a.severity, when, zone)
        for t in route.targets:
            if t in seen:
                continue
            seen.add(t)
            if quiet:
                out.skipped.append(Skipped(target=t, route=route.name, reason="quiet hours"))
                continue
            out.jobs.append(_job(a, what, tr, t, route.name, msg, now))
    for s in subs:
        if s.matches(a.severity, a.rule_id, tr) and address_problem(s.address, n) is None:
            out.jobs.append(
                _job(a, what, tr, user_target(s.username), SUBSCRIPTION_ROUTE, msg, now)
            )
    out.stop_escalations = tr in ("acknowledged", "cleared")
    return out


def _job(a: Alarm, what: str, tr: str, target: str, route: str, msg: TransitionMsg, now: float):
    return Job(
        id=notification_id(a.alarm_id, what, target, route), transition=tr, target=target,
        route=route, alarm=a, by=msg.by, comment=msg.comment, created_at=now,
    )  # fmt: skip


def escalation_step(
    n: Notifications, esc: Escalation, status: str | None, now: float
) -> tuple[list[Job], Escalation | None, str]:
    """An escalation that is due: its jobs, the escalation with its next step (None: done),
    and what happened (`escalated`, or why it stopped). `status` is the alarm's status now
    (None: it left `alarms:active`, i.e. cleared and acknowledged)."""
    if status is None or status != "ACTIVE_UNACK":
        return [], None, f"stopped: alarm is {status or 'CLEARED_ACK'}"
    to: Route | None = n.route(esc.to)
    if to is None:
        return [], None, f"stopped: route {esc.to!r} no longer exists"
    level = esc.level + 1
    what = f"escalation-{level}"
    jobs = [
        Job(
            id=notification_id(esc.alarm.alarm_id, what, t, to.name),
            kind="escalation",
            transition="escalation",
            level=level,
            target=t,
            route=to.name,
            alarm=esc.alarm,
            by="escalation",
            created_at=now,
        )
        for t in to.targets
    ]
    nxt = None
    if esc.repeat_s:
        # the next step counts from this one's due time (no drift), but never lies in the past
        due = max(esc.due + esc.repeat_s, now + 1.0)
        nxt = esc.model_copy(update={"level": level, "due": due})
    return jobs, nxt, "escalated"


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt + 1` after `attempt` failures: 2, 4, 8, … ≤ 300."""
    return min(BACKOFF_FIRST_S * 2 ** max(0, attempt - 1), BACKOFF_MAX_S)


class TargetHealth(BaseModel):
    """Per target (`notify:health`): failures in a row and whether it counts as failing."""

    failures: int = 0
    failing: bool = False
    last_error: str | None = None
    last_ok_at: float | None = None
    last_failed_at: float | None = None


def health_after(
    h: TargetHealth, ok: bool, error: str | None, failing_after: int, now: float
) -> tuple[TargetHealth, Literal["failing", "recovered"] | None]:
    """The target's health after one attempt, and the alarm event it causes (if any)."""
    if ok:
        event = "recovered" if h.failing else None
        return TargetHealth(last_ok_at=now, last_failed_at=h.last_failed_at), event
    failures = h.failures + 1
    failing = h.failing or failures >= failing_after
    event = "failing" if failing and not h.failing else None
    nh = TargetHealth(
        failures=failures, failing=failing, last_error=error, last_ok_at=h.last_ok_at,
        last_failed_at=now,
    )  # fmt: skip
    return nh, event


def severity_rank(s: str) -> int:
    return SEVERITIES.index(s) if s in SEVERITIES else len(SEVERITIES)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


AttemptResult = Literal[
    "delivered", "failed", "gave_up", "quiet_hours", "escalated", "escalation_stopped", "test"
]


class AttemptRow(BaseModel):
    """One row of the lake's `notifications` table (via the `notify:attempts` stream): an
    attempt to send (delivered / failed / gave_up), a notification a route's quiet hours held
    back, or an escalation step — the alarm's notification history."""

    notification_id: str
    alarm_id: str | None = None
    rule_id: str | None = None
    source: str | None = None
    severity: str | None = None
    transition: str
    level: int = 0
    target: str
    route: str
    attempt: int = 0
    result: AttemptResult
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    at: datetime


def attempt_row(
    job: Job, result: AttemptResult, now: float, latency_ms: float | None = None,
    error: str | None = None, status_code: int | None = None,
) -> AttemptRow:  # fmt: skip
    a = job.alarm
    return AttemptRow(
        notification_id=job.id, alarm_id=a.alarm_id if a else None,
        rule_id=a.rule_id if a else None, source=a.source if a else None,
        severity=a.severity if a else None, transition=job.transition, level=job.level,
        target=job.target, route=job.route, attempt=job.attempt, result=result,
        status_code=status_code, latency_ms=latency_ms, error=error, at=utc(now),
    )  # fmt: skip

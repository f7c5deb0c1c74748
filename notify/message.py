"""What a notification says: a title and a text for people, a JSON body for machines.

The JSON body is modelled on Alertmanager's webhook payload (`status: firing|resolved`,
`labels`, `annotations`, `startsAt`/`endsAt`, `generatorURL`) with the alarm itself under
`alarm`. It is the same for every attempt of one notification (only the signature's
timestamp changes), so a receiver may compare or store it as it likes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from core.notify_plan import Job

SCHEMA_VERSION = "1"


def status_of(job: Job) -> str:
    """`resolved` for a clear, `firing` for everything else (an acknowledged alarm still
    fires: the condition holds)."""
    return "resolved" if job.transition == "cleared" else "firing"


def link(job: Job, link_base: str) -> str:
    base = link_base.rstrip("/")
    if job.alarm is None:
        return f"{base}/alarms"
    return f"{base}/alarms?alarm={quote(job.alarm.alarm_id, safe='')}"


def _value(job: Job) -> str:
    a = job.alarm
    if a is None or a.value is None:
        return "-"
    v = f"{a.value:g}"
    return v + (f" (threshold {a.threshold:g})" if a.threshold is not None else "")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def title(job: Job) -> str:
    """One line (a source or message with a line break must not add e-mail headers)."""
    return _CONTROL.sub(" ", _title(job))


def _title(job: Job) -> str:
    a = job.alarm
    if job.kind == "test" or a is None:
        return f"[TEST] Venueflow test notification to {job.target}"
    what = {
        "raised": "FIRING",
        "escalated": "ESCALATED",
        "acknowledged": "ACKNOWLEDGED",
        "cleared": "RESOLVED",
        "escalation": f"NOT ACKNOWLEDGED (escalation {job.level})",
    }.get(job.transition, job.transition.upper())
    return f"[{a.severity}] {what}: {a.rule_name} — {a.source} (value {_value(job)})"


def text(job: Job, link_base: str) -> str:
    a = job.alarm
    if job.kind == "test" or a is None:
        return (
            f"This is a test notification from Venueflow to {job.target}.\n"
            f"If you read this, alarms will reach you here.\n\nNotification id: {job.id}\n"
        )
    lines = [
        f"Severity: {a.severity}",
        f"Rule: {a.rule_name} ({a.rule_id})",
        f"Source: {a.source}",
        f"Value: {_value(job)}",
        f"Message: {a.message}",
        f"Status: {a.status} ({job.transition}"
        + (f", escalation level {job.level}" if job.level else "")
        + ")",
        f"Raised at: {a.raised_at.isoformat()} (count {a.count})",
    ]
    if a.acked_by:
        lines.append(
            f"Acknowledged by {a.acked_by} at {a.acked_at.isoformat() if a.acked_at else ''}"
        )
    if a.cleared_by:
        lines.append(
            f"Cleared by {a.cleared_by} at {a.cleared_at.isoformat() if a.cleared_at else ''}"
        )
    if a.comment:
        lines.append(f"Comment: {a.comment}")
    lines += ["", f"Open: {link(job, link_base)}", f"Notification id: {job.id}"]
    return "\n".join(lines) + "\n"


def payload(job: Job, link_base: str) -> dict[str, Any]:
    """The signed webhook's JSON body."""
    a = job.alarm
    body: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "notification_id": job.id,
        "status": status_of(job),
        "transition": job.transition,
        "escalation_level": job.level,
        "route": job.route,
        "receiver": job.target,
        "test": job.kind == "test",
        "link": link(job, link_base),
    }
    if a is None:
        return body
    body.update(
        alarm={
            "id": a.alarm_id, "rule_id": a.rule_id, "rule_name": a.rule_name, "kind": a.kind,
            "source": a.source, "severity": a.severity, "status": a.status,
            "message": a.message, "value": a.value, "threshold": a.threshold,
            "count": a.count, "first_at": a.first_at.isoformat(),
            "last_at": a.last_at.isoformat(), "raised_at": a.raised_at.isoformat(),
            "acked_at": a.acked_at.isoformat() if a.acked_at else None, "acked_by": a.acked_by,
            "cleared_at": a.cleared_at.isoformat() if a.cleared_at else None,
            "cleared_by": a.cleared_by, "comment": a.comment,
        },
        labels={"alertname": a.rule_id, "rule": a.rule_id, "source": a.source,
                "severity": a.severity},
        annotations={"summary": a.rule_name, "description": a.message},
        startsAt=a.raised_at.isoformat(),
        endsAt=a.cleared_at.isoformat() if a.cleared_at else None,
        generatorURL=link(job, link_base),
    )  # fmt: skip
    return body

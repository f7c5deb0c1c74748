"""The notifier's decisions and the venue file's `notifications:` section, without processes:
routes, quiet hours, subscriptions, escalation steps, retries, target health, secrets,
redaction, and the Standard Webhooks signature (the spec's own test vector)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.alarms import Alarm
from core.notify_config import FAILING_RULE_ID, Notifications, redact, resolve, scrub
from core.notify_plan import (
    Escalation,
    Subscription,
    TargetHealth,
    TransitionMsg,
    address_problem,
    attempt_row,
    escalation_step,
    health_after,
    plan,
    retry_delay,
)
from core.venue import VenueError, parse_venue
from notify import message
from notify.webhook import BadSignature, sign, signature, verify
from storage.catalog import connect_memory, query
from storage.lake import LakeWriter
from storage.queries import history_query
from tests.alarm_helpers import VENUE_HEAD

UTC0 = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)  # 23:30 UTC
ZONE = ZoneInfo("UTC")

NOTIFY = Notifications.model_validate(
    {
        "mail_url": "mailtos://{env:SMTP_USER}:{env:SMTP_PASSWORD}@smtp.example.com?from=a@example.com",
        "targets": [
            {"name": "ops", "url": "mailto://smtp.example.com?to=ops@example.com"},
            {"name": "hook", "url": "https://hooks.example.com/x", "secret": "{env:HOOK}"},
            {"name": "kitchen", "url": "ntfys://{env:NTFY_TOPIC}"},
            {"name": "lead", "url": "tgram://{env:TG_TOKEN}/{env:TG_CHAT}"},
        ],
        "routes": [
            {"name": "crit", "targets": ["ops", "hook"], "severities": ["CRITICAL"],
             "escalate_after_min": 10, "escalate_to": "leads", "repeat_every_min": 5},
            {"name": "kitchen", "targets": ["kitchen", "ops"], "sources": ["*-kitchen"],
             "send_on": ["raised", "acknowledged", "cleared"], "quiet_hours": ["22:00-07:00"]},
            {"name": "leads", "targets": ["lead"], "escalation_only": True},
        ],
    }
)  # fmt: skip


def alarm(severity: str = "CRITICAL", source: str = "gas-hall", rule: str = "gas", **kw) -> Alarm:
    doc = dict(
        alarm_id=f"{rule}|{source}|1", rule_id=rule, rule_name="Gas high", kind="threshold",
        source=source, severity=severity, status="ACTIVE_UNACK", message="GAS ppm 150 > 100",
        value=150.0, threshold=100.0, first_at=UTC0, last_at=UTC0, raised_at=UTC0,
        updated_at=UTC0,
    )  # fmt: skip
    doc.update(kw)
    return Alarm(**doc)


def msg(a: Alarm, transition: str = "raised", revision: int = 1) -> TransitionMsg:
    return TransitionMsg(transition=transition, revision=revision, by="rule", alarm=a)


def targets(p) -> list[tuple[str, str]]:
    return [(j.target, j.route) for j in p.jobs]


def test_routes_by_severity_and_source_one_notification_per_target() -> None:
    p = plan(NOTIFY, [], msg(alarm("CRITICAL", "gas-kitchen")), ZONE, 0)
    # crit names ops first; kitchen adds only its own target (quiet hours spare CRITICAL)
    assert targets(p) == [("ops", "crit"), ("hook", "crit"), ("kitchen", "kitchen")]
    assert p.jobs[0].id == "gas|gas-kitchen|1/raised-1/ops/crit"
    assert targets(plan(NOTIFY, [], msg(alarm("MAJOR", "gas-hall")), ZONE, 0)) == []
    # acknowledged: only routes that send on it
    ack = alarm("MAJOR", "temp-kitchen", status="ACTIVE_ACK", acked_by="otto",
                acked_at=UTC0.replace(hour=12))  # fmt: skip
    assert targets(plan(NOTIFY, [], msg(ack, "acknowledged", 2), ZONE, 0)) == [
        ("kitchen", "kitchen"), ("ops", "kitchen"),
    ]  # fmt: skip


def test_quiet_hours_hold_back_all_but_critical() -> None:
    night = alarm("MAJOR", "temp-kitchen")  # raised 23:30 UTC, inside 22:00-07:00
    p = plan(NOTIFY, [], msg(night), ZONE, 0)
    assert p.jobs == []
    assert [(s.target, s.route, s.reason) for s in p.skipped] == [
        ("kitchen", "kitchen", "quiet hours"), ("ops", "kitchen", "quiet hours"),
    ]  # fmt: skip
    day = alarm("MAJOR", "temp-kitchen", raised_at=UTC0.replace(hour=12),
                updated_at=UTC0.replace(hour=12))  # fmt: skip
    assert targets(plan(NOTIFY, [], msg(day), ZONE, 0)) == [("kitchen", "kitchen"),
                                                            ("ops", "kitchen")]  # fmt: skip
    # the same instant is daytime in another time zone: quiet hours are local
    assert plan(NOTIFY, [], msg(night), ZoneInfo("Asia/Tokyo"), 0).skipped == []
    assert targets(plan(NOTIFY, [], msg(alarm("CRITICAL", "x-kitchen")), ZONE, 0))[-1] == (
        "kitchen", "kitchen",
    )  # fmt: skip


def test_subscriptions_pick_severities_rules_and_transitions() -> None:
    subs = [
        Subscription(username="alice", address="alice@example.com", severities=["MAJOR"]),
        Subscription(
            username="bob",
            address="ntfys://bobs-topic",
            rules=["gas*"],
            severities=["CRITICAL"],
            send_on=["raised"],
        ),
        Subscription(username="carl", address="carl@example.com", enabled=False),
    ]
    p = plan(NOTIFY, subs, msg(alarm("CRITICAL")), ZONE, 0)
    assert ("user.bob", "subscription") in targets(p)
    assert ("user.alice", "subscription") not in targets(p)
    p = plan(NOTIFY, subs, msg(alarm("MAJOR", rule="temp")), ZONE, 0)
    assert [t for t in targets(p) if t[0].startswith("user.")] == [("user.alice", "subscription")]
    cleared = alarm("CRITICAL", status="CLEARED_UNACK", cleared_by="rule", cleared_at=UTC0)
    assert all(t != "user.bob" for t, _ in targets(plan(NOTIFY, subs, msg(cleared, "cleared"),
                                                        ZONE, 0)))  # fmt: skip
    no_mail = Notifications()
    assert "mail_url" in (address_problem("alice@example.com", no_mail) or "")
    assert "json:// is not allowed" in (address_problem("json://10.0.0.1/x", NOTIFY) or "")
    assert address_problem("ntfys://topic", NOTIFY) is None


def test_escalation_starts_on_raise_steps_and_stops() -> None:
    p = plan(NOTIFY, [], msg(alarm()), ZONE, 0)
    (esc,) = p.escalations
    assert esc.route == "crit" and esc.to == "leads"
    assert esc.due == (UTC0 + timedelta(minutes=10)).timestamp() and esc.repeat_s == 300
    jobs, nxt, what = escalation_step(NOTIFY, esc, "ACTIVE_UNACK", esc.due)
    assert what == "escalated" and [(j.target, j.route, j.level) for j in jobs] == [
        ("lead", "leads", 1)
    ]
    assert jobs[0].id == "gas|gas-hall|1/escalation-1/lead/leads"
    assert nxt is not None and nxt.level == 1 and nxt.due == esc.due + 300
    jobs2, nxt2, _ = escalation_step(NOTIFY, nxt, "ACTIVE_UNACK", nxt.due)
    assert jobs2[0].level == 2 and nxt2 is not None and nxt2.due == esc.due + 600
    for status in ("ACTIVE_ACK", "CLEARED_UNACK", None):
        jobs, nxt, what = escalation_step(NOTIFY, esc, status, esc.due)
        assert jobs == [] and nxt is None and what.startswith("stopped")
    assert plan(NOTIFY, [], msg(alarm(), "acknowledged", 2), ZONE, 0).stop_escalations
    assert plan(NOTIFY, [], msg(alarm(), "cleared", 2), ZONE, 0).stop_escalations
    # a late notifier never schedules a step in the past
    late = Escalation(key="k", alarm=alarm(), route="crit", to="leads", due=100, repeat_s=60)
    assert escalation_step(NOTIFY, late, "ACTIVE_UNACK", 1000)[1].due == 1001  # type: ignore[union-attr]


def test_retries_back_off_and_health_turns_failing_then_recovered() -> None:
    assert [retry_delay(a) for a in (1, 2, 3, 4, 9, 20)] == [2, 4, 8, 16, 300, 300]
    h = TargetHealth()
    events = []
    for ok in (False, False, False, False, True, True):
        h, ev = health_after(h, ok, None if ok else "HTTP 500", 3, 1.0)
        events.append(ev)
    assert events == [None, None, "failing", None, "recovered", None]
    assert h.failures == 0 and not h.failing


def test_secrets_are_names_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(doc: dict) -> str:
        with pytest.raises(ValueError) as exc:
            Notifications.model_validate(doc)
        return str(exc.value)

    assert "password is written in the URL" in bad(
        {"targets": [{"name": "m", "url": "mailtos://bob:hunter2@smtp.example.com"}]}
    )
    assert "?token= is written" in bad({"targets": [{"name": "m", "url": "xyz://h/?token=abc"}]})
    assert "never the secret itself" in bad(
        {"targets": [{"name": "w", "url": "https://h/x", "secret": "whsec_abc"}]}
    )
    assert "needs `secret`" in bad({"targets": [{"name": "w", "url": "https://h/x"}]})
    assert "unknown target" in bad({"routes": [{"name": "r", "targets": ["nope"]}]})
    with pytest.raises(VenueError, match=r"notifications\.targets\.0"):
        parse_venue(
            VENUE_HEAD + "notifications:\n  targets:\n    - {name: m, url: 'mailto://u:pw@h'}\n"
        )

    monkeypatch.setenv("SMTP_USER", "alarms")
    monkeypatch.setenv("SMTP_PASSWORD", "p@ss/w:rd")
    url, used = resolve(NOTIFY.mail_url or "")
    assert url.startswith("mailtos://alarms:p%40ss%2Fw%3Ard@smtp.example.com")
    assert scrub(f"login failed for {url}", used) == (
        "login failed for mailtos://***:***@smtp.example.com?from=a@example.com"
    )
    assert redact("mailtos://bob:hunter2@h?to=x&pass=y") == "mailtos://bob:***@h?to=x&pass=***"
    assert redact(NOTIFY.mail_url or "") == NOTIFY.mail_url  # names are fine to show
    monkeypatch.delenv("SMTP_PASSWORD")
    with pytest.raises(ValueError, match="SMTP_PASSWORD is not set"):
        resolve(NOTIFY.mail_url or "")


def test_targets_add_the_failing_rule() -> None:
    venue = parse_venue(
        VENUE_HEAD + "notifications:\n  targets:\n    - {name: m, url: 'ntfy://t'}\n"
    )
    rule = venue.alarm_rules[-1]
    assert rule.id == FAILING_RULE_ID and rule.kind == "raise_clear" and rule.severity == "MAJOR"
    assert all(r.id != FAILING_RULE_ID for r in parse_venue(VENUE_HEAD).alarm_rules)


def test_standard_webhooks_signature() -> None:
    # the test vector of the Standard Webhooks spec's reference libraries
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    headers = sign(secret, "msg_1", body, now=1000)
    assert verify(secret, headers, body, now=1010) == {"test": 2432232314}
    with pytest.raises(BadSignature, match="no valid signature"):
        verify(secret, headers, body.replace(b"4", b"5"), now=1010)
    with pytest.raises(BadSignature, match="too old"):
        verify(secret, headers, body, now=1000 + 301)
    with pytest.raises(BadSignature, match="no valid signature"):
        verify("whsec_" + "A" * 32, headers, body, now=1010)


def test_message_names_severity_rule_source_value() -> None:
    p = plan(NOTIFY, [], msg(alarm()), ZONE, 0)
    job = p.jobs[0]
    assert (
        message.title(job) == "[CRITICAL] FIRING: Gas high — gas-hall (value 150 (threshold 100))"
    )
    body = message.payload(job, "https://venue.example/")
    assert body["status"] == "firing" and body["alarm"]["value"] == 150.0
    assert body["link"] == "https://venue.example/alarms?alarm=gas%7Cgas-hall%7C1"
    assert body["labels"] == {"alertname": "gas", "rule": "gas", "source": "gas-hall",
                              "severity": "CRITICAL"}  # fmt: skip


def test_a_title_is_one_line_whatever_the_source_says() -> None:
    evil = alarm(source="gas\r\nBcc: victim@example.com", message="x\ny")
    job = plan(NOTIFY, [], msg(evil), ZONE, 0).jobs[0]
    assert "\n" not in message.title(job) and "\r" not in message.title(job)
    assert "gas Bcc: victim@example.com" in message.title(job)


def test_alarm_history_says_when_it_escalated(tmp_path: Path) -> None:
    """The alarm page's history query over a real lake (Parquet + DuckDB): the alarm's
    transitions and the notifier's escalation steps, newest first, filtered by alarm id."""
    lake = tmp_path / "lake"
    a = alarm()
    LakeWriter(lake, "alarms", "t").write(
        [{"alarm_id": a.alarm_id, "rule_id": "gas", "rule_name": "Gas high", "kind": "threshold",
          "source": "gas-hall", "severity": "CRITICAL", "transition": "raised",
          "status": "ACTIVE_UNACK", "by": "rule", "role": None, "comment": None, "at": UTC0,
          "event_ts": UTC0, "value": 150.0, "count": 1, "message": "m", "revision": 1}], 0,
    )  # fmt: skip
    esc = Escalation(key="k", alarm=a, route="crit", to="leads", due=0, repeat_s=None)
    jobs, _, _ = escalation_step(NOTIFY, esc, "ACTIVE_UNACK", UTC0.timestamp() + 600)
    step = jobs[0].model_copy(update={"target": "lead"})
    other = step.model_copy(update={"alarm": alarm(source="gas-other")})
    LakeWriter(lake, "notifications", "t").write(
        [attempt_row(step, "escalated", UTC0.timestamp() + 600).model_dump(),
         attempt_row(other, "escalated", UTC0.timestamp() + 600).model_dump()], 0,
    )  # fmt: skip
    sql, params = history_query(UTC0 - timedelta(days=1), {"alarm_id": a.alarm_id})
    con = connect_memory(lake)
    got = query(con, sql, params)[1]
    assert [(r[1], r[6], r[8]) for r in got] == [
        ("escalation 1", "notifier", "not acknowledged: notified route leads (lead)"),
        ("raised", "rule", None),
    ]
    sql, params = history_query(UTC0 - timedelta(days=1), {"alarm_id": a.alarm_id}, "raised")
    assert [r[1] for r in query(con, sql, params)[1]] == ["raised"]

"""Notifications end to end: real Redis, the real alarm flow and notifications flow (Bytewax,
recovery on), the real notifier process, a real SMTP server and real HTTP receivers on
loopback that verify the Standard Webhooks signature.

- a raised alarm reaches the mail server (subject and body name severity, rule, source and
  value) and the signed webhook (verified; a tampered body is refused); the clear follows as
  RESOLVED / `status: resolved`; every attempt is in the lake's `notifications`;
- escalation: unacknowledged → the second route after N, again every M; acknowledged → stops;
- routes by severity and source, quiet hours (never for CRITICAL), people's subscriptions;
- a target that keeps failing raises "notifications failing" on the dashboard's alarm hash;
- kill -9 of the notifier mid-burst: every notification arrives, none twice except the ones
  that were in flight at the kill (which receivers de-duplicate by `webhook-id`);
- `run.py notify test TARGET` prints the outcome.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis

from core import keys
from core.notify_plan import Subscription
from notify.webhook import BadSignature, verify, webhook_id
from tests.alarm_helpers import command, xadd_command
from tests.conftest import FlowProcess, free_port, wait_for
from tests.lake_helpers import rows
from tests.notify_helpers import (
    SECRET,
    NotifierProcess,
    SmtpReceiver,
    WebhookReceiver,
    gas,
    write_notify_venue,
)

GAS_RULE = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100, clear_at: 90}
"""
TEMP_RULE = """
  - {id: temp, name: Too hot, kind: threshold, severity: MAJOR, type: TEMP, source: "*",
     field: c, above: 40}
"""


class Stack:
    """Alarm flow + notifications flow + notifier over one Redis, with one venue file."""

    def __init__(self, flow_env: dict[str, str], data_dir: Path, venue: Path):
        self.env = {**flow_env, "VENUE_CONFIG": str(venue), "TEST_HOOK_SECRET": SECRET}
        self.data_dir = data_dir
        self.alarms = FlowProcess("alarms", self.env, data_dir / "alarms-flow.log")
        self.lake = FlowProcess("notifications", self.env, data_dir / "notify-flow.log")
        self.notifier = NotifierProcess(self.env, data_dir / "notifier.log")

    def start(self, r: redis.Redis) -> Stack:
        self.alarms.start()
        self.lake.start()
        self.notifier.start()
        wait_for(lambda: r.get(keys.heartbeat_key("alarms")), 60, what="the alarm flow")
        wait_for(lambda: r.get(keys.heartbeat_key("notifier")), 60, what="the notifier")
        return self

    def stop(self) -> None:
        for p in (self.notifier, self.alarms, self.lake):
            if p.alive():
                p.kill()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    s = SmtpReceiver().start()
    yield s
    s.stop()


def _receivers(n: int, **kw) -> list[WebhookReceiver]:
    return [WebhookReceiver(**kw).start() for _ in range(n)]


def _lake(data_dir: Path, sql: str) -> list[tuple]:
    return rows(data_dir, sql)


def test_raise_and_clear_reach_mail_and_signed_webhook(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path, smtp: SmtpReceiver
) -> None:
    (hook,) = _receivers(1)
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE, f"""
  link_base: http://venue.example:8080
  targets:
    - {{name: ops-mail, url: "mailto://127.0.0.1:{smtp.port}?from=alarms@venueflow.example.com&to=ops@example.com"}}
    - {{name: hook, url: "{hook.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
  routes:
    - {{name: everything, targets: [ops-mail, hook], send_on: [raised, cleared]}}
""")  # fmt: skip
    stack = Stack(flow_env, data_dir, venue).start(r)
    try:
        r.xadd(keys.EVENTS_IN, {"data": gas("gas-hall-a", 150)})
        wait_for(lambda: len(smtp.texts()) >= 1 and len(hook.bodies()) >= 1, 60,
                 what="the raised alarm's e-mail and webhook")  # fmt: skip
        subject, body = smtp.texts()[0]
        for word in ("CRITICAL", "FIRING", "Gas high", "gas-hall-a", "150"):
            assert word in subject, (word, subject)
        for line in (
            "Severity: CRITICAL",
            "Rule: Gas high (gas)",
            "Source: gas-hall-a",
            "Value: 150 (threshold 100)",
            "Open: http://venue.example:8080/alarms?alarm=",
        ):
            assert line in body, (line, body)  # fmt: skip
        doc = hook.bodies()[0]
        assert doc["status"] == "firing" and doc["transition"] == "raised"
        assert doc["alarm"]["id"] == "gas|gas-hall-a|1"
        assert doc["alarm"]["severity"] == "CRITICAL" and doc["alarm"]["value"] == 150
        assert doc["alarm"]["rule_id"] == "gas" and doc["alarm"]["source"] == "gas-hall-a"
        assert doc["link"] == "http://venue.example:8080/alarms?alarm=gas%7Cgas-hall-a%7C1"
        assert hook.accepted[0]["id"] == webhook_id(doc["notification_id"])

        # The receiver verified it (Standard Webhooks); the same body changed by one byte
        # does not verify, neither here nor at the receiver (401).
        got = hook.accepted[0]
        raw = json.dumps(got["body"], separators=(",", ":"), ensure_ascii=False).encode()
        verify(SECRET, got["headers"], raw)
        with pytest.raises(BadSignature):
            verify(SECRET, got["headers"], raw.replace(b'"firing"', b'"resolved"'))
        sent = ("webhook-id", "webhook-timestamp", "webhook-signature")
        resp = httpx.post(hook.url, content=raw.replace(b"150", b"151"),
                          headers={k: got["headers"][k] for k in sent})  # fmt: skip
        assert resp.status_code == 401 and hook.refused == ["no valid signature"]

        r.xadd(keys.EVENTS_IN, {"data": gas("gas-hall-a", 50)})
        wait_for(lambda: len(smtp.texts()) >= 2 and len(hook.bodies()) >= 2, 60,
                 what="the cleared alarm's e-mail and webhook")  # fmt: skip
        subject2, body2 = smtp.texts()[1]
        assert "RESOLVED" in subject2 and "gas-hall-a" in subject2 and "CRITICAL" in subject2
        assert "Status: CLEARED_UNACK (cleared)" in body2
        assert hook.bodies()[1]["status"] == "resolved"
        assert hook.bodies()[1]["alarm"]["cleared_by"] == "rule"

        def delivered() -> list[tuple]:
            return _lake(data_dir, "select target, transition, result, attempt, latency_ms "
                         "from notifications order by \"at\"")  # fmt: skip

        got_rows = wait_for(lambda: len(d := delivered()) >= 4 and d, 60, what="lake rows")
        assert sorted((t, tr, res, a) for t, tr, res, a, _ in got_rows) == [
            ("hook", "cleared", "delivered", 1), ("hook", "raised", "delivered", 1),
            ("ops-mail", "cleared", "delivered", 1), ("ops-mail", "raised", "delivered", 1),
        ]  # fmt: skip
        assert all(lat is not None and lat >= 0 for *_, lat in got_rows)
        assert r.hlen(keys.NOTIFY_JOBS) == 0  # the outbox is empty
    finally:
        stack.stop()
        hook.stop()


def test_escalation_until_acknowledged(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    first, lead = _receivers(2)
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE, f"""
  targets:
    - {{name: first, url: "{first.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
    - {{name: lead, url: "{lead.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
  routes:
    - {{name: on-call, targets: [first], escalate_after_min: 0.05, escalate_to: leads,
       repeat_every_min: 0.05}}
    - {{name: leads, targets: [lead], escalation_only: true}}
""")  # fmt: skip
    stack = Stack(flow_env, data_dir, venue).start(r)
    try:
        sent_at = time.time()  # the alarm is raised after this (from this event)
        r.xadd(keys.EVENTS_IN, {"data": gas("gas-x", 180)})
        wait_for(lambda: first.bodies(), 60, what="the first route")
        assert lead.bodies() == [] or time.time() - sent_at >= 3.0  # not before 3 s
        wait_for(lambda: len(lead.bodies()) >= 2, 30, what="two escalation steps")
        # 3 s, then 3 s more (real clock), counted from before the raise: under parallel load
        # the first delivery itself can come seconds after the raise, so it is no start mark.
        assert time.time() - sent_at >= 6.0
        esc = lead.bodies()
        assert [b["escalation_level"] for b in esc[:2]] == [1, 2]
        assert all(b["transition"] == "escalation" and b["route"] == "leads" for b in esc)
        assert esc[0]["alarm"]["status"] == "ACTIVE_UNACK"

        xadd_command(r, command("ack", "gas|gas-x|1", by="otto", role="operator"))
        wait_for(
            lambda: json.loads(r.hget(keys.ALARMS_ACTIVE, "gas|gas-x|1"))["status"]
            == "ACTIVE_ACK", 30, what="the acknowledgement",
        )  # fmt: skip
        n = len(lead.bodies())
        time.sleep(7)  # two more steps would be due by now
        assert len(lead.bodies()) <= n + 1  # at most one step that was already under way
        assert r.zcard(keys.NOTIFY_ESCALATIONS) == 0
        assert len(first.bodies()) == 1  # on-call route: `send_on` defaults to raised/cleared

        steps = wait_for(
            lambda: (s := _lake(data_dir, "select level, route, result from notifications "
                                "where result = 'escalated' order by level")) and len(s) >= 2 and s,
            60, what="escalation rows in the lake",
        )  # fmt: skip
        assert steps[:2] == [(1, "leads", "escalated"), (2, "leads", "escalated")]
    finally:
        stack.stop()
        first.stop()
        lead.stop()


def test_routes_quiet_hours_and_subscriptions(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path, smtp: SmtpReceiver
) -> None:
    crit, kitchen, quiet = _receivers(3)
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE + TEMP_RULE, f"""
  mail_url: "mailto://127.0.0.1:{smtp.port}?from=alarms@venueflow.example.com"
  targets:
    - {{name: crit, url: "{crit.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
    - {{name: kitchen, url: "{kitchen.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
    - {{name: night, url: "{quiet.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
  routes:
    - {{name: critical-only, targets: [crit], severities: [CRITICAL]}}
    - {{name: kitchen-sources, targets: [kitchen], sources: ["*-kitchen"]}}
    - {{name: always-quiet, targets: [night], quiet_hours: ["00:00-24:00"]}}
""")  # fmt: skip
    for name, sev, rules in (("alice", ["MAJOR"], ["*"]), ("bob", ["CRITICAL"], ["gas"])):
        sub = Subscription(username=name, address=f"{name}@example.com", severities=sev,
                           rules=rules)  # fmt: skip
        r.hset(keys.NOTIFY_SUBSCRIPTIONS, name, sub.model_dump_json())
    stack = Stack(flow_env, data_dir, venue).start(r)
    try:
        r.xadd(keys.EVENTS_IN, {"data": gas("gas-hall", 150)})  # CRITICAL, hall
        temp = {"source": "temp-kitchen", "type": "TEMP", "level": "WARN", "payload": {"c": 55}}
        r.xadd(keys.EVENTS_IN, {"data": json.dumps(temp)})  # MAJOR, kitchen
        wait_for(lambda: len(smtp.texts()) >= 2 and crit.bodies() and kitchen.bodies()
                 and quiet.bodies(), 60, what="every notification")  # fmt: skip
        time.sleep(2)  # anything wrongly sent would arrive by now
        assert [b["alarm"]["id"] for b in crit.bodies()] == ["gas|gas-hall|1"]
        assert [b["alarm"]["id"] for b in kitchen.bodies()] == ["temp|temp-kitchen|1"]
        # quiet hours all day: the MAJOR alarm is held back, the CRITICAL one is not
        assert [b["alarm"]["id"] for b in quiet.bodies()] == ["gas|gas-hall|1"]
        mails = {str(m["to"]): str(m["subject"]) for m in smtp.messages}
        assert set(mails) == {"alice@example.com", "bob@example.com"}
        assert "Too hot" in mails["alice@example.com"] and "MAJOR" in mails["alice@example.com"]
        assert "Gas high" in mails["bob@example.com"]
        held = wait_for(
            lambda: _lake(data_dir, "select alarm_id, target, route, error from notifications "
                          "where result = 'quiet_hours'"), 60, what="the quiet-hours row",
        )  # fmt: skip
        assert held == [("temp|temp-kitchen|1", "night", "always-quiet", "quiet hours")]
    finally:
        stack.stop()
        for h in (crit, kitchen, quiet):
            h.stop()


def test_failing_target_raises_its_own_alarm(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    (ok,) = _receivers(1)
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    hang = socket.socket()  # accepts connections (kernel backlog), never answers
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE, f"""
  failing_after: 2
  targets:
    - {{name: hangs, url: "http://127.0.0.1:{hang.getsockname()[1]}/x",
       secret: "{{env:TEST_HOOK_SECRET}}", timeout_s: 60}}
    - {{name: fine, url: "{ok.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
    - {{name: broken, url: "{dead}", secret: "{{env:TEST_HOOK_SECRET}}", timeout_s: 2}}
  routes:
    - {{name: all, targets: [hangs, fine, broken]}}
""")  # fmt: skip
    stack = Stack(flow_env, data_dir, venue).start(r)
    try:
        r.xadd(keys.EVENTS_IN, {"data": gas("gas-y", 150)})
        # a target that never answers holds nobody up: the fine one has its webhook while the
        # hanging attempt (planned first) is still in flight
        wait_for(lambda: ok.bodies(), 60, what="the working target's webhook")
        assert r.hexists(keys.NOTIFY_INFLIGHT, "gas|gas-y|1/raised-1/hangs/all")
        aid = "notifications-failing|notify-broken|1"
        alarm = wait_for(lambda: (a := r.hget(keys.ALARMS_ACTIVE, aid)) and json.loads(a), 60,
                         what="the notifications-failing alarm")  # fmt: skip
        assert alarm["severity"] == "MAJOR" and alarm["status"] == "ACTIVE_UNACK"
        assert "notifications to broken failing" in alarm["message"]
        assert "ConnectError" in alarm["message"]
        health = json.loads(r.hget(keys.NOTIFY_HEALTH, "broken"))
        assert health["failing"] and health["failures"] >= 2
        assert not json.loads(r.hget(keys.NOTIFY_HEALTH, "fine"))["failing"]
        # the failing alarm itself is notified on the targets that work
        wait_for(lambda: any(b["alarm"]["id"] == aid for b in ok.bodies()), 60,
                 what="the failing alarm's notification")  # fmt: skip
        failed = wait_for(
            lambda: _lake(data_dir, "select attempt, error from notifications where "
                          "target = 'broken' and result = 'failed' order by attempt"),
            60, what="failed attempts in the lake",
        )  # fmt: skip
        assert failed[0][0] == 1 and "ConnectError" in failed[0][1]
    finally:
        stack.stop()
        ok.stop()
        hang.close()


def test_kill_9_mid_burst_delivers_everything_once(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    a, b = _receivers(2, delay_s=0.05)
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE, f"""
  targets:
    - {{name: a, url: "{a.url}", secret: "{{env:TEST_HOOK_SECRET}}", concurrency: 2}}
    - {{name: b, url: "{b.url}", secret: "{{env:TEST_HOOK_SECRET}}", concurrency: 2}}
  routes:
    - {{name: all, targets: [a, b]}}
""")  # fmt: skip
    stack = Stack(flow_env, data_dir, venue).start(r)
    n = 60
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(keys.EVENTS_IN, {"data": gas(f"gas-{i:02d}", 150)})
        pipe.execute()
        expected = {
            webhook_id(f"gas|gas-{i:02d}|1/raised-1/{t}/all") for i in range(n) for t in "ab"
        }
        wait_for(lambda: len(a.ids()) + len(b.ids()) >= 30, 60, 0.01, what="30 delivered")
        stack.notifier.kill()  # mid-burst
        inflight = {webhook_id(i.decode()) for i in r.hkeys(keys.NOTIFY_INFLIGHT)}
        before = len(a.ids()) + len(b.ids())
        assert before < 2 * n, "the burst was over before the kill"
        stack.notifier.start()
        wait_for(lambda: set(a.ids()) | set(b.ids()) >= expected, 90, what="every notification")
        time.sleep(1)
        got = Counter(a.ids() + b.ids())
        assert set(got) == expected
        twice = {i for i, c in got.items() if c > 1}
        # only a notification in flight at the kill may come twice (same webhook-id)
        assert twice <= inflight, (twice - inflight, stack.notifier.log_tail())
        assert r.hlen(keys.NOTIFY_JOBS) == 0 and r.zcard(keys.NOTIFY_DUE) == 0
        assert r.zcard(keys.NOTIFY_DONE) == 2 * n
    finally:
        stack.stop()
        a.stop()
        b.stop()


def test_run_py_notify_test(tmp_path: Path, data_dir: Path, smtp: SmtpReceiver) -> None:
    (hook,) = _receivers(1)
    password = "s3cret-pw/with@odd:chars"
    dead = f"http://127.0.0.1:{free_port()}/x"
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE, f"""
  targets:
    - {{name: hook, url: "{hook.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
    - {{name: dead, url: "{dead}", secret: "{{env:TEST_HOOK_SECRET}}", timeout_s: 2}}
    - {{name: nosecret, url: "{hook.url}", secret: "{{env:NOT_SET_ANYWHERE}}"}}
    - {{name: mail-auth, url: "mailto://alarms:{{env:TEST_SMTP_PASSWORD}}@127.0.0.1:{smtp.port}?from=alarms@venueflow.example.com&to=ops@example.com"}}
""")  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "VENUE_CONFIG": str(venue), "DATA_DIR": str(data_dir),
           "TEST_HOOK_SECRET": SECRET, "TEST_SMTP_PASSWORD": password}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "run.py", "notify", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    try:
        ok = run("test", "hook")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("ok: test notification delivered to hook (HTTP 204)")
        assert hook.bodies()[0]["test"] is True
        bad = run("test", "dead")
        assert bad.returncode == 1 and "failed: dead: ConnectError" in bad.stdout
        missing = run("test", "nosecret")
        assert missing.returncode == 1
        assert "environment variable NOT_SET_ANYWHERE is not set" in missing.stdout
        # the SMTP server offers no login: the attempt fails, and says so without the password
        auth = run("test", "mail-auth")
        assert auth.returncode == 1, auth.stdout
        assert auth.stdout.startswith("failed: mail-auth: Connection error while submitting")
        assert "SMTP AUTH extension not supported by server" in auth.stdout
        assert password not in auth.stdout + auth.stderr
        assert quote(password, safe="") not in auth.stdout + auth.stderr
        listed = run("list")
        assert "hook" in listed.stdout and "signed webhook" in listed.stdout
        assert SECRET not in listed.stdout + ok.stdout + bad.stdout
    finally:
        hook.stop()


def test_notifications_stay_in_their_redis_namespace(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    """With REDIS_NAMESPACE every key the alarm flow, the notifier and the notifications flow
    use for notifications lies under it (two deployments can share one Redis)."""
    (hook,) = _receivers(1)
    venue = write_notify_venue(tmp_path / "venue.yaml", GAS_RULE, f"""
  targets:
    - {{name: hook, url: "{hook.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
  routes:
    - {{name: all, targets: [hook]}}
""")  # fmt: skip
    stack = Stack({**flow_env, "REDIS_NAMESPACE": "vf-b"}, data_dir, venue)
    try:
        stack.alarms.start()
        stack.lake.start()
        stack.notifier.start()
        wait_for(lambda: r.get("vf-b:notify:lock"), 60, what="the notifier in its namespace")
        wait_for(lambda: r.get("vf-b:flow:alarms:heartbeat"), 60, what="the alarm flow")
        r.xadd("vf-b:events:in", {"data": gas("gas-ns", 150)})
        wait_for(lambda: hook.bodies(), 60, what="the webhook")
        assert hook.bodies()[0]["alarm"]["id"] == "gas|gas-ns|1"
        wait_for(lambda: r.exists("vf-b:notify:done"), 30, what="the attempt recorded")
        names = [k.decode() for k in r.scan_iter(count=1000)]
        assert "vf-b:alarms:transitions" in names and "vf-b:notify:attempts" in names
        assert [k for k in names if not k.startswith("vf-b:")] == []
    finally:
        stack.stop()
        hook.stop()

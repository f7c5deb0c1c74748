"""The Notifications page in headless Chromium over the real app and Redis, with a real SMTP
server and a real webhook receiver: a person subscribes (a refused address says why), sends
themselves a test e-mail; an organiser sees the targets with their URLs redacted (never the
secret), sends a test to one, and the alarm page lists an alarm's notifications."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, expect

from core import keys
from tests.conftest import login_browser, wait_for
from tests.notify_helpers import SECRET, SmtpReceiver, WebhookReceiver, write_notify_venue
from tests.ui_fixtures import AuthStack

RULES = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100}
"""


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[SmtpReceiver, WebhookReceiver]]:
    smtp, hook = SmtpReceiver().start(), WebhookReceiver().start()
    yield smtp, hook
    smtp.stop()
    hook.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receivers: tuple[SmtpReceiver, WebhookReceiver]
) -> Iterator[AuthStack]:
    smtp, hook = receivers
    work = tmp_path_factory.mktemp("notify-browser")
    venue = write_notify_venue(work / "venue.yaml", RULES, f"""
  mail_url: "mailto://127.0.0.1:{smtp.port}?from=alarms@venueflow.example.com"
  targets:
    - {{name: hook, url: "{hook.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
  routes:
    - {{name: all, targets: [hook], quiet_hours: ["23:00-06:00"]}}
""")  # fmt: skip
    s = AuthStack(work, VENUE_CONFIG=str(venue), TEST_HOOK_SECRET=SECRET)
    yield s
    s.close()


def test_a_person_subscribes_and_sends_themselves_a_test(
    stack: AuthStack, page: Page, receivers: tuple[SmtpReceiver, WebhookReceiver]
) -> None:
    smtp, _ = receivers
    login_browser(page, stack.base_url, "an-1")
    page.goto(stack.base_url + "/notifications")
    status = page.get_by_test_id("sub-status")
    page.get_by_test_id("sub-address").fill("json://10.0.0.1/steal")
    page.get_by_test_id("sub-save").click()
    expect(status).to_contain_text("Not saved: json:// is not allowed here")
    page.get_by_test_id("sub-address").fill("an-1@example.com")
    page.get_by_test_id("sub-save").click()
    expect(status).to_have_text("Saved: an-1@example.com")
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    sub = json.loads(r.hget(keys.NOTIFY_SUBSCRIPTIONS, "an-1"))
    assert sub["address"] == "an-1@example.com" and sub["severities"] == ["CRITICAL", "MAJOR"]
    page.get_by_test_id("sub-test").click()
    expect(status).to_contain_text("Test delivered to an-1@example.com", timeout=20_000)
    mail = wait_for(lambda: [m for m in smtp.messages if str(m["to"]) == "an-1@example.com"],
                    10, what="the test e-mail")  # fmt: skip
    assert "[TEST]" in str(mail[0]["subject"])
    expect(page.get_by_test_id("targets")).to_have_count(0)  # analysts see no targets


def test_organiser_sees_targets_redacted_and_tests_one(
    stack: AuthStack, page: Page, receivers: tuple[SmtpReceiver, WebhookReceiver]
) -> None:
    _, hook = receivers
    login_browser(page, stack.base_url, "organiser")
    page.goto(stack.base_url + "/notifications")
    targets = page.get_by_test_id("targets")
    expect(targets).to_contain_text("hook")
    expect(targets).to_contain_text("signed webhook")
    expect(targets).to_contain_text("quiet 23:00-06:00")
    assert SECRET not in page.content()
    before = len(hook.bodies())
    targets.get_by_role("button", name="Send test").click()
    expect(targets).to_contain_text("ok in", timeout=20_000)
    assert len(hook.bodies()) == before + 1 and hook.bodies()[-1]["test"] is True
    # the alarm page has the notifications card (lake: notifications), filtered by ?alarm=
    page.goto(stack.base_url + "/alarms?alarm=gas%7Cgas-a%7C1")
    expect(page.get_by_test_id("alarm-notifications")).to_be_visible()
    expect(page.locator("body")).to_contain_text("escalation step of gas|gas-a|1")


def test_venue_secret_never_reaches_page_or_log(stack: AuthStack, tmp_path: Path) -> None:
    log = (stack.data / "app.log").read_text(errors="replace")
    assert SECRET not in log

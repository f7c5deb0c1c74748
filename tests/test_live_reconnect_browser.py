"""A Redis restart under open live pages, in real headless Chromium against the real app: the
pages say Redis is unavailable while it is down, go live again on their own when it is back,
show what was stored while nobody announced it (the seed is read again after resubscribing)
and what is published afterwards (`live.subscriber`, one mechanism for every live model)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import redis
from playwright.sync_api import Browser, expect

from core import keys
from core.alarms import Alarm
from tests.conftest import AppProcess, RedisServer, login_browser
from tests.support import stored_event

WAIT_MS = 30_000  # the back-off after a loss doubles from 0.5 s; Redis is down a few seconds


def open_alarm(alarm_id: str) -> str:
    now = datetime.now(UTC).isoformat()
    doc = {
        "alarm_id": alarm_id, "rule_id": "gas", "rule_name": "Gas high", "kind": "threshold",
        "source": "gas-9", "severity": "MAJOR", "status": "ACTIVE_UNACK",
        "message": "GAS ppm 150 > 100", "count": 1, "first_at": now, "last_at": now,
        "raised_at": now, "updated_at": now,
    }  # fmt: skip
    return Alarm.model_validate(doc).model_dump_json()


def test_live_pages_recover_from_a_redis_restart(
    redis_server: RedisServer, app_process: AppProcess, browser: Browser
) -> None:
    app = app_process
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    login_browser(ctx, app.base_url)
    pages = {path: ctx.new_page() for path in ("/events", "/alarms", "/attendance")}
    for path, page in pages.items():
        page.goto(app.base_url + path)
        expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)

    # Stored without a live message: only a seed after the reconnect can show these.
    unannounced = stored_event("unannounced", "reconnect")
    alarm_id = f"gas|gas-9|{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_server.url)
    r.lpush(keys.EVENTS_RECENT, json.dumps(unannounced))
    r.hset(keys.ALARMS_ACTIVE, alarm_id, open_alarm(alarm_id))
    r.close()

    redis_server.stop()  # SIGTERM: the AOF keeps what was written
    for page in pages.values():
        expect(page.get_by_test_id("live-status")).to_have_text(
            "Redis unavailable", timeout=WAIT_MS
        )
    redis_server.start()  # the same port
    for page in pages.values():
        expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)

    events, alarms = pages["/events"], pages["/alarms"]
    expect(events.locator(f'.vf-feed-row[data-event-id="{unannounced["id"]}"]')).to_contain_text(
        "unannounced", timeout=WAIT_MS
    )
    expect(alarms.locator(f'.vf-alarm-row[data-alarm-id="{alarm_id}"]')).to_be_visible(
        timeout=WAIT_MS
    )

    # And the subscription is live again: a micro-batch published now shows at once.
    fresh = stored_event("after-restart", "reconnect")
    r = redis.Redis.from_url(redis_server.url)
    r.publish(keys.LIVE_EVENTS, json.dumps({"events": [fresh], "total": 1}))
    r.close()
    expect(events.locator(f'.vf-feed-row[data-event-id="{fresh["id"]}"]')).to_contain_text(
        "after-restart", timeout=WAIT_MS
    )
    ctx.close()

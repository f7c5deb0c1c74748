"""End to end in a real headless Chromium: a burst of events published on `live:events` within a
second (as the events flow does: micro-batches, newest first) all reach an open /events page,
which the dashboard coalesces into a few pushes (`widgets.Shared`, the subscriber's throttle); the
overview, open too, counts them all.

Asserts content, not timing: the total counts every event, the feed shows exactly the newest
`FEED_ROWS` in order, and the oldest of the burst has left it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import redis
from playwright.sync_api import Page, expect

from core import keys
from tests.conftest import AppProcess, login_browser
from ui.pages.events_page import FEED_ROWS

BURST = 3 * FEED_ROWS  # more than the feed holds
PER_MESSAGE = 3


def _event(tag: str, seq: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "id": f"{tag}-{seq:04d}", "ts": now, "received_at": now, "source": "burst",
        "type": "burst.check", "level": "WARNING" if seq % 2 else "INFO", "payload": {"seq": seq},
    }  # fmt: skip


def test_a_burst_within_a_second_shows_whole_on_the_open_page(
    app_process: AppProcess, r: redis.Redis, page: Page
) -> None:
    app = app_process
    login_browser(page, app.base_url)
    page.goto(app.base_url + "/events")
    expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=15_000)
    expect(page.get_by_test_id("kpi-total")).to_have_text("0")
    overview = page.context.new_page()  # the overview shares the events model and its chart
    overview.goto(app.base_url + "/")
    expect(overview.get_by_test_id("kpi-events-rate")).to_have_text("0", timeout=15_000)

    tag = f"burst{uuid.uuid4().hex[:8]}"
    # Spread over ~0.5 s (a loaded machine may stretch it; what the page must show does not
    # depend on it: a timed assertion here failed CI at 1.001 s).
    for first in range(1, BURST + 1, PER_MESSAGE):
        batch = [_event(tag, s) for s in range(first, first + PER_MESSAGE)]
        doc = {"events": list(reversed(batch)), "total": len(batch)}
        assert r.publish(keys.LIVE_EVENTS, json.dumps(doc)) == 1  # the app's one subscriber
        time.sleep(0.5 / (BURST / PER_MESSAGE))

    expect(page.get_by_test_id("kpi-total")).to_have_text(f"{BURST:,}", timeout=15_000)
    rows = page.locator(".vf-feed-row")
    expect(rows).to_have_count(FEED_ROWS)
    newest = [f"{tag}-{s:04d}" for s in range(BURST, BURST - FEED_ROWS, -1)]
    expect(rows.first).to_have_attribute("data-event-id", newest[0])
    assert [rows.nth(i).get_attribute("data-event-id") for i in range(FEED_ROWS)] == newest
    expect(rows.first).to_contain_text('"seq":' + str(BURST))
    expect(overview.get_by_test_id("kpi-events-rate")).to_have_text(f"{BURST:,}")
    expect(overview.locator('[data-testid="chart-events"] canvas')).to_have_count(1)
    gone = f'.vf-feed-row[data-event-id="{tag}-{BURST - FEED_ROWS:04d}"]'
    expect(page.locator(gone)).to_have_count(0)

"""The organiser's dashboard in a real headless Chromium over the real stack: redis-server, the
alarm flow (Bytewax, recovery on), the app. Nothing is faked: the CRITICAL alarm is raised by
the flow from an event XADDed to `events:in`, exactly as a sensor gateway sends it.

- an operator logs in through the login page, a CRITICAL alarm appears live on the page they
  have open (banner, header counter, flashing title), they acknowledge it from the banner, and
  an organiser's browser (another context, another session) sees it acknowledged — by whom —
  without reloading; the lake's history (the audit trail) has the acknowledgement;
- an analyst sees the alarm but gets no Acknowledge/Clear buttons, and the analytics page's
  SQL box refuses a write while answering a read.

Chromium is Debian's /usr/bin/chromium; Playwright never downloads one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, expect

from core import keys
from tests.alarm_helpers import write_alarm_venue
from tests.conftest import (
    API_KEY,
    PASSWORD,
    AppProcess,
    FlowProcess,
    RedisServer,
    add_user,
    login_browser,
    wait_for,
)
from tests.lake_helpers import rows
from tests.ui_fixtures import chromium

RULES = """
  - {id: gas-high, name: Gas above 100 ppm, kind: threshold, severity: CRITICAL, type: GAS,
     source: "gas-*", field: ppm, above: 100, clear_at: 85}
  - {id: noise, name: Noisy sensor, kind: rate, severity: MINOR, type: "*", level: [WARN],
     source: "noise-*", count: 2, window_s: 60}
"""
USERS = {"olga": "organiser", "otto": "operator", "anna": "analyst"}
WAIT_MS = 15_000


class Stack:
    """Redis, the alarm flow and the app, shared by the tests of this module."""

    def __init__(self, tmp: Path):
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.r = redis.Redis.from_url(self.redis.url)
        self.data = tmp / "data"
        self.data.mkdir()
        for name, role in USERS.items():
            add_user(self.data, name, role)
        self.env = {
            "REDIS_URL": self.redis.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(write_alarm_venue(tmp / "venue.yaml", RULES)),
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "HEALTH_FLOWS": "alarms",
        }
        self.flow = FlowProcess("alarms", self.env, self.data / "alarms-flow.log").start()
        # the events flow too: the overview's event KPI and chart come from its live output
        self.events = FlowProcess("events", self.env, self.data / "events-flow.log").start()
        self.app = AppProcess(self.env, self.data / "app.log").wait_ready()
        for flow in ("alarms", "events"):
            wait_for(
                lambda f=flow: self.r.exists(keys.heartbeat_key(f)), 90, what=f"{flow} heartbeat"
            )

    def gas(self, source: str, ppm: float) -> None:
        """A gas reading, XADDed like a sensor gateway does."""
        doc = {
            "source": source,
            "type": "GAS",
            "level": "WARN",
            "payload": {"ppm": ppm},
            "ts": datetime.now(UTC).isoformat(),
        }
        self.r.xadd(keys.EVENTS_IN, {"data": json.dumps(doc)})

    def close(self) -> None:
        self.app.stop()
        for flow in (self.flow, self.events):
            if flow.alive():
                flow.kill()
        self.r.close()
        self.redis.kill()


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("alarms_browser"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium("--autoplay-policy=no-user-gesture-required") as b:
        yield b


def _context(browser: Browser) -> BrowserContext:
    return browser.new_context(viewport={"width": 1400, "height": 1000})


def _login_form(page: Page, base_url: str, name: str, then: str) -> None:
    """Log in through the login page, as a person does."""
    page.goto(f"{base_url}{then}")
    expect(page.get_by_test_id("login")).to_be_visible(timeout=WAIT_MS)  # redirected to /login
    page.get_by_test_id("username").fill(name)
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("login").click()
    page.wait_for_url(f"{base_url}{then}", timeout=WAIT_MS)


def _chart_total(page: Page, test_id: str) -> float:
    """The sum of every series of an echart on the page (what it draws, read in the browser)."""
    return page.evaluate(
        """(id) => {
            const el = document.querySelector(`[data-testid="${id}"]`);
            const chart = el && getElement(el).chart;
            if (!chart) return 0;
            return chart.getOption().series
                .flatMap((s) => s.data).reduce((a, b) => a + (Number(b) || 0), 0);
        }""",
        test_id,
    )


def test_critical_alarm_appears_live_is_acknowledged_and_others_see_it(
    st: Stack, browser: Browser
) -> None:
    source = f"gas-{uuid.uuid4().hex[:8]}"
    alarm_id = f"gas-high|{source}|1"
    operator_ctx, organiser_ctx = _context(browser), _context(browser)
    try:
        op = operator_ctx.new_page()
        _login_form(op, st.app.base_url, "otto", "/")
        expect(op.get_by_test_id("kpi-alarms")).to_have_text("0", timeout=WAIT_MS)

        org = organiser_ctx.new_page()
        login_browser(org, st.app.base_url, "olga")
        org.goto(st.app.base_url + "/alarms")
        expect(org.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)

        st.gas(source, 40.0)  # fine
        st.gas(source, 150.0)  # over the limit: the flow raises a CRITICAL alarm

        # The operator's overview: the banner appears without a reload, with the header counter
        # and the overview's own list; the tab title flashes.
        banner_row = op.locator(f'[data-testid="critical-alarm"][data-alarm-id="{alarm_id}"]')
        expect(banner_row).to_be_visible(timeout=WAIT_MS)
        expect(banner_row).to_contain_text(source)
        expect(op.get_by_test_id("alarm-counter")).to_have_attribute("data-critical", "1")
        expect(op.get_by_test_id("alarm-count")).to_have_text("1")
        expect(op.get_by_test_id("kpi-alarms-critical")).to_have_text("CRITICAL 1")
        expect(op.locator(f'[data-testid="overview-alarms"] [data-alarm-id="{alarm_id}"]'))
        expect(op).to_have_title("⚠ CRITICAL ALARM (1)", timeout=WAIT_MS)
        # ... and its other live parts moved too: events per minute, the events chart.
        expect(op.get_by_test_id("kpi-events-rate")).not_to_have_text("0", timeout=WAIT_MS)
        wait_for(lambda: _chart_total(op, "chart-events") >= 2, 15, 0.1, "the events chart")
        assert op.evaluate("window.vfAlarm.beeps") >= 1  # the WebAudio tone was played

        # The organiser's alarms page lists it, unacknowledged.
        row = org.locator(f'.vf-alarm-row[data-alarm-id="{alarm_id}"]')
        expect(row).to_have_attribute("data-status", "ACTIVE_UNACK", timeout=WAIT_MS)
        expect(org.locator(f'[data-testid="critical-alarm"][data-alarm-id="{alarm_id}"]'))

        # More readings over the limit repeat the same alarm: one row, a count, never a new one.
        st.gas(source, 160.0)
        expect(row.locator("td").nth(5)).to_have_text("2", timeout=WAIT_MS)
        assert org.locator(".vf-alarm-row").count() == 1

        # The operator acknowledges from the banner; the banner goes, for both of them.
        banner_row.get_by_test_id("banner-ack").click()
        expect(banner_row).to_have_count(0, timeout=WAIT_MS)
        expect(op.get_by_test_id("alarm-counter")).to_have_attribute("data-critical", "0")
        expect(row).to_have_attribute("data-status", "ACTIVE_ACK", timeout=WAIT_MS)
        expect(row).to_contain_text("otto")
        expect(org.locator('[data-testid="critical-alarm"]')).to_have_count(0)
        expect(op).not_to_have_title("⚠ CRITICAL ALARM (1)", timeout=WAIT_MS)

        # The organiser clears it by hand with a comment; it leaves the open list (acked+cleared).
        row.get_by_test_id("clear-button").click()
        org.get_by_test_id("action-comment").fill("vented, sensor checked")
        org.get_by_test_id("action-confirm").click()
        expect(row).to_have_count(0, timeout=WAIT_MS)
        assert not st.r.hexists(keys.ALARMS_ACTIVE, alarm_id)

        # The audit trail: the lake's history has who acknowledged and cleared, and when.
        def history() -> list[tuple] | None:
            got = rows(
                st.data,
                'SELECT transition, "by", role, comment FROM alarms '
                f"WHERE alarm_id = '{alarm_id}' ORDER BY revision",
            )
            return got if len(got) >= 3 else None

        trail = wait_for(history, 30, 0.2, "the alarm's transitions in the lake")
        assert trail == [
            ("raised", "rule", None, None),
            ("acknowledged", "otto", "operator", None),
            ("cleared", "olga", "organiser", "vented, sensor checked"),
        ]
        org.get_by_test_id("history-refresh").click()
        hist = org.get_by_test_id("alarm-history")
        expect(hist).to_contain_text("acknowledged", timeout=WAIT_MS)
        expect(hist).to_contain_text("otto")
        expect(hist).to_contain_text("vented, sensor checked")
    finally:
        operator_ctx.close()
        organiser_ctx.close()


def test_analyst_sees_alarms_without_actions_and_sql_is_read_only(
    st: Stack, browser: Browser
) -> None:
    source = f"gas-{uuid.uuid4().hex[:8]}"
    alarm_id = f"gas-high|{source}|1"
    ctx = _context(browser)
    try:
        page = ctx.new_page()
        login_browser(page, st.app.base_url, "anna")
        page.goto(st.app.base_url + "/alarms")
        expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)
        st.gas(source, 500.0)
        row = page.locator(f'.vf-alarm-row[data-alarm-id="{alarm_id}"]')
        expect(row).to_have_attribute("data-status", "ACTIVE_UNACK", timeout=WAIT_MS)
        banner_row = page.locator(f'[data-testid="critical-alarm"][data-alarm-id="{alarm_id}"]')
        expect(banner_row).to_be_visible()  # impossible to miss, even for an analyst ...
        expect(banner_row.get_by_test_id("banner-ack")).to_have_count(0)  # ... but no action
        expect(row.get_by_test_id("ack-button")).to_have_count(0)
        expect(row.get_by_test_id("clear-button")).to_have_count(0)

        page.goto(st.app.base_url + "/analytics")
        expect(page.get_by_test_id("ready-info-events_per_hour")).to_contain_text(
            "rows", timeout=WAIT_MS
        )
        editor = page.get_by_test_id("sql-input").locator(".cm-content")
        target = st.data / "lake" / "events" / "stolen.parquet"
        editor.fill(f"COPY (SELECT 1) TO '{target}'")
        page.get_by_test_id("sql-run").click()
        expect(page.get_by_test_id("sql-error")).to_contain_text("only read-only queries")
        assert not target.exists()
        editor.fill("SELECT * FROM read_csv('/etc/passwd')")
        page.get_by_test_id("sql-run").click()
        expect(page.get_by_test_id("sql-error")).to_contain_text(
            "Permission Error", timeout=WAIT_MS
        )
        in_lake = f"SELECT count(*) FROM events WHERE source = '{source}'"
        wait_for(lambda: rows(st.data, in_lake)[0][0] == 1, 30, 0.2, "the event in the lake")
        editor.fill("SELECT source, count(*) AS n FROM events GROUP BY source ORDER BY source")
        page.get_by_test_id("sql-run").click()
        expect(page.get_by_test_id("sql-info")).to_contain_text("rows", timeout=WAIT_MS)
        expect(page.get_by_test_id("sql-error")).to_have_text("")
        expect(page.get_by_test_id("sql-result")).to_contain_text(source)
        with page.expect_download() as dl:
            page.get_by_test_id("sql-csv").click()
        lines = Path(dl.value.path()).read_text().splitlines()
        assert lines[0] == "source,n" and f"{source},1" in lines
    finally:
        ctx.close()
        # leave nothing open for other tests: acknowledge and clear through the flow
        for action in ("ack", "clear"):
            st.r.xadd(
                keys.ALARMS_COMMANDS,
                {
                    "data": json.dumps(
                        {
                            "command_id": str(uuid.uuid4()),
                            "action": action,
                            "alarm_id": alarm_id,
                            "by": "olga",
                            "role": "organiser",
                            "at": datetime.now(UTC).isoformat(),
                        }
                    )
                },
            )

"""The Gate and Attendance pages in a real headless Chromium, over the real stack (Redis, the
check-in flow, the app). Chromium is Debian's /usr/bin/chromium; Playwright never downloads one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import segno
from playwright.sync_api import Browser, Page, expect

from core import keys
from tests.attendance_helpers import add_participants, scan, wait_participants
from tests.checkins_stack import CheckinStack
from tests.conftest import login_browser, wait_for
from tests.ui_fixtures import chromium


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckinStack]:
    s = CheckinStack(tmp_path_factory.mktemp("attendance_pages"))
    yield s
    s.close()


def qr_video(path: Path, text: str, width: int = 640, height: int = 480) -> Path:
    """A Y4M clip showing `text` as a QR code: Chromium's fake camera plays it in a loop."""
    qr = segno.make(text, error="m", micro=False)
    modules = list(qr.matrix_iter(scale=1, border=4))
    cell = min(width, height) * 9 // 10 // len(modules)
    side = cell * len(modules)
    x0, y0 = (width - side) // 2, (height - side) // 2
    y = bytearray(b"\xff" * (width * height))
    for r, row in enumerate(modules):
        for c, dark in enumerate(row):
            if dark:
                for dy in range(cell):
                    start = (y0 + r * cell + dy) * width + x0 + c * cell
                    y[start : start + cell] = b"\x10" * cell
    chroma = b"\x80" * (width * height // 2)
    frame = b"FRAME\n" + bytes(y) + chroma
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode() + frame * 5)
    return path


@pytest.fixture(scope="module")
def camera_pid(st: CheckinStack) -> str:
    """The participant whose ticket the fake camera shows (created by the camera test)."""
    return f"CAM{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def browser(
    st: CheckinStack, camera_pid: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    clip = qr_video(tmp_path_factory.mktemp("camera") / "qr.y4m", st.token(camera_pid))
    fake_camera = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]
    with chromium(*fake_camera) as b:
        yield b


@pytest.fixture
def page(browser: Browser, st: CheckinStack) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    login_browser(ctx, st.app.base_url)  # pages need a login
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def _scan_on_page(page: Page, token: str) -> float:
    """Type a token into the gate page and press Enter (what a USB scanner does)."""
    box = page.get_by_test_id("token-input")
    box.fill(token)
    t0 = time.monotonic()
    box.press("Enter")
    return t0


def test_gate_page_shows_each_verdict(st: CheckinStack, page: Page) -> None:
    pid = st.people()[0]
    token = st.token(pid)
    page.goto(st.app.base_url + "/gate?gate=main&direction=in")
    status = page.get_by_test_id("verdict-status")
    expect(status).to_have_text("READY")
    expect(page.get_by_test_id("token-input")).to_be_focused()

    t0 = _scan_on_page(page, token)
    expect(status).to_have_text("ACCEPTED", timeout=10_000)
    print(f"verdict on the gate page {time.monotonic() - t0:.3f}s after Enter")
    expect(page.get_by_test_id("verdict-name")).to_have_text(f"Name {pid}")
    expect(page.get_by_test_id("verdict")).to_have_attribute("data-tone", "accepted")
    expect(page.get_by_test_id("token-input")).to_have_value("")

    _scan_on_page(page, token)
    expect(status).to_have_text("DUPLICATE", timeout=10_000)
    expect(page.get_by_test_id("verdict")).to_have_attribute("data-tone", "warning")
    expect(page.get_by_test_id("verdict-name")).to_have_text(f"Name {pid}")
    expect(page.get_by_test_id("verdict-reason")).to_contain_text("already used")

    _scan_on_page(page, st.forged(pid))
    expect(status).to_have_text("INVALID SIGNATURE", timeout=10_000)
    expect(page.get_by_test_id("verdict")).to_have_attribute("data-tone", "refused")
    expect(page.get_by_test_id("verdict-reason")).to_contain_text("forged or altered")

    # The gate's history lists all three (newest first), as they came over pub/sub.
    rows = page.locator(".vf-gate-row")
    expect(rows.first).to_have_attribute("data-status", "invalid_signature", timeout=10_000)
    statuses = [rows.nth(i).get_attribute("data-status") for i in range(3)]
    assert statuses == ["invalid_signature", "duplicate", "accepted"]
    expect(page.get_by_test_id("gate-load")).to_contain_text("/ 100 per min")

    # Back to ready after a few seconds, with the choice remembered for the next visit.
    expect(status).to_have_text("READY", timeout=10_000)
    page.goto(st.app.base_url + "/gate")
    expect(page.get_by_test_id("gate-select")).to_contain_text("Main (main)")


def test_attendance_page_counts_up_without_reload(st: CheckinStack, page: Page) -> None:
    pid = st.people()[0]

    def totals() -> dict | None:
        """The flow's totals document, once it counts every participant registered so far."""
        raw = st.r.get(keys.ATTENDANCE_TOTALS)
        doc = json.loads(raw) if raw else None
        ok = doc is not None and doc["registered"] == st.r.hlen(keys.PARTICIPANTS_INDEX)
        return doc if ok else None

    page.goto(st.app.base_url + "/attendance")
    expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=10_000)
    kpi = page.get_by_test_id("kpi-checked-in")

    # Wait until the page shows the flow's current totals (which include `pid` registered).
    def settled() -> tuple[int, int] | None:
        doc = totals()
        if doc is None:
            return None
        want = f"{doc['checked_in']:,} / {doc['registered']:,}"
        return (doc["checked_in"], doc["registered"]) if kpi.inner_text() == want else None

    checked, registered = wait_for(settled, 30, 0.1, "the page to show the current totals")

    nonce = scan(st.r, st.token(pid))  # XADD checkins:in, as a gate would
    t0 = time.monotonic()
    expect(kpi).to_have_text(f"{checked + 1:,} / {registered:,}", timeout=10_000)
    print(f"checked-in count went up {time.monotonic() - t0:.3f}s after the XADD")
    row = page.locator(f'.vf-verdict-row[data-nonce="{nonce}"]')
    expect(row).to_contain_text(f"Name {pid}")
    expect(row).to_have_attribute("data-status", "accepted")
    expect(page.get_by_test_id("kpi-inside")).not_to_have_text("—")
    expect(page.get_by_test_id("gate-load-text-main")).to_contain_text("/ 100 per min")

    # The arrivals chart has counted the entry at `main` in the current minute.
    def chart_main_total() -> int:
        return page.evaluate(
            """() => {
                const el = document.querySelector('[data-testid="arrivals-chart"]');
                const chart = el && getElement(el).chart;
                if (!chart) return 0;
                const s = chart.getOption().series.find((x) => x.name === 'Main');
                return s ? s.data.reduce((a, b) => a + b, 0) : 0;
            }"""
        )

    wait_for(lambda: chart_main_total() >= 1, 10, 0.1, "the arrivals chart to count the entry")


def test_gate_page_scans_a_qr_code_with_the_camera(
    st: CheckinStack, page: Page, camera_pid: str
) -> None:
    """getUserMedia (Chromium's fake camera playing a QR clip) → canvas → bundled jsQR →
    the same check-in path as typing, with method `qr_scan`."""
    add_participants(st.r, [camera_pid])
    wait_participants(st.r, [camera_pid])
    ps = st.r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.verdict_channel("side"))
    try:
        page.goto(st.app.base_url + "/gate?gate=side&direction=in")
        status = page.get_by_test_id("verdict-status")
        expect(status).to_have_text("READY")
        page.get_by_test_id("camera-button").click()
        expect(status).to_have_text("ACCEPTED", timeout=15_000)
        expect(page.get_by_test_id("verdict-name")).to_have_text(f"Name {camera_pid}")

        def verdict() -> dict | None:
            msg = ps.get_message(timeout=0.2)
            return json.loads(msg["data"]) if msg and msg["type"] == "message" else None

        v = wait_for(verdict, 10, what="the camera scan's verdict on checkins:verdict:side")
        assert v["participant_id"] == camera_pid and v["status"] == "accepted"
        assert v["method"] == "qr_scan"
        assert v["device_id"].startswith("web-")
        assert page.evaluate("typeof jsQR") == "function"  # served by the app, no CDN
    finally:
        ps.close()

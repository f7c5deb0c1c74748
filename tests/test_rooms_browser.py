"""Streaming rooms end to end in real headless Chromium: the room shows a live picture that
changes, who joins and leaves (also by closing the tab), capture started and stopped from the
room — and all of it in the lake's activity log (`request_logs`, via `GET /logs`).

Chain: RTSP test camera → video flow (Bytewax) → Redis `video:cam-a` → the app's hub →
WebSocket → the page's player; joins → Redis → `live:rooms` → the other browser's page;
activity → `activity:in` / `video:commands` → video flow → lake.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import API_KEY, login_browser, wait_for
from tests.video_fixtures import VideoStack, require_gstreamer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoStack]:
    require_gstreamer()
    s = VideoStack(
        tmp_path_factory.mktemp("rooms"), [{"id": "cam-a", "name": "Main", "fps": 15}], app=True
    )
    try:
        s.wait_state("cam-a", "streaming")
        yield s
    finally:
        s.close()


def _open_room(browser: Browser, stack: VideoStack, room: str = "main") -> Page:
    assert stack.app is not None
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    login_browser(page, stack.app.base_url)
    page.goto(f"{stack.app.base_url}/rooms/{room}")
    return page


def _seq(page: Page) -> int:
    return int(page.get_by_test_id("video-cam-a").get_attribute("data-vf-seq") or 0)


def _picture(page: Page) -> np.ndarray:
    png = page.get_by_test_id("video-cam-a").screenshot()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)


def _fill(page: Page, test_id: str, text: str) -> None:
    """Fill a Quasar input (the test id lands on the native <input> or on its wrapper)."""
    page.locator(f'input[data-testid="{test_id}"], [data-testid="{test_id}"] input').fill(text)


def _members(page: Page):
    return page.get_by_test_id("members").get_by_test_id("member")


def test_room_shows_live_video_presence_and_capture_control(
    stack: VideoStack, browser: Browser
) -> None:
    alice = _open_room(browser, stack)
    expect(alice.get_by_test_id("room-title")).to_have_text("All cameras")
    video = alice.get_by_test_id("video-cam-a")
    wait_for(lambda: _seq(alice) > 0, 15, 0.1, "the first frame in the browser")
    first, seq0 = _picture(alice), _seq(alice)
    wait_for(lambda: _seq(alice) >= seq0 + 10, 10, 0.1, "ten more frames")
    second = _picture(alice)
    changed = np.mean(cv2.absdiff(first, second) > 40)
    assert changed > 0.002, f"the picture did not change ({changed:.4f} of its pixels)"
    expect(video).to_have_attribute("data-vf-state", "open")

    _fill(alice, "member-name", "Alice")
    alice.get_by_test_id("join").click()
    expect(_members(alice)).to_have_text(["Alice (you)"])

    bob = _open_room(browser, stack)
    expect(_members(bob)).to_have_text(["Alice"])
    _fill(bob, "member-name", "Bob")
    bob.get_by_test_id("join").click()
    expect(_members(alice)).to_have_text(["Alice (you)", "Bob"])
    bob.get_by_test_id("join").click()  # now "Leave"
    expect(_members(alice)).to_have_text(["Alice (you)"])
    bob.get_by_test_id("join").click()  # joins again ...
    expect(_members(alice)).to_have_text(["Alice (you)", "Bob"])
    bob.context.close()  # ... and closes the tab: gone once NiceGUI drops the client
    expect(_members(alice)).to_have_text(["Alice (you)"], timeout=15_000)

    # Capture is stopped and started from the room.
    alice.get_by_test_id("stop-cam-a").click()
    expect(alice.get_by_test_id("state-cam-a")).to_have_text("stopped", timeout=10_000)
    stopped_at = _seq(alice)
    alice.wait_for_timeout(1000)
    assert _seq(alice) <= stopped_at + 2, "frames kept coming after stop"
    alice.get_by_test_id("start-cam-a").click()
    expect(alice.get_by_test_id("state-cam-a")).to_have_text("streaming", timeout=15_000)
    wait_for(lambda: _seq(alice) > stopped_at + 5, 15, 0.1, "frames again after start")
    alice.context.close()

    # All of it is in the activity log, with who, from where and with which browser.
    assert stack.app is not None

    def logged() -> list[dict] | None:
        doc = httpx.get(
            f"{stack.app.base_url}/logs",
            params={"room_id": "main", "size": 100},
            headers={"X-API-Key": API_KEY},  # reading the activity log needs a login or key
        )
        items = doc.json()["items"]
        events = [i["event"] for i in items]
        done = events.count("room.join") >= 3 and events.count("room.leave") >= 3
        return items if done and "capture.start" in events else None

    items = wait_for(logged, 30, 0.5, "joins, leaves and commands in request_logs")
    joins = sorted(i["metadata"]["name"] for i in items if i["event"] == "room.join")
    assert joins == ["Alice", "Bob", "Bob"]
    leaves = [i["metadata"] for i in items if i["event"] == "room.leave"]
    assert {"reason": "left", "name": "Bob"} in leaves
    assert {"reason": "disconnected", "name": "Bob"} in leaves
    assert {"reason": "disconnected", "name": "Alice"} in leaves
    for it in items:
        assert it["ip"] == "127.0.0.1" and "Chrome" in (it["user_agent"] or ""), it
    cmds = {i["event"]: i for i in items if i["event"].startswith("capture.")}
    assert cmds["capture.stop"]["camera_id"] == "cam-a" == cmds["capture.start"]["camera_id"]
    assert any(i["event"] == "client.connect" for i in items)


def test_create_a_room_and_open_it(stack: VideoStack, browser: Browser) -> None:
    assert stack.app is not None
    page = browser.new_context().new_page()
    login_browser(page, stack.app.base_url)
    page.goto(f"{stack.app.base_url}/rooms")
    _fill(page, "room-name", "Stage left")
    page.get_by_test_id("room-create").click()
    expect(page.get_by_test_id("room-title")).to_have_text("Stage left")
    assert "/rooms/stage-left-" in page.url
    wait_for(lambda: _seq(page) > 0, 15, 0.1, "video in the new room")
    page.goto(f"{stack.app.base_url}/rooms/no-such-room")
    expect(page.get_by_test_id("no-room")).to_contain_text("no-such-room")
    page.context.close()

"""Logging in, the role's navigation, logging out, the Users page, and an action refused on the
server for a page left open after a role change — in a real headless Chromium, real app, real
Redis. Chromium is Debian's /usr/bin/chromium; Playwright never downloads one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from playwright.sync_api import Page, expect

from auth.users import UserStore
from core import keys
from tests.conftest import PASSWORD, add_user
from tests.ui_fixtures import AuthStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    s = AuthStack(tmp_path_factory.mktemp("auth-browser"))
    yield s
    s.close()


def log_in(page: Page, name: str, password: str) -> None:
    page.get_by_test_id("username").fill(name)
    pw = page.get_by_test_id("password")
    pw.fill(password)
    pw.press("Enter")


def nav_labels(page: Page) -> list[str]:
    return [t.strip().split("\n")[-1] for t in page.locator("header a").all_inner_texts()]


def test_login_page_role_navigation_and_logout(stack: AuthStack, page: Page) -> None:
    name = f"op-{uuid.uuid4().hex[:6]}"
    add_user(stack.data, name, "operator")
    page.goto(stack.base_url + "/gate")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fgate$"))
    log_in(page, name, "wrong-password")
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong user name or password.")
    log_in(page, name, PASSWORD)
    expect(page).to_have_url(stack.base_url + "/gate")
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.get_by_test_id("user-menu")).to_contain_text(f"{name} · operator")
    labels = nav_labels(page)
    assert "Gate" in labels and "Cameras" in labels and "Events" in labels
    for hidden in ("Participants", "Report", "Analytics"):
        assert hidden not in labels, labels
    # Opening a page the role may not: refused with the reason.
    resp = page.goto(stack.base_url + "/participants")
    assert resp is not None and resp.status == 403
    expect(page.locator("body")).to_contain_text("a operator may not open GET /participants")
    # Log out from the user menu: back to the login page, and pages need a login again.
    page.goto(stack.base_url + "/events")
    page.get_by_test_id("user-menu").click()
    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/login\?reason=logged"))
    expect(page.get_by_test_id("reason")).to_have_text("You are logged out.")
    page.goto(stack.base_url + "/events")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fevents$"))


def test_an_open_page_loses_its_power_when_the_role_changes(stack: AuthStack, page: Page) -> None:
    """The gate page checks `gate.scan` on the server at every scan, not only when it opens."""
    name = f"op-{uuid.uuid4().hex[:6]}"
    add_user(stack.data, name, "operator")
    page.goto(stack.base_url + "/login?next=/gate")
    log_in(page, name, PASSWORD)
    expect(page.get_by_test_id("token-input")).to_be_visible()
    UserStore(stack.data).set_role(name, "analyst")  # e.g. an organiser on /users
    r = redis.Redis.from_url(stack.redis_server.url)
    try:
        before = r.xlen(keys.CHECKINS_IN)
        box = page.get_by_test_id("token-input")
        box.fill("some-ticket-text")
        box.press("Enter")
        expect(page.get_by_text("Not allowed: a analyst may not do this")).to_be_visible()
        assert r.xlen(keys.CHECKINS_IN) == before  # nothing was sent
    finally:
        r.close()


def test_users_page_adds_people_and_api_keys(stack: AuthStack, page: Page) -> None:
    page.goto(stack.base_url + "/users")
    log_in(page, "organiser", PASSWORD)
    expect(page).to_have_url(stack.base_url + "/users")
    # A person with a generated password, shown once.
    name = f"an-{uuid.uuid4().hex[:6]}"
    page.get_by_test_id("new-username").fill(name)
    page.get_by_test_id("new-role").click()
    page.get_by_role("option", name="analyst").click()
    page.get_by_test_id("add-user").click()
    password = page.get_by_test_id("secret").inner_text().strip()
    assert len(password) >= 12
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_test_id(f"user-{name}")).to_be_visible()
    res = httpx.post(
        f"{stack.base_url}/api/auth/login", json={"username": name, "password": password}
    )
    assert res.json() == {"username": name, "role": "analyst"}
    # A device key, shown once; it works at once.
    page.get_by_test_id("key-name").fill("hall B sensors")
    page.get_by_test_id("create-key").click()
    key = page.get_by_test_id("secret").inner_text().strip()
    assert key.startswith("vf_device_")
    page.get_by_role("button", name="Done").click()
    event = {"source": "gas-b", "type": "GAS", "level": "INFO", "payload": {"ppm": 1}}
    res = httpx.post(f"{stack.base_url}/api/events", json=event, headers={"X-API-Key": key})
    assert res.status_code == 202, res.text
    # Revoke it from the page.
    key_id = key.split("_")[2]
    page.get_by_test_id(f"revoke-{key_id}").click()
    expect(page.get_by_test_id(f"key-{key_id}")).to_contain_text("revoked")
    res = httpx.post(f"{stack.base_url}/api/events", json=event, headers={"X-API-Key": key})
    assert res.status_code == 401

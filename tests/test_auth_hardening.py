"""Issue 10, items 2, 5 and 11 — against the real app over HTTP (and Chromium):
parallel guesses counted before the password check, a fresh session at login and logout,
cross-site requests and framing refused."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from auth.origin import parse_allowed, refusal
from auth.throttle import PENDING_RETRY_S, LoginThrottle
from core import keys
from tests.conftest import API_KEY, PASSWORD, add_user, free_port
from tests.ui_fixtures import AuthStack, chromium, negotiated

LOCK_AFTER = 3
COOKIE = "session"  # Starlette's SessionMiddleware cookie (NiceGUI's browser id)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    s = AuthStack(
        tmp_path_factory.mktemp("hardening"),
        LOGIN_MAX_FAILURES=str(LOCK_AFTER),
        LOGIN_LOCKOUT_S="600",
        LOGIN_IP_MAX_FAILURES="1000",
    )
    yield s
    s.close()


def _user(stack: AuthStack, name: str, role: str = "organiser") -> str:
    add_user(stack.data, name, role)
    return name


def _auth_events(stack: AuthStack, name: str) -> list[str]:
    r = redis.Redis.from_url(stack.redis_server.url)
    try:
        docs = [json.loads(f[b"data"]) for _, f in r.xrange(keys.ACTIVITY_IN)]
    finally:
        r.close()
    return [d["event"] for d in docs if d.get("metadata", {}).get("username") == name]


# --- item 2: parallel wrong passwords ----------------------------------------------------------


def test_parallel_wrong_logins_are_counted_before_the_password_is_checked(
    stack: AuthStack,
) -> None:
    """30 wrong passwords for one name at once: at most LOCK_AFTER are checked (401), every
    other one is refused before its check (429). Before the fix all 30 were checked."""
    name = _user(stack, "par-victim")

    def attempt(i: int) -> httpx.Response:
        with httpx.Client(base_url=stack.base_url, timeout=60) as c:
            return c.post("/api/auth/login", json={"username": name, "password": f"guess-{i}"})

    with ThreadPoolExecutor(30) as pool:
        codes = [r.status_code for r in pool.map(attempt, range(30))]
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) == LOCK_AFTER and codes.count(429) == 30 - LOCK_AFTER, codes
    events = _auth_events(stack, name)
    assert events.count("auth.login.failure") == LOCK_AFTER
    assert events.count("auth.login.locked") == 30 - LOCK_AFTER
    # Locked now (the checked ones failed): even the right password waits.
    with httpx.Client(base_url=stack.base_url) as c:
        res = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert res.status_code == 429 and 590 <= int(res.headers["Retry-After"]) <= 600


# --- item 5: session fixation ------------------------------------------------------------------


def _me(stack: AuthStack, cookie: str) -> int:
    with httpx.Client(base_url=stack.base_url, cookies={COOKIE: cookie}) as c:
        return c.get("/api/auth/me").status_code


def test_a_cookie_from_before_login_is_not_logged_in_and_logout_kills_the_session(
    stack: AuthStack,
) -> None:
    name = _user(stack, "fixation-op", "operator")
    with stack.client() as c:
        assert c.get("/login").status_code == 200
        before = c.cookies[COOKIE]  # what an attacker could plant or capture
        ok = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        after = c.cookies[COOKIE]
        assert after != before
        assert c.get("/api/auth/me").json()["username"] == name
        assert _me(stack, before) == 401  # the pre-login cookie stays logged out
        assert _me(stack, after) == 200
        # Logout: a new cookie again, and the logged-in one is dead for whoever kept it.
        assert c.post("/api/auth/logout").json() == {"logged_out": name}
        assert c.cookies[COOKIE] not in (before, after)
        assert c.get("/api/auth/me").status_code == 401
        assert _me(stack, after) == 401
        # Logging in again works from the new cookie.
        ok = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert ok.status_code == 200 and _me(stack, after) == 401


# --- item 11: cross-site requests --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("text/plain", '{"username": "organiser", "password": "test-password-1"}'),
        ("application/x-www-form-urlencoded", "username=organiser&password=test-password-1"),
        ("multipart/form-data; boundary=x", "--x--"),
        (None, '{"username": "organiser", "password": "test-password-1"}'),
    ],
)
def test_login_accepts_only_json(stack: AuthStack, ctype: str | None, body: str) -> None:
    """What a plain HTML form (or a no-cors fetch) can send is refused: 415."""
    headers = {"Content-Type": ctype} if ctype else {}
    with stack.client() as c:
        res = c.post("/api/auth/login", content=body, headers=headers)
        assert res.status_code == 415, res.text
        assert "application/json" in res.json()["detail"]
        assert c.get("/api/auth/me").status_code == 401


def test_cross_origin_state_changes_are_refused(stack: AuthStack) -> None:
    own = stack.base_url
    login = {"username": "organiser", "password": PASSWORD}
    evil = {"Origin": "http://evil.example"}
    with stack.client() as c:
        for headers in (
            evil,
            {"Origin": "null"},
            {"Origin": own.replace("127.0.0.1", "localhost")},  # another host is another site
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Referer": "http://evil.example/page"},
        ):
            res = c.post("/api/auth/login", json=login, headers=headers)
            assert res.status_code == 403, (headers, res.text)
            assert "refused" in res.json()["detail"]
        assert c.get("/api/auth/me").status_code == 401
        # Same origin (a browser on our page) and no Origin at all (a script) log in.
        assert c.post("/api/auth/login", json=login, headers={"Origin": own}).status_code == 200
        assert c.post("/api/auth/logout", headers={"Origin": own}).status_code == 200
        same = {"Sec-Fetch-Site": "same-origin", "Referer": own + "/login"}
        assert c.post("/api/auth/login", json=login, headers=same).status_code == 200
        # A cross-site logout does nothing.
        assert c.post("/api/auth/logout", headers=evil).status_code == 403
        assert c.get("/api/auth/me").status_code == 200
        # GETs are not state changes: another site may link to us.
        assert c.get("/api/auth/me", headers=evil).status_code == 200
    # API-key routes: a device (no Origin) still works; a cross-site page cannot use them.
    event = {"source": "s-1", "type": "GAS", "level": "INFO", "payload": {"ppm": 1}}
    key = {"X-API-Key": API_KEY}
    assert httpx.post(f"{own}/api/events", json=event, headers=key).status_code == 202
    assert httpx.post(f"{own}/api/events", json=event, headers=key | evil).status_code == 403


def test_video_websocket_handshake_checks_the_origin(stack: AuthStack) -> None:
    url = stack.base_url.replace("http://", "ws://") + "/video/ws/no-such-camera"
    c = stack.client("operator")  # logged in (an opened client: not a `with` block)
    cookie = {"Cookie": f"{COOKIE}={c.cookies[COOKIE]}"}
    c.close()
    for extra in ({"Origin": "http://evil.example"}, {"Origin": "null"}):
        with pytest.raises(InvalidStatus) as info:
            connect(url, additional_headers=cookie | extra, open_timeout=10).close()
        assert info.value.response.status_code == 403
    # Our own page's origin, and a program with an API key (no Origin), get through to the
    # route (which then closes for the unknown camera).
    for headers in (cookie | {"Origin": stack.base_url}, {"X-API-Key": API_KEY}):
        with (
            connect(url, additional_headers=headers, open_timeout=10) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_every_response_forbids_framing_and_sniffing(stack: AuthStack) -> None:
    with stack.client() as c:
        responses = [
            c.get("/health"),
            c.get("/login"),
            c.get("/gate"),  # redirect to the login
            c.get("/api/auth/me"),  # 401 from the permission middleware
            c.get("/no-such-page"),
            c.post("/api/auth/login", content="x", headers={"Content-Type": "text/plain"}),
            c.post("/api/auth/login", json={}, headers={"Origin": "http://evil.example"}),
        ]
        login = c.get("/login").text
        script = next(s for s in login.split('src="')[1:] if s.split('"')[0].endswith(".js"))
        responses.append(c.get(script.split('"')[0]))
    for res in responses:
        h = res.headers
        assert h["content-security-policy"] == "frame-ancestors 'none'", res.url
        assert h["x-frame-options"] == "DENY", res.url
        assert h["x-content-type-options"] == "nosniff", res.url
        assert h["referrer-policy"] == "same-origin", res.url


def test_the_origin_rule() -> None:
    """The decision itself, for the cases a live server cannot easily show."""
    host = {"host": "venue.example"}
    assert refusal("GET", {**host, "origin": "http://evil.example"}) is None
    assert refusal("POST", {**host, "origin": "https://venue.example"}) is None
    assert refusal("POST", {**host, "origin": "https://venue.example:443"}) is None
    assert refusal("POST", {"host": "venue.example:8443", "origin": "https://venue.example"})
    assert refusal("WS", {**host, "origin": "https://evil.example"})
    assert refusal("DELETE", {**host, "origin": "https://x.venue.example"})
    assert refusal("POST", host) is None  # a program
    assert refusal("POST", {**host, "sec-fetch-site": "none"}) is None  # typed by the user
    assert refusal("POST", {**host, "referer": "garbage"})
    # Behind a proxy that rewrites Host: the public origin is listed in ALLOWED_ORIGINS.
    proxied = {"host": "127.0.0.1:8080", "origin": "https://venue.example"}
    assert refusal("POST", proxied)
    assert refusal("POST", proxied, parse_allowed("https://venue.example, http://b:81")) is None
    with pytest.raises(ValueError, match="not scheme://host"):
        parse_allowed("venue.example")


# --- item 11 in a browser: another site's page ------------------------------------------------


class _Attacker(http.server.ThreadingHTTPServer):
    """A page of another origin (another port) that frames us and posts our login."""


def _attacker_page(target: str) -> bytes:
    return f"""<!doctype html><title>attacker</title>
<iframe id=f src="{target}/login" width=400 height=300></iframe>
<form id=form method=POST action="{target}/api/auth/login" enctype="text/plain" target=out>
<input name='{{"username":"organiser","password":"{PASSWORD}","x":"' value='"}}'></form>
<iframe name=out id=out></iframe>
<script>
window.fetchResult = fetch("{target}/api/auth/login", {{method: "POST", mode: "no-cors",
  credentials: "include", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{username: "organiser", password: "{PASSWORD}"}})}})
  .then(() => "sent").catch((e) => "error " + e);
</script>""".encode()


def test_another_sites_page_can_neither_frame_us_nor_log_the_visitor_in(
    stack: AuthStack,
) -> None:
    body = _attacker_page(stack.base_url)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    srv = _Attacker(("127.0.0.1", free_port()), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        with chromium() as browser:
            ctx = browser.new_context()
            page = ctx.new_page()
            responses: list[tuple[str, int]] = []
            page.on("response", lambda r: responses.append((r.url, r.status)))
            page.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
            assert page.evaluate("window.fetchResult") == "sent"
            page.locator("#form").evaluate("f => f.submit()")
            page.wait_for_timeout(1500)
            # The framed login page never rendered: Chromium shows its error page instead.
            framed = page.frame_locator("#f")
            assert framed.locator("[data-testid=username]").count() == 0
            assert any(u == f"{stack.base_url}/login" for u, _ in responses)
            logins = [s for u, s in responses if u == f"{stack.base_url}/api/auth/login"]
            assert logins and all(s in (403, 415) for s in logins), responses
            # The visitor's browser is not logged in to us (no login CSRF).
            assert ctx.request.get(f"{stack.base_url}/api/auth/me").status == 401
            ctx.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_login_page_and_the_menu_give_the_browser_a_new_session(stack: AuthStack) -> None:
    """The way people log in and out (the page and the user menu, in Chromium) rotates the
    session cookie too: the pre-login one stays logged out, the logged-in one dies at logout."""
    name = _user(stack, "fixation-page", "operator")
    with chromium() as browser:
        ctx = browser.new_context()
        page = ctx.new_page()

        def cookie() -> str:
            return next(c["value"] for c in ctx.cookies() if c["name"] == COOKIE)

        page.goto(stack.base_url + "/login?next=/events")
        before = cookie()
        page.get_by_test_id("username").fill(name)
        page.get_by_test_id("password").fill(PASSWORD)
        page.get_by_test_id("password").press("Enter")
        page.wait_for_url(stack.base_url + "/events")
        during = cookie()
        assert during != before and _me(stack, before) == 401 and _me(stack, during) == 200
        page.get_by_test_id("user-menu").click()
        page.get_by_test_id("logout").click()
        page.wait_for_url(f"{stack.base_url}/login?reason=logged+out")
        assert cookie() not in (before, during) and _me(stack, during) == 401
        assert "auth.logout" in _auth_events(stack, name)
        ctx.close()


def test_the_throttle_counts_attempts_being_checked() -> None:
    """The decision itself, with a clock of our own: places are taken at `begin`."""
    now = [1000.0]
    t = LoginThrottle(max_failures=3, lockout_s=60, ip_max_failures=5, clock=lambda: now[0])
    assert [t.begin("a", "ip1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert t.begin("a", "ip1") == PENDING_RETRY_S  # three being checked fill the budget
    assert t.begin("a", "ip2") == 0.0  # another address is not affected
    t.abandon("a", "ip2")
    assert t.failure("a", "ip1") == 0.0 and t.failure("a", "ip1") == 0.0
    assert t.begin("a", "ip1") == PENDING_RETRY_S  # 2 failures + 1 pending
    assert t.failure("a", "ip1") == 60.0  # the third: locked
    assert t.begin("a", "ip1") == 60.0
    now[0] += 61
    assert t.begin("a", "ip1") == 0.0
    t.success("a", "ip1")
    # Per address: 5 places over any names, pending ones included.
    assert [t.begin(f"n{i}", "ip3") for i in range(5)] == [0.0] * 5
    assert t.begin("other", "ip3") == PENDING_RETRY_S
    for i in range(5):
        t.failure(f"n{i}", "ip3")
    assert t.begin("other", "ip3") > 500  # the window


def test_sockets_are_not_deflated_by_default(stack: AuthStack) -> None:
    """`WS_COMPRESSION` defaults to off: a client offering permessage-deflate (as browsers
    do) gets plain frames (tests/test_ws_compression.py has the setting on)."""
    assert negotiated(stack.base_url) is None

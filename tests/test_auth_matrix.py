"""Each role can do exactly its part: every route of the running app, for every role, for every
API key kind and for no login, really requested against the real app (real Redis).

The cases come from the permission matrix itself (`auth.permissions.ROUTES`), and a first test
asks the running app for ALL its routes and fails if one is not in the matrix — so a route added
later cannot slip through unchecked (the middleware refuses such a route for everyone meanwhile).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import nicegui
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from auth.keys import KeyStore
from auth.permissions import PUBLIC, ROUTES, Rule
from tests.conftest import API_KEY
from tests.ui_fixtures import ROLE_USERS, AuthStack

#: A value per path parameter: ids that do not exist answer quickly (404) once allowed.
PARAMS = {
    "pid": "nobody",
    "camera_id": "nocam",
    "room_id": "main",
    "nonce": "no-such-nonce",
    "action": "status",
    "path": "gate_scan.js",
    "alarm_id": "gas|nowhere|1",
}
PREFIXES = {
    "/_nicegui/*": f"/_nicegui/{nicegui.__version__}/static/nicegui.css",
    "/_nicegui_ws/*": "/_nicegui_ws/socket.io/?EIO=4&transport=polling",
}
SESSIONS = ("organiser", "operator", "analyst")
KEYS = ("device", "gate", "admin")
PRINCIPALS = ("nobody", *SESSIONS, *(f"{k}-key" for k in KEYS))


def concrete(rule: Rule) -> str:
    if rule.path in PREFIXES:
        return PREFIXES[rule.path]
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS[m.group(1)], rule.path)


def expected(rule: Rule, who: str) -> str:
    """`allowed`, `login` (no login: redirect for pages, 401 for APIs), `forbidden` (403), or
    `badkey`, straight from the rule: the table the middleware enforces."""
    if rule.perm == PUBLIC:
        return "allowed"
    if who in SESSIONS:
        if rule.perm is None:
            return "login"  # key-only route: a session is no credential there (401)
        return "allowed" if who in rule.roles else "forbidden"
    if who.endswith("-key") and rule.keys:
        return "allowed" if who.removesuffix("-key") in rule.keys else "forbidden"
    return "login"  # nobody, or a key on a route that takes no key


@dataclass
class Principals:
    stack: AuthStack
    clients: dict[str, httpx.Client]
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        if who.endswith("-key"):
            return {"X-API-Key": self.keys[who.removesuffix("-key")]}
        return {}

    def cookie(self, who: str) -> dict[str, str]:
        jar = self.clients[who].cookies
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Principals]:
    stack = AuthStack(tmp_path_factory.mktemp("auth-matrix"))
    store = KeyStore(stack.data)
    made = {k: store.create(f"matrix {k}", k, "test", "main" if k == "gate" else None)[0]
            for k in KEYS}  # fmt: skip
    clients = {who: stack.client(who if who in SESSIONS else None) for who in PRINCIPALS}
    try:
        yield Principals(stack, clients, made)
    finally:
        for c in clients.values():
            c.close()
        stack.close()


def test_every_route_of_the_running_app_is_in_the_matrix(p: Principals) -> None:
    table = p.clients["organiser"].get("/api/auth/routes").json()
    paths = {r["path"] for r in table}
    assert {"/events", "/api/events", "/video/ws/{camera_id}", "/login", "/users"} <= paths
    missing = [f"{r['method']} {r['path']}" for r in table if r["rule"] is None]
    assert not missing, f"routes not in auth/permissions.py ROUTES (add them): {missing}"
    # ... and the listing itself is for organisers only.
    assert p.clients["analyst"].get("/api/auth/routes").status_code == 403


def _cases() -> list:
    cases = []
    for rule in ROUTES:
        for method in sorted(rule.methods):
            for who in PRINCIPALS:
                m = "GET" if method == "*" else method
                cases.append(pytest.param(rule, m, who, id=f"{m} {rule.path} as {who}"))
    return cases


@pytest.mark.parametrize(("rule", "method", "who"), _cases())
def test_route_access(p: Principals, rule: Rule, method: str, who: str) -> None:
    path = concrete(rule)
    want = expected(rule, who)
    if method == "WS":
        _check_ws(p, path, who, want)
        return
    if rule.path == "/api/auth/logout" and who in SESSIONS:
        c = p.stack.client(who)  # its own session: logging out must not end the shared one
        try:
            r = c.post(path)
            assert r.status_code == 200 and r.json()["logged_out"] == ROLE_USERS[who], r.text
            assert c.get("/api/auth/me").status_code == 401, "still logged in after logout"
        finally:
            c.close()
        return
    client = p.clients[who]
    kw = {"json": {}} if method == "POST" else {}
    r = client.request(method, path, headers=p.headers(who), **kw)
    loc = r.headers.get("location", "")
    what = f"{method} {path} as {who}: {r.status_code} {r.text[:200]!r}"
    if want == "allowed":
        assert r.status_code not in (401, 403), what
        assert not loc.startswith("/login"), what
        if rule.page and "{" not in rule.path and "." not in rule.path and rule.path != "/login":
            assert r.status_code == 200, what  # the page itself renders
    elif want == "forbidden":
        assert r.status_code == 403, what
        assert "may not" in r.text, what  # the reason, not a bare status
    elif rule.page:
        assert r.status_code == 303, what
        assert loc.startswith("/login?next="), what
    else:
        assert r.status_code == 401, what
        assert r.headers["content-type"].startswith("application/json"), what


def _check_ws(p: Principals, path: str, who: str, want: str) -> None:
    url = p.stack.base_url.replace("http://", "ws://") + path
    headers = p.headers(who) | p.cookie(who)
    if want != "allowed":
        with pytest.raises(InvalidStatus) as info:
            connect(url, additional_headers=headers, open_timeout=10).close()
        assert info.value.response.status_code == 403
        return
    # allowed: the handshake succeeds; the route itself then closes for the unknown camera
    with (
        connect(url, additional_headers=headers, open_timeout=10) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_environment_api_keys_grant_every_kind(p: Principals) -> None:
    """`API_KEYS` keeps working as before: every API-key route accepts it."""
    h = {"X-API-Key": API_KEY}
    c = p.clients["nobody"]
    assert c.post("/api/events", json={}, headers=h).status_code == 422  # past auth: validation
    assert c.post("/api/checkins", json={}, headers=h).status_code == 422
    assert c.get("/api/participants/nobody", headers=h).status_code == 404
    assert c.get("/api/events", headers=h).status_code == 200


def test_paths_that_are_no_route_stay_404(p: Principals) -> None:
    """The middleware refuses unlisted routes, but a path that is no route at all is a 404."""
    assert p.clients["organiser"].get("/no/such/route").status_code == 404
    assert p.clients["nobody"].get("/no/such/route").status_code == 404


async def test_a_route_missing_from_the_matrix_is_refused_for_everyone() -> None:
    """The real middleware in front of a real Starlette app with one unlisted route, called
    as a server calls it (ASGI)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from auth.middleware import AuthMiddleware

    async def secret(_request: object) -> PlainTextResponse:
        return PlainTextResponse("should never be served")

    app = Starlette(routes=[Route("/api/not-listed", secret)])
    app.add_middleware(AuthMiddleware)

    async def get(path: str) -> tuple[int, bytes]:
        sent: list[dict] = []
        scope = {
            "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [(b"x-api-key", API_KEY.encode())],
            "http_version": "1.1", "scheme": "http", "root_path": "",
            "server": ("test", 80), "client": ("127.0.0.1", 1),
        }  # fmt: skip

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = await get("/api/not-listed")
    assert status == 403 and b"not in the permission matrix" in body
    assert (await get("/api/also-not-a-route"))[0] == 404


#: The documented table (docs/security.md "Roles"): which pages each role opens. Pinned so that an
#: edit of the matrix that changes who sees what fails a test instead of passing silently.
PAGES = {
    "organiser": {
        "/", "/events", "/attendance", "/alarms", "/analytics", "/gate", "/participants",
        "/report", "/cameras", "/rooms", "/rooms/{room_id}", "/users", "/notifications",
    },
    "operator": {
        "/", "/events", "/attendance", "/alarms", "/gate", "/cameras", "/rooms",
        "/rooms/{room_id}", "/notifications",
    },
    "analyst": {
        "/", "/events", "/attendance", "/alarms", "/analytics", "/report", "/notifications",
    },
}  # fmt: skip
ACTIONS = {
    "alarms.ack": {"organiser", "operator"},
    "alarms.clear": {"organiser"},
    "analytics.sql": {"organiser", "analyst"},
    "cameras.control": {"organiser", "operator"},
    "gate.scan": {"organiser", "operator"},
    "participants.manage": {"organiser"},
    "users.manage": {"organiser"},
    "notify.subscribe": {"organiser", "operator", "analyst"},
    "notify.manage": {"organiser"},
}


def test_the_matrix_is_the_documented_one() -> None:
    from auth.permissions import PERMISSIONS

    pages = [r for r in ROUTES if r.page and "." not in r.path and r.perm != PUBLIC]
    for role, want in PAGES.items():
        got = {r.path for r in pages if role in r.roles}
        assert got == want, role
    for perm, roles in ACTIONS.items():
        assert PERMISSIONS[perm] == roles, perm

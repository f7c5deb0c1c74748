"""Logins, lockout, sessions, `run.py users|keys`, and API key kinds — against the real app,
real Redis and `run.py` as a subprocess (the store is the real `DATA_DIR/users.json`)."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from core import keys
from tests.conftest import API_KEY, PASSWORD, AppProcess, login_http, wait_for
from tests.ui_fixtures import AuthStack

LOCK_AFTER = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    s = AuthStack(
        tmp_path_factory.mktemp("auth"),
        LOGIN_MAX_FAILURES=str(LOCK_AFTER),
        LOGIN_LOCKOUT_S="600",
        LOGIN_IP_MAX_FAILURES="100",
    )
    yield s
    s.close()


@pytest.fixture
def r(stack: AuthStack) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(stack.redis_server.url)
    yield c
    c.close()


def activity(r: redis.Redis, prefix: str = "auth.") -> list[dict]:
    """The auth records in `activity:in` (the video flow stores them in request_logs)."""
    out = []
    for _, fields in r.xrange(keys.ACTIVITY_IN):
        doc = json.loads(fields[b"data"])
        if doc["event"].startswith(prefix):
            out.append(doc)
    return out


def new_user(stack: AuthStack, role: str, password: str = PASSWORD) -> str:
    name = f"u-{uuid.uuid4().hex[:8]}"
    done = stack.run_py("users", "add", name, "--role", role, "--password-stdin", stdin=password)
    assert done.returncode == 0, done.stderr
    return name


def login(stack: AuthStack, name: str, password: str = PASSWORD, **kw) -> httpx.Response:
    with stack.client(**kw) as c:
        return c.post("/api/auth/login", json={"username": name, "password": password})


# --- logging in and out ---------------------------------------------------------------------


def test_login_logout_and_every_attempt_in_the_activity_log(
    stack: AuthStack, r: redis.Redis
) -> None:
    name = new_user(stack, "operator")
    with stack.client() as c:
        bad = c.post("/api/auth/login", json={"username": name, "password": "wrong-password"})
        assert bad.status_code == 401 and bad.json()["detail"] == "wrong user name or password"
        nobody = c.post("/api/auth/login", json={"username": "ghost", "password": PASSWORD})
        assert nobody.json() == bad.json()  # the answer does not tell which names exist
        assert c.get("/api/auth/me").status_code == 401
        assert c.post("/api/auth/login", json={"username": name}).status_code == 422
        ok = c.post("/api/auth/login", json={"username": name.upper(), "password": PASSWORD})
        assert ok.status_code == 200 and ok.json() == {"username": name, "role": "operator"}
        me = c.get("/api/auth/me").json()
        assert me["role"] == "operator" and "alarms.ack" in me["permissions"]
        assert "alarms.clear" not in me["permissions"]
        assert c.get("/gate").status_code == 200
        assert c.post("/api/auth/logout").json() == {"logged_out": name}
        assert c.get("/api/auth/me").status_code == 401
        assert c.get("/gate").headers["location"] == "/login?next=%2Fgate"

    got = [(a["event"], a["metadata"].get("username"), a["ip"]) for a in activity(r)]
    mine = [g for g in got if g[1] in (name, "ghost")]
    assert mine == [
        ("auth.login.failure", name, "127.0.0.1"),
        ("auth.login.failure", "ghost", "127.0.0.1"),
        ("auth.login.success", name, "127.0.0.1"),
        ("auth.logout", name, "127.0.0.1"),
    ]
    assert all(PASSWORD not in json.dumps(a) for a in activity(r))  # never a password


def test_lockout_after_failures_per_name_and_address(stack: AuthStack, r: redis.Redis) -> None:
    """Progressive lockout keyed by (name, address): the owner is not locked out elsewhere."""
    name = new_user(stack, "analyst")
    for i in range(LOCK_AFTER):
        res = login(stack, name, "not-the-password")
        assert res.status_code == 401
        assert ("locked for 600 s" in res.json()["detail"]) == (i == LOCK_AFTER - 1)
    # Locked: even the right password is refused, before it is checked.
    locked = login(stack, name)
    assert locked.status_code == 429, locked.text
    assert "too many failed logins" in locked.json()["detail"]
    assert 590 <= int(locked.headers["Retry-After"]) <= 600
    # The same name from another address (127.0.0.2 is loopback too) is not locked.
    other = login(stack, name, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert other.status_code == 200, other.text
    events = [a["event"] for a in activity(r) if a["metadata"].get("username") == name]
    assert events.count("auth.login.failure") == LOCK_AFTER
    assert "auth.login.locked" in events and events[-1] == "auth.login.success"


def test_login_page_and_no_default_user(stack: AuthStack, tmp_path) -> None:
    with stack.client() as c:
        page = c.get("/login?next=/gate")
        assert page.status_code == 200 and "Log in" in page.text
        assert "run.py users add" not in page.text  # users exist: no first-run hint
    # A fresh DATA_DIR has no user at all (and no default password): the page says what to do.
    data = tmp_path / "fresh"
    data.mkdir()
    env = {**stack.env, "DATA_DIR": str(data)}
    app = AppProcess(env, data / "app.log", organiser=False).wait_ready()
    try:
        assert not (data / "users.json").exists()
        page = httpx.get(f"{app.base_url}/login")
        assert "uv run run.py users add NAME --role organiser" in page.text
        for name in ("admin", "organiser", "demo-organiser"):
            res = httpx.post(
                f"{app.base_url}/api/auth/login", json={"username": name, "password": name}
            )
            assert res.status_code == 401
    finally:
        app.stop()


# --- the stores on disk ---------------------------------------------------------------------


def test_only_hashes_are_stored(stack: AuthStack) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    name = new_user(stack, "operator", secret)
    login_res = login(stack, name, secret)
    assert login_res.status_code == 200
    users = stack.data / "users.json"
    text = users.read_text()
    assert secret not in text
    doc = json.loads(text)["users"][name]
    assert doc["password_hash"].startswith("$argon2id$")
    assert stat.S_IMODE(os.stat(users).st_mode) == 0o600
    key = stack.run_py("keys", "add", "a sensor", "--kind", "device").stdout.strip()
    keys_file = stack.data / "api_keys.json"
    assert key.startswith("vf_device_") and key not in keys_file.read_text()
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    # Nothing else under DATA_DIR (sessions included) holds the password or the key.
    for path in stack.data.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".log", ""}:
            body = path.read_bytes()
            assert secret.encode() not in body and key.encode() not in body, path


# --- run.py users -------------------------------------------------------------------------------


def test_run_py_users_and_changes_apply_to_open_sessions(stack: AuthStack) -> None:
    name = new_user(stack, "operator")
    listed = stack.run_py("users", "list").stdout
    assert f"{name} " in listed and "operator" in listed
    again = stack.run_py(
        "users", "add", name, "--role", "analyst", "--password-stdin", stdin="x" * 12
    )
    assert again.returncode == 1 and "exists already" in again.stderr
    short = stack.run_py(
        "users", "add", "shorty", "--role", "analyst", "--password-stdin", stdin="abc"
    )
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    bad = stack.run_py(
        "users", "add", "Bad Name!", "--role", "analyst", "--password-stdin", stdin=PASSWORD
    )
    assert bad.returncode == 1 and "invalid user name" in bad.stderr

    with stack.client() as c:
        login_http(c, name)
        assert c.get("/gate").status_code == 200
        # A role change applies at the next request of an open session.
        assert stack.run_py("users", "role", name, "analyst").returncode == 0
        denied = c.get("/gate")
        assert denied.status_code == 403 and "a analyst may not open GET /gate" in denied.text
        assert c.get("/analytics").status_code == 200
        # A new password ends every session of the user.
        done = stack.run_py("users", "passwd", name, "--password-stdin", stdin="new-password-1")
        assert done.returncode == 0, done.stderr
        ended = c.get("/events")
        assert ended.status_code == 303
        assert ended.headers["location"] == "/login?next=%2Fevents&reason=password%20changed"
        assert login(stack, name).status_code == 401
        login_http(c, name, "new-password-1")
        # Removing the user ends their session too.
        assert stack.run_py("users", "remove", name).returncode == 0
        gone = c.get("/api/auth/me")
        assert gone.status_code == 401 and "removed" in gone.json()["detail"]
    last = stack.run_py("users", "remove", "organiser")
    assert last.returncode == 1 and "last organiser" in last.stderr
    demote = stack.run_py("users", "role", "organiser", "operator")
    assert demote.returncode == 1 and "last organiser" in demote.stderr


# --- API keys -------------------------------------------------------------------------------------


def _checkin(gate: str) -> dict:
    return {"gate_id": gate, "token": "t" * 20, "nonce": uuid.uuid4().hex, "direction": "in"}


def test_api_key_kinds_gate_binding_and_revocation(stack: AuthStack, r: redis.Redis) -> None:
    def add(*args: str) -> str:
        done = stack.run_py("keys", "add", *args)
        assert done.returncode == 0 and "shown only this once" in done.stderr, done.stderr
        return done.stdout.strip()

    device = {"X-API-Key": add("hall A sensors", "--kind", "device")}
    gate = {"X-API-Key": add("main gate phone", "--kind", "gate", "--gate", "main")}
    admin = {"X-API-Key": add("organiser script", "--kind", "admin")}
    event = {"source": "gas-1", "type": "GAS", "level": "INFO", "payload": {"ppm": 3}}
    with stack.client() as c:
        assert c.post("/api/events", json=event, headers=device).status_code == 202
        assert c.post("/logs", json={"event": "kiosk.open"}, headers=device).status_code == 202
        wrong = c.post("/api/checkins?wait=0", json=_checkin("main"), headers=device)
        assert wrong.status_code == 403
        assert wrong.json()["detail"].startswith("a device API key may not call POST")
        assert c.post("/api/events", json=event, headers=gate).status_code == 403
        assert c.get("/api/participants", headers=gate).status_code == 403

        # A gate key bound to `main` checks in there, and nowhere else.
        ok = c.post("/api/checkins?wait=0", json=_checkin("main"), headers=gate)
        assert ok.status_code == 202, ok.text  # pending: no check-in flow runs here
        side = c.post("/api/checkins?wait=0", json=_checkin("side"), headers=gate)
        assert side.status_code == 403
        assert side.json()["detail"] == (
            "this API key is bound to gate 'main'; it cannot act for gate 'side'"
        )
        batch = c.post(
            "/api/checkins/batch", json=[_checkin("main"), _checkin("side")], headers=gate
        )
        assert batch.status_code == 403 and batch.json()["detail"].startswith("check-in 1:")
        assert c.get("/api/tokens/public-key", headers=gate).status_code == 200
        # ... and reads verdicts of its own gate only.
        nonce = uuid.uuid4().hex
        r.set(keys.verdict_key(nonce), json.dumps({"gate_id": "side", "status": "accepted"}))
        assert c.get(f"/api/checkins/{nonce}", headers=gate).status_code == 403
        assert c.get(f"/api/checkins/{nonce}", headers=admin).status_code == 200
        assert c.get(f"/api/checkins/{nonce}", headers={"X-API-Key": API_KEY}).status_code == 200

        # Revoked: refused at once (the running app re-reads the file).
        key_id = gate["X-API-Key"].split("_")[2]
        listed = stack.run_py("keys", "list").stdout
        assert key_id in listed and gate["X-API-Key"] not in listed
        assert stack.run_py("keys", "revoke", key_id).returncode == 0
        gone = c.post("/api/checkins?wait=0", json=_checkin("main"), headers=gate)
        assert gone.status_code == 401 and gone.json()["detail"] == "missing or invalid X-API-Key"
        assert "revoked" in stack.run_py("keys", "list").stdout
        bad = stack.run_py("keys", "add", "x", "--kind", "device", "--gate", "main")
        assert bad.returncode == 1 and "only a gate key" in bad.stderr


@pytest.mark.parametrize(
    ("setting", "reason"), [("SESSION_MAX_AGE_S", "expired"), ("SESSION_IDLE_S", "idle")]
)
def test_sessions_expire(tmp_path, setting: str, reason: str) -> None:
    """A login ends SESSION_MAX_AGE_S after it began, or after SESSION_IDLE_S without a
    request (here 2 s each; polling every 0.25 s does not count as activity this soon)."""
    s = AuthStack(tmp_path, **{setting: "2"})
    try:
        c = s.client("operator")  # logged in (an opened client: not a `with` block)
        try:
            assert c.get("/events").status_code == 200

            def ended() -> httpx.Response | None:
                res = c.get("/events")
                return res if res.status_code != 200 else None

            res = wait_for(ended, 20, 0.25, "the session to expire")
            assert res.status_code == 303
            assert res.headers["location"] == f"/login?next=%2Fevents&reason={reason}"
            assert c.get("/api/auth/me").status_code == 401
        finally:
            c.close()
    finally:
        s.close()

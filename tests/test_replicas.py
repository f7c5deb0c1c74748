"""The dashboard as two replicas behind a real HAProxy (`run.py ui --replicas 2`), sessions in
real Redis, a real headless Chromium: kill -9 the replica that served a logged-in page, and
the same browser is still logged in on the other one and gets live updates there.

With `--api-replicas 2` as well: API-key requests are answered by the API-only processes
(`python -m api.main`) and survive a kill -9 of one; the API-only app enforces the same route
matrix as the dashboard.

Needs Debian's `haproxy` (`apt-get install -y haproxy`): without it the test fails and says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import redis
from playwright.sync_api import Browser, expect

from bench import harness as h
from core import keys
from ops.balancer import (
    SERVED_BY,
    STICKY_COOKIE,
    AccessLine,
    BalancerMissing,
    access_lines,
    haproxy_binary,
)
from ops.processes import PROJECT_DIR
from ops.supervisor import child_pids, cmdline
from tests.support import (
    API_KEY,
    ORGANISER,
    PASSWORD,
    RedisServer,
    add_user,
    free_port,
    login_browser,
    login_http,
    stored_event,
    wait_for,
)

WAIT_MS = 60_000  # a page reload after the failover, on a busy 2-core machine


class Replicas:
    """`run.py ui --replicas 2` as a subprocess (its supervisor runs HAProxy and the two)."""

    def __init__(
        self, redis_url: str, data: Path, api: int = 0, nice: int = 0, access_log: bool = False
    ):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data, self.log = data, data / "run-ui.log"
        add_user(data, ORGANISER, "organiser")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(
            REDIS_URL=redis_url, DATA_DIR=str(data), HOST="127.0.0.1", PORT=str(self.port),
            HEALTH_FLOWS="events", PYTHONUNBUFFERED="1", API_KEYS=API_KEY,
            DASHBOARD_NICE=str(nice), BALANCER_ACCESS_LOG=str(access_log).lower(),
        )  # fmt: skip
        cmd = [sys.executable, "run.py", "ui", "--replicas", "2", "--api-replicas", str(api)]
        self.api = api
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def access(self) -> list[AccessLine]:
        """The requests in HAProxy's access log (`BALANCER_ACCESS_LOG`)."""
        return access_lines((self.data / "logs" / "balancer.log").read_text(errors="replace"))

    def _servers(self, prefix: str, name_at: int) -> dict[str, str]:
        """The generated config's `server` lines starting with `prefix`: word `name_at` →
        port."""
        config = (self.data / "balancer" / "haproxy.cfg").read_text()
        lines = [ln.split() for ln in config.splitlines() if ln.strip().startswith(prefix)]
        return {w[name_at]: w[2].split(":")[1] for w in lines}

    def ports(self) -> dict[str, str]:
        """Sticky-cookie value (`d0`, `d1`) → port of the replica."""
        return self._servers("server dashboard", 4)  # … cookie d0

    def api_ports(self) -> dict[str, str]:
        """HAProxy server name (`api0`, `api1`) → port of the API process."""
        return self._servers("server api", 1)

    def api_pids(self) -> dict[str, int]:
        """HAProxy server name → pid of the API process behind it."""
        name_of_port = {p: n for n, p in self.api_ports().items()}
        return {name_of_port[port]: pid for pid, port in self._ports_of("api.main").items()}

    def _ports_of(self, module: str) -> dict[int, str]:
        """pid → PORT of each child running `python -m module`."""
        out = {}
        for pid in child_pids(self.proc.pid):
            if cmdline(pid)[1:] != ["-m", module]:
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            out[pid] = next(e[5:].decode() for e in env if e.startswith(b"PORT="))
        return out

    def api_answers(self, name: str) -> bool:
        try:
            port = self.api_ports()[name]
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code in (200, 503)
        except (httpx.HTTPError, OSError, KeyError):
            return False

    def replica_pids(self) -> dict[str, int]:
        """Sticky-cookie value → pid of the replica behind it (each child's PORT)."""
        cookie_of_port = {p: c for c, p in self.ports().items()}
        return {cookie_of_port[port]: pid for pid, port in self._ports_of("ui.main").items()}

    def answers(self, cookie: str) -> bool:
        """Replica `cookie` answers on its own port."""
        try:
            port = self.ports()[cookie]
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code in (200, 503)
        except (httpx.HTTPError, OSError, KeyError):
            return False

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.output()
        if not all(self.answers(c) for c in ("d0", "d1")):
            return False
        if not all(self.api_answers(f"api{i}") for i in range(self.api)):
            return False
        try:  # and the balancer has taken both in (two good checks: ~2 s)
            pinned = [
                httpx.get(f"{self.base_url}/login", cookies={STICKY_COOKIE: c}, timeout=5)
                for c in ("d0", "d1")
            ]  # a new cookie in the answer: not served by `c`
            if not all(r.status_code == 200 and STICKY_COOKIE not in r.cookies for r in pinned):
                return False
            served = {  # both API processes taken in (round robin: 2 requests, 2 servers)
                httpx.get(f"{self.base_url}/api/events", headers={"X-API-Key": API_KEY},
                          timeout=5).headers.get(SERVED_BY)
                for _ in range(2 * self.api)
            }  # fmt: skip
            return served >= {f"api/api{i}" for i in range(self.api)}
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        h.stop_all([self.proc], 40)  # SIGINT, then kill after 40 s


def _stack(
    tmp_path: Path, redis_server: RedisServer, api: int, nice: int = 0, access_log: bool = False
) -> Iterator[Replicas]:
    try:
        haproxy_binary()
    except BalancerMissing as exc:
        pytest.fail(str(exc))  # CI installs it (.ci/run): never a skip
    data = tmp_path / "data"
    data.mkdir()
    rep = Replicas(redis_server.url, data, api, nice, access_log)
    try:
        wait_for(rep.ready, 180, 0.5, f"two replicas and {api} API processes behind HAProxy")
        yield rep
    finally:
        rep.stop()
    assert rep.proc.returncode == 0, rep.output()
    assert not child_pids(rep.proc.pid)


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[Replicas]:
    yield from _stack(tmp_path, redis_server, 0)


NICE = 7


@pytest.fixture
def with_api(tmp_path: Path, redis_server: RedisServer) -> Iterator[Replicas]:
    yield from _stack(tmp_path, redis_server, 2, NICE, access_log=True)


def check_niceness(stack: Replicas) -> int:
    """With API processes, the supervisor starts each dashboard replica `DASHBOARD_NICE`
    nicer than itself; the API processes and HAProxy keep its priority (docs/operating.md,
    Replicas). Returns the dashboards' niceness."""
    base = psutil.Process(stack.proc.pid).nice()  # the supervisor's (pytest may be niced)
    want = min(19, base + NICE)
    dashboards, api = stack.replica_pids(), stack.api_pids()
    assert set(dashboards) == {"d0", "d1"} and set(api) == {"api0", "api1"}, (dashboards, api)
    assert {c: psutil.Process(p).nice() for c, p in dashboards.items()} == {"d0": want, "d1": want}
    assert {c: psutil.Process(p).nice() for c, p in api.items()} == {"api0": base, "api1": base}
    haproxy = [p for p in child_pids(stack.proc.pid) if "haproxy" in cmdline(p)[0]]
    assert haproxy and all(psutil.Process(p).nice() == base for p in haproxy), haproxy
    return want


def test_a_replica_killed_under_a_logged_in_page_loses_neither_login_nor_live_view(
    replicas: Replicas, redis_server: RedisServer, browser: Browser
) -> None:
    base = replicas.base_url
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    login_browser(ctx, base)
    page = ctx.new_page()
    page.goto(base + "/events")
    expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)
    cookies = {c["name"]: c["value"] for c in ctx.cookies()}
    served = cookies[STICKY_COOKIE]
    # The session is in Redis (under its hashed id), not in the replica's memory alone.
    r = redis.Redis.from_url(redis_server.url)
    sessions = [k for k in r.scan_iter(keys.session_key("*"))]
    assert sessions, "no session in Redis"
    assert ORGANISER in r.get(sessions[0]).decode()

    pids = replicas.replica_pids()
    assert set(pids) == {"d0", "d1"}, pids
    os.kill(pids[served], signal.SIGKILL)

    # The page's socket drops; NiceGUI reconnects through the balancer to the other replica,
    # which does not know the page, so the page reloads there — still logged in.
    other = "d1" if served == "d0" else "d0"
    wait_for(
        lambda: {c["name"]: c["value"] for c in ctx.cookies()}.get(STICKY_COOKIE) == other,
        90, 0.5, "the browser to be moved to the other replica",
    )  # fmt: skip
    expect(page).to_have_url(base + "/events", timeout=WAIT_MS)
    expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)

    fresh = stored_event("after-failover", "replica")
    r.publish(keys.LIVE_EVENTS, json.dumps({"events": [fresh], "total": 1}))
    expect(page.locator(f'.vf-feed-row[data-event-id="{fresh["id"]}"]')).to_contain_text(
        "after-failover", timeout=WAIT_MS
    )
    # The session is the same one (the login was not redone) and the API agrees.
    me = ctx.request.get(base + "/api/auth/me")
    assert me.status == 200 and me.json()["username"] == ORGANISER, me.text()

    # The supervisor restarts the killed replica on its port; the balancer takes it back.
    wait_for(
        lambda: f"dashboard {served[1]} killed by SIGKILL" in replicas.output(),
        30, 0.5, "the supervisor to see the replica die",
    )  # fmt: skip
    wait_for(lambda: replicas.answers(served), 180, 1, "the restarted replica to answer again")
    ctx.close()
    r.close()
    assert replicas.access() == []  # BALANCER_ACCESS_LOG is off by default


def test_socket_polling_sticks_and_a_logout_ends_the_session_on_every_replica(
    replicas: Replicas,
) -> None:
    base = replicas.base_url
    # socket.io's long-polling fallback is a series of HTTP requests naming an engine.io
    # session that only the replica which opened it knows: the cookie keeps them there
    # (round robin would send every second one to the other replica: 400 "Session ID unknown").
    path = "/_nicegui_ws/socket.io/?EIO=4&transport=polling"
    with httpx.Client(base_url=base, headers={"Origin": base}) as poll:
        opened = poll.get(path)
        assert opened.status_code == 200 and opened.text.startswith("0"), opened.text
        assert STICKY_COOKIE in poll.cookies
        sid = json.loads(opened.text[1:])["sid"]
        sent = poll.post(f"{path}&sid={sid}", content="40")  # socket.io: connect
        assert sent.status_code == 200, sent.text
        got = poll.get(f"{path}&sid={sid}")
        assert got.status_code == 200 and got.text.startswith("40"), got.text
        for _ in range(4):  # engine.io pongs: each a request of its own
            sent = poll.post(f"{path}&sid={sid}", content="3")
            assert sent.status_code == 200, sent.text
    with httpx.Client(base_url=base) as a:
        r = a.post("/api/auth/login", json={"username": ORGANISER, "password": PASSWORD})
        assert r.status_code == 200, r.text
        on, cookie = a.cookies.get(STICKY_COOKIE), a.cookies.get("session")
        other = "d1" if on == "d0" else "d0"
        with httpx.Client(base_url=base, cookies={"session": cookie, STICKY_COOKIE: other}) as b:
            assert b.get("/api/auth/me").status_code == 200  # the other replica knows the login
            assert a.post("/api/auth/logout").status_code == 200
            assert b.get("/api/auth/me").status_code == 401  # and that it ended


EVENT = {"source": "api-replica-test", "type": "test.api", "level": "INFO"}


def test_api_key_requests_are_answered_by_api_processes_and_survive_a_kill(
    with_api: Replicas, redis_server: RedisServer
) -> None:
    niced = check_niceness(with_api)
    base, key = with_api.base_url, {"X-API-Key": API_KEY}
    r = redis.Redis.from_url(redis_server.url)
    accepted = 0
    with httpx.Client(base_url=base, headers=key, timeout=30) as api:
        first = api.post("/api/events", json=EVENT)
        assert first.status_code == 202, first.text
        assert first.headers[SERVED_BY].startswith("api/api"), first.headers
        accepted += 1
        # Bad input: a 4xx with the reason from the API process, never a 500.
        bad = api.post("/api/events", json={"source": "x"})
        assert bad.status_code == 422 and bad.headers[SERVED_BY].startswith("api/"), bad.text
        assert {e["field"] for e in bad.json()["errors"]} >= {"type", "level"}, bad.text
        junk = api.post(
            "/api/events", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert junk.status_code in (400, 422) and junk.json()["detail"], junk.text

        # The dashboard still serves pages and logins (no API key: the sticky backend).
        with httpx.Client(base_url=base, timeout=30) as browser:
            page = browser.get("/login")
            assert page.status_code == 200 and page.headers[SERVED_BY].startswith("replicas/")
            login_http(browser)
            me = browser.get("/api/auth/me")
            assert me.status_code == 200 and me.json()["username"] == ORGANISER, me.text
            assert me.headers[SERVED_BY].startswith("replicas/dashboard"), me.headers
            # The same session cookie means nothing to an API process: 401, never a 500.
            port = with_api.api_ports()["api0"]
            direct = httpx.get(f"http://127.0.0.1:{port}/api/events", cookies=browser.cookies)
            assert direct.status_code == 401 and "login required" in direct.text, direct.text

        # kill -9 one API process: every request (the same keep-alive client) still succeeds,
        # retried on the other; nothing accepted is lost or doubled.
        pids = with_api.api_pids()
        assert set(pids) == {"api0", "api1"}, pids
        # One request first: HAProxy closes a client connection idle for 10 s (its keep-alive
        # timeout), which the browser part above may have taken on a busy machine.
        assert api.post("/api/events", json=EVENT).status_code == 202
        accepted += 1
        dashboards = with_api.replica_pids()
        os.kill(pids["api0"], signal.SIGKILL)
        os.kill(dashboards["d0"], signal.SIGKILL)  # a restarted dashboard is niced too
        for _ in range(30):
            got = api.post("/api/events", json=EVENT)
            assert got.status_code == 202, (got.status_code, got.text)
            accepted += 1
        assert r.xlen(keys.EVENTS_IN) == accepted
        page = api.get("/api/events", params={"page": 1, "size": 5})
        assert page.status_code == 200, page.text

    # BALANCER_ACCESS_LOG: a line per request, who answered, status, times; never the query.
    def logged() -> list[AccessLine]:
        return [a for a in with_api.access() if a.backend == "api"]

    wait_for(lambda: any(a.method == "GET" for a in logged()), 10, 0.2, "the access log")
    lines = logged()
    posts = [(a.path, a.status) for a in lines if a.method == "POST"]
    assert posts.count(("/api/events", 202)) == accepted, posts
    assert ("/api/events", bad.status_code) in posts, posts
    assert ("/api/events", junk.status_code) in posts, posts
    assert ("/api/events", 200) in [(a.path, a.status) for a in lines if a.method == "GET"]
    assert {a.server for a in lines} <= {"api0", "api1"} and all(
        a.total_ms >= 0 and a.wait_ms >= 0 for a in lines
    ), lines
    assert any(a.backend == "replicas" and a.path == "/api/auth/me" for a in with_api.access())
    assert "size=" not in (with_api.data / "logs" / "balancer.log").read_text()
    wait_for(
        lambda: "api 0 killed by SIGKILL" in with_api.output(),
        30, 0.5, "the supervisor to see the API process die",
    )  # fmt: skip
    wait_for(lambda: with_api.api_answers("api0"), 120, 1, "the restarted API process to answer")
    new = with_api.api_pids()["api0"]
    assert new != pids["api0"]
    assert psutil.Process(new).nice() == psutil.Process(with_api.proc.pid).nice()
    wait_for(
        lambda: with_api.replica_pids().get("d0") not in (None, dashboards["d0"]),
        60, 0.5, "the supervisor to restart dashboard 0",
    )  # fmt: skip
    assert psutil.Process(with_api.replica_pids()["d0"]).nice() == niced
    r.close()


@contextmanager
def _api_app(tmp_path: Path, redis_url: str) -> Iterator[str]:
    """`python -m api.main` alone on a free port (no balancer): its base URL."""
    from core.settings import Settings
    from ops.processes import child_env, spawn

    port = free_port()
    env = {"REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"), "API_KEYS": API_KEY,
           "HEALTH_FLOWS": "events", "HOST": "127.0.0.1", "PORT": str(port)}  # fmt: skip
    s = Settings(**{k.lower(): v for k, v in env.items()})
    proc = spawn([sys.executable, "-m", "api.main"], child_env(s, redis_url, **env),
                 tmp_path / "api.log")  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
        try:
            return httpx.get(base + "/health", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 120, 0.2, "python -m api.main to answer /health")
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_api_only_app_enforces_the_same_route_matrix(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Every route of `api.main`'s app is in `auth.permissions.ROUTES`, and every HTTP route
    answers each API key kind and no login as the matrix says (`tests/test_auth_matrix.py`'s
    `expected`; sessions are the dashboard's, so only keys and nobody here)."""
    from api.main import create_app
    from auth.keys import KeyStore
    from auth.permissions import ROUTES, rule_for_route
    from tests.test_auth_matrix import KEYS, concrete, expected

    app = create_app()
    served = {getattr(r, "path", None) for r in app.routes}
    missing = [
        f"{m} {r.path}"
        for r in app.routes
        for m in (getattr(r, "methods", None) or {"WS"})
        if rule_for_route(r.path, m) is None and m != "HEAD"
    ]
    assert not missing, missing
    (tmp_path / "data").mkdir()
    store = KeyStore(tmp_path / "data")
    made = {k: store.create(f"m {k}", k, "test", "main" if k == "gate" else None)[0] for k in KEYS}
    checked = 0
    with _api_app(tmp_path, redis_server.url) as base, httpx.Client(base_url=base, timeout=20) as c:
        for rule in ROUTES:
            if rule.path not in served:
                continue
            for method in sorted(rule.methods - {"WS"}):
                for who in ("nobody", *(f"{k}-key" for k in KEYS)):
                    h = {"X-API-Key": made[who[:-4]]} if who != "nobody" else {}
                    kw = {"json": {}} if method == "POST" else {}
                    res = c.request(method, concrete(rule), headers=h, **kw)
                    what = f"{method} {rule.path} as {who}: {res.status_code} {res.text[:200]}"
                    want = expected(rule, who)
                    assert res.status_code != 500, what
                    if want == "allowed":
                        assert res.status_code not in (401, 403), what
                    elif want == "forbidden":
                        assert res.status_code == 403 and "may not" in res.text, what
                    elif rule.page:  # a download link: to the login, as on the dashboard
                        assert res.status_code == 303, what
                    else:
                        assert res.status_code == 401, what
                    checked += 1
    assert checked > 100, checked

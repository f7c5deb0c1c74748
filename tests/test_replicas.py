"""The dashboard as two replicas behind a real HAProxy (`run.py ui --replicas 2`), sessions in
real Redis, a real headless Chromium: kill -9 the replica that served a logged-in page, and
the same browser is still logged in on the other one and gets live updates there.

Needs Debian's `haproxy` (`apt-get install -y haproxy`): without it the test fails and says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import Browser, expect

from core import keys
from ops.balancer import STICKY_COOKIE, BalancerMissing, haproxy_binary
from ops.processes import PROJECT_DIR
from ops.supervisor import child_pids, cmdline
from tests.support import (
    ORGANISER,
    PASSWORD,
    RedisServer,
    add_user,
    free_port,
    login_browser,
    wait_for,
)

WAIT_MS = 60_000  # a page reload after the failover, on a busy 2-core machine


class Replicas:
    """`run.py ui --replicas 2` as a subprocess (its supervisor runs HAProxy and the two)."""

    def __init__(self, redis_url: str, data: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data, self.log = data, data / "run-ui.log"
        add_user(data, ORGANISER, "organiser")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(
            REDIS_URL=redis_url, DATA_DIR=str(data), HOST="127.0.0.1", PORT=str(self.port),
            HEALTH_FLOWS="events", PYTHONUNBUFFERED="1",
        )  # fmt: skip
        cmd = [sys.executable, "run.py", "ui", "--replicas", "2"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def ports(self) -> dict[str, str]:
        """Sticky-cookie value (`d0`, `d1`) → port of the replica, from the generated config."""
        config = (self.data / "balancer" / "haproxy.cfg").read_text()
        return {
            line.split()[4]: line.split()[2].split(":")[1]
            for line in config.splitlines()
            if line.strip().startswith("server ")
        }

    def replica_pids(self) -> dict[str, int]:
        """Sticky-cookie value → pid of the replica behind it (each child's PORT)."""
        cookie_of_port = {p: c for c, p in self.ports().items()}
        out = {}
        for pid in child_pids(self.proc.pid):
            if cmdline(pid)[1:] != ["-m", "ui.main"]:
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            port = next(e[5:].decode() for e in env if e.startswith(b"PORT="))
            out[cookie_of_port[port]] = pid
        return out

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
        try:  # and the balancer has taken both in (two good checks: ~2 s)
            pinned = [
                httpx.get(f"{self.base_url}/login", cookies={STICKY_COOKIE: c}, timeout=5)
                for c in ("d0", "d1")
            ]  # a new cookie in the answer: not served by `c`
            return all(r.status_code == 200 and STICKY_COOKIE not in r.cookies for r in pinned)
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[Replicas]:
    try:
        haproxy_binary()
    except BalancerMissing as exc:
        pytest.fail(str(exc))  # CI installs it (.ci/run): never a skip
    data = tmp_path / "data"
    data.mkdir()
    rep = Replicas(redis_server.url, data)
    try:
        wait_for(rep.ready, 180, 0.5, "two replicas behind HAProxy")
        yield rep
    finally:
        rep.stop()
    assert rep.proc.returncode == 0, rep.output()
    assert not child_pids(rep.proc.pid)


def stored_event(marker: str) -> dict:
    now = datetime.now(UTC).isoformat()
    return {
        "id": str(uuid.uuid4()), "ts": now, "received_at": now, "source": "replica-test",
        "type": "test.replica", "level": "INFO", "payload": {"m": marker},
    }  # fmt: skip


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

    fresh = stored_event("after-failover")
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

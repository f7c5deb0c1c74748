"""Helpers shared by the UI tests (the processes themselves come from `tests/support.py`; the
`browser` and `page` fixtures, built with `chromium`, from `tests/conftest.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.venue import EXAMPLE_VENUE
from ops.processes import PROJECT_DIR
from tests.support import API_KEY, AppProcess, RedisServer, add_user, login_http, wait_for

#: Debian's Chromium; Playwright must never download a browser on this closed network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The window size of every test page (`page` fixture in tests/conftest.py).
VIEWPORT = {"width": 1400, "height": 1000}


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """Debian's headless Chromium with our flags (plus `extra_args`); fails the test, with the
    install hint, if it is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (see .ci/run)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield b
        finally:
            b.close()


def healthy(app: AppProcess, timeout: float = 60) -> None:
    """Wait for /health 200: Redis answers and the flow's heartbeat (source → sink) is there."""

    def ok() -> bool:
        try:
            return httpx.get(f"{app.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ok, timeout, 0.1, "/health to report Redis and the events flow alive")


#: One user per role in every `AuthStack` (password: conftest.PASSWORD).
ROLE_USERS = {"organiser": "organiser", "operator": "op-1", "analyst": "an-1"}


class AuthStack:
    """A real Redis and the real app (no flows: access control needs none), with one user per
    role, for the auth tests. `env` overrides settings (e.g. short sessions, lockout)."""

    def __init__(self, work: Path, **env: str):
        self.redis_server = RedisServer(work / "redis")
        self.redis_server.start()
        self.data = work / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.env = {
            "REDIS_URL": self.redis_server.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(EXAMPLE_VENUE),
            "HEALTH_FLOWS": "events",
            **env,
        }
        for role, name in ROLE_USERS.items():
            add_user(self.data, name, role)
        self.app: AppProcess | None = None
        try:
            self.app = AppProcess(self.env, self.data / "app.log").wait_ready()
        except BaseException:
            self.close()
            raise
        self.base_url = self.app.base_url

    def client(self, role: str | None = None, **kw) -> httpx.Client:
        """An httpx client, logged in as the role's user (None: not logged in)."""
        c = httpx.Client(base_url=self.base_url, timeout=20, follow_redirects=False, **kw)
        if role is not None:
            login_http(c, ROLE_USERS[role])
        return c

    def run_py(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """`run.py <args>` against this stack's DATA_DIR, as an operator types it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(DATA_DIR=str(self.data), REDIS_URL=self.redis_server.url)
        return subprocess.run(
            [sys.executable, "run.py", *args], cwd=PROJECT_DIR, env=env, input=stdin,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def close(self) -> None:
        if self.app is not None:
            self.app.stop()
        self.redis_server.kill()


def negotiated(base_url: str) -> str | None:
    """The extensions the server accepted for a video socket (a camera it does not know: it
    accepts, then closes with 4404)."""
    url = base_url.replace("http://", "ws://") + "/video/ws/no-such-camera"
    with connect(url, additional_headers={"X-API-Key": API_KEY}, open_timeout=10) as ws:
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    return accepted

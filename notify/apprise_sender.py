"""Sending through Apprise: e-mail (SMTP), Slack, Teams, Telegram, ntfy, Pushover, PagerDuty,
Opsgenie, Matrix, `json://` webhooks … — every service Apprise knows, by its URL.

Apprise is synchronous, so each target gets its own small thread pool (`concurrency`
threads): a hanging SMTP server ties up only its own target's threads, and `deliver`'s
timeout frees the notifier from waiting on it. The URL's plugin is called directly
(`Apprise.instantiate(url).notify(...)`): through an `Apprise` object it runs in Apprise's
own thread pool, where our capture cannot tell whose messages are whose. Apprise reports
failures through its logger and a boolean; a per-thread capture turns its warnings and the
exception it logs at debug level (`Socket Exception: SMTP AUTH extension not supported by
server.`) into the attempt's error, with secrets scrubbed. The `apprise` logger does not
propagate: nothing of it reaches our logs except what an attempt records.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import apprise

from core.notify_config import Target, resolve
from notify.transport import SendError

_local = threading.local()


class _PerThread(logging.Handler):
    """Collects the apprise logger's warnings/errors of the current thread's send only."""

    def emit(self, record: logging.LogRecord) -> None:
        buf = getattr(_local, "buf", None)
        if buf is None:
            return
        text = record.getMessage()
        if record.levelno >= logging.WARNING or "xception" in text or "rror" in text:
            buf.append(text)


_logger = logging.getLogger("apprise")
_logger.addHandler(_PerThread())
_logger.setLevel(logging.DEBUG)  # the exception text is a debug message
_logger.propagate = False


_warm = threading.Lock()
_warmed = False


def warm_up() -> None:
    """Load Apprise's plugins once (2.6 s measured on an idle machine, 5.5 s under load)
    before the first notification needs them: inside an attempt it would eat the timeout."""
    global _warmed
    with _warm:
        if not _warmed:
            apprise.Apprise().add("json://127.0.0.1")
            _warmed = True


class AppriseSender:
    def __init__(self, target: Target):
        self.target = target
        self._pool = ThreadPoolExecutor(target.concurrency, thread_name_prefix="apprise")

    async def send(self, notification_id: str, title: str, text: str, body: dict) -> int | None:
        url, used = resolve(self.target.url)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, _send, url, title, text, used)
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _send(url: str, title: str, text: str, used: list[str]) -> None:
    _local.buf = []
    try:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            why = "; ".join(_local.buf[-2:])
            raise SendError("Apprise does not accept this URL" + (f": {why}" if why else ""), used)
        if not plugin.notify(title=title, body=text, body_format=apprise.NotifyFormat.TEXT):
            why = "; ".join(_local.buf[-3:]) or "Apprise reported a failure"
            raise SendError(why, used)
    finally:
        _local.buf = None

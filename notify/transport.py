"""The one interface every way of sending implements, and the timing/timeout around it.

A `Sender` sends one notification (`send(notification_id, title, text, body)`) to the one
destination it was made for and returns the HTTP status if there is one; a failure raises
`SendError` whose message never contains a resolved secret. `deliver` bounds an attempt by
the target's `timeout_s` (a dead server costs its own target that long, nobody else: each
target has its own senders and concurrency) and measures it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.notify_config import SecretError, Target, scrub


class SendError(Exception):
    """A failed attempt; `message` is safe to record and show (secrets scrubbed)."""

    def __init__(self, message: str, secrets: Sequence[str] = (), status_code: int | None = None):
        self.message = scrub(message, list(secrets))
        self.status_code = status_code
        super().__init__(self.message)


class Sender(Protocol):
    target: Target

    async def send(self, notification_id: str, title: str, text: str, body: dict) -> int | None:
        """Send once; the HTTP status if any. Raise `SendError` on failure."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    latency_ms: float
    error: str | None = None
    status_code: int | None = None


async def deliver(sender: Sender, notification_id: str, title: str, text: str, body: dict):
    """One attempt, bounded by the target's timeout; never raises."""
    t0 = time.perf_counter()
    timeout = sender.target.timeout_s
    try:
        code = await asyncio.wait_for(sender.send(notification_id, title, text, body), timeout)
        return Delivery(True, (time.perf_counter() - t0) * 1000, None, code)
    except SendError as exc:
        err, code = exc.message, exc.status_code
    except SecretError as exc:
        err, code = str(exc), None
    except TimeoutError:
        err, code = f"timed out after {timeout:g} s", None
    except Exception as exc:  # a transport's bug must not stop the notifier
        err, code = f"{type(exc).__name__}: {exc}"[:500], None
    return Delivery(False, (time.perf_counter() - t0) * 1000, err, code)

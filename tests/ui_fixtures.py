"""Helpers shared by the UI tests (the processes themselves come from `tests/conftest.py`)."""

from __future__ import annotations

import httpx

from tests.conftest import AppProcess, wait_for

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


def healthy(app: AppProcess, timeout: float = 60) -> None:
    """Wait for /health 200: Redis answers and the flow's heartbeat (source → sink) is there."""

    def ok() -> bool:
        try:
            return httpx.get(f"{app.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ok, timeout, 0.1, "/health to report Redis and the events flow alive")

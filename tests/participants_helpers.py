"""A real stack for the participant and report tests: redis-server, the check-in flow, the app,
and `run.py` as an operator runs it (a subprocess with REDIS_URL/DATA_DIR in its environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from core import keys
from core.tokens import load_signer
from ops.processes import PROJECT_DIR
from tests.conftest import API_KEY, AppProcess, FlowProcess, RedisServer, login_http, wait_for

EVENT_ID = "pr-test-event"
VENUE = f"""
event:
  id: {EVENT_ID}
  name: Participants Test Event
  start: 2020-01-01T00:00:00+00:00
  end: 2040-01-01T00:00:00+00:00
  timezone: UTC
gates:
  - {{id: main, name: Main entrance, capacity_per_minute: 60}}
  - {{id: side, name: Side gate, capacity_per_minute: 30}}
checkin_rules:
  allow_multiple_entries: false
"""


class Stack:
    """redis-server + the check-in flow + the app, sharing one DATA_DIR (hence one key pair)."""

    def __init__(self, tmp: Path, app: bool = True):
        tmp.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.r = redis.Redis.from_url(self.redis.url)
        self.data = tmp / "data"
        self.data.mkdir()
        venue = tmp / "venue.yaml"
        venue.write_text(VENUE)
        self.env = {
            "REDIS_URL": self.redis.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(venue),
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "CHECKIN_ALLOWED_LATENESS_S": "2",
        }
        self.signer = load_signer(self.data)
        self.flow = FlowProcess("checkins", self.env, self.data / "flow.log").start()
        self.app: AppProcess | None = None
        self.http: httpx.Client | None = None
        if app:
            self.app = AppProcess(self.env, self.data / "app.log").wait_ready()
            self.http = httpx.Client(
                base_url=self.app.base_url, timeout=30, headers={"X-API-Key": API_KEY}
            )
            login_http(self.http)  # the dashboard's download links need a login
        wait_for(
            lambda: self.r.exists(keys.heartbeat_key("checkins")),
            90,
            what="the check-in flow's heartbeat",
        )

    # --- run.py as an operator uses it ---------------------------------------------------------

    def run_py(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        full.update(self.env)
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "run.py", *args],
            cwd=PROJECT_DIR,
            env=full,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def query(self, sql: str) -> list[dict[str, Any]]:
        """`uv run run.py query SQL --json`, exactly as docs/analysts.md tells an analyst."""
        out = self.run_py("query", sql, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    # --- gates ---------------------------------------------------------------------------------

    def token(self, pid: str, serial: int = 0) -> str:
        return self.signer.mint(EVENT_ID, pid, serial)

    def scan(
        self, token: str, gate: str = "main", ts: datetime | None = None, **extra: Any
    ) -> dict:
        """XADD a check-in to `checkins:in` and return its verdict from `verdict:<nonce>`."""
        nonce = f"t-{uuid.uuid4().hex}"
        doc: dict[str, Any] = {"gate_id": gate, "token": token, "nonce": nonce, **extra}
        if ts is not None:
            doc["ts"] = ts.isoformat()
        self.r.xadd(keys.CHECKINS_IN, {"data": json.dumps(doc)})
        raw = wait_for(lambda: self.r.get(keys.verdict_key(nonce)), 30, what=f"verdict {nonce}")
        return json.loads(raw)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.app is not None:
            self.app.stop()
        if self.flow.alive():
            self.flow.kill()
        self.r.close()
        self.redis.kill()

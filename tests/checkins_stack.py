"""One real stack for the gate API and page tests: redis-server, the check-in flow, the app.

Built once per test module (start-up is the slow part); every test makes its own participants,
so the tests do not see each other's state.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import redis

from core import keys
from core.tokens import load_signer
from tests.attendance_helpers import EVENT_ID, add_participants, wait_participants, write_venue
from tests.conftest import API_KEY, AppProcess, FlowProcess, RedisServer, wait_for


class CheckinStack:
    def __init__(self, tmp: Path):
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.r = redis.Redis.from_url(self.redis.url)
        self.data = tmp / "data"
        self.data.mkdir()
        self.env = {
            "REDIS_URL": self.redis.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(write_venue(tmp / "venue.yaml")),
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "CHECKIN_ALLOWED_LATENESS_S": "2",
        }
        # The flow, the app and the tests share DATA_DIR, hence the signing key.
        self.signer = load_signer(self.data)
        self.flow = FlowProcess("checkins", self.env, self.data / "flow.log").start()
        self.app = AppProcess(self.env, self.data / "app.log")
        self.app.wait_ready()
        self.http = httpx.Client(base_url=self.app.base_url, timeout=15)
        wait_for(
            lambda: self.r.exists(keys.heartbeat_key("checkins")),
            90,
            what="the check-in flow's heartbeat",
        )

    def people(self, n: int = 1) -> list[str]:
        ids = [f"T{uuid.uuid4().hex[:10]}" for _ in range(n)]
        add_participants(self.r, ids)
        wait_participants(self.r, ids)
        return ids

    def token(self, pid: str, serial: int = 0, event: str = EVENT_ID) -> str:
        return self.signer.mint(event, pid, serial)

    def forged(self, pid: str) -> str:
        """Our format and a real signature, but over another participant's payload."""
        _head, sig = self.token(pid).split(".")
        return f"{self.token('SOMEONE-ELSE').split('.')[0]}.{sig}"

    def post(self, body: object, wait: float | None = 5.0, key: str | None = API_KEY):
        params = {} if wait is None else {"wait": wait}
        headers = {"X-API-Key": key} if key else {}
        return self.http.post("/api/checkins", json=body, params=params, headers=headers)

    def close(self) -> None:
        self.http.close()
        self.app.stop()
        if self.flow.alive():
            self.flow.kill()
        self.r.close()
        self.redis.kill()


def checkin(token: str, gate: str = "main", **extra: object) -> dict:
    return {"gate_id": gate, "token": token, "nonce": uuid.uuid4().hex, **extra}

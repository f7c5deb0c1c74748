"""The gate simulator (`sim.gates`, part of `run.py demo`) against the real check-in flow and API:
it registers its participants, and its scans produce every kind of verdict — including the
offline gate's late upload overturning an online scan — and it stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import redis

from core import keys
from core.settings import Settings
from ops.processes import PROJECT_DIR, child_env
from tests.conftest import API_KEY, AppProcess, FlowProcess, wait_for

VENUE = """\
event: {id: sim-test, name: Sim test, start: "2026-01-01T00:00:00+00:00",
        end: "2030-01-01T00:00:00+00:00", timezone: Europe/Berlin}
gates:
  - {id: main, name: Main, capacity_per_minute: 60}
  - {id: side, name: Side, capacity_per_minute: 40}
  - {id: out, name: Exit, capacity_per_minute: 40}
  - {id: night, name: Night gate, open_hours: ["00:00-00:00"]}  # never open
checkin_rules:
  entry_gates: [main, side, night]
  exit_gates: [main, out]
"""


class Verdicts(threading.Thread):
    """Every verdict published on checkins:verdict:*."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(url)
        self.ps = self.r.pubsub(ignore_subscribe_messages=True)
        self.ps.psubscribe(keys.verdict_channel("*"))
        self.seen: list[dict] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            msg = self.ps.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                self.seen.append(json.loads(msg["data"]))

    def summary(self) -> Counter[str]:
        c = Counter(v["status"] for v in self.seen)
        c["replayed"] = sum(1 for v in self.seen if v["replayed"])
        c["revision"] = sum(1 for v in self.seen if v["revision"] and v["flagged"])
        c["offline"] = sum(1 for v in self.seen if v["offline"])
        return c


WANT = {
    "accepted", "duplicate", "invalid_signature", "unknown_token", "wrong_event", "revoked",
    "gate_closed", "replayed", "revision", "offline",
}  # fmt: skip


def test_gate_simulator_shows_every_outcome_and_stops_cleanly(
    flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    venue = tmp_path / "venue.yaml"
    venue.write_text(VENUE)
    env = {**flow_env, "VENUE_CONFIG": str(venue), "CHECKIN_ALLOWED_LATENESS_S": "2"}
    flow = FlowProcess("checkins", env, data_dir / "flow.log").start()
    app = AppProcess(env, data_dir / "app.log").wait_ready()
    verdicts = Verdicts(env["REDIS_URL"])
    verdicts.start()
    log = data_dir / "gates.log"
    s = Settings(**{k.lower(): v for k, v in env.items()})
    with open(log, "wb") as out:
        sim = subprocess.Popen(
            [
                sys.executable, "-m", "sim.gates", "--participants", "80", "--rate", "40",
                "--rare", "5", "--offline-every", "8", "--offline-seconds", "4",
                "--http", app.base_url, "--api-key", API_KEY,
            ],
            cwd=PROJECT_DIR, env=child_env(s, env["REDIS_URL"], **env), stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def missing() -> set[str]:
            assert sim.poll() is None, log.read_text()[-3000:]
            return WANT - {k for k, n in verdicts.summary().items() if n}

        try:
            wait_for(lambda: not missing(), 120, 0.5, "every outcome")
        except BaseException:
            print(f"missing {missing()}; seen {verdicts.summary()}\n{log.read_text()[-3000:]}")
            raise
        # The synthetic participants were imported through the check-in flow.
        r = redis.Redis.from_url(env["REDIS_URL"])
        assert r.hlen(keys.PARTICIPANTS_INDEX) == 80
        assert json.loads(r.hget(keys.PARTICIPANTS_INDEX, "P000001"))["name"]
        r.close()
        sim.send_signal(signal.SIGINT)
        assert sim.wait(30) == 0
    finally:
        if sim.poll() is None:
            sim.kill()
        verdicts.halt.set()
        app.stop()
        flow.kill()
    text = log.read_text()
    assert "back online" in text and "offline scan(s)" in text, text[-3000:]
    stopped = next(line for line in text.splitlines() if "stopped after" in line)
    assert "by HTTP 0" not in stopped, stopped  # a share went through POST /api/checkins
    assert "Traceback" not in text, text[-3000:]

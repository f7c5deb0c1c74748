"""`run.py` as an operator uses it: embedded Redis, supervision, query, clean Ctrl-C.

Waiting is done cheaply and `run.py query` is asserted once it should hold: each
`run.py query` is a new Python process (~1.35 s CPU, 2.7-4.4 s wall on the shared 2-core
machine, measured with `/usr/bin/time uv run run.py query ... --json`), and polling with it
every 0.5-1 s took CPU from the stack the test was waiting for (the demo's dashboard needed
37 s to start with the polls running). The tests poll the lake through the catalog like an
analyst (`duckdb.connect(venue.duckdb, read_only=True)`, a few ms per look) and then ask
`run.py query` the same question. (The demo used to need no /health, and still does not: its
inputs reaching the lake is what it waits for.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import redis

from ops.processes import PROJECT_DIR
from tests.conftest import free_port, wait_for


def _procs_with_env(marker: str) -> list[int]:
    """PIDs of live processes whose environment contains `marker` (our children)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if marker.encode() in (p / "environ").read_bytes():
                stat = (p / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(p.name))
        except OSError:
            continue
    return pids


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class RunPy:
    """`uv run run.py <args>` as an operator starts it: no REDIS_URL, a fresh DATA_DIR."""

    def __init__(self, tmp_path: Path, args: list[str], **settings: str):
        self.tmp, self.data, self.port = tmp_path, tmp_path / "data", free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.pop("REDIS_URL", None)
        env.update(
            DATA_DIR=str(self.data),
            PORT=str(self.port),
            HOST="127.0.0.1",
            SNAPSHOT_INTERVAL_S="1",
            LAKE_FLUSH_AGE_S="0",
            VF_TEST_MARKER=str(tmp_path),
            **settings,
        )
        self.env = env
        self.log_path = tmp_path / "run.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", *args],
            cwd=PROJECT_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        """`/health` answers 200 (Redis and every process's heartbeat); run.py still runs."""
        assert self.proc.poll() is None, self.output()
        try:
            return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def started(self) -> bool:
        """run.py printed its banner: the catalog is written (it is refreshed before any
        process starts, and not again) and every process has been started."""
        assert self.proc.poll() is None, self.output()
        return "Venueflow is up." in self.output()

    def analyst(self) -> duckdb.DuckDBPyConnection:
        """The catalog held open read-only, as an analyst would (after `started`)."""
        return duckdb.connect(str(self.data / "venue.duckdb"), read_only=True)

    def query(self, sql: str) -> list[dict] | None:
        out = _run(["query", sql, "--json"], self.env)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def stop_cleanly(self) -> None:
        """Ctrl-C: exit code 0 and no process of ours left behind."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(60)
        self._log.close()
        assert code == 0, self.output()
        time.sleep(0.5)  # the kernel's reaping of the last children
        assert _procs_with_env(str(self.tmp)) == [], "orphan processes left behind"


def test_up_embedded_redis_supervises_queries_and_stops_cleanly(tmp_path: Path) -> None:
    up = RunPy(tmp_path, ["up"], API_KEYS="k1")
    try:
        wait_for(up.healthy, 90, 0.25, "run.py up to be healthy")
        r = redis.Redis.from_url((up.data / "redis" / "url").read_text().strip())
        assert r.config_get("appendonly")["appendonly"] == "yes"  # a real, persisted Redis
        # An analyst holds the catalog open read-only while the flows keep writing.
        analyst = up.analyst()

        ev = {"source": "op", "type": "GAS", "level": "WARN", "payload": {"ppm": 150}}
        r.xadd("events:in", {"data": json.dumps(ev)})
        resp = httpx.post(f"{up.base}/api/events", json=ev, headers={"X-API-Key": "k1"})
        assert resp.status_code == 202
        # Only ours: the video flow also reports the example camera (not running here).
        count = "select count(*) as n from events where source = 'op'"

        def stored() -> int:
            return analyst.execute(count).fetchone()[0]

        wait_for(lambda: stored() == 2, 30, 0.1, "two events stored")
        assert up.query(count) == [{"n": 2}]  # run.py query agrees
        table = _run(
            ["query", "select level, count(*) from events where source = 'op' group by 1"], up.env
        )
        assert "WARN" in table.stdout and "(1 row)" in table.stdout

        # A flow that dies is restarted by the supervisor, and the log says why.
        flow_pid = next(
            pid
            for pid in _procs_with_env(str(tmp_path))
            if b"bytewax.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(flow_pid, signal.SIGKILL)
        wait_for(lambda: "killed by SIGKILL" in up.output(), 20, what="the death to be logged")
        wait_for(up.healthy, 60, 0.25, "health after the restart")
        r.xadd("events:in", {"data": json.dumps(ev)})
        wait_for(lambda: stored() == 3, 30, 0.1, "the restarted flow to store")
        assert up.query(count) == [{"n": 3}]
        analyst.close()
        r.close()
    finally:
        up.stop_cleanly()


def test_query_reports_bad_sql_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "d")}
    out = _run(["query", "select nope from events"], env)
    assert out.returncode == 2
    assert "query failed" in out.stderr and "Traceback" not in out.stderr


def test_demo_feeds_all_three_inputs(tmp_path: Path) -> None:
    """`run.py demo`: simulated sensors reach the lake through XADD, PUBLISH and HTTP."""
    demo = RunPy(tmp_path, ["demo", "--rate", "150"], API_KEYS="")
    inputs = "select distinct stream, source from events"

    def seen(rows: list[dict]) -> set[str]:
        return {r["stream"] for r in rows} | {f"src:{r['source']}" for r in rows}

    try:
        # The simulator sends browser events (source "browser") only by POST /api/events.
        # PUBLISHed events are bridged into events:in (one door), so they share its rows.
        want = {"events:in", "src:browser"}
        wait_for(demo.started, 90, 0.25, "run.py demo to start its processes")
        analyst = demo.analyst()

        def stored() -> set[str]:
            assert demo.proc.poll() is None, demo.output()
            cur = analyst.execute(inputs)
            cols = [d[0] for d in cur.description]
            return seen([dict(zip(cols, row, strict=True)) for row in cur.fetchall()])

        wait_for(lambda: want <= stored(), 90, 0.25, "events from all three inputs")
        analyst.close()
        assert want <= seen(demo.query(inputs) or [])  # run.py query agrees
        assert "demo-key" in demo.output()
        sim_log = (demo.data / "logs" / "sim.log").read_text()
        assert "send failed" not in sim_log, sim_log[-2000:]
    finally:
        demo.stop_cleanly()

"""`run.py` as an operator uses it: embedded Redis, supervision, query, clean Ctrl-C."""

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

    def query(self, sql: str) -> list[dict] | None:
        out = _run(["query", sql, "--json"], self.env)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def stop_cleanly(self) -> None:
        """Ctrl-C: exit code 0 and no process of ours left behind."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(60)
        self._log.close()
        assert code == 0, self.output()
        time.sleep(0.5)
        assert _procs_with_env(str(self.tmp)) == [], "orphan processes left behind"


def test_up_embedded_redis_supervises_queries_and_stops_cleanly(tmp_path: Path) -> None:
    up = RunPy(tmp_path, ["up"], API_KEYS="k1")
    try:

        def healthy() -> bool:
            assert up.proc.poll() is None, up.output()
            try:
                return httpx.get(f"{up.base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, 0.25, "run.py up to be healthy")
        r = redis.Redis.from_url((up.data / "redis" / "url").read_text().strip())
        assert r.config_get("appendonly")["appendonly"] == "yes"  # a real, persisted Redis

        ev = {"source": "op", "type": "GAS", "level": "WARN", "payload": {"ppm": 150}}
        r.xadd("events:in", {"data": json.dumps(ev)})
        resp = httpx.post(f"{up.base}/api/events", json=ev, headers={"X-API-Key": "k1"})
        assert resp.status_code == 202
        # Only ours: the video flow also reports the example camera (not running here).
        count = "select count(*) as n from events where source = 'op'"
        wait_for(lambda: up.query(count) == [{"n": 2}], 30, 0.5, "two events via run.py query")
        table = _run(
            ["query", "select level, count(*) from events where source = 'op' group by 1"], up.env
        )
        assert "WARN" in table.stdout and "(1 row)" in table.stdout
        # An analyst holds the catalog open read-only while the flows keep writing.
        analyst = duckdb.connect(str(up.data / "venue.duckdb"), read_only=True)
        assert analyst.execute(count).fetchone()[0] == 2

        # A flow that dies is restarted by the supervisor, and the log says why.
        flow_pid = next(
            pid
            for pid in _procs_with_env(str(tmp_path))
            if b"bytewax.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(flow_pid, signal.SIGKILL)
        wait_for(lambda: "killed by SIGKILL" in up.output(), 20, what="the death to be logged")
        wait_for(healthy, 60, 0.25, "health after the restart")
        r.xadd("events:in", {"data": json.dumps(ev)})
        wait_for(lambda: up.query(count) == [{"n": 3}], 30, 0.5, "the restarted flow to store")
        assert analyst.execute(count).fetchone()[0] == 3
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

    def inputs_seen() -> set[str]:
        assert demo.proc.poll() is None, demo.output()
        rows = demo.query("select distinct stream, source from events") or []
        return {r["stream"] for r in rows} | {f"src:{r['source']}" for r in rows}

    try:
        # The simulator sends browser events (source "browser") only by POST /api/events.
        # PUBLISHed events are bridged into events:in (one door), so they share its rows.
        want = {"events:in", "src:browser"}
        wait_for(lambda: want <= inputs_seen(), 90, 1, "events from all three inputs")
        assert "demo-key" in demo.output()
        sim_log = (demo.data / "logs" / "sim.log").read_text()
        assert "send failed" not in sim_log, sim_log[-2000:]
    finally:
        demo.stop_cleanly()

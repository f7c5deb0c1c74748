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

from core.processes import PROJECT_DIR
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


def test_up_embedded_redis_supervises_queries_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "REDIS_URL"}
    env.update(
        DATA_DIR=str(data),
        PORT=str(port),
        HOST="127.0.0.1",
        API_KEYS="k1",
        SNAPSHOT_INTERVAL_S="1",
        LAKE_FLUSH_AGE_S="0",
        VF_TEST_MARKER=str(tmp_path),
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "run.py", "up"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, 0.25, "run.py up to be healthy")
        url = (data / "redis" / "url").read_text().strip()
        r = redis.Redis.from_url(url)
        assert r.config_get("appendonly")["appendonly"] == "yes"  # a real, persisted Redis

        ev = {"source": "op", "type": "GAS", "level": "WARN", "payload": {"ppm": 150}}
        r.xadd("events:in", {"data": json.dumps(ev)})
        resp = httpx.post(f"{base}/api/events", json=ev, headers={"X-API-Key": "k1"})
        assert resp.status_code == 202

        def stored() -> bool:
            out = _run(["query", "select count(*) as n from events", "--json"], env)
            return out.returncode == 0 and json.loads(out.stdout) == [{"n": 2}]

        wait_for(stored, 30, 0.5, "two events via run.py query")
        table = _run(["query", "select level, count(*) from events group by 1"], env)
        assert "WARN" in table.stdout and "(1 row)" in table.stdout
        # An analyst holds the catalog open read-only while the flows keep writing.
        analyst = duckdb.connect(str(data / "venue.duckdb"), read_only=True)
        assert analyst.execute("select count(*) from events").fetchone()[0] == 2

        # A flow that dies is restarted by the supervisor, and the log says why.
        flow_pid = next(
            pid
            for pid in _procs_with_env(str(tmp_path))
            if b"bytewax.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(flow_pid, signal.SIGKILL)
        wait_for(
            lambda: b"killed by SIGKILL" in (tmp_path / "up.log").read_bytes(),
            20,
            what="the supervisor to log the death",
        )
        wait_for(healthy, 60, 0.25, "health after the restart")
        r.xadd("events:in", {"data": json.dumps(ev)})
        wait_for(
            lambda: (
                _run(["query", "select count(*) n from events", "--json"], env).stdout.strip()
                == '[{"n": 3}]'
            ),
            30,
            0.5,
            "the restarted flow to store",
        )
        assert analyst.execute("select count(*) from events").fetchone()[0] == 3
        analyst.close()
        r.close()
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()
    time.sleep(0.5)
    assert _procs_with_env(str(tmp_path)) == [], "orphan processes left behind"


def test_query_reports_bad_sql_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "d")}
    out = _run(["query", "select nope from events"], env)
    assert out.returncode == 2
    assert "query failed" in out.stderr and "Traceback" not in out.stderr

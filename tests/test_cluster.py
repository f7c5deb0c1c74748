"""Flows as Bytewax clusters over sharded input (issue 13): real Redis, real Bytewax clusters
run by the real supervisor (as `run.py up --processes N` runs them), the real lake.

- a 2-process cluster stores the same lake rows and window counts as one process;
- kill -9 of one process of a cluster mid-load: its peer dies too, the supervisor restarts the
  whole cluster from its snapshot, names the death; nothing lost, duplicated or emitted twice;
- rescaling 2 → 3 → 1 processes between runs carries the state (a window open across every
  restart closes with the count of all three runs).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from core import keys
from core.records import event_stream_for
from core.settings import Settings
from ops.processes import PROJECT_DIR, flow_child
from ops.supervisor import Child, ProcessGroup, Supervisor
from tests.lake_helpers import event_rows, rows, scalar, windows_match_events
from tests.support import RedisServer, wait_for

TYPES, LEVELS = ["GAS", "TEMP", "DOOR"], ["INFO", "WARN", "ERROR", "CRITICAL"]


def ev(i: int, ts: datetime) -> dict:
    return {
        "source": f"sensor-{i % 11}",
        "type": TYPES[i % 3],
        "level": LEVELS[i % 4],
        "payload": {"i": i},
        "ts": ts.isoformat(),
    }


def xadd(r: redis.Redis, s: Settings, events: list[dict], bad: int = 0) -> None:
    """XADD each event to its source's shard (as sensors and the routes do), plus `bad`
    invalid entries (dead letters) spread over the shards."""
    streams = keys.event_write_streams(s)
    pipe = r.pipeline(transaction=False)
    for e in events:
        pipe.xadd(event_stream_for(e["source"], streams), {"data": json.dumps(e)})
    for k in range(bad):
        pipe.xadd(streams[k % len(streams)], {"data": b'{"source": "x", "level": "LOUD"'})
    pipe.execute()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    rs = RedisServer(tmp_path / "redis")
    rs.start()
    yield rs
    rs.kill()


@pytest.fixture
def env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The settings every flow process of the test gets (through the environment, as
    `run.py` hands them on)."""
    e = {
        "REDIS_URL": redis_server.url,
        "STREAM_SHARDS": "2",
        "WINDOW_S": "2",
        "ALLOWED_LATENESS_S": "3",
        "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0",
    }
    for k, v in e.items():
        monkeypatch.setenv(k, v)
    return e


@contextmanager
def supervised(
    data: Path, processes: int, monkeypatch: pytest.MonkeyPatch, status: bool = False
) -> Iterator[tuple[Supervisor, Child]]:
    """The events flow as `run.py up --processes N` runs it: a real supervisor (in a thread)
    over `flow_child`; stopped (SIGINT to every process) on exit."""
    data.mkdir(exist_ok=True)
    monkeypatch.setenv("DATA_DIR", str(data))
    s = Settings()
    sup = Supervisor(data / "processes.json" if status else None)
    child = sup.add(flow_child(s, s.effective_redis_url, "events", 1, data / "flow.log", processes))
    sup.start_all()
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        yield sup, child
    finally:
        sup.request_stop()
        runner.join(90)
        assert not runner.is_alive()


def counts(data: Path, where: str = "") -> dict[tuple, int]:
    """Window counts (window start, type, level) → events, on-time rows plus corrections."""
    got = rows(
        data,
        f"SELECT window_start, type, level, sum(count) FROM event_counts {where} GROUP BY ALL",
    )
    return {(w, t, lv): n for w, t, lv, n in got}


def emitted_twice(data: Path) -> list[tuple]:
    return rows(
        data,
        "SELECT window_start, type, level FROM event_count_parts "
        "WHERE NOT late GROUP BY ALL HAVING count(*) > 1",
    )


def stored(data: Path) -> list[tuple]:
    return rows(
        data,
        "SELECT stream, id, source, type, level, payload, ts, received_at FROM events ORDER BY ALL",
    )


def test_two_processes_store_what_one_does(tmp_path, redis_server, env, monkeypatch) -> None:
    """6,000 events (and 40 dead letters) over 2 shards, read by 1 process, then (from the same
    streams, into another lake) by a cluster of 2: the same rows, dead letters, windows."""
    s = Settings()
    assert keys.event_streams(s) == ["events:in", "events:in:{0}", "events:in:{1}"]
    r = redis.Redis.from_url(redis_server.url)
    t0 = datetime.now(UTC) - timedelta(seconds=3)
    n = 6000
    xadd(r, s, [ev(i, t0 + timedelta(milliseconds=(i % 20) * 100)) for i in range(n)], bad=40)
    assert r.xlen("events:in:{0}") > 1000 and r.xlen("events:in:{1}") > 1000

    lakes = []
    for processes in (1, 2):
        data = tmp_path / f"data{processes}"
        with supervised(data, processes, monkeypatch) as (_sup, child):
            if processes == 2:
                assert isinstance(child.proc, ProcessGroup) and len(child.proc.pids) == 2
            wait_for(lambda d=data: event_rows(d) >= n, 60, 0.5, f"{n} rows ({processes} procs)")
            wait_for(
                lambda d=data: scalar(d, "SELECT coalesce(sum(count), 0) FROM event_counts") == n,
                60,
                0.5,
                f"windows to close ({processes} processes)",
            )
            wait_for(lambda d=data: scalar(d, "SELECT count(*) FROM dead_letters") >= 40, 30, 0.5)
            assert child.restarts == 0
        lakes.append(data)
    one, two = lakes
    assert len(stored(one)) == n
    assert stored(one) == stored(two)
    dead = "SELECT origin, origin_id, reason FROM dead_letters ORDER BY ALL"
    assert rows(one, dead) == rows(two, dead) and len(rows(two, dead)) == 40
    assert counts(one) == counts(two)
    assert sum(counts(two).values()) == n
    assert scalar(two, "SELECT count(*) FROM event_count_parts WHERE late") == 0
    assert emitted_twice(one) == emitted_twice(two) == []


def test_kill_9_of_one_cluster_process(tmp_path, redis_server, env, monkeypatch, caplog) -> None:
    """40,000 events while one process of a 2-process cluster is killed with SIGKILL (twice):
    its peer goes too, the supervisor logs which one died and restarts the cluster; the lake
    holds every event once and every window once, with exact counts."""
    caplog.set_level(logging.INFO, logger="venueflow.supervisor")
    s = Settings()
    r = redis.Redis.from_url(redis_server.url)
    data = tmp_path / "data"
    n = 40_000
    done = threading.Event()

    def produce() -> None:
        for start in range(0, n, 1000):
            now = datetime.now(UTC)
            xadd(r, s, [ev(i, now) for i in range(start, start + 1000)])
            time.sleep(0.1)
        done.set()

    with supervised(data, 2, monkeypatch, status=True) as (_sup, child):
        # `run.py ps` lists every process of the cluster.
        def listed() -> list[dict] | None:
            ps = subprocess.run(
                [sys.executable, "run.py", "ps", "--json"],
                cwd=PROJECT_DIR,
                env={**os.environ},
                capture_output=True,
                text=True,
                timeout=60,
            )
            got = [p for p in json.loads(ps.stdout or "[]") if p["name"].startswith("flow ev")]
            return got if got and all(p["pid"] for p in got) else None

        procs = wait_for(listed, 60, 0.5, "both cluster processes in `run.py ps`")
        assert isinstance(child.proc, ProcessGroup)
        assert [p["name"] for p in procs] == ["flow events [0/2]", "flow events [1/2]"]
        assert [p["pid"] for p in procs] == child.proc.pids

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_for(lambda: event_rows(data) > 0, 60, 0.5, "the cluster to store rows")
        for victim in (1, 0):
            # Once the cluster works (its processes connected: one killed before that leaves
            # its peer retrying the connection, and the supervisor kills it after the grace).
            stored_now = event_rows(data)
            wait_for(lambda m=stored_now: event_rows(data) > m, 60, 0.25, "the cluster to work")
            group = child.proc
            assert isinstance(group, ProcessGroup)
            pid = group.pids[victim]
            os.kill(pid, signal.SIGKILL)
            cause = f"process {victim} of 2 (pid {pid}) killed by SIGKILL first"
            wait_for(lambda c=cause: c in caplog.text, 30, 0.25, "the death to be logged")
            wait_for(lambda g=group: child.proc not in (None, g), 30, 0.25, "a restart")
        # The peer was not killed by us: Bytewax failed it (exit code 1), within the grace.
        assert "peers: 1 exited with code 1" in caplog.text
        assert "peers: 0 exited with code 1" in caplog.text
        assert "peers were killed" not in caplog.text
        producer.join(120)
        assert done.is_set()

        wait_for(lambda: event_rows(data) >= n, 90, 0.5, f"{n} rows in the lake")
        wait_for(
            lambda: scalar(data, "SELECT coalesce(sum(count), 0) FROM event_counts") == n,
            60,
            0.5,
            "window counts to sum to n",
        )
        time.sleep(1.5)  # a duplicate written late would show now
        assert event_rows(data) == n
        assert scalar(data, "SELECT count(DISTINCT (stream, id)) FROM events") == n
        assert windows_match_events(data, 2) == []
        assert emitted_twice(data) == []
        assert child.restarts == 2


def test_rescale_2_3_1_carries_state(tmp_path, redis_server, env, monkeypatch) -> None:
    """Three runs of 2, 3 and 1 processes over one recovery store, each storing a third of
    the events, all in one minute-long window that stays open across both restarts (the
    event-time watermark does not move while the flow is down); a last event a minute later
    closes it: its counts are those of all three runs, and the rows are every event once."""
    monkeypatch.setenv("WINDOW_S", "60")
    monkeypatch.setenv("ALLOWED_LATENESS_S", "1")
    s = Settings()
    r = redis.Redis.from_url(redis_server.url)
    data = tmp_path / "data"
    now = datetime.now(UTC)
    w = datetime.fromtimestamp((int(now.timestamp()) // 60 - 3) * 60, UTC)  # 2-3 min ago
    per_run, total = 3000, 0
    expected: Counter = Counter()
    for run, processes in enumerate((2, 3, 1)):
        batch = [ev(i, w + timedelta(seconds=1 + run)) for i in range(total, total + per_run)]
        xadd(r, s, batch)
        total += per_run
        expected.update((e["type"], e["level"]) for e in batch)
        last = run == 2
        with supervised(data, processes, monkeypatch) as (_sup, child):
            assert child.size == processes
            wait_for(lambda t=total: event_rows(data) >= t, 60, 0.5, f"{total} rows")
            if last:  # a minute later in event time: the watermark passes the window's end
                xadd(r, s, [ev(total, w + timedelta(seconds=75))])
                wait_for(lambda: counts(data), 60, 0.5, "the open window to close")
            else:
                time.sleep(1.5)  # a snapshot or two after the rows
                assert counts(data) == {}  # still open, held in the state
    got = counts(data)
    assert got == {(w, t, lv): n for (t, lv), n in expected.items()}
    assert sum(got.values()) == total
    assert event_rows(data) == total + 1
    assert scalar(data, "SELECT count(DISTINCT (stream, id)) FROM events") == total + 1
    assert emitted_twice(data) == []
    assert scalar(data, "SELECT count(*) FROM late_records") == 0


def test_checkin_cluster_decides_as_one_process(tmp_path, monkeypatch) -> None:
    """The check-in flow (its internals belong to tests/test_checkins_flow.py; here it is only
    run): the same participants and scans into two Redis servers, one flow of 1 process and
    one cluster of 2 (with 2 deciders, which start in the processes that build their
    partitions, one each): the same verdicts, and the same rows in the lake."""
    from core.tokens import key_dir, load_signer
    from ops.supervisor import child_pids
    from tests.attendance_helpers import (
        EVENT_ID,
        add_participants,
        scan,
        wait_participants,
        write_venue,
    )

    venue = write_venue(tmp_path / "venue.yaml")
    for k, v in {
        "VENUE_CONFIG": str(venue),
        "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0",
        "CHECKIN_DECIDERS": "2",
        "STREAM_SHARDS": "2",
    }.items():
        monkeypatch.setenv(k, v)
    signer = load_signer(tmp_path / "data1")
    (tmp_path / "data2").mkdir()
    shutil.copytree(key_dir(tmp_path / "data1"), key_dir(tmp_path / "data2"))
    ids = [f"P{i:04d}" for i in range(40)]
    # Per participant, in order: in at main; some again at side (duplicate), some out at exit;
    # plus unreadable tickets. One participant's scans stay in order within its decider.
    plan: list[tuple[str, str, str, str]] = []  # (nonce, token, gate, direction)
    for i, pid in enumerate(ids):
        tok = signer.mint(EVENT_ID, pid, 0)
        plan.append((f"nonce-{i:04d}-a", tok, "main", "in"))
        if i % 4 == 0:
            plan.append((f"nonce-{i:04d}-b", tok, "side", "in"))
        if i % 5 == 0:
            plan.append((f"nonce-{i:04d}-c", tok, "exit", "out"))
    plan += [(f"nonce-bad-{i}", "not-a-ticket", "main", "in") for i in range(5)]

    # (Reasons are left out: they may quote times, which differ between the two servers.)
    q = "SELECT nonce, status, participant_id, gate_id, direction FROM checkins ORDER BY 1"
    servers, outcomes, lakes = [], [], []
    try:
        runs = []
        for processes in (1, 2):
            rs = RedisServer(tmp_path / f"redis{processes}")
            rs.start()
            servers.append(rs)
            data = tmp_path / f"data{processes}"
            s = Settings(_env_file=None, data_dir=data, redis_url=rs.url)
            sup = Supervisor()
            child = sup.add(flow_child(s, rs.url, "checkins", 1, data / "flow.log", processes))
            sup.start_all()
            runner = threading.Thread(target=sup.run, daemon=True)
            runner.start()
            runs.append((rs, data, sup, child, runner))
        for rs, *_ in runs:
            r = redis.Redis.from_url(rs.url)
            add_participants(r, ids, shards=2)  # where the API routes them with STREAM_SHARDS=2
        for rs, *_ in runs:
            r = redis.Redis.from_url(rs.url)
            wait_participants(r, ids, 90)
            for nonce, tok, gate, direction in plan:
                scan(r, tok, gate, direction, nonce=nonce, shards=2)
        for rs, data, sup, child, runner in runs:
            r = redis.Redis.from_url(rs.url)

            def verdicts(r: redis.Redis = r) -> dict[str, str] | None:
                raw = r.mget([keys.verdict_key(n) for n, *_ in plan])
                if any(v is None for v in raw):
                    return None
                return {n: json.loads(v)["status"] for (n, *_), v in zip(plan, raw, strict=True)}

            outcomes.append(wait_for(verdicts, 90, 0.25, "every scan decided"))
            wait_for(lambda d=data: len(rows(d, q)) == len(plan), 60, 0.5, "checkins in the lake")
            lakes.append(rows(data, q))
            if child.size == 2:  # each decider runs under its own process of the cluster
                assert isinstance(child.proc, ProcessGroup)
                kids = [set(child_pids(p)) for p in child.proc.pids]
                deciders = [st.pid for st in child.part_states.values()]
                assert len(deciders) == 2 and all(deciders)
                assert [len(k & set(deciders)) for k in kids] == [1, 1]
            sup.request_stop()
            runner.join(60)
            assert child.restarts == 0
    finally:
        for rs in servers:
            rs.kill()
    assert outcomes[0] == outcomes[1]
    assert Counter(outcomes[0].values()) == {
        "accepted": 40 + 8,
        "duplicate": 10,
        "unknown_token": 5,
    }
    assert lakes[0] == lakes[1]


def test_cluster_across_two_machines(tmp_path, redis_server, env) -> None:
    """`run.py flow events --addresses A;B --process-index i` on two "machines" (two DATA_DIRs
    on this host, sharing Redis and the lake as two machines share REDIS_URL and LAKE_URI):
    each keeps its half of the recovery partitions; kill -9 of machine 1's process takes
    machine 0's down too, each supervisor restarts its own, they reconnect; nothing lost or
    duplicated."""
    from ops.embedded_redis import free_port
    from ops.processes import RECOVERY_PARTS

    s = Settings()
    r = redis.Redis.from_url(redis_server.url)
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    machines[0].mkdir()
    machines[1].mkdir()
    (machines[0] / "lake").mkdir()
    (machines[1] / "lake").symlink_to(machines[0] / "lake")  # one lake, as with LAKE_URI
    procs = []
    try:
        for i, d in enumerate(machines):
            log = (d / "run.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "run.py", "flow", "events", "--addresses", addresses,
                     "--process-index", str(i)],
                    cwd=PROJECT_DIR,
                    env={**os.environ, **env, "DATA_DIR": str(d)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        wait_for(lambda: all((d / "processes.json").exists() for d in machines), 60, 0.5, "both up")
        parts = [
            sorted(int(p.name[5:-8]) for p in (d / "recovery" / "events").glob("part-*.sqlite3"))
            for d in machines
        ]
        assert parts == [list(range(0, RECOVERY_PARTS, 2)), list(range(1, RECOVERY_PARTS, 2))]
        n = 20_000
        now = datetime.now(UTC)
        xadd(r, s, [ev(i, now) for i in range(n // 2)])
        wait_for(lambda: event_rows(machines[0]) > 0, 90, 0.5, "the cluster to store rows")

        def pid_of(d: Path) -> int | None:
            doc = json.loads((d / "processes.json").read_text())
            return next((p["pid"] for p in doc["processes"] if p["name"].startswith("flow")), None)

        victim = wait_for(lambda: pid_of(machines[1]), 30, 0.25, "machine 1's flow pid")
        peer = pid_of(machines[0])
        os.kill(victim, signal.SIGKILL)
        xadd(r, s, [ev(i, now) for i in range(n // 2, n)])
        wait_for(lambda: pid_of(machines[1]) not in (None, victim), 60, 0.25, "restart on 1")
        wait_for(lambda: pid_of(machines[0]) not in (None, peer), 60, 0.25, "restart on 0")
        wait_for(lambda: event_rows(machines[0]) >= n, 90, 0.5, f"{n} rows")
        wait_for(
            lambda: scalar(machines[0], "SELECT coalesce(sum(count), 0) FROM event_counts") == n,
            60,
            0.5,
            "windows to close",
        )
        time.sleep(1.5)
        assert event_rows(machines[0]) == n
        assert scalar(machines[0], "SELECT count(DISTINCT (stream, id)) FROM events") == n
        assert emitted_twice(machines[0]) == []
        log0 = (machines[0] / "run.log").read_text()
        assert "flow events [0/2] exited with code 1" in log0
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def test_run_py_flow_processes_lists_and_stops_the_cluster(tmp_path, redis_server, env) -> None:
    """`run.py flow events --processes 2`: `run.py ps` lists both processes, Ctrl-C (SIGINT)
    stops both, exit 0, no process left behind."""
    data = tmp_path / "data"
    child_env_ = {**os.environ, **env, "DATA_DIR": str(data)}
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "run.py", "flow", "events", "--processes", "2"],
        cwd=PROJECT_DIR,
        env=child_env_,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def listed() -> list[dict] | None:
            ps = subprocess.run(
                [sys.executable, "run.py", "ps", "--json"],
                cwd=PROJECT_DIR,
                env=child_env_,
                capture_output=True,
                text=True,
                timeout=60,
            )
            got = json.loads(ps.stdout) if ps.returncode == 0 else []
            return got if len(got) == 2 and all(p["pid"] for p in got) else None

        got = wait_for(listed, 60, 0.5, "both processes in `run.py ps`")
        assert [p["name"] for p in got] == ["flow events [0/2]", "flow events [1/2]"]
        pids = [p["pid"] for p in got]
        for pid in pids:
            assert cmdline_of(pid)[-4:-2] == ["-i", str(pids.index(pid))]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cmdline_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]

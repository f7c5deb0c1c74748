"""Readers see committed versions while flows commit and maintenance compacts, vacuums and
cleans the log as often as it can; two writer processes on one table count exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

from core import keys
from core.settings import Settings
from ops.processes import PROJECT_DIR, child_env
from storage.catalog import connect_memory, query
from storage.lake import LakeWriter, open_table
from tests.conftest import FlowProcess, wait_for
from tests.lake_helpers import Maintainer, event_rows, scalar


class ReaderLoop(threading.Thread):
    """`count(*)` and a group-by every 50 ms on one connection, through `storage.catalog.query`
    as the dashboard and the CLI do."""

    def __init__(self, lake_dir):
        super().__init__(daemon=True)
        self.con = connect_memory(lake_dir)
        self.counts: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                n = query(self.con, "SELECT count(*) FROM events")[1][0][0]
                groups = query(self.con, "SELECT type, level, count(*) FROM events GROUP BY ALL")[1]
                if sum(g[2] for g in groups) < n:  # a later version can only have more
                    self.errors.append(f"group-by summed {sum(g[2] for g in groups)} < {n}")
                self.counts.append(n)
            except Exception as exc:
                self.errors.append(repr(exc))
            time.sleep(0.05)


def test_reader_loop_during_load_and_forced_maintenance(flow_env, r, data_dir) -> None:
    """What proves it is many commits under forced maintenance, not many rows: 60k events
    sent 1000 at a time (a commit per batch the flow gets, LAKE_FLUSH_ROWS 1000) made 82 table
    versions (8 checkpoints at interval 10, logs cleaned behind them, compactions every 0.1 s)
    in 8 s while the reader saw versions mid-load. It was 200k rows: 49 s, mostly the flow
    digesting rows, no more versions proved (`pytest tests/test_lake_readers.py -n0
    --durations=3`, 2026-12-04)."""
    env = {**flow_env, "LAKE_FLUSH_ROWS": "1000"}
    flow = FlowProcess("events", env, data_dir / "flow.log").start()
    wait_for(lambda: (data_dir / "lake" / "events" / "_delta_log").is_dir(), 60, 0.2, "table")
    # Log entries expire at once, so every checkpoint also deletes the log before it.
    for t in ("events", "event_counts"):
        open_table(data_dir / "lake", t).alter.set_table_properties(
            {"delta.logRetentionDuration": "interval 1 seconds", "delta.checkpointInterval": "10"}
        )
    menv = child_env(flow.settings, flow_env["REDIS_URL"], **env)
    maintainer = Maintainer(menv, data_dir / "maintain.log", every=0.1).start()
    reader = ReaderLoop(data_dir / "lake")
    reader.start()
    try:
        n, batch = 60_000, 1000
        ev = json.dumps({"source": "s", "type": "GAS", "level": "INFO", "payload": {}})
        now = datetime.now(UTC).isoformat()
        for start in range(0, n, batch):
            pipe = r.pipeline(transaction=False)
            for i in range(start, start + batch):
                doc = json.loads(ev) | {"ts": now, "type": ("GAS", "TEMP")[i % 2]}
                pipe.xadd(keys.EVENTS_IN, {"data": json.dumps(doc)})
            pipe.execute()
            time.sleep(0.02)
        # all rows seen, and reads went on while maintenance kept running (> 50 in all)
        wait_for(lambda: reader.counts and reader.counts[-1] >= n and len(reader.counts) > 50,
                 180, 0.5, "60k rows seen")  # fmt: skip
        time.sleep(1)
    finally:
        reader.stop.set()
        reader.join(10)
        maintainer.kill()
        flow.kill()
    assert reader.errors == []
    assert all(a <= b for a, b in zip(reader.counts, reader.counts[1:], strict=False))
    assert reader.counts[-1] == n and len(reader.counts) > 50
    assert len({c for c in reader.counts if 0 < c < n}) >= 5, "no reads during the load"
    assert event_rows(data_dir) == n
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == n
    # Maintenance did run during the reads: compactions, checkpoints, an expired log.
    log = data_dir / "lake" / "events" / "_delta_log"
    assert any(log.glob("*.checkpoint.parquet"))
    assert not (log / f"{0:020d}.json").exists()
    assert "compacted" in (data_dir / "maintain.log").read_text()


def test_two_writer_processes_on_one_table_count_exactly(data_dir) -> None:
    lake = data_dir / "lake"
    flushes, rows = 40, 500
    env = child_env(_settings(data_dir), "redis://127.0.0.1:1")
    maintainer = Maintainer(env, data_dir / "maintain.log", every=0.2).start()
    argv = [sys.executable, "-m", "bench.lake", "writer", str(lake)]
    try:
        procs = [
            subprocess.Popen([*argv, w, str(flushes), str(rows)], cwd=PROJECT_DIR, env=env,
                             stdout=subprocess.PIPE, text=True)
            for w in ("p0", "p1")
        ]  # fmt: skip
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        maintainer.kill()
    assert [p.returncode for p in procs] == [0, 0]
    assert all(len(json.loads(o)) == flushes for o in outs)
    assert event_rows(data_dir) == 2 * flushes * rows
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 2 * flushes * rows
    assert LakeWriter(lake, "events", "p0").committed() == flushes - 1
    assert LakeWriter(lake, "events", "p1").committed() == flushes - 1


def _settings(data_dir) -> Settings:
    return Settings(data_dir=data_dir)

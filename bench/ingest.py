"""Ingest benchmark: the real events flow against the floor, on the same preloaded stream.

    uv run python -m bench.ingest                       # 1,000,000 events + a 20 s latency run
    uv run python -m bench.ingest --events 100000 --latency-seconds 10     # quick
    uv run python -m bench.ingest --rounds 3 --no-latency                  # throughput only
    uv run python -m bench.ingest --shards 2 --processes 2 --no-latency   # a 2-process cluster
    uv run python -m bench.ingest --help

`--shards K` preloads into `STREAM_SHARDS=K` shards (`events:in:{k}` by crc32(source), as
sensors write them) and runs every side with it; `--processes N` runs ours as a Bytewax cluster
of N processes on loopback, as `run.py up --processes N` does (its CPU: every process's tree).

One run starts its own redis-server (`bench.harness.start_redis`: AOF, fsync everysec, never
the shared Redis on 6379), preloads N realistic events into `events:in` (`--invalid-frac` adds
dead letters) and measures, from a fresh DATA_DIR reading the stream from 0 each:

* **ours**: `python -m bytewax.run flows.events:flow` started exactly as run.py starts it
  (`flow_argv` + `spawn` + `child_env`, recovery on, default settings forced except DATA_DIR
  and REDIS_URL): validation with named reasons, dead letters, exactly-once lake, event-time
  windows, `events:new`, `events:recent`, `live:events`;
* **the floor** (`--floor-worker`, in this file): the simplest correct loop a strong engineer
  would write for the job — XREAD COUNT 1000 from `events:in` → `orjson.loads` → the same
  validation rules (required fields and types, the id pattern, levels, finite numbers, the
  typed `ui.*` payloads, `ts` not more than 5 min ahead; a named reason per dead letter) →
  column lists → one Arrow table per LAKE_FLUSH_ROWS (or LAKE_FLUSH_AGE_S) → `write_deltalake`
  append to the same `events` Delta table, each commit carrying the stream offset as a Delta
  application transaction (`floor.<stream>`, version = entry id as ms·10⁶+seq), read back at
  start, so a restart neither loses nor duplicates a row (exactly once; dead letters are
  XADDed to `events:dead` at once: at least once). No windows, no broadcasts: one
  `PUBLISH live:events {"total": n}` per batch is the bench's progress marker.

Throughput: the clock runs from process start until every valid event is in the lake (DuckDB
`delta_scan` count) and processed (`live:events`); the first `live:events` message ends
start-up. CPU per event counts **every process involved**: the measured process (and its
children) plus redis-server during the run. Latency (ours only; the floor broadcasts nothing):
a producer XADDs at `--rate` for `--latency-seconds`; XADD → `events:new` and XADD → lake.

Output: ours and the floor side by side (ev/s, CPU µs/event, peak RSS), then the summary line
ending with `ratio=<floor CPU per event / ours CPU per event>` (1.0: ours costs what the floor
costs; the goal of issue 15 is ≥ 0.5).
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    TAIL_ROWS,
    BenchError,
    Listener,
    MachineCpu,
    Run,
    add_common_args,
    busy_warning,
    children_cpu,
    fail,
    latency_ms,
    machine_line,
    median,
    mib,
    paced,
    parser,
    pct,
    print_header,
    rewrite_aof,
    rows,
    run_bench,
    side_by_side,
    start_redis,
    stop,
    stop_redis,
    summary,
    tail_cells,
    tree_cpu,
    tree_hwm_mib,
    wait_aof_idle,
)
from core import keys
from core.records import event_stream_for
from core.settings import Settings
from ops.processes import child_env, cluster_addresses, flow_argv, spawn
from ops.supervisor import ProcessGroup, member_pids

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
IDLE_MS = 10  # RedisStreamSource's XREAD BLOCK once the stream is drained (its default)
FLOOR_APP = "floor"  # the floor's Delta application-transaction id prefix and `_writer`


#: Set from `--shards` / `--processes` (the cluster shape every run of this bench uses).
SHAPE = {"shards": 1, "processes": 1}


def default_tuning() -> dict[str, str]:
    """The flow's tuning settings at their defaults, as environment variables: passed
    explicitly to every child so neither our environment nor a `.env` file changes them
    (`STREAM_SHARDS` is the bench's `--shards`)."""
    env = {n.upper(): str(Settings.model_fields[n].default) for n in TUNING}
    return {**env, "STREAM_SHARDS": str(SHAPE["shards"])}


def bench_settings(data_dir: Path, url: str) -> Settings:
    tuning = {n: Settings.model_fields[n].default for n in TUNING}
    return Settings(
        _env_file=None, data_dir=data_dir, redis_url=url, stream_shards=SHAPE["shards"], **tuning
    )


def group_cpu(proc: Any) -> float | None:
    """CPU seconds of every process of `proc` (a cluster's: each one's tree)."""
    cpus = [tree_cpu(p) for p in member_pids(proc)]
    return None if cpus[0] is None else sum(c or 0.0 for c in cpus)


def group_hwm_mib(proc: Any) -> float | None:
    hwms = [tree_hwm_mib(p) for p in member_pids(proc)]
    return None if hwms[0] is None else sum(h or 0.0 for h in hwms)


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
    streams = keys.event_write_streams(bench_settings(Path("."), ""))
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        if invalid_frac and rng.random() < invalid_frac:
            data = rng.choice(INVALID)
            invalid += 1
        else:
            data = make_event(rng, time.time())
            valid += 1
        size += len(data)
        source = json.loads(data).get("source") if len(streams) > 1 else None
        stream = event_stream_for(source if isinstance(source, str) else None, streams)
        pipe.execute_command("XADD", stream, "*", "data", data)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return valid, invalid, size


# --------------------------------------------------------------------------------------------
# Observers: the lake (DuckDB) and the live channels (pub/sub)


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


class LiveTally(Listener):
    """Sums `total` of the per-batch `live:events` messages: marks the first processed batch
    (process start-up is over) and the moment every event has been processed."""

    PAT = re.compile(rb'\{"total":(\d+)')

    def __init__(self, url: str, target: int):
        super().__init__(url, keys.LIVE_EVENTS)
        self.target = target
        self.proc: Any = None
        self.total = 0
        self.first_total = 0
        self.first_t: float | None = None
        self.first_cpu: float | None = None
        self.done_t: float | None = None

    def on_message(self, data: bytes) -> None:
        now = time.perf_counter()
        m = self.PAT.match(data)
        n = int(m.group(1)) if m else 0
        if self.first_t is None:
            self.first_t, self.first_total = now, n
            self.first_cpu = group_cpu(self.proc) if self.proc else None
        self.total += n
        if self.done_t is None and self.total >= self.target:
            self.done_t = now


class Broadcasts(Listener):
    """Subscribes to `events:new` and records, per event, receive time minus its send time."""

    def __init__(self, url: str, n: int):
        super().__init__(url, keys.EVENTS_NEW)
        self.lat_ns: list[int | None] = [None] * n
        self.received = 0
        self.other = 0

    def on_message(self, data: bytes) -> None:
        now = time.time_ns()
        try:
            p = json.loads(data)["payload"]
            seq, sent = int(p["seq"]), int(p["sent_ns"])
            if self.lat_ns[seq] is None:
                self.lat_ns[seq] = now - sent
                self.received += 1
            else:
                self.other += 1  # a duplicate
        except (KeyError, ValueError, IndexError, TypeError):
            self.other += 1


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
# The floor: the same job in a plain loop (runs as a subprocess: --floor-worker)

_TYPE_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_FIELDS = frozenset(("source", "type", "level", "payload", "ts"))
_LEVELS = frozenset(("INFO", "WARN", "ERROR", "CRITICAL"))
_SKEW_US = 5 * 60 * 1_000_000  # MAX_CLOCK_SKEW
_UNIX_RE = re.compile(r"-?\d+(\.\d+)?")


def _finite(v: Any) -> bool:
    stack = [v]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is float:
            if x != x or x in (float("inf"), float("-inf")):
                return False
        elif t is dict:
            stack.extend(x.values())
        elif t is list:
            stack.extend(x)
    return True


def _name(v: Any, most: int) -> bool:
    return type(v) is str and 0 < len(v) <= most


def _number(v: Any) -> bool:
    """A coordinate as the contract's lax float takes it: a number, bool or numeric string."""
    if type(v) is str:
        try:
            v = float(v)
        except ValueError:
            return False
    return type(v) in (int, float, bool) and 0 <= v <= 100_000


def _ui_reason(typ: str, p: dict[str, Any]) -> str | None:
    """The typed payloads of `ui.click` / `ui.keydown` (no other keys allowed)."""
    if typ == "ui.click":
        need = {"page", "target", "x", "y", "session"}
        ok = (
            _name(p.get("page"), 128)
            and _name(p.get("target"), 512)
            and _number(p.get("x"))
            and _number(p.get("y"))
            and _name(p.get("session"), 128)
        )
    else:
        need = {"page", "key", "session"}
        ok = _name(p.get("page"), 128) and _name(p.get("key"), 32) and _name(p.get("session"), 128)
    if p.keys() != need:
        return f"payload: fields must be exactly {sorted(need)}"
    return None if ok else f"payload: a field of {typ} has the wrong type or size"


def floor_check(ev: Any, id_match: Callable[[str], Any], now_us: int) -> str | int:
    """An event's `ts` in µs since the epoch (0: none given), or the reason it is refused."""
    if type(ev) is not dict:
        return "body: not a JSON object"
    if not ev.keys() <= _FIELDS:
        return f"{sorted(ev.keys() - _FIELDS)[0]}: extra field not permitted"
    src, typ = ev.get("source"), ev.get("type")
    if type(src) is not str or not id_match(src):
        return "source: missing, or not an id ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
    if type(typ) is not str or not _TYPE_RE.fullmatch(typ):
        return "type: missing, or not 1-64 of [A-Za-z0-9_.:-]"
    if ev.get("level") not in _LEVELS:
        return "level: missing, or not one of INFO, WARN, ERROR, CRITICAL"
    p = ev.get("payload")
    if p is None and "payload" in ev:
        return "payload: not a JSON object"
    if p is not None:
        if type(p) is not dict:
            return "payload: not a JSON object"
        if not _finite(p):
            return "payload: a number is NaN or Infinity"
        if typ in ("ui.click", "ui.keydown"):
            reason = _ui_reason(typ, p)
            if reason:
                return reason
    elif typ in ("ui.click", "ui.keydown"):
        return "payload: required for " + typ
    ts = ev.get("ts")
    if ts is None:
        return 0
    try:
        if type(ts) is str and not _UNIX_RE.fullmatch(ts):
            at = datetime.fromisoformat(ts)
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            us = int(at.timestamp() * 1_000_000)
        elif type(ts) in (int, float, str):  # Unix time: seconds, or ms beyond 2e10
            sec = float(ts)
            us = int((sec / 1000 if abs(sec) > 2e10 else sec) * 1_000_000)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        return "ts: not an ISO 8601 time or a Unix time"
    if us > now_us + _SKEW_US:
        return "ts: more than 5 minutes in the future"
    return us


def _offset_version(entry_id: str) -> int:
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq)


def _version_offset(version: int) -> str:
    return f"{version // 1_000_000}-{version % 1_000_000}"


def floor_worker() -> int:
    """XREAD → orjson → validate → column lists → Arrow → Delta append with the offsets as
    application transactions; dead letters XADDed; a progress PUBLISH per batch."""
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import CommitProperties, Transaction, write_deltalake

    from core.lake_location import lake_from_settings
    from core.records import ID_PATTERN
    from core.settings import get_settings
    from core.shutdown import install_stop_handlers, stop_requested
    from storage.lake import lake_schema, open_table
    from storage.tables import TABLES

    s = get_settings()
    install_stop_handlers()
    r = redis.Redis.from_url(s.effective_redis_url, socket_timeout=5, socket_connect_timeout=5)
    dt = open_table(lake_from_settings(s), "events")
    schema = lake_schema(TABLES["events"])
    streams = keys.event_streams(s)
    last: dict[str, str] = {}
    for st in streams:  # where the last commit stopped: the table says (exactly once)
        v = dt.transaction_version(f"{FLOOR_APP}.{st}")
        last[st] = "0-0" if v is None else _version_offset(v)
    id_match = re.compile(ID_PATTERN).match
    cols: dict[str, list] = {n: [] for n in ("id", "stream", "source", "type", "level")}
    payloads: list[bytes] = []
    ts_us: list[int] = []
    recv_us: list[int] = []
    since = 0.0
    flushes = 0
    drained = False

    def flush() -> None:
        nonlocal flushes, since
        n = len(ts_us)
        flushes += 1
        ts = pa.array(ts_us, pa.int64())
        data = pa.Table.from_arrays(
            [
                *(pa.array(cols[c], pa.string()) for c in ("id", "stream", "source", "type")),
                pa.array(cols["level"], pa.string()),
                pa.array(payloads, pa.binary()).cast(pa.string()),
                ts.cast(pa.timestamp("us", tz="UTC")),
                pa.array(recv_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pc.divide(ts, 86_400_000_000).cast(pa.int32()).cast(pa.date32()),
                pa.array([FLOOR_APP] * n, pa.string()),
                pa.array([flushes] * n, pa.int64()),
            ],
            schema=schema,
        )
        txns = [Transaction(app_id=f"{FLOOR_APP}.{k}", version=_offset_version(v))
                for k, v in last.items() if v != "0-0"]  # fmt: skip
        write_deltalake(
            dt, data, mode="append", commit_properties=CommitProperties(app_transactions=txns)
        )
        for c in cols.values():
            c.clear()
        payloads.clear()
        ts_us.clear()
        recv_us.clear()
        since = 0.0

    while not stop_requested():
        reply = r.xread(last, count=XREAD_COUNT, block=IDLE_MS if drained else None)
        drained = not reply
        cmds: list[tuple] = []
        now_us = time.time_ns() // 1000
        for key, entries in reply or []:
            stream = key.decode()
            good = 0
            for eid_b, fields in entries:
                eid = eid_b.decode()
                data = fields.get(b"data")
                try:
                    if data is None:
                        raise ValueError("entry has no 'data' field")
                    if len(data) > s.max_event_bytes:
                        raise ValueError(f"entry is {len(data)} bytes, over {s.max_event_bytes}")
                    ev = orjson.loads(data)
                    got = floor_check(ev, id_match, now_us)
                except (ValueError, orjson.JSONDecodeError) as exc:
                    got = f"body: {exc}"
                if type(got) is str:
                    cmds.append(
                        ("XADD", keys.EVENTS_DEAD, "MAXLEN", "~", keys.DEAD_MAXLEN, "*",
                         "reason", got, "origin", stream, "origin_id", eid, "data", data or b"")
                    )  # fmt: skip
                    continue
                received = int(eid.partition("-")[0]) * 1000
                cols["id"].append(eid)
                cols["stream"].append(stream)
                cols["source"].append(ev["source"])
                cols["type"].append(ev["type"])
                cols["level"].append(ev["level"])
                payloads.append(orjson.dumps(ev.get("payload") or {}))
                ts_us.append(got or received)
                recv_us.append(received)
                good += 1
            if entries:
                last[stream] = entries[-1][0].decode()
            if good:
                cmds.append(("PUBLISH", keys.LIVE_EVENTS, b'{"total":%d}' % good))
        if ts_us and not since:
            since = time.monotonic()
        if cmds:
            pipe = r.pipeline(transaction=False)
            for c in cmds:
                pipe.execute_command(*c)
            pipe.execute(raise_on_error=False)
        if ts_us and (
            len(ts_us) >= s.lake_flush_rows or time.monotonic() - since >= s.lake_flush_age_s
        ):
            flush()
    if ts_us:
        flush()
    r.close()
    return 0


# --------------------------------------------------------------------------------------------
# Running ours or the floor


def start(kind: str, workdir: Path, phase: str, url: str) -> Run:
    """Start ours (the events flow as run.py starts it) or the floor worker."""
    data_dir = workdir / phase
    data_dir.mkdir(parents=True)
    s = bench_settings(data_dir, url)
    extra: dict[str, Any] = {}
    if kind == "ours":
        t = time.perf_counter()
        argv = flow_argv(s, FLOW)  # creates the recovery store (run.py does the same)
        extra["recovery_init_s"] = time.perf_counter() - t
        if SHAPE["processes"] > 1:  # a cluster, as `run.py up --processes N` starts it
            env = child_env(s, url, **default_tuning())
            addrs = cluster_addresses(SHAPE["processes"])
            log = workdir / f"{phase}.log"
            ru0 = children_cpu()
            t0 = time.perf_counter()
            procs = [spawn(flow_argv(s, FLOW, 1, i, addrs), env, log) for i in range(len(addrs))]
            argv = flow_argv(s, FLOW, 1, 0, addrs)
            return Run(kind, data_dir, ProcessGroup(procs), log, argv, t0, ru0, extra)  # type: ignore[arg-type]
    else:
        argv = [sys.executable, "-m", "bench.ingest", "--floor-worker"]
    env = child_env(s, url, **default_tuning())
    log = workdir / f"{phase}.log"
    ru0 = children_cpu()
    t0 = time.perf_counter()
    proc = spawn(argv, env, log)
    return Run(kind, data_dir, proc, log, argv, t0, ru0, extra)


def throughput(
    kind: str, workdir: Path, phase: str, url: str, redis_pid: int, n_valid: int, timeout: float
) -> dict[str, Any]:
    """Run ours or the floor over the preloaded stream until every event is in the lake."""
    tally = LiveTally(url, n_valid)
    tally.start()
    tally.ready.wait(10)
    mcpu = MachineCpu(redis_pid)
    run = start(kind, workdir, phase, url)
    tally.proc = run.proc
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
        cpu_done = group_cpu(run.proc) or 0.0
        machine = mcpu.since(cpu_done)
        hwm = group_hwm_mib(run.proc)
        t_stop = time.perf_counter()
        rc = stop(run)
        stop_s = time.perf_counter() - t_stop
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
    steady_n = n_valid - tally.first_total
    cpu_steady = cpu_done - (tally.first_cpu or 0)
    # Redis's CPU while this ran (the bench's own DuckDB polling adds a little to it).
    redis_s = machine["redis_s"]
    return {
        "startup_s": tally.first_t - run.t0,
        "first_lake_s": (first_lake or now) - run.t0,
        "processed_s": tally.done_t - run.t0,
        "lake_s": now - run.t0,
        "tail_at_stop": tail_at_stop,
        "evps_total": n_valid / (now - run.t0),
        "evps_steady": steady_n / (now - tally.first_t),
        "evps_processed": steady_n / max(tally.done_t - tally.first_t, 1e-9),
        "cpu_done_s": cpu_done,
        "cpu_startup_s": tally.first_cpu,
        "cpu_total_s": cpu_total,
        "us_per_ev": 1e6 * cpu_done / n_valid,
        "us_per_ev_steady": 1e6 * cpu_steady / steady_n,
        "us_per_ev_all": 1e6 * (cpu_steady + redis_s) / steady_n,
        "rss_mib": hwm,
        "machine": machine,
        "stop_s": stop_s,
        "rc": rc,
        "argv": run.argv,
        **run.extra,
    }


def produce(r: redis.Redis, n: int, rate: float) -> tuple[list[int], float]:
    """XADD n events at a fixed rate, each with its send time (time.time_ns) and sequence
    number in the payload; return the send times and the seconds it took."""
    rng = random.Random(7)
    sent_ns = [0] * n

    def send(i: int, due: int) -> None:
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

    t = time.perf_counter()
    paced(n, rate, send)
    return sent_ns, time.perf_counter() - t


def latency(
    workdir: Path, url: str, r: redis.Redis, redis_pid: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Ours at a fixed input rate: XADD → events:new and XADD → visible in the lake (DuckDB
    count polled every 100 ms; rows reach the lake in stream order)."""
    for k in (keys.EVENTS_IN, keys.EVENTS_RECENT, keys.EVENTS_DEAD, keys.heartbeat_key(FLOW)):
        r.unlink(k)
    wait_aof_idle(r)
    n = max(1, int(rate * seconds))
    subs = Broadcasts(url, n)
    subs.start()
    subs.ready.wait(10)
    run = start("ours", workdir, "lat-ours", url)
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
        cpu0 = group_cpu(run.proc) or 0.0
        mcpu = MachineCpu(redis_pid)
        sent_ns, produce_s = produce(r, n, rate)
        cpu = (group_cpu(run.proc) or 0.0) - cpu0
        machine = mcpu.since(cpu)
        # The lake gets the last rows at the first snapshot after they are LAKE_FLUSH_AGE_S old.
        deadline = time.perf_counter() + s.lake_flush_age_s + 2 * s.snapshot_interval_s + 3
        while subs.received < n or poller.last < n:
            if run.proc.poll() is not None:
                raise fail(run, "exited during the latency run")
            if time.perf_counter() > deadline + (25 if subs.received < n else 0):
                break
            time.sleep(0.05)
        in_lake_before_stop = poller.last
        stop_ns = time.time_ns()
        rc = stop(run)
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
    return {
        "n": n,
        "ready_s": ready_s,
        "produce_rate": n / produce_s,
        "received": subs.received,
        "dups": subs.other,
        "bcast_ms": {p: pct(bl, p) / 1e6 for p in (50, 95, 99, 100)} if bl else {},
        "lake_s": {p: pct(lake_lat, p) / 1e9 for p in (0, 50, 95, 100)} if lake_lat else {},
        "in_lake": in_lake_before_stop,
        "stuck": n - in_lake_before_stop,
        "stuck_wait_s": (stop_ns - sent_ns[-1]) / 1e9,
        "in_lake_final": poller.last,
        "lake_files": len(poller.changes) - 1,
        "cpu_pct": 100 * cpu / produce_s,
        "machine": machine,
        "rc": rc,
    }


# --------------------------------------------------------------------------------------------
# Output


def fmt_tp(x: dict[str, Any]) -> dict[str, str]:
    def cpu(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f} s"

    lake = f"{x['lake_s']:.2f} s"
    if x["tail_at_stop"]:
        lake += f" ({x['tail_at_stop']:,} rows at SIGINT)"
    init = f" (+{x['recovery_init_s']:.2f} s recovery init)" if "recovery_init_s" in x else ""
    return {
        "startup": f"{x['startup_s']:.2f} s{init}",
        "first_lake": f"{x['first_lake_s']:.2f} s",
        "processed": f"{x['processed_s']:.2f} s",
        "lake": lake,
        "evps_total": f"{x['evps_total']:,.0f}",
        "evps_steady": f"{x['evps_steady']:,.0f}",
        "evps_processed": f"{x['evps_processed']:,.0f}",
        "cpu": f"{cpu(x['cpu_done_s'])} = {x['us_per_ev']:.1f} µs/ev",
        "cpu_startup": cpu(x["cpu_startup_s"]),
        "cpu_steady": f"{x['us_per_ev_steady']:.1f} µs/ev",
        "redis": f"{x['machine']['redis_s']:.2f} s",
        "cpu_all": f"{x['us_per_ev_all']:.1f} µs/ev",
        "cpu_total": cpu(x["cpu_total_s"]),
        "rss": mib(x["rss_mib"]),
        "machine": machine_line(x["machine"]),
        "stop": f"{x['stop_s']:.2f} s, exit {x['rc']}",
    }


TP_ROWS = rows(
    """
startup        process start → first batch (live:events)
first_lake     process start → first lake commit
processed      process start → all processed (live:events)
lake           process start → all in lake
evps_total     ev/s incl. process start
evps_steady    ev/s excl. start (first batch → all in lake)
evps_processed ev/s excl. start, to all processed
cpu            CPU of the process until all in lake
cpu_startup      of which start-up (to first batch)
cpu_steady       CPU per event after start-up
redis          redis-server CPU during the run
cpu_all        CPU per event, process + redis (ratio=)
cpu_total      CPU incl. shutdown (getrusage children)
rss            peak RSS of the process
machine        machine CPU, avg cores busy
stop           SIGINT → exit
"""
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
        "bcast": latency_ms(b),
        "lake": " / ".join(f"{lk[p]:.2f}" for p in (0, 50, 95, 100)) if lk else "none",
        "in_lake": f"{x['in_lake']:,} in {x['lake_files']} file(s)",
        "stuck": stuck,
        **tail_cells(x),
    }


LAT_ROWS = (
    rows(
        """
sent           events sent
ready          process start → heartbeat (ready)
received       broadcasts received on events:new
bcast          XADD → events:new ms p50 / p95 / p99 / max
lake           XADD → in lake s min / p50 / p95 / max
in_lake        rows in lake without a stop
stuck          rows not in lake once input stopped
"""
    )
    + TAIL_ROWS
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(
        "bench.ingest",
        "Throughput of the events flow against the floor (a plain XREAD → orjson → "
        "validate → Arrow → Delta loop) on a private redis-server, and the flow's latency. "
        "Last line: ratio=<floor CPU per event / ours>.",
    )
    p.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="events to preload (1,000,000); use a multiple of LAKE_FLUSH_ROWS (50,000)",
    )
    p.add_argument("--invalid-frac", type=float, default=0.0, help="fraction of invalid events (0)")
    add_common_args(p, "events", 1000.0, 20.0)
    p.add_argument(
        "--shards", type=int, default=1, help="STREAM_SHARDS: input shards, by crc32(source) (1)"
    )
    p.add_argument(
        "--processes", type=int, default=1, help="ours as a Bytewax cluster of N processes (1)"
    )
    p.add_argument("--floor-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_worker:
        return floor_worker()
    SHAPE.update(shards=args.shards, processes=args.processes)
    started = time.perf_counter()
    return run_bench(
        lambda work: _bench(args, work, started), args.workdir, args.keep, "venueflow-bench-"
    )


def _bench(args: argparse.Namespace, workdir: Path, started: float) -> int:
    print_header("Venueflow ingest benchmark (bench/ingest.py): ours against the floor")
    redis_proc, url = start_redis(workdir / "redis-data")
    try:
        r = redis.Redis.from_url(url)
        info = r.info("server")
        print(
            f"redis     private redis-server {info['redis_version']} at {url} (AOF, fsync "
            "everysec, as production runs it); AOF rewritten once after the preload"
        )
        tuning = " ".join(f"{k}={v}" for k, v in default_tuning().items())
        print(f"settings  defaults (forced, ignoring env and .env): {tuning}")
        print(f"cluster   ours as {args.processes} process(es); {args.shards} input shard(s)")
        print(f"work dir  {workdir}{'' if args.keep or args.workdir else ' (deleted at exit)'}")

        streams = keys.event_write_streams(bench_settings(workdir, url))
        print(f"\npreloading {args.events:,} events into {', '.join(streams)} ...", flush=True)
        t = time.perf_counter()
        n_valid, n_invalid, size = preload(r, args.events, args.invalid_frac, args.seed)
        preload_s = time.perf_counter() - t
        rewrite_aof(r)
        used = r.info("memory")["used_memory"] / 2**20
        print(
            f"preloaded {args.events:,} events ({n_invalid:,} invalid), avg "
            f"{size / max(args.events, 1):.0f} B, in {preload_s:.1f} s; redis uses {used:.0f} MiB",
            flush=True,
        )

        timeout = max(180.0, args.events / 2000)
        tp: dict[str, list[dict[str, Any]]] = {"ours": [], "floor": []}
        for rnd in range(args.rounds):
            order = ("ours", "floor") if rnd % 2 == 0 else ("floor", "ours")
            for kind in order:
                print(f"throughput round {rnd + 1}: {kind} ...", flush=True)
                x = throughput(
                    kind, workdir, f"tp{rnd + 1}-{kind}", url, redis_proc.pid, n_valid, timeout
                )
                tp[kind].append(x)
                print(
                    f"  {x['evps_steady']:,.0f} ev/s excl. start, {x['us_per_ev_all']:.1f} CPU "
                    f"µs/ev (process + redis), exit {x['rc']}",
                    flush=True,
                )
        # frees the preload's memory before the latency part
        r.unlink(*keys.event_streams(bench_settings(workdir, url)))
        lat = None
        if not args.no_latency:
            print(
                f"latency: ours, {args.rate:,.0f} ev/s for {args.latency_seconds:.0f} s ...",
                flush=True,
            )
            lat = latency(workdir, url, r, redis_proc.pid, args.rate, args.latency_seconds)
        r.close()
    finally:
        stop_redis(redis_proc)

    names = ["ours (Bytewax events flow)", "floor (plain loop, --floor-worker)"]
    for rnd in range(args.rounds):
        title = f"Throughput: {n_valid:,} valid events, events:in → lake"
        title += f" (round {rnd + 1})" if args.rounds > 1 else ""
        cols = [fmt_tp(tp["ours"][rnd]), fmt_tp(tp["floor"][rnd])]
        print(side_by_side(title, names, TP_ROWS, cols))
    if lat:
        title = f"Latency of ours: {args.rate:,.0f} ev/s for {args.latency_seconds:.0f} s"
        print(side_by_side(title, names[:1], LAT_ROWS, [fmt_lat(lat)]))
        print(
            "XADD → lake is seconds by design: rows are written when LAKE_FLUSH_ROWS are "
            "buffered, or at a snapshot once the oldest buffered row is LAKE_FLUSH_AGE_S old."
        )

    print("\nnotes")
    print(f"  ours ran as: python {' '.join(tp['ours'][0]['argv'][1:])}")
    print(
        "  floor: python -m bench.ingest --floor-worker (XREAD COUNT 1000 → orjson → the same "
        "rules → columns → Arrow → write_deltalake with the offsets as app transactions)"
    )
    flush_rows = int(default_tuning()["LAKE_FLUSH_ROWS"])
    if n_valid % flush_rows:
        print(
            f"  WARNING: {n_valid:,} valid events is not a multiple of LAKE_FLUSH_ROWS "
            f"({flush_rows:,}): 'all in lake' includes the wait for the last partial file."
        )
    warn = busy_warning(
        [x["machine"] for v in tp.values() for x in v] + ([lat["machine"]] if lat else [])
    )
    if warn:
        print(warn)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    side = {
        k: {
            "rate": median([x["evps_steady"] for x in v]),
            "cpu_us": median([x["us_per_ev_all"] for x in v]),
        }
        for k, v in tp.items()
    }
    rss = {k: max((x["rss_mib"] or 0) for x in v) for k, v in tp.items()}
    extra = f"peak RSS {rss['ours']:.0f} / {rss['floor']:.0f} MiB"
    print(summary("bench.ingest", "ev", side["ours"], side["floor"], extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())

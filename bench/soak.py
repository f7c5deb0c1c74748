"""Soak benchmark: the deployment under steady load for a long time; does any process grow?

    uv run python -m bench.soak                          # 30 min, 20k ev/s + 1k check-ins/s
    uv run python -m bench.soak --minutes 2 --sample-seconds 10 --warmup 0.5    # a quick try
    uv run python -m bench.soak --event-rate 5000 --checkin-rate 200 --viewers 2

One run starts, on a fresh DATA_DIR, what run.py runs, each process as run.py starts it
(`flow_argv` + `spawn` + `child_env`): its own redis-server (AOF, fsync everysec), the events
flow, the check-in flow (and its decider processes), the video flow with `--cameras` simulated
cameras (`sim/rtsp_server.py`, one RTSP mount, 640x480 H.264), the dashboard (`python -m
ui.main`) and, as `run.py up` does, the lake maintenance (`run.py lake maintain --every
--maintain-every`, 300 s as LAKE_MAINTAIN_EVERY_S; 0: none). Without it no lake file is ever
compacted, and a flow's lake writers then hold a table state that grows with the files: not what
a deployment runs. The load, each generator in its own process:

* events: `--event-rate` (20,000/s) realistic events (`bench.ingest.make_event`, no `ts`: the
  flow stamps the arrival time) XADDed to `events:in` in pipelines;
* check-ins: `--participants` (20,000) registered first, then `--checkin-rate` (1,000/s)
  scans of a crowd (`bench.checkins.Generator`: entries, exits, re-entries, duplicates, forged
  tickets, retries) signed with the deployment's key, XADDed to `checkins:in`;
* video: `--viewers` (5) WebSocket viewers per camera (`bench.video`'s light viewers, with the
  API key), for the whole run.

Every `--sample-seconds` (60) the RSS of every process of the deployment (each process of each
tree, psutil) is sampled; the load generators are sampled too and listed apart. At the end: one
RSS series per process and its slope after `--warmup` minutes (least squares over the samples
at or after the warm-up, MiB/min). Goal (issue 15): every slope < 1 MiB/min. `events:in` and
`checkins:in` lengths are printed per sample. The flows trim their input streams only
`STREAM_RETENTION_S` behind what they have snapshotted (default one hour: then the streams, and
redis-server's RSS, grow for the whole run by design); the soak sets it to `--retention-s` (60),
so a length that stays near rate x (retention + snapshot interval) means the flows keep up, and
one that keeps growing means they do not on this machine (Redis then grows by design, not by a
leak).

There is no floor to run against here: the last line ends with `ratio=<goal / worst slope>`
(1 MiB/min divided by the steepest slope of a deployment process; ≥ 1 means the goal is met).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import yaml

from bench import harness as h
from core import keys
from core.settings import Settings
from ops.processes import PROJECT_DIR, child_env, flow_argv, spawn

GOAL_MIB_PER_MIN = 1.0
DEBIAN_PYTHON = "/usr/bin/python3"


# --------------------------------------------------------------------------------------------
# Load generators (each runs as a subprocess: --producer events|checkins)


def produce_events(url: str, rate: float, seconds: float, seed: int) -> int:
    from bench.ingest import make_event

    rng = random.Random(seed)
    pool = []
    for _ in range(5000):  # no `ts`: the flow uses the arrival time, so nothing turns late
        ev = json.loads(make_event(rng, time.time()))
        ev.pop("ts", None)
        pool.append(json.dumps(ev, separators=(",", ":")))
    r = redis.Redis.from_url(url)
    n = int(rate * seconds)

    def send(i: int, j: int) -> None:
        pipe = r.pipeline(transaction=False)
        for k in range(i, j):
            pipe.execute_command("XADD", keys.EVENTS_IN, "*", "data", pool[k % len(pool)])
        pipe.execute()

    t = time.perf_counter()
    sent = h.paced(n, rate, send, limit_s=seconds)
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - t}), flush=True)
    return 0


def produce_checkins(url: str, rate: float, seconds: float, data_dir: Path, n_people: int) -> int:
    from bench.checkins import Generator
    from core.tokens import load_signer
    from sim.gates import participant_id

    signer = load_signer(data_dir)
    ids = [participant_id(i) for i in range(1, n_people + 1)]
    gen = Generator(signer, ids, [], random.Random(3))
    r = redis.Redis.from_url(url)
    n = int(rate * seconds)

    def send(i: int, j: int) -> None:
        pipe = r.pipeline(transaction=False)
        for _ in range(i, j):
            pipe.execute_command("XADD", keys.CHECKINS_IN, "*", "data", gen.scan())
        pipe.execute()

    t = time.perf_counter()
    sent = h.paced(n, rate, send, limit_s=seconds)
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - t}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# The deployment


def venue(cams: list[str], camera_url: str, fps: int) -> tuple[dict, dict]:
    """(the event, the rest) of the venue: the check-in bench's gates and rules + cameras."""
    from bench.checkins import VENUE_YAML

    doc = yaml.safe_load(VENUE_YAML)
    doc["cameras"] = [
        {"id": c, "name": c, "rtsp_url": camera_url, "fps": fps, "width": 640, "height": 480}
        for c in cams
    ]
    return doc.pop("event"), doc


class Deployment:
    """redis-server, the events / check-in / video flows, the dashboard, the cameras."""

    def __init__(
        self,
        work: Path,
        cams: int,
        fps: int,
        retention_s: float,
        state_cache_scans: int = 0,
        maintain_every: float = 0,
    ):
        self.work = work
        self.data = work / "data"
        self.redis_proc, self.url = h.start_redis(self.data)
        self.procs: dict[str, subprocess.Popen] = {"redis-server": self.redis_proc}
        port = h.free_port()
        rtsp = subprocess.Popen(
            [DEBIAN_PYTHON, str(PROJECT_DIR / "sim" / "rtsp_server.py"), "--port", str(port),
             "--fps", str(fps), "--width", "640", "--height", "480"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.procs["rtsp camera"] = rtsp
        assert rtsp.stdout is not None
        if not rtsp.stdout.readline().startswith(b"READY"):
            raise h.BenchError("sim/rtsp_server.py did not start (see its --check)")
        self.cams = [f"cam-{i + 1}" for i in range(cams)]
        event, rest = venue(self.cams, f"rtsp://127.0.0.1:{port}/test", fps)
        self.env = h.stack_env(work, self.url, self.data, rest, event=event)
        self.env["STREAM_RETENTION_S"] = str(retention_s)
        if state_cache_scans:
            self.env["CHECKIN_STATE_CACHE_SCANS"] = str(state_cache_scans)
        os.environ.update(self.env)
        from core.tokens import load_signer

        load_signer(self.data)  # the tokens' key pair, before any process needs it
        s = Settings(_env_file=None, data_dir=self.data, redis_url=self.url)
        self.settings = s
        env = child_env(s, self.url, **self.env)
        for name in ("events", "checkins", "video"):
            self.procs[f"{name} flow"] = spawn(flow_argv(s, name), env, work / f"{name}.log")
        self.procs["dashboard"] = spawn(
            [sys.executable, "-m", "ui.main"], env, work / "dashboard.log"
        )
        if maintain_every > 0:  # as `run.py up` runs it; its log is lake.log (`check_alive`)
            self.procs["lake maintenance"] = spawn(
                [sys.executable, "run.py", "lake", "maintain", "--every", str(maintain_every)],
                env,
                work / "lake.log",
            )
        self.base = f"http://127.0.0.1:{self.env['PORT']}"
        self.r = redis.Redis.from_url(self.url)

    def wait_ready(self, timeout: float = 120) -> None:
        hdr = {"X-API-Key": self.env["API_KEYS"]}

        def ready() -> bool:
            self.check_alive()
            beats = all(self.r.exists(keys.heartbeat_key(f)) for f in ("events", "checkins"))
            states = [json.loads(v)["state"] for v in self.r.hvals(keys.VIDEO_STATUS)]
            streaming = len(states) == len(self.cams) and set(states) == {"streaming"}
            up = httpx.get(f"{self.base}/api/cameras", headers=hdr, timeout=2).status_code == 200
            return beats and streaming and up

        h.wait_until(ready, timeout, f"the deployment (logs in {self.work})", every=0.5)

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                log = self.work / f"{name.split()[0]}.log"
                raise h.BenchError(f"{name} exited with {p.returncode}\n{h.log_tail(log)}")

    def register(self, n: int) -> None:
        """N participants (`sim.gates.synthetic_participants`) into `participants:in`."""
        from core.records import ParticipantOp
        from sim.gates import synthetic_participants

        pipe = self.r.pipeline(transaction=False)
        for p in synthetic_participants(n, 1):
            op = ParticipantOp(op="upsert", participant=p).model_dump_json(exclude_none=True)
            pipe.execute_command("XADD", keys.PARTICIPANTS_IN, "*", "data", op)
            if len(pipe) >= 2000:
                pipe.execute()
        pipe.execute()
        h.wait_until(
            lambda: self.r.hlen(keys.PARTICIPANTS_INDEX) >= n, 600, "participants applied", 0.5
        )

    def close(self) -> None:
        procs = [p for k, p in self.procs.items() if k != "redis-server"]
        h.stop_all(procs)
        h.stop_redis(self.redis_proc)
        self.r.close()


# --------------------------------------------------------------------------------------------
# Sampling


def _label(role: str, root: int, proc: psutil.Process) -> str:
    if proc.pid == root:
        return role
    try:
        cmd = " ".join(proc.cmdline()[1:4]) or proc.name()
    except psutil.Error:
        cmd = "?"
    return f"{role} / child {proc.pid} ({cmd[:50]})"


def sample(roots: dict[str, int]) -> dict[str, float]:
    """RSS (MiB) of every process of every tree, by label."""
    out: dict[str, float] = {}
    for role, pid in roots.items():
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if p.pid != pid and role == "redis-server":
                    continue  # a short-lived fork (AOF rewrite, RDB save), copy-on-write
                out[_label(role, pid, p)] = p.memory_info().rss / 2**20
    return out


def slopes(
    series: dict[str, list[tuple[float, float]]], warmup_min: float
) -> dict[str, float | None]:
    """MiB/min over the samples at or after the warm-up (None: fewer than two)."""
    out: dict[str, float | None] = {}
    for label, pts in series.items():
        late = [(t, v) for t, v in pts if t >= warmup_min]
        out[label] = h.slope(late) if len(late) >= 2 else None
    return out


# --------------------------------------------------------------------------------------------
# Main


SUMMARY = (
    "The deployment under load for --minutes; RSS of every process sampled, slope after "
    "warm-up per process. Last line: ratio=<1 MiB/min / worst slope>."
)
OPTIONS = """
--minutes         float  30      how long to run (30)
--event-rate      float  20000   events/s (20,000)
--checkin-rate    float  1000    check-ins/s (1,000)
--participants    int    20000   registered first (20,000)
--cameras         int    2       simulated cameras (2)
--viewers         int    5       viewers per camera (5)
--fps             int    15      camera frames/s (15)
--sample-seconds  float  60      RSS sample period in seconds (60)
--warmup          float  5       minutes not in the slope (5)
--retention-s     float  60      STREAM_RETENTION_S of the deployment (60)
--state-cache-scans int  0       CHECKIN_STATE_CACHE_SCANS of the deployment (0: its default)
--maintain-every  float  300     run `run.py lake maintain --every N` as `run.py up` does (0: none)
--workdir         path   -       where to put the deployment (a temp dir)
--keep            flag   -       keep the work dir (logs, lake)
--url             str    -       -
--data-dir        path   -       -
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = h.parser("bench.soak", SUMMARY, OPTIONS)
    p.add_argument("--producer", choices=("events", "checkins"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.minutes * 60
    if args.producer == "events":
        return produce_events(args.url, args.event_rate, seconds, 1)
    if args.producer == "checkins":
        return produce_checkins(
            args.url, args.checkin_rate, seconds, args.data_dir, args.participants
        )
    return h.run_bench(lambda work: _bench(args, work), args.workdir, args.keep, "vf-soak-")


def _bench(args: argparse.Namespace, work: Path) -> int:
    h.print_header("Venueflow soak (bench/soak.py): RSS of every process under steady load")
    print(
        f"load      {args.event_rate:,.0f} ev/s + {args.checkin_rate:,.0f} check-ins/s, "
        f"{args.cameras} cameras x {args.viewers} viewers, {args.minutes:g} min; RSS every "
        f"{args.sample_seconds:g} s, slope after {args.warmup:g} min",
        flush=True,
    )
    if args.state_cache_scans:
        print(f"deciders  CHECKIN_STATE_CACHE_SCANS={args.state_cache_scans}", flush=True)
    if args.maintain_every > 0:
        print(f"lake      run.py lake maintain --every {args.maintain_every:g}", flush=True)
    else:
        print("lake      no maintenance (files are never compacted)", flush=True)
    dep = Deployment(
        work, args.cameras, args.fps, args.retention_s, args.state_cache_scans,
        args.maintain_every,
    )  # fmt: skip
    load: dict[str, subprocess.Popen] = {}
    series: dict[str, list[tuple[float, float]]] = {}
    load_series: dict[str, list[tuple[float, float]]] = {}
    redis_data: list[tuple[float, float]] = []  # redis-server's used_memory (its data), MiB
    redis_mem: dict[str, Any] = {}  # the last INFO memory + server, and the number of keys
    try:
        dep.wait_ready()
        print(f"deployment ready; registering {args.participants:,} participants ...", flush=True)
        dep.register(args.participants)
        seconds = args.minutes * 60
        t0 = time.time()
        me = [sys.executable, "-m", "bench.soak", "--minutes", str(args.minutes)]
        me += ["--url", dep.url]
        env = {**os.environ, "API_KEYS": dep.env["API_KEYS"]}
        load["events producer"] = subprocess.Popen(
            [*me, "--producer", "events", "--event-rate", str(args.event_rate)],
            stdout=(work / "events-producer.out").open("w"), cwd=PROJECT_DIR, env=env,
        )  # fmt: skip
        load["check-in producer"] = subprocess.Popen(
            [*me, "--producer", "checkins", "--checkin-rate", str(args.checkin_rate),
             "--data-dir", str(dep.data), "--participants", str(args.participants)],
            stdout=(work / "checkins-producer.out").open("w"), cwd=PROJECT_DIR, env=env,
        )  # fmt: skip
        if args.viewers:
            load["viewers"] = subprocess.Popen(
                [sys.executable, "-m", "bench.video", "_viewers", "--base", dep.base,
                 "--cams", ",".join(dep.cams), "--n", str(args.viewers), "--t-start",
                 str(t0 + 5), "--t-end", str(t0 + seconds), "--out", str(work / "viewers.json")],
                cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL,
                stderr=(work / "viewers.log").open("w"),
            )  # fmt: skip
        roots = {k: p.pid for k, p in dep.procs.items()}
        load_roots = {k: p.pid for k, p in load.items()}
        k = 0
        while True:
            now = time.time()
            minute = (now - t0) / 60
            for label, mib in sample(roots).items():
                series.setdefault(label, []).append((minute, mib))
            for label, mib in sample(load_roots).items():
                load_series.setdefault(label, []).append((minute, mib))
            backlog = dep.r.xlen(keys.EVENTS_IN), dep.r.xlen(keys.CHECKINS_IN)
            mem = dep.r.info("memory")
            redis_data.append((minute, mem["used_memory"] / 2**20))
            redis_mem = {**mem, "keys": dep.r.dbsize(), **dep.r.info("server")}
            total = sum(v[-1][1] for v in series.values() if v[-1][0] == minute)
            print(
                f"  t={minute:5.1f} min  deployment RSS {total:,.0f} MiB  events:in "
                f"{backlog[0]:,}  checkins:in {backlog[1]:,}  redis data "
                f"{redis_data[-1][1]:,.0f} MiB in {redis_mem['keys']:,} keys (RSS/data "
                f"{mem['mem_fragmentation_ratio']:.2f})",
                flush=True,
            )
            dep.check_alive()
            if now - t0 >= seconds - 0.5:
                break
            k += 1
            time.sleep(max(0.0, min(t0 + k * args.sample_seconds, t0 + seconds) - time.time()))
        for name, p in load.items():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                print(f"  {name} still running: stopped")
        sent = {}
        for name in ("events", "checkins"):
            out = (work / f"{name}-producer.out").read_text().strip()
            sent[name] = json.loads(out) if out else None
    finally:
        h.stop_all(load.values(), 10)
        dep.close()

    _report(args, series, load_series, sent)
    _report_redis(args, redis_data, redis_mem)
    return 0


def _report_redis(
    args: argparse.Namespace, data: list[tuple[float, float]], mem: dict[str, Any]
) -> None:
    """What redis-server's RSS is made of: its data (the keys that live a day grow it by
    design) and what the allocator holds beyond (fragmentation)."""
    if not mem:
        return
    slope = slopes({"data": data}, args.warmup)["data"]
    print(
        f"\nredis-server {mem.get('redis_version')} ({mem.get('mem_allocator')}): data "
        f"{mem['used_memory'] / 2**20:,.0f} MiB in {mem['keys']:,} keys at the end, "
        f"{'?' if slope is None else f'{slope:+.2f}'} MiB/min after warm-up; RSS / data "
        f"{mem['mem_fragmentation_ratio']:.2f}"
    )


def _report(
    args: argparse.Namespace,
    series: dict[str, list[tuple[float, float]]],
    load_series: dict[str, list[tuple[float, float]]],
    sent: dict[str, Any],
) -> None:
    print()
    for name, got in sent.items():
        if got:
            rate = got["sent"] / max(got["seconds"], 1e-9)
            print(
                f"{name} producer: {got['sent']:,} sent in {got['seconds']:.0f} s ({rate:,.0f}/s)"
            )
    sl = slopes(series, args.warmup)
    for title, data, sls in (
        ("RSS per process of the deployment (MiB)", series, sl),
        ("RSS of the load generators (MiB, not part of the goal)", load_series,
         slopes(load_series, args.warmup)),
    ):  # fmt: skip
        times = sorted({t for pts in data.values() for t, _ in pts})
        head = ["process", *(f"{t:.1f}" for t in times), "MiB/min"]
        rows = []
        for label, pts in sorted(data.items()):
            by_t = dict(pts)
            s = sls[label]
            cells = [f"{by_t[t]:.0f}" if t in by_t else "" for t in times]
            rows.append([label, *cells, "?" if s is None else f"{s:+.2f}"])
        print(f"\n== {title}; columns: minutes since the load started ==")
        print(h.table(head, rows))
    known = {k: v for k, v in sl.items() if v is not None}
    if not known:
        print("\nno slope: fewer than two samples after the warm-up (longer --minutes?)")
        print("bench.soak: no slope after warm-up; ratio=nan")
        return
    worst = max(known, key=lambda k: known[k])
    over = [k for k, v in known.items() if v >= GOAL_MIB_PER_MIN]
    verdict = "met" if not over else f"NOT met by {len(over)}: {', '.join(over)}"
    print(f"\ngoal every slope < {GOAL_MIB_PER_MIN:g} MiB/min after warm-up: {verdict}")
    ratio = GOAL_MIB_PER_MIN / known[worst] if known[worst] > 0 else float("inf")
    got = {k: v["sent"] / max(v["seconds"], 1e-9) if v else 0.0 for k, v in sent.items()}
    print(
        f"bench.soak: {len(known)} processes over {args.minutes:g} min at "
        f"{got.get('events', 0):,.0f} ev/s + {got.get('checkins', 0):,.0f} check-ins/s sent "
        f"(asked {args.event_rate:,.0f} + {args.checkin_rate:,.0f}), worst slope "
        f"{known[worst]:+.2f} MiB/min ({worst}); ratio={ratio:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())

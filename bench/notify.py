"""XADD of a triggering event → signed webhook received, under load, with dead targets.

```
uv run python -m bench.notify                       # 20 alarms, 50 targets (10 dead), 1,000 ev/s
uv run python -m bench.notify --triggers 40 --live 40 --dead 10 --rate 1000
```

One run starts its own redis-server, the real alarm flow, notifications flow and notifier (as
run.py starts them) with a venue file of `--live` + `--dead` signed-webhook targets on one
route. Live targets are HTTP receivers on loopback that verify each signature; dead ones
accept the TCP connection and never answer (each attempt ends at the target's 2 s timeout,
then is retried with backoff). A producer XADDs `--rate` ev/s in the background (bench.alarms'
mix: half GAS readings below the limit from 50 sensors). Each trigger is a GAS reading of 150
ppm from a new source; `time.time()` is taken just before its XADD.

**Ours**: when each live target's receiver has verified the webhook for that alarm (triggers x
live targets samples). **Baseline** (same run, same triggers): a plain redis-py subscriber
receiving the flow's `raised` message on `live:alarms` — the floor under the notifier (flow +
Redis). The last line is `ratio=<ours p50 / baseline p50>`. Goal: p99 < 2 s for live targets.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.alarms import background, gas, pct, subscriber
from core import keys
from core.settings import Settings
from notify.webhook import new_secret, verify
from ops.embedded_redis import start_embedded_redis
from ops.processes import child_env, flow_argv, spawn


class Receivers:
    """`n` live webhook receivers (one HTTP server each) recording when each alarm arrived."""

    def __init__(self, n: int, secret: str):
        self.got: dict[tuple[int, str], float] = {}  # (receiver, alarm id) → receive time
        self.bad = 0
        self.lock = threading.Lock()
        self.servers: list[ThreadingHTTPServer] = []
        outer = self
        for i in range(n):

            class H(BaseHTTPRequestHandler):
                idx = i
                protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

                def do_POST(self) -> None:
                    body = self.rfile.read(int(self.headers.get("content-length", 0)))
                    t = time.time()
                    try:
                        doc = verify(secret, {k.lower(): v for k, v in self.headers.items()},
                                     body)  # fmt: skip
                    except ValueError:
                        with outer.lock:
                            outer.bad += 1
                        self.send_response(401)
                        self.send_header("content-length", "0")
                        self.end_headers()
                        return
                    with outer.lock:
                        outer.got.setdefault((self.idx, doc["alarm"]["id"]), t)
                    self.send_response(204)
                    self.send_header("content-length", "0")
                    self.end_headers()

                def log_message(self, *a: Any) -> None:
                    pass

            srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.servers.append(srv)

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.server_address[1]}/hook" for s in self.servers]

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


def dead_listeners(n: int) -> list[socket.socket]:
    """Sockets that accept connections (kernel backlog) but never answer: timeouts."""
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4096)
        out.append(s)
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = work / "data"
    data.mkdir(parents=True)
    redis_proc, url = start_embedded_redis(data)
    secret = new_secret()
    live = Receivers(args.live, secret)
    dead = dead_listeners(args.dead)
    targets = [{"name": f"live-{i}", "url": u, "secret": "{env:BENCH_HOOK_SECRET}",
                "timeout_s": 2} for i, u in enumerate(live.urls())]  # fmt: skip
    targets += [{"name": f"dead-{i}", "url": f"http://127.0.0.1:{s.getsockname()[1]}/x",
                 "secret": "{env:BENCH_HOOK_SECRET}", "timeout_s": 2}
                for i, s in enumerate(dead)]  # fmt: skip
    venue = {
        "event": {"id": "bench", "name": "bench", "start": "2026-01-01T00:00:00+00:00",
                  "end": "2030-01-01T00:00:00+00:00"},
        "gates": [{"id": "main", "name": "Main", "capacity_per_minute": 100}],
        "alarm_rules": [{"id": "gas-high", "name": "Gas above 100 ppm", "kind": "threshold",
                         "severity": "CRITICAL", "type": "GAS", "source": "gas-*",
                         "field": "ppm", "above": 100, "clear_at": 85}],
        "notifications": {"targets": targets, "failing_after": 1000,
                          "routes": [{"name": "all", "targets": [t["name"] for t in targets],
                                      "send_on": ["raised"]}]},
    }  # fmt: skip
    venue_path = work / "venue.yaml"
    venue_path.write_text(yaml.safe_dump(venue))
    env = {"REDIS_URL": url, "DATA_DIR": str(data), "VENUE_CONFIG": str(venue_path),
           "BENCH_HOOK_SECRET": secret}  # fmt: skip
    s = Settings(redis_url=url, data_dir=data, venue_config=venue_path)
    procs: dict[str, subprocess.Popen] = {
        name: spawn(flow_argv(s, name), child_env(s, url, **env), work / f"{name}.log")
        for name in ("alarms", "notifications")
    }
    procs["notifier"] = spawn([sys.executable, "-m", "notify.notifier"],
                              child_env(s, url, **env), work / "notifier.log")  # fmt: skip
    r = redis.Redis.from_url(url)
    stop, ready = threading.Event(), threading.Event()
    base: dict[str, float] = {}
    sent = [0]
    threads = [
        threading.Thread(target=subscriber, args=(url, ready, stop, base), daemon=True),
        threading.Thread(target=background, args=(url, args.rate, stop, sent), daemon=True),
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists(keys.heartbeat_key(f)) for f in ("alarms", "notifier")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready; see the logs in {work}")
            time.sleep(0.2)
        for t in threads:
            t.start()
        ready.wait(10)
        time.sleep(args.warmup_s)
        t_load = time.monotonic()
        sent0 = sent[0]
        starts: dict[str, float] = {}
        for i in range(args.triggers):
            aid = f"gas-high|gas-trigger-{i:03d}|1"
            starts[aid] = time.time()
            r.xadd(keys.EVENTS_IN, {"data": gas(f"gas-trigger-{i:03d}", 150)})
            want = {(k, aid) for k in range(args.live)}
            end = time.monotonic() + 30
            while time.monotonic() < end:
                with live.lock:
                    if want <= live.got.keys():
                        break
                time.sleep(0.005)
            time.sleep(args.gap_s)
        achieved = (sent[0] - sent0) / (time.monotonic() - t_load)
        streamed = {
            json.loads(f[b"data"])["alarm"]["alarm_id"]: int(eid.split(b"-")[0]) / 1000
            for eid, f in r.xrange(keys.ALARMS_TRANSITIONS)
        }
    finally:
        stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in [*procs.values()]:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        redis_proc.send_signal(signal.SIGINT)
        redis_proc.wait(10)
        live.close()
        for sck in dead:
            sck.close()
    ours = [(t - starts[aid]) * 1000 for (_, aid), t in live.got.items() if aid in starts]
    baseline = [(base[a] - t0) * 1000 for a, t0 in starts.items() if a in base]
    per_alarm: dict[str, list[float]] = {}
    for (_, aid), t in live.got.items():
        if aid in starts:
            per_alarm.setdefault(aid, []).append((t - starts[aid]) * 1000)
    if args.verbose:
        for aid in sorted(per_alarm):
            v = sorted(per_alarm[aid])
            flow = (streamed.get(aid, float("nan")) - starts[aid]) * 1000
            print(f"{aid}: in alarms:transitions {flow:.0f} ms; webhooks: first {v[0]:.0f} ms, "
                  f"median {v[len(v) // 2]:.0f}, last {v[-1]:.0f}")  # fmt: skip
    return {"ours": ours, "baseline": baseline, "missing": args.triggers * args.live - len(ours),
            "bad_signatures": live.bad, "rate": achieved}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--triggers", type=int, default=20)
    p.add_argument("--live", type=int, default=40)
    p.add_argument("--dead", type=int, default=10)
    p.add_argument("--rate", type=int, default=1000, help="background events/s")
    p.add_argument("--gap-s", type=float, default=0.5, help="pause between triggers")
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--verbose", action="store_true", help="latencies per alarm")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        res = run(args, Path(tmp))
    ours, base = res["ours"], res["baseline"]

    def line(name: str, v: list[float]) -> str:
        top = max(v) if v else float("nan")
        return (f"{name:9} n={len(v):5}  p50={pct(v, 0.5):8.1f} ms  p90={pct(v, 0.9):8.1f} ms  "
                f"p99={pct(v, 0.99):8.1f} ms  max={top:8.1f} ms")  # fmt: skip

    print(f"background {res['rate']:.0f} ev/s; {args.live} live + {args.dead} dead targets; "
          f"{args.triggers} alarms; missing {res['missing']}; bad signatures "
          f"{res['bad_signatures']}")  # fmt: skip
    print(line("ours", ours))
    print(line("baseline", base))
    print(f"p99 ratio={pct(ours, 0.99) / pct(base, 0.99):.3f}")
    print(f"ratio={pct(ours, 0.5) / pct(base, 0.5):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

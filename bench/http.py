"""HTTP ingest benchmark: `POST /api/events` of the real dashboard against a bare FastAPI floor.

    uv run python -m bench.http                        # 20 connections, 10 s per side
    uv run python -m bench.http --seconds 5 --connections 10
    uv run python -m bench.http --batch-size 100       # events per POST /api/events/batch

Needs `wrk` (Debian/Ubuntu: `sudo apt-get install -y wrk`; it was installed that way on the
bench machine). One run starts its own redis-server (never the shared one) and measures, with
the same wrk command (`-t2 -c<connections> -d<seconds>s --latency`, one realistic event as the
body, the API key in `X-API-Key`):

* **ours**: the real dashboard app (`python -m ui.main`, started as the tests start it, on a
  fresh DATA_DIR with a fresh `API_KEYS` key): auth middleware, sessions, NiceGUI, the route;
* **the floor** (`--floor-server`, in this file): the smallest correct FastAPI/uvicorn app for
  the job: the same pydantic `Event` model (`core.records.Event`), the same API-key check
  (constant-time compare against `API_KEYS`), one XADD to `events:in` with redis.asyncio,
  202 with the entry id; 422 with the field errors for a bad event.

Both answers are checked before the run (202, and 422 for a bad event) and after it: every
2xx answer must have put one entry on `events:in`. Reported per side: req/s, latency avg and
p99 (wrk), server CPU per request (the server process and its children, /proc) and the
redis-server CPU. `POST /api/events/batch` (a JSON array of `--batch-size` events; the floor
takes the same body) is measured the same way, with events/s and CPU per event, batch against
single for each side; it is skipped with a message when ours has no such route.

Measured on the 2-core bench machine, busy with other work (load 12-16), `python -m bench.http`
(10 s, 20 connections, batches of 100), the code before and after issue 15's HTTP cuts run
back to back, twice: before, ours 2.52 ms server CPU per request (201-229 req/s) against the
floor's 0.35-0.39 ms, ratio=0.139 / 0.153; after, ours 0.46 ms (1,305-1,454 req/s) against
0.35 ms, ratio=0.768 / 0.761; `POST /api/events/batch` 45 µs CPU per event (6,100-7,300
events/s), the floor's batch 43-45 µs.

The last line ends with `ratio=<floor server CPU per request / ours>` (1.0: ours costs what a
bare FastAPI route costs; the goal of issue 15 is ≥ 0.67, i.e. within 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi import Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse

from bench import harness as h
from core import keys
from core.settings import Settings
from ops.processes import child_env, spawn

EVENT = {
    "source": "sensor-01",
    "type": "sensor.temperature",
    "level": "INFO",
    "payload": {"sensor": "t-01", "celsius": 21.5},
}
BAD_EVENT = {"source": "sensor-01", "type": "sensor.temperature", "level": "DEBUG"}


# --------------------------------------------------------------------------------------------
# The floor: a bare FastAPI app (runs as a subprocess: --floor-server)


def floor_app() -> Any:
    """POST /api/events (+ /batch): API key, the `Event` model, XADD; nothing else."""
    import hmac

    import redis.asyncio as aredis
    from fastapi import FastAPI
    from pydantic import ValidationError

    from core.records import Event, field_errors

    s = Settings()
    valid = [k.encode() for k in re.split(r"[,\s]+", os.environ.get("API_KEYS", "")) if k]
    r = aredis.Redis.from_url(s.effective_redis_url)
    app = FastAPI()

    def authorised(request: Request) -> bool:
        got = request.headers.get("x-api-key", "").encode()
        return any(hmac.compare_digest(got, k) for k in valid)

    @app.post("/api/events", status_code=202)
    async def post_event(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"detail": "missing or unknown API key"}, status_code=401)
        try:
            ev = Event.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"detail": "invalid event", "errors": field_errors(exc)}, 422)
        eid = await r.xadd(keys.EVENTS_IN, {"data": ev.model_dump_json(exclude_none=True)})
        return JSONResponse({"id": eid.decode()}, status_code=202)

    @app.post("/api/events/batch")
    async def post_batch(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"detail": "missing or unknown API key"}, status_code=401)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"detail": "not JSON"}, status_code=422)
        items = body.get("events") if isinstance(body, dict) else body
        if not isinstance(items, list) or not 0 < len(items) <= 1000:
            return JSONResponse({"detail": "1 to 1,000 events"}, status_code=422)
        results: list[dict[str, Any]] = []
        pipe = r.pipeline(transaction=False)
        for item in items:
            try:
                ev = Event.model_validate(item)
            except ValidationError as exc:
                results.append({"status": 422, "errors": field_errors(exc)})
                continue
            pipe.xadd(keys.EVENTS_IN, {"data": ev.model_dump_json(exclude_none=True)})
            results.append({"status": 202})
        ids = iter(await pipe.execute())
        for res in results:
            if res["status"] == 202:
                res["id"] = next(ids).decode()
        return JSONResponse({"results": results}, status_code=207)

    return app


def floor_server(port: int) -> int:
    import uvicorn

    uvicorn.run(floor_app(), host="127.0.0.1", port=port, log_level="warning")
    return 0


# --------------------------------------------------------------------------------------------
# wrk


LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = {key}
"""


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    n = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (lat and n and rps):
        raise h.BenchError(f"could not read wrk's output:\n{out}")
    return {
        "avg_ms": _ms(lat.group(1)),
        "max_ms": _ms(lat.group(3)),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
        "requests": int(n.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
        "rps": float(rps.group(1)),
    }


def run_wrk(
    url: str, body: bytes, key: str, seconds: float, connections: int, work: Path, name: str
) -> dict[str, Any]:
    script = work / f"{name}.lua"
    script.write_text(LUA.format(body=json.dumps(body.decode()), key=json.dumps(key)))
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    proc = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise h.BenchError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------------------------
# One side


def start_server(kind: str, work: Path, url: str) -> tuple[subprocess.Popen, str, str]:
    """Start ours (`python -m ui.main`) or the floor; return (process, base URL, API key)."""
    data = work / kind
    data.mkdir(parents=True)
    env = h.stack_env(data, url, data, {"gates": [{"id": "g1", "name": "Gate 1"}]})
    s = Settings(_env_file=None, data_dir=data, redis_url=url)
    port = env["PORT"]
    if kind == "ours":
        argv = [sys.executable, "-m", "ui.main"]
    else:
        argv = [sys.executable, "-m", "bench.http", "--floor-server", "--port", port]
    proc = spawn(argv, child_env(s, url, **env), work / f"{kind}.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise h.BenchError(f"{kind} exited:\n{h.log_tail(work / f'{kind}.log')}")
        return httpx.post(f"{base}/api/events", json=EVENT, timeout=2).status_code < 500

    try:
        h.wait_until(up, 90, f"{kind} to answer")
    except h.BenchError:
        h.stop_all([proc])
        raise
    return proc, base, env["API_KEYS"]


def measure(
    kind: str,
    work: Path,
    url: str,
    r: redis.Redis,
    redis_pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    proc, base, key = start_server(kind, work, url)
    out: dict[str, Any] = {"kind": kind}
    try:
        hdr = {"X-API-Key": key}
        ok = httpx.post(f"{base}/api/events", json=EVENT, headers=hdr, timeout=10)
        bad = httpx.post(f"{base}/api/events", json=BAD_EVENT, headers=hdr, timeout=10)
        nokey = httpx.post(f"{base}/api/events", json=EVENT, timeout=10)
        out["checks"] = f"{ok.status_code} / {bad.status_code} / {nokey.status_code}"
        if ok.status_code != 202 or bad.status_code != 422 or nokey.status_code not in (401, 403):
            raise h.BenchError(f"{kind}: good/bad/no key answered {out['checks']}")
        body = json.dumps(EVENT, separators=(",", ":")).encode()
        out["single"] = _one(
            kind, f"{base}/api/events", body, key, 1, work, r, redis_pid, proc, args
        )
        batch = [EVENT] * args.batch_size
        probe = _batch_shape(base, hdr)
        if probe is None:
            out["batch"] = None
        else:
            doc = {"events": batch} if probe == "object" else batch
            body = json.dumps(doc, separators=(",", ":")).encode()
            out["batch"] = _one(
                f"{kind}-batch", f"{base}/api/events/batch", body, key, args.batch_size,
                work, r, redis_pid, proc, args,
            )  # fmt: skip
            out["batch"]["shape"] = probe
    finally:
        h.stop_all([proc])
    return out


def _batch_shape(base: str, hdr: dict[str, str]) -> str | None:
    """'object' ({"events": [...]}) or 'list' as the route accepts; None: no batch route."""
    for shape, doc in (("object", {"events": [EVENT, EVENT]}), ("list", [EVENT, EVENT])):
        resp = httpx.post(f"{base}/api/events/batch", json=doc, headers=hdr, timeout=10)
        if resp.status_code in (404, 405):
            return None
        if resp.status_code < 300:
            return shape
    return None


def _one(
    name: str,
    url_: str,
    body: bytes,
    key: str,
    per_request: int,
    work: Path,
    r: redis.Redis,
    redis_pid: int,
    proc: subprocess.Popen,
    args: argparse.Namespace,
) -> dict[str, Any]:
    xlen0 = r.xlen(keys.EVENTS_IN)
    cpu0 = h.tree_cpu(proc.pid) or 0.0
    mcpu = h.MachineCpu(redis_pid)
    res = run_wrk(url_, body, key, args.seconds, args.connections, work, name)
    cpu = (h.tree_cpu(proc.pid) or 0.0) - cpu0
    res["machine"] = mcpu.since(cpu)
    res["cpu_s"] = cpu
    res["rss"] = h.tree_hwm_mib(proc.pid)
    ok = res["requests"] - res["non2xx"]
    res["cpu_ms"] = 1e3 * cpu / max(1, res["requests"])
    res["redis_ms"] = 1e3 * res["machine"]["redis_s"] / max(1, res["requests"])
    res["added"] = r.xlen(keys.EVENTS_IN) - xlen0
    res["expected"] = ok * per_request
    res["per_request"] = per_request
    # wrk stops counting at the deadline; a request in flight then may still be written.
    slack = args.connections * per_request
    if not res["expected"] <= res["added"] <= res["expected"] + slack:
        raise h.BenchError(
            f"{name}: {ok:,} accepted requests of {per_request} events each, "
            f"but {res['added']:,} new entries"
        )
    r.delete(keys.EVENTS_IN)  # keep Redis small between runs
    return res


# --------------------------------------------------------------------------------------------
# Output


def fmt(x: dict[str, Any], unit: str) -> dict[str, str]:
    per = x["per_request"]
    ev = f" = {x['rps'] * per:,.0f} events/s" if per > 1 else ""
    cpu_ev = f" ({1e3 * x['cpu_ms'] / per:.0f} µs per event)" if per > 1 else ""
    return {
        "rps": f"{x['rps']:,.0f}{ev}",
        "n": f"{x['requests']:,} ({x['non2xx']:,} not 2xx)"
        + (f"; socket errors: {x['socket_errors']}" if x["socket_errors"] else ""),
        "lat": f"{x['avg_ms']:.1f} / {x['p99_ms']:.1f} / {x['max_ms']:.1f}",
        "cpu": f"{x['cpu_ms']:.3f} ms{cpu_ev}",
        "redis": f"{x['redis_ms']:.3f} ms",
        "added": f"{x['added']:,} (≥ {x['expected']:,} expected)",
        "rss": h.mib(x["rss"]),
        "machine": h.machine_line(x["machine"]),
    }


ROWS = h.rows(
    """
rps        requests/s (wrk)
n          requests
lat        latency ms avg / p99 / max
cpu        server CPU per request (process + children)
redis      redis-server CPU per request
added      entries added to events:in
rss        peak RSS of the server
machine    machine CPU, avg cores busy
"""
)


SUMMARY = (
    "POST /api/events of the dashboard against a bare FastAPI route (same model, key "
    "check and XADD), with wrk. Last line: ratio=<floor CPU per request / ours>."
)
OPTIONS = """
--seconds       float  10   wrk duration per side in seconds (10)
--connections   int    20   wrk connections (20)
--batch-size    int    100  events per POST /api/events/batch (100)
--workdir       path   -    where to put Redis and the runs (a temp dir)
--keep          flag   -    keep the work dir (logs)
--floor-server  flag   -    -
--port          int    -    -
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = h.parser("bench.http", SUMMARY, OPTIONS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_server:
        return floor_server(args.port)
    if shutil.which("wrk") is None:
        print("bench.http needs wrk: sudo apt-get install -y wrk", file=sys.stderr)
        return 2
    started = time.perf_counter()
    return h.run_bench(
        lambda work: _bench(args, work, started), args.workdir, args.keep, "venueflow-bench-http-"
    )


def _bench(args: argparse.Namespace, work: Path, started: float) -> int:
    h.print_header("Venueflow HTTP ingest benchmark (bench/http.py): ours against the floor")
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"wrk       {wrk_v.strip()}: -t2 -c{args.connections} -d{args.seconds:g}s --latency")
    redis_proc, url = h.start_redis(work / "redis-data")
    try:
        r = redis.Redis.from_url(url)
        res = {}
        for kind in ("ours", "floor"):
            print(f"{kind}: POST /api/events for {args.seconds:g} s ...", flush=True)
            res[kind] = measure(kind, work, url, r, redis_proc.pid, args)
            x = res[kind]["single"]
            print(f"  {x['rps']:,.0f} req/s, {x['cpu_ms']:.3f} ms server CPU each", flush=True)
        r.close()
    finally:
        h.stop_redis(redis_proc)

    names = ["ours (python -m ui.main)", "floor (bare FastAPI, --floor-server)"]
    cols = [fmt(res[k]["single"], "request") for k in ("ours", "floor")]
    title = f"POST /api/events, one event per request, {args.connections} connections"
    print(h.side_by_side(title, names, ROWS, cols))
    print(f"answers to good / bad / keyless: ours {res['ours']['checks']}, floor "
          f"{res['floor']['checks']}")  # fmt: skip
    if res["ours"]["batch"] is None:
        print("\nPOST /api/events/batch: skipped, ours has no such route yet (404/405).")
    else:
        cols = [fmt(res[k]["batch"], "request") for k in ("ours", "floor")]
        title = f"POST /api/events/batch, {args.batch_size} events per request"
        print(h.side_by_side(title, names, ROWS, cols))
        for k in ("ours", "floor"):
            one, many = res[k]["single"], res[k]["batch"]
            print(
                f"{k}: batch {many['rps'] * args.batch_size:,.0f} events/s at "
                f"{1e3 * many['cpu_ms'] / args.batch_size:.1f} µs CPU per event; single "
                f"{one['rps']:,.0f} events/s at {1e3 * one['cpu_ms']:.1f} µs "
                f"({one['cpu_ms'] * args.batch_size / many['cpu_ms']:.1f}x less CPU per event "
                "in batches)"
            )
    print("(wrk runs on the same machine: its CPU counts as 'other')")
    warn = h.busy_warning([res[k]["single"]["machine"] for k in res])
    if warn:
        print(warn)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    o, f = res["ours"]["single"], res["floor"]["single"]
    extra = f"latency avg {o['avg_ms']:.1f} / {f['avg_ms']:.1f} ms, p99 {o['p99_ms']:.1f} / "
    extra += f"{f['p99_ms']:.1f} ms"
    if res["ours"]["batch"] is not None:
        ob, fb = res["ours"]["batch"], res["floor"]["batch"]
        extra += (
            f", batch {ob['rps'] * args.batch_size:,.0f} / {fb['rps'] * args.batch_size:,.0f} "
            f"events/s (ratio {fb['cpu_ms'] / ob['cpu_ms']:.3f})"
        )
    side = {
        k: {"rate": v["single"]["rps"], "cpu_us": 1e3 * v["single"]["cpu_ms"]}
        for k, v in res.items()
    }
    print(h.summary("bench.http", "req", side["ours"], side["floor"], extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())

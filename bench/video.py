"""Live video: capture → viewer latency, fps per viewer and CPU, against the floor.

    uv run python -m bench.video [--rounds 3] [--seconds 12] [--fps 15]
    uv run python -m bench.video --idle --seconds 20   # the idle cost only (no camera running)

A real RTSP test camera (`sim/rtsp_server.py`, 640x480, H.264, the send time drawn into the
pixels), the real video flow (Bytewax, recovery on, as run.py starts it: each camera's
partition decodes, encodes once and publishes) and the real dashboard process (one Redis
subscription per camera, fanned out), with viewers on the WebSocket path: ONE headless
Chromium tab (the page's own player; it reports capture → shown latency) plus N-1 light viewers
(Python WebSocket clients in their own process, speaking the same ack protocol).
Configurations: 1 camera x 1 / 5 / 20 viewers and 4 cameras x 5 viewers (each viewer watches
all 4).

Latencies:
- capture → viewer: from the frame header's `captured_at` (when OpenCV returned the frame in
  the flow) to the viewer receiving it (Chromium: to the image being shown).
- glass → viewer: from the time the camera drew into the picture to the viewer receiving it
  (one light viewer per camera decodes the JPEG and reads the pixel stamp). This includes the
  camera's own H.264 encode and FFmpeg's decode buffering.

Baseline (the floor): a plain loop per camera — OpenCV read + resize + JPEG encode with the same
options and the same `encode_jpeg` — measured with the same pixel stamp (glass → encoded) and
CPU. `ratio=` is our glass → viewer p50 at 1 camera x 20 viewers over the baseline's glass →
encoded p50: what the flow, Redis, the hub and the WebSocket add on top of the floor.
CPU is % of one core (this machine has `nproc` cores), for our processes (flow + dashboard +
Redis) and, separately, the load generators (RTSP server, Chromium, light viewers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import yaml

from auth.users import user_store
from bench.harness import free_port, stack_env
from bench.harness import quantile as pct
from core import keys
from core.settings import Settings
from ops.embedded_redis import start_embedded_redis
from ops.processes import PROJECT_DIR, child_env, flow_argv, spawn

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DEBIAN_PYTHON = "/usr/bin/python3"
WARMUP_S = 3.0


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


class Cpu:
    """CPU seconds of a set of process trees between `start()` and `stop()`."""

    def __init__(self, pids: list[int]):
        self.procs = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]

    def _total(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                for q in [p, *p.children(recursive=True)]:
                    t = q.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), self._total()

    def stop(self) -> float:
        """% of one core used since start()."""
        return 100 * (self._total() - self.c0) / (time.monotonic() - self.t0)


# --- light viewers (own process) ----------------------------------------------------------------


async def _viewer(url: str, stamp: bool, t_start: float, t_end: float, out: dict) -> None:
    from websockets.asyncio.client import connect

    from core.records import FrameHeader

    lat, glass, frames, seqs = [], [], 0, []
    decode = None
    if stamp:
        import cv2
        import numpy as np

        from sim.camera_pattern import read_stamp

        def decode(jpeg: bytes) -> int | None:
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
            return read_stamp(img)

    key = {"X-API-Key": os.environ.get("API_KEYS", "")}  # the stack's key (admin: video too)
    async with connect(url, max_size=2**24, additional_headers=key) as ws:
        while time.time() < t_end:
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=max(0.1, t_end - time.time()))
            except TimeoutError:
                break
            now = time.time()
            await ws.send("a")
            if now < t_start:
                continue
            h, jpeg = FrameHeader.unpack(msg)
            frames += 1
            seqs.append(h.seq)
            lat.append((now - h.captured_at) * 1000)
            if decode is not None:
                ms = decode(jpeg)
                if ms:
                    glass.append(now * 1000 - ms)
    skipped = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    out.update(frames=frames, fps=frames / (t_end - t_start), lat=lat, glass=glass, skipped=skipped)


async def _viewers(base: str, cams: list[str], n: int, t_start: float, t_end: float) -> list:
    results: list[dict] = []
    tasks = []
    for v in range(n):
        for cam in cams:
            out: dict[str, Any] = {"viewer": v, "camera": cam}
            results.append(out)
            url = f"{base.replace('http', 'ws', 1)}/video/ws/{cam}"
            tasks.append(_viewer(url, v == 0, t_start, t_end, out))
    await asyncio.gather(*tasks)
    return results


def role_viewers(args: argparse.Namespace) -> int:
    res = asyncio.run(_viewers(args.base, args.cams.split(","), args.n, args.t_start, args.t_end))
    Path(args.out).write_text(json.dumps(res))
    return 0


# --- baseline (own process): OpenCV read + resize + JPEG in one loop per camera ----------------


def role_baseline(args: argparse.Namespace) -> int:
    from connectors.video_capture import CaptureOptions, configure_opencv, open_capture
    from flows.video_logic import encode_jpeg
    from sim.camera_pattern import read_stamp

    configure_opencv(Settings().video_ffmpeg_options)
    results: list[dict] = []

    def loop(url: str, out: dict) -> None:
        cap = open_capture(url, CaptureOptions())
        assert cap is not None, f"baseline cannot open {url}"
        lat, glass, frames = [], [], 0
        while time.time() < args.t_end:
            ok, img = cap.read()
            if not ok:
                continue
            captured = time.time()
            enc = encode_jpeg(img, args.width, args.height, 75)
            done = time.time()
            if captured < args.t_start or enc is None:
                continue
            frames += 1
            lat.append((done - captured) * 1000)
            ms = read_stamp(img)
            if ms:
                glass.append(done * 1000 - ms)
        cap.release()
        out.update(frames=frames, fps=frames / (args.t_end - args.t_start), lat=lat, glass=glass)

    threads = []
    for url in args.urls.split(","):
        out: dict[str, Any] = {"url": url}
        results.append(out)
        threads.append(threading.Thread(target=loop, args=(url, out)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(args.out).write_text(json.dumps(results))
    return 0


# --- the stack ----------------------------------------------------------------------------------


class Stack:
    """Embedded Redis + RTSP test camera + video flow + dashboard, for `cams` cameras."""

    def __init__(self, work: Path, cams: int, fps: int, width: int, height: int):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.data = work / "data"
        self.redis_proc, self.url = start_embedded_redis(self.data)
        self.rtsp_port = free_port()
        # Every camera is its own RTSP connection (and decode in the flow); they share the test
        # server's one encoder so the camera side costs this 2-core machine as little as possible.
        self.rtsp = subprocess.Popen(
            [DEBIAN_PYTHON, str(PROJECT_DIR / "sim" / "rtsp_server.py"), "--port",
             str(self.rtsp_port), "--fps", str(fps), "--width", str(width), "--height",
             str(height)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert self.rtsp.stdout is not None and self.rtsp.stdout.readline().startswith(b"READY")
        self.cams = [f"cam-{i + 1}" for i in range(cams)]
        venue = {
            "gates": [{"id": "g", "name": "g"}],
            "cameras": [
                {"id": c, "name": c, "rtsp_url": self.camera_url, "fps": fps, "width": width,
                 "height": height}
                for c in self.cams
            ],
        }  # fmt: skip
        env = stack_env(work, self.url, self.data, venue)  # API_KEYS: the viewers' key
        self.port = int(env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        os.environ.update(env)
        s = Settings()
        user_store(s.data_dir).add(BENCH_USER, "operator", BENCH_PASSWORD)
        self.flow = spawn(flow_argv(s, "video"), child_env(s, self.url, **env), work / "flow.log")
        self.app = spawn(
            [sys.executable, "-m", "ui.main"], child_env(s, self.url, **env), work / "app.log"
        )
        self.r = redis.Redis.from_url(self.url)
        self._wait_ready()

    @property
    def camera_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}/test"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                states = [json.loads(v)["state"] for v in self.r.hvals(keys.VIDEO_STATUS)]
                streaming = len(states) == len(self.cams) and set(states) == {"streaming"}
                key = {"X-API-Key": os.environ["API_KEYS"]}
                ok = httpx.get(f"{self.base}/api/cameras", headers=key).status_code == 200
                if streaming and ok:
                    return
            except (httpx.HTTPError, redis.RedisError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"stack not ready; see {self.work}/flow.log and app.log")

    def ours(self) -> list[int]:
        return [self.flow.pid, self.app.pid, self.redis_proc.pid]

    def close(self) -> None:
        for p in (self.app, self.flow, self.rtsp, self.redis_proc):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (self.app, self.flow, self.rtsp, self.redis_proc):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


BENCH_USER = "bench-operator"
BENCH_PASSWORD = secrets.token_urlsafe(16)  # this run's only (a fresh DATA_DIR per run)


def _login(page: Any, base: str) -> None:
    """Log the tab's browser context in (the pages and video need an operator or organiser)."""
    r = page.context.request.post(
        f"{base}/api/auth/login", data={"username": BENCH_USER, "password": BENCH_PASSWORD}
    )
    assert r.status == 200, r.text()


def _chromium(base: str, t_start: float, t_end: float, out: dict) -> None:
    """One real browser tab on the Cameras page; its player's stats over the window."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        _login(page, base)
        page.goto(f"{base}/cameras")
        time.sleep(max(0.0, t_start - time.time()))
        s0 = page.evaluate("window.vfVideoStats()")
        time.sleep(max(0.0, t_end - time.time()))
        s1 = page.evaluate("window.vfVideoStats()")
        b.close()
    per = {}
    for cam, st in s1.items():
        n0 = s0.get(cam, {}).get("frames", 0)
        lat = st["latencies"][-(st["frames"] - n0) :] if st["frames"] > n0 else []
        per[cam] = {"frames": st["frames"] - n0, "lat": lat}
    out["cams"] = per


#: Reads the pixel clock of what an <img> shows (sim/camera_pattern.read_stamp in JS) every
#: 4 ms and records glass → displayed latency per new stamp. Same-origin, so the canvas is clean.
DISPLAY_PROBE = """
window.vfProbe = {lat: []};
const img = document.getElementById('v'), c = document.createElement('canvas');
const ctx = c.getContext('2d', {willReadFrequently: true});
let last = 0;
function read() {
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w) return;
  const b = w / 48, rows = Math.ceil(3 * b) + 2;
  if (c.width !== w) { c.width = w; c.height = rows; }
  ctx.drawImage(img, 0, 0, w, rows, 0, 0, w, rows);
  const px = ctx.getImageData(0, 0, w, rows).data;
  const q = Math.max(1, Math.round(b / 4));
  let ms = 0, check = 0;
  for (let i = 0; i < 56; i++) {
    const row = Math.floor(i / 28), col = i % 28;
    const y0 = Math.round(b + row * b), y1 = Math.round(2 * b + row * b);
    const x0 = Math.round(b + col * b), x1 = Math.round(2 * b + col * b);
    let sum = 0, n = 0;
    for (let y = y0 + q; y < y1 - q; y++)
      for (let x = x0 + q; x < x1 - q; x++) { sum += px[(y * w + x) * 4 + 1]; n++; }
    const bit = n && sum / n > 127 ? 1 : 0;
    if (i < 48) ms = ms * 2 + bit; else check = check * 2 + bit;
  }
  let sumBytes = 0;
  for (let k = 0; k < 6; k++) sumBytes += Math.floor(ms / 2 ** (8 * k)) % 256;
  if (ms && (sumBytes % 256) === check && ms !== last) {
    last = ms;
    window.vfProbe.lat.push(Date.now() - ms);
  }
}
setInterval(read, 4);
"""


def display_latency(base: str, camera: str, seconds: float) -> dict[str, list[float]]:
    """Glass → displayed in Chromium, by the pixel clock, for the WebSocket player and MJPEG."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {}
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, tag in (
            ("WebSocket", f'<img id="v" data-vf-camera="{camera}">'
                          '<script src="/video/player.js"></script>'),
            ("MJPEG", f'<img id="v" src="/video/{camera}.mjpeg">'),
        ):  # fmt: skip
            page = b.new_page()
            _login(page, base)
            page.goto(f"{base}/api/cameras")  # same origin for the canvas
            page.set_content(f"<html><body style='margin:0'>{tag}</body></html>")
            page.add_script_tag(content=DISPLAY_PROBE)
            time.sleep(WARMUP_S)
            page.evaluate("window.vfProbe.lat = []")
            time.sleep(seconds)
            out[name] = page.evaluate("window.vfProbe.lat")
            page.close()
        b.close()
    return out


def _chromium_pids() -> set[int]:
    """Our own Chromium processes (children of this process through Playwright's driver)."""
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "chrom" in (p.name() or "").lower()
    }


def run_config(stack: Stack, cams: list[str], viewers: int, seconds: float) -> dict:
    t_start = time.time() + WARMUP_S + 2
    t_end = t_start + seconds
    out_file = stack.work / f"viewers-{len(cams)}x{viewers}.json"
    before = _chromium_pids()
    pool = None
    if viewers > 1:
        pool = subprocess.Popen(
            [sys.executable, "-m", "bench.video", "_viewers", "--base", stack.base,
             "--cams", ",".join(cams), "--n", str(viewers - 1), "--t-start", str(t_start),
             "--t-end", str(t_end), "--out", str(out_file)],
            cwd=PROJECT_DIR,
        )  # fmt: skip
    browser: dict[str, Any] = {}
    th = threading.Thread(target=_chromium, args=(stack.base, t_start, t_end, browser))
    th.start()
    time.sleep(max(0.0, t_start - time.time()))
    ours = Cpu(stack.ours())
    names = ("flow", "app", "redis")
    parts = {name: Cpu([pid]) for name, pid in zip(names, stack.ours(), strict=True)}
    for c in parts.values():
        c.start()
    gens = Cpu([stack.rtsp.pid, *(_chromium_pids() - before), *([pool.pid] if pool else [])])
    ours.start()
    gens.start()
    stats0 = {c: json.loads(stack.r.hget(keys.VIDEO_STATUS, c)) for c in cams}
    numsub = dict(stack.r.pubsub_numsub(*[keys.video_channel(c) for c in cams]))
    time.sleep(max(0.0, t_end - time.time()))
    cpu_ours, cpu_gen = ours.stop(), gens.stop()
    split = {f"cpu_{k}": parts[k].stop() for k in names}
    stats1 = {c: json.loads(stack.r.hget(keys.VIDEO_STATUS, c)) for c in cams}
    th.join()
    light = []
    if pool is not None:
        pool.wait(60)
        light = json.loads(out_file.read_text())
    chrome = browser.get("cams", {})
    lat = [x for v in light for x in v["lat"]]
    glass = [x for v in light for x in v["glass"]]
    chrome_lat = [x for c in cams for x in chrome.get(c, {}).get("lat", [])]
    fps = [v["fps"] for v in light] + [chrome.get(c, {}).get("frames", 0) / seconds for c in cams]

    # Rates between the two status documents' own times (each is refreshed once a second).
    def rate(c: str, k: str) -> float:
        dt = _epoch(stats1[c]["updated_at"]) - _epoch(stats0[c]["updated_at"])
        return (stats1[c][k] - stats0[c][k]) / dt if dt > 0 else float("nan")

    decoded = [rate(c, "frames_in") for c in cams]
    published = [rate(c, "frames_out") for c in cams]
    flow_lost = {
        k: sum(stats1[c][k] - stats0[c][k] for c in cams)
        for k in ("frames_in", "frames_out", "dropped")
    }
    print(
        f"  {len(cams)}x{viewers}: flow counters over the window {flow_lost}; frames skipped "
        f"by light viewers (seq gaps) {sum(v['skipped'] for v in light)} of "
        f"{sum(v['frames'] for v in light)}",
        flush=True,
    )
    return {
        "config": f"{len(cams)} cam x {viewers} viewers",
        "lat_p50": pct(lat, 0.5), "lat_p95": pct(lat, 0.95),
        "chrome_p50": pct(chrome_lat, 0.5), "chrome_p95": pct(chrome_lat, 0.95),
        "glass_p50": pct(glass, 0.5), "glass_p95": pct(glass, 0.95),
        "fps_min": min(fps), "fps_mean": statistics.mean(fps),
        "decoded_fps": statistics.mean(decoded), "published_fps": statistics.mean(published),
        **split,
        "subscriptions": sum(n for _, n in numsub.items()) / len(cams),
        "cpu_ours": cpu_ours, "cpu_gen": cpu_gen,
    }  # fmt: skip


def run_baseline(work: Path, urls: list[str], seconds: float, w: int, h: int) -> dict:
    t_start = time.time() + WARMUP_S
    t_end = t_start + seconds
    out = work / f"baseline-{len(urls)}.json"
    p = subprocess.Popen(
        [sys.executable, "-m", "bench.video", "_baseline", "--urls", ",".join(urls),
         "--t-start", str(t_start), "--t-end", str(t_end), "--width", str(w), "--height",
         str(h), "--out", str(out)],
        cwd=PROJECT_DIR,
    )  # fmt: skip
    cpu = Cpu([p.pid])
    time.sleep(max(0.0, t_start - time.time()))
    cpu.start()
    time.sleep(max(0.0, t_end - time.time()))
    used = cpu.stop()
    p.wait(60)
    res = json.loads(out.read_text())
    lat = [x for r in res for x in r["lat"]]
    glass = [x for r in res for x in r["glass"]]
    return {
        "config": f"baseline {len(urls)} cam",
        "lat_p50": pct(lat, 0.5), "lat_p95": pct(lat, 0.95),
        "glass_p50": pct(glass, 0.5), "glass_p95": pct(glass, 0.95),
        "fps_min": min(r["fps"] for r in res), "cpu_ours": used,
    }  # fmt: skip


def one_round(work: Path, args: argparse.Namespace) -> list[dict]:
    """Baseline and our stack for 1 camera (1, 5, 20 viewers), then for 4 cameras (5 viewers)."""
    rows: list[dict] = []
    one = Stack(work / "one", 1, args.fps, args.width, args.height)
    try:
        rows.append(run_baseline(work, [one.camera_url], args.seconds, args.width, args.height))
        for n in (1, 5, 20):
            rows.append(run_config(one, one.cams, n, args.seconds))
        shown = display_latency(one.base, one.cams[0], args.seconds)
        for name, lat in shown.items():
            rows.append(
                {"config": f"shown in Chromium via {name}", "display_p50": pct(lat, 0.5),
                 "display_p95": pct(lat, 0.95), "display_n": len(lat)}
            )  # fmt: skip
    finally:
        one.close()
    four = Stack(work / "four", 4, args.fps, args.width, args.height)
    try:
        urls = [four.camera_url] * 4
        rows.append(run_baseline(work, urls, args.seconds, args.width, args.height))
        rows.append(run_config(four, four.cams, 5, args.seconds))
    finally:
        four.close()
    return rows


def medians(rounds: list[list[dict]]) -> list[dict]:
    """Per configuration, the median of each figure over the rounds."""
    out = []
    for i, row in enumerate(rounds[0]):
        agg: dict[str, Any] = {"config": row["config"]}
        for k, v in row.items():
            vals = [r[i].get(k) for r in rounds]
            if isinstance(v, int | float) and all(isinstance(x, int | float) for x in vals):
                agg[k] = statistics.median(vals)
            elif k != "config":
                agg[k] = v if len(rounds) == 1 else "—"
        out.append(agg)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="role")
    v = sub.add_parser("_viewers")
    for a in ("--base", "--cams", "--out"):
        v.add_argument(a)
    v.add_argument("--n", type=int)
    b = sub.add_parser("_baseline")
    for a in ("--urls", "--out"):
        b.add_argument(a)
    for a in ("--width", "--height"):
        b.add_argument(a, type=int)
    for sp in (v, b):
        sp.add_argument("--t-start", type=float)
        sp.add_argument("--t-end", type=float)
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per config")
    p.add_argument("--rounds", type=int, default=1, help="repeat; report medians")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument(
        "--idle", action="store_true", help="only the idle cost: CPU of a flow with no capture"
    )
    args = p.parse_args(argv)
    if args.idle:
        return idle(Path(tempfile.mkdtemp(prefix="bench-video-idle-")), args.seconds)
    if args.role == "_viewers":
        return role_viewers(args)
    if args.role == "_baseline":
        return role_baseline(args)

    work = Path(tempfile.mkdtemp(prefix="bench-video-"))
    print(
        f"bench.video: {args.width}x{args.height}@{args.fps}, {args.seconds:.0f} s per "
        f"configuration, {args.rounds} round(s), {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at start; work dir {work}",
        flush=True,
    )
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(work / f"round{i}", args))
        print(f"round {i + 1} done; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = medians(rounds)
    _print(rows)
    base, ours20 = rows[0], next(r for r in rows if r["config"] == "1 cam x 20 viewers")
    print(
        f"\n1 cam x 20 viewers: glass→viewer p50 {ours20['glass_p50']:.1f} ms vs the floor's "
        f"glass→encoded {base['glass_p50']:.1f} ms; CPU {ours20['cpu_ours']:.1f}% vs "
        f"{base['cpu_ours']:.1f}% of a core (ratio {ours20['cpu_ours'] / base['cpu_ours']:.2f})"
    )
    print(f"ratio={ours20['glass_p50'] / base['glass_p50']:.3f}")
    return 0


def idle_cpu(work: Path, flow: str, seconds: float) -> float:
    """CPU seconds (user + system) of the `flow` process over `seconds` once settled, with one
    camera in the venue file that is not started (autostart off)."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    redis_proc, url = start_embedded_redis(data)
    venue = {
        "event": {"id": "bench", "name": "bench", "start": "2026-01-01T00:00:00+00:00",
                  "end": "2030-01-01T00:00:00+00:00"},
        "gates": [{"id": "g", "name": "g"}],
        "cameras": [{"id": "cam-1", "name": "cam-1", "rtsp_url": "rtsp://127.0.0.1:9/none",
                     "autostart": False}],
    }  # fmt: skip
    (work / "venue.yaml").write_text(yaml.safe_dump(venue))
    env = {"REDIS_URL": url, "DATA_DIR": str(data), "VENUE_CONFIG": str(work / "venue.yaml")}
    os.environ.update(env)
    s = Settings()
    proc = spawn(flow_argv(s, flow), child_env(s, url, **env), work / "flow.log")
    try:
        time.sleep(8)  # started, first snapshots written
        p = psutil.Process(proc.pid)
        before = sum(p.cpu_times()[:2])
        time.sleep(seconds)
        return sum(p.cpu_times()[:2]) - before
    finally:
        for q in (proc, redis_proc):
            q.send_signal(signal.SIGINT)
            q.wait(20)


def idle(work: Path, seconds: float) -> int:
    """`--idle`: the video flow with its only camera stopped against the floor, the events flow
    (which waits in `XREAD BLOCK`) idle in the same run."""
    floor = idle_cpu(work / "events", "events", seconds)
    ours = idle_cpu(work / "video", "video", seconds)
    print(
        f"idle over {seconds:.0f} s: video flow {ours:.2f} s CPU = {ours / seconds * 100:.1f} % "
        f"of a core; events flow (floor) {floor:.2f} s = {floor / seconds * 100:.1f} %"
    )
    print(f"ratio={ours / max(floor, 0.01):.2f}")
    return 0


def _print(rows: list[dict]) -> None:
    def f(v: Any) -> str:
        return "—" if v is None or v != v else f"{v:.1f}"

    print("\n| configuration | capture→viewer p50 / p95 ms | capture→shown in Chromium p50 / p95 "
          "| glass→viewer p50 / p95 | min / mean fps per viewer | decoded / published fps "
          "per camera | subscriptions per camera | CPU ours % (flow / app / redis) "
          "| CPU load generators % |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "display_p50" in r:
            continue
        print(
            f"| {r['config']} | {f(r['lat_p50'])} / {f(r['lat_p95'])} "
            f"| {f(r.get('chrome_p50'))} / {f(r.get('chrome_p95'))} "
            f"| {f(r['glass_p50'])} / {f(r['glass_p95'])} "
            f"| {f(r['fps_min'])} / {f(r.get('fps_mean'))} "
            f"| {f(r.get('decoded_fps'))} / {f(r.get('published_fps'))} "
            f"| {f(r.get('subscriptions'))} | {f(r['cpu_ours'])} ({f(r.get('cpu_flow'))} / "
            f"{f(r.get('cpu_app'))} / {f(r.get('cpu_redis'))}) "
            f"| {f(r.get('cpu_gen'))} |"
        )
    print("\n| 1 camera, 1 Chromium tab | glass → displayed p50 / p95 ms (pixel clock on screen) |")
    print("|---|---|")
    for r in rows:
        if "display_p50" in r:
            print(f"| {r['config']} | {f(r['display_p50'])} / {f(r['display_p95'])} |")


if __name__ == "__main__":
    sys.exit(main())

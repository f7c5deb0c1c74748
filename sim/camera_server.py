"""`run.py demo`'s test cameras: a supervised `sim/rtsp_server.py` per loopback port that the
venue file's cameras point at (`rtsp://127.0.0.1:8554/test` in the shipped example).

The server needs GStreamer's RTSP server under Debian's `/usr/bin/python3` (see `docs/video.md`);
when that is missing, or the port is taken, the demo runs without it and says why — the camera
then shows `error` with the reason on the Cameras page, which is what a real outage looks like.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

from core.settings import Settings
from core.venue import VenueError, venue_for
from ops.processes import PROJECT_DIR, child_env, spawn
from ops.supervisor import Child

DEBIAN_PYTHON = "/usr/bin/python3"
SERVER = PROJECT_DIR / "sim" / "rtsp_server.py"
INSTALL = (
    "apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly python3-numpy"
)


def gstreamer_problem() -> str | None:
    """None if the test camera can run here, else what is missing."""
    if not Path(DEBIAN_PYTHON).exists():
        return f"{DEBIAN_PYTHON} not found"
    try:
        out = subprocess.run(
            [DEBIAN_PYTHON, str(SERVER), "--check"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if out.returncode == 0 else (out.stderr.strip() or "GStreamer check failed")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def loopback_mounts(s: Settings) -> dict[int, list[str]]:
    """Port → mount paths of the venue's cameras served on this machine's loopback."""
    out: dict[int, list[str]] = defaultdict(list)
    for cam in venue_for(s.venue_config).cameras:
        u = urlsplit(cam.rtsp_url)
        if u.scheme == "rtsp" and u.hostname in ("127.0.0.1", "localhost") and u.path.strip("/"):
            mount = u.path.strip("/")
            if mount not in out[u.port or 554]:
                out[u.port or 554].append(mount)
    return dict(out)


def demo_cameras(s: Settings, url: str, logs: Path) -> tuple[list[Child], list[str]]:
    """Supervised test camera servers for the demo, and lines to print about them."""
    try:
        ports = loopback_mounts(s)
    except VenueError as exc:
        return [], [f"  Test camera not started: {exc}"]
    if not ports:
        return [], []
    problem = gstreamer_problem()
    if problem:
        return [], [f"  Test camera not started ({problem}). To get one: {INSTALL}"]
    children, notes = [], []
    for port, mounts in sorted(ports.items()):
        if not _port_free(port):
            notes.append(f"  Test camera not started: 127.0.0.1:{port} is already in use")
            continue
        argv = [DEBIAN_PYTHON, str(SERVER), "--port", str(port)]
        for m in mounts:
            argv += ["--mount", m]
        log = logs / f"rtsp-{port}.log"
        children.append(
            Child(
                f"test camera :{port}",
                lambda argv=argv, log=log: spawn(argv, child_env(s, url), log),
                log,
            )
        )
        notes += [f"  Test camera rtsp://127.0.0.1:{port}/{m}" for m in mounts]
    return children, notes


if __name__ == "__main__":  # `uv run python -m sim.camera_server`: can this machine run it?
    print(gstreamer_problem() or "ok: the GStreamer RTSP test camera can run here")
    sys.exit(0)

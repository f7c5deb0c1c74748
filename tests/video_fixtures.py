"""Real components for the video tests: a GStreamer RTSP test camera on loopback (run by Debian's
/usr/bin/python3, as in production demos), a venue file naming it, and a stack of redis-server +
the video flow (+ the app) shared by a test module, since starting them is the slow part.

Nothing is faked: frames come from a real H.264 RTSP server through OpenCV/FFmpeg, the real
Bytewax flow, real Redis pub/sub, and (for HTTP/browser tests) the real dashboard process.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core import keys
from core.records import FrameHeader
from ops.processes import PROJECT_DIR
from tests.conftest import API_KEY, AppProcess, FlowProcess, RedisServer, free_port, wait_for
from tests.lake_helpers import rows

DEBIAN_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = PROJECT_DIR / "sim" / "rtsp_server.py"

#: Settings that make the video flow react within seconds in tests.
VIDEO_ENV = {
    "VIDEO_STATS_WINDOW_S": "2",
    "VIDEO_OPEN_TIMEOUT_S": "2",
    "VIDEO_READ_TIMEOUT_S": "2",
    "VIDEO_STALL_S": "2",
    "VIDEO_BACKOFF_MAX_S": "1",
    "VIDEO_ERROR_AFTER": "3",
    "LAKE_FLUSH_AGE_S": "0",
    "SNAPSHOT_INTERVAL_S": "1",
}


def require_gstreamer() -> None:
    """Fail (not skip) with what to install when the RTSP test camera cannot run."""
    if not Path(DEBIAN_PYTHON).exists():
        pytest.fail(f"no {DEBIAN_PYTHON}: the RTSP test camera needs Debian's Python (.ci/run)")
    out = subprocess.run(
        [DEBIAN_PYTHON, str(SERVER_SCRIPT), "--check"], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.fail(
            "the RTSP test camera cannot run: "
            f"{out.stderr.strip()} — apt-get install gstreamer1.0-rtsp "
            "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly python3-numpy (see .ci/run)"
        )


class RtspServer:
    """`sim/rtsp_server.py` on a free loopback port; can be killed, frozen and restarted."""

    def __init__(self, log: Path, mounts: tuple[str, ...] = ("test",), fps: int = 15):
        self.port, self.mounts, self.fps, self.log = free_port(), mounts, fps, log
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str | None = None) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount or self.mounts[0]}"

    def start(self, timeout: float = 15) -> RtspServer:
        argv = [DEBIAN_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--fps", str(self.fps)]
        argv.append("--per-client")  # a stuck pipeline cannot hold every camera (rtsp_server)
        for m in self.mounts:
            argv += ["--mount", m]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
        ready, deadline = 0, time.monotonic() + timeout
        assert self.proc.stdout is not None
        while ready < len(self.mounts):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"RTSP test camera did not start: {self.log.read_text()[-2000:]}")
            readable = select.select([self.proc.stdout], [], [], left)[0]
            if readable and self.proc.stdout.readline().startswith(b"READY"):
                ready += 1
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def write_venue(path: Path, cameras: list[dict[str, Any]]) -> Path:
    doc = {
        "event": {
            "id": "video-test",
            "name": "Video test",
            "start": "2026-01-01T00:00:00+00:00",
            "end": "2030-01-01T00:00:00+00:00",
        },
        "gates": [{"id": "g1", "name": "Gate"}],
        "cameras": cameras,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class VideoStack:
    """redis-server + RTSP test camera + the video flow (+ the app if `app=True`)."""

    def __init__(self, tmp: Path, cameras: list[dict[str, Any]], app: bool = False):
        self.tmp = tmp
        self.redis_server = RedisServer(tmp / "redis")
        self.redis_server.start()
        self.r = redis.Redis.from_url(self.redis_server.url)
        self.data = tmp / "data"
        self.data.mkdir()
        self.rtsp = RtspServer(tmp / "rtsp.log").start()
        for cam in cameras:
            cam["rtsp_url"] = cam.get("rtsp_url") or self.rtsp.url()
        self.env = {
            "REDIS_URL": self.redis_server.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(write_venue(tmp / "venue.yaml", cameras)),
            **VIDEO_ENV,
        }
        self.flow: FlowProcess | None = None
        self.app: AppProcess | None = None
        try:
            self.start_flow("video-flow.log")
            if app:
                self.app = AppProcess(self.env, self.data / "app.log").wait_ready()
        except BaseException:
            self.close()
            raise

    def start_flow(self, log_name: str, timeout: float = 120) -> FlowProcess:
        """Start the video flow and wait until this process's dataflow turns (its heartbeat
        carries its pid), so the tests' waits on cameras (30 s) time the cameras, not Python
        starting. Measured under load (4 busy loops plus other test workers on 2 cores, load
        average ~20): importing `flows.video` alone took 22 s of wall time (1.9 s of CPU,
        `time uv run python -c "import flows.video"`); whole stacks took 31-85 s from start to
        a streaming cam-a, the camera itself streaming 0.5-2 s after the flow first connected
        to it; and each of 5 failing loaded runs of test_video_flow.py (+ test_video_http.py)
        had a 30 s wait fail with "status: None" (no flow running yet)."""
        self.flow = FlowProcess("video", self.env, self.data / log_name).start()
        pid = self.flow.proc.pid if self.flow.proc else None

        def up() -> bool:
            self.check_flow()
            beat = self.r.get(keys.heartbeat_key("video"))
            return beat is not None and json.loads(beat)["pid"] == pid

        wait_for(up, timeout, 0.1, "the video flow to run (its heartbeat)")
        return self.flow

    def close(self) -> None:
        if self.app is not None:
            self.app.stop()
        if self.flow is not None and self.flow.alive():
            self.flow.kill()
        self.rtsp.stop()
        self.r.close()
        self.redis_server.kill()

    # --- reading what the flow did ------------------------------------------------------------

    def check_flow(self) -> None:
        if self.flow is not None and not self.flow.alive():
            pytest.fail(f"the video flow died:\n{self.flow.log_tail()}")

    def status(self, camera_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(keys.VIDEO_STATUS, camera_id)
        return json.loads(raw) if raw else None

    def wait_state(self, camera_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.check_flow()
            st = self.status(camera_id)
            if st and st["state"] in states:
                return st
            if time.monotonic() > deadline:
                log = self.flow.log_tail(15) if self.flow else ""
                pytest.fail(
                    f"{camera_id} not {'/'.join(states)} after {timeout}s; status: {st}\n"
                    f"flow log:\n{log}\nRTSP server log:\n{self.rtsp.log.read_text()[-1500:]}"
                )
            time.sleep(0.05)

    def frames(
        self, camera_id: str, n: int, timeout: float = 15
    ) -> list[tuple[FrameHeader, bytes]]:
        """The next `n` frames published on `video:<camera_id>`."""
        ps = self.r.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(keys.video_channel(camera_id))
        got: list[tuple[FrameHeader, bytes]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(got) < n:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{len(got)}/{n} frames of {camera_id} in {timeout}s; "
                        f"status: {self.status(camera_id)}"
                    )
                msg = ps.get_message(timeout=0.5)
                if msg and msg["type"] == "message":
                    got.append(FrameHeader.unpack(msg["data"]))
        finally:
            ps.close()
        return got

    def command(self, **fields: Any) -> str:
        fields.setdefault("client_id", "test-client")
        eid = self.r.xadd(keys.VIDEO_COMMANDS, {"data": json.dumps(fields)})
        return eid.decode()

    def status_reply(self, camera_id: str | None = None, timeout: float = 5) -> list[dict]:
        """Ask for status through the command stream and collect the replies."""
        key = f"{keys.VIDEO_REPLY_PREFIX}{uuid.uuid4().hex}"
        self.command(action="status", camera_id=camera_id, reply_to=key)
        first = self.r.blpop([key], timeout=timeout)
        assert first is not None, "no status reply from the video flow"
        time.sleep(0.3)  # other cameras answer within one poll
        return [json.loads(first[1])] + [json.loads(x) for x in self.r.lrange(key, 0, -1)]

    def lake(self, sql: str) -> list[tuple]:
        return rows(self.data, sql)

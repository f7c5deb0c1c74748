"""`run.py demo` brings its own RTSP test camera: the venue file's loopback camera streams into
the dashboard, and Ctrl-C stops the camera server with everything else (no orphans).

The shipped example venue uses port 8554; this test copies it with a free port so it cannot
collide with anything else on the machine.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from core.venue import EXAMPLE_VENUE
from tests.conftest import free_port, wait_for
from tests.test_run_py import RunPy
from tests.video_fixtures import require_gstreamer

DEMO_KEY = {"X-API-Key": "demo-key"}  # what `demo` sets when API_KEYS is empty (grants all)


def test_demo_starts_a_test_camera_that_streams(tmp_path: Path) -> None:
    require_gstreamer()
    venue = yaml.safe_load(EXAMPLE_VENUE.read_text())
    port = free_port()
    venue["cameras"][0]["rtsp_url"] = f"rtsp://127.0.0.1:{port}/test"
    venue_path = tmp_path / "venue.yaml"
    venue_path.write_text(yaml.safe_dump(venue))
    demo = RunPy(tmp_path, ["demo", "--rate", "5"], API_KEYS="", VENUE_CONFIG=str(venue_path))
    try:

        def streaming() -> bool:
            assert demo.proc.poll() is None, demo.output()
            try:
                cams = httpx.get(f"{demo.base}/api/cameras", headers=DEMO_KEY, timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return False
            st = cams[0]["status"] if cams else None
            return bool(st and st["state"] == "streaming")

        # 180 s: the whole demo (Redis, five flows, the app, the simulator, the camera) once
        # took over 90 s to stream under `-n 4` on a busy 2-core machine (2026-12-04).
        wait_for(streaming, 180, 0.5, "the demo's camera to stream")
        assert f"Test camera rtsp://127.0.0.1:{port}/test" in demo.output()
        snap = httpx.get(f"{demo.base}/video/cam-main.jpg", headers=DEMO_KEY, timeout=10)
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
    finally:
        demo.stop_cleanly()  # exit 0 and no process of ours left, the camera server included

"""The video flow against a real RTSP server (GStreamer on loopback), real Redis and the lake.

One stack serves the module (in order): frames flow; an unreachable camera is in `error` with
the reason while the others stream; capture commands; the camera server killed mid-stream and
restarted; the server frozen with its connection open (the watchdog case); statistics and the
activity log in the lake; a restart of the flow keeps a stopped camera stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import cv2
import numpy as np
import psutil
import pytest

from core import keys
from core.records import CameraStatus
from sim.camera_pattern import read_stamp
from tests.conftest import wait_for
from tests.video_fixtures import VideoStack, require_gstreamer

CAMERAS = [
    {"id": "cam-a", "name": "Main", "fps": 15},
    {"id": "cam-small", "name": "Small", "fps": 5, "width": 320, "height": 240},
    {"id": "cam-off", "name": "Off at start", "fps": 15, "autostart": False},
    {"id": "cam-bad", "name": "Unreachable", "rtsp_url": "rtsp://u:pw@127.0.0.1:9/none"},
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoStack]:
    require_gstreamer()
    s = VideoStack(tmp_path_factory.mktemp("video"), [dict(c) for c in CAMERAS])
    try:
        yield s
    finally:
        s.close()


def _decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "published bytes are not a JPEG"
    return img


def test_frames_flow_decoded_once_resized_and_encoded(stack: VideoStack) -> None:
    st = stack.wait_state("cam-a", "streaming")
    CameraStatus.model_validate(st)  # the published shape is the record's
    assert st["is_active"] is True and st["rtsp_url"] == stack.rtsp.url()
    frames = stack.frames("cam-a", 20)
    seqs = [h.seq for h, _ in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    first, last = _decode(frames[0][1]), _decode(frames[-1][1])
    assert first.shape == (480, 640, 3) and frames[0][0].width == 640
    assert not np.array_equal(first, last), "the picture should move"
    # The time the test camera drew into the pixels survives H.264, OpenCV and JPEG.
    stamp = read_stamp(last)
    assert stamp is not None and abs(stamp / 1000 - frames[-1][0].captured_at) < 5
    assert all(h.captured_at <= h.encoded_at for h, _ in frames)

    # The 320x240 camera shares the same RTSP source: resized once, at its own 5 fps.
    small = stack.frames("cam-small", 3)
    assert _decode(small[0][1]).shape == (240, 320, 3)
    assert stack.wait_state("cam-small", "streaming")["target_fps"] == 5

    def fps_settled() -> dict | None:
        a, s = stack.status("cam-a"), stack.status("cam-small")
        ok = a and 11 <= a["fps_out"] <= 16 and s and 3 <= s["fps_out"] <= 6
        return (a, s) if ok else None

    wait_for(fps_settled, 15, 0.2, "fps out near the targets (15 and 5)")


def test_unreachable_camera_is_in_error_with_the_reason_others_unaffected(
    stack: VideoStack,
) -> None:
    st = stack.wait_state("cam-bad", "error")
    assert st["is_active"] is True  # capture stays on: retries go on with backoff
    assert "connection refused" in st["error_message"]
    assert "pw" not in st["error_message"] and st["rtsp_url"] == "rtsp://u:***@127.0.0.1:9/none"
    assert stack.status("cam-a")["state"] == "streaming"
    stack.frames("cam-a", 3)
    # The error feeds the alarms: an ERROR event for the camera on events:in.
    events = [json.loads(f[b"data"]) for _, f in stack.r.xrange(keys.EVENTS_IN)]
    alarm = next(e for e in events if e["source"] == "cam-bad" and e["type"] == "camera.error")
    assert alarm["level"] == "ERROR" and "connection refused" in alarm["payload"]["error"]


def test_stop_start_and_status_commands(stack: VideoStack) -> None:
    assert stack.wait_state("cam-off", "idle", "stopped")["is_active"] is False
    replies = {r["camera_id"]: r for r in stack.status_reply()}  # every camera answers
    assert set(replies) == {c["id"] for c in CAMERAS}
    assert replies["cam-a"]["state"] == "streaming"

    stack.command(action="start", camera_id="cam-off", ip="10.0.0.7", user_agent="pytest")
    stack.wait_state("cam-off", "streaming")
    stack.frames("cam-off", 3)

    stack.command(action="stop", camera_id="cam-a")
    st = stack.wait_state("cam-a", "stopped")
    assert st["is_active"] is False
    ps = stack.r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.video_channel("cam-a"))
    time.sleep(0.3)  # a frame already in the pipeline may still pass
    while ps.get_message(timeout=0.05):
        pass
    assert ps.get_message(timeout=1.0) is None, "frames kept coming after stop"
    ps.close()
    assert stack.status("cam-off")["state"] == "streaming"  # other cameras unaffected

    stack.command(action="start", camera_id="cam-a")
    stack.wait_state("cam-a", "streaming")
    stack.frames("cam-a", 5)
    [reply] = stack.status_reply("cam-a")
    assert reply["state"] == "streaming" and reply["is_active"] is True

    # Bad commands are dead letters with the reason; the flow goes on.
    stack.r.xadd(keys.VIDEO_COMMANDS, {"data": b"{not json"})
    stack.command(action="stop", camera_id="cam-nope")
    stack.command(action="stop")  # no camera

    def dead() -> list[bytes] | None:
        reasons = [f[b"reason"] for _, f in stack.r.xrange(keys.VIDEO_DEAD)]
        return reasons if len(reasons) >= 3 else None

    reasons = b" | ".join(wait_for(dead, 10, what="three dead letters"))
    assert b"Invalid JSON" in reasons and b"unknown camera 'cam-nope'" in reasons
    assert b"stop needs camera_id" in reasons
    assert stack.status("cam-a")["state"] == "streaming"


def test_camera_killed_then_restarted_streams_again(stack: VideoStack) -> None:
    stack.wait_state("cam-a", "streaming")
    before = stack.status("cam-a")["reconnects"]
    stack.rtsp.kill()
    st = stack.wait_state("cam-a", "reconnecting", "error", timeout=10)
    assert "ended" in st["error_message"] or "cannot open" in st["error_message"]
    time.sleep(2.5)  # stay down across several reconnect attempts (backoff)
    assert stack.status("cam-a")["state"] in ("reconnecting", "error")
    restarted = time.monotonic()
    stack.rtsp.start()
    # The bound: frames flow again within 5 s of the camera coming back.
    stack.frames("cam-a", 1, timeout=5)
    print(f"first frame {time.monotonic() - restarted:.2f}s after the camera came back")
    st = stack.wait_state("cam-a", "streaming")
    assert st["reconnects"] > before and st["error_message"] is None
    stack.frames("cam-small", 1)  # its connection to the same server recovered too


def test_frozen_camera_is_reopened_by_the_watchdog(stack: VideoStack) -> None:
    """SIGSTOP keeps the TCP connection open and silent: reads would block; the watchdog
    (VIDEO_STALL_S=2) drops the capture and reopens once the camera answers again."""
    stack.wait_state("cam-a", "streaming")
    stack.frames("cam-a", 2)
    stack.rtsp.freeze()
    try:
        st = stack.wait_state("cam-a", "reconnecting", "error", timeout=10)
        assert "no frame for" in st["error_message"] or "cannot open" in st["error_message"]
    finally:
        stack.rtsp.thaw()
    stack.frames("cam-a", 3, timeout=15)
    stack.wait_state("cam-a", "streaming")


def test_statistics_and_activity_log_reach_the_lake(stack: VideoStack) -> None:
    def stats() -> list[tuple] | None:
        got = stack.lake(
            "SELECT sum(frames_out), sum(reconnects), max(fps_out), max(uptime_pct) "
            "FROM camera_stats WHERE camera_id = 'cam-a'"
        )
        # Until a whole window spent streaming is stored: right after the earlier tests'
        # reconnects the first windows are partly reconnecting (a fresh-clone CI run read
        # them at once: 88 frames, uptime 88.1 %).
        ok = got[0][0] and got[0][1] and got[0][1] >= 2 and (got[0][3] or 0) > 90
        return got if ok else None

    [(frames_out, reconnects, fps_out, uptime)] = wait_for(stats, 30, 0.5, "camera_stats rows")
    # A window spent streaming: 15 fps out, streaming all the time. The upper bound is what the
    # capture's rate limiter lets through in one 2 s window (a token bucket of 15/s holding 7.5:
    # (2 x 15 + 7.5) / 2 = 18.75), reached when a loaded machine holds frames back at a window's
    # edge (16.86 and 18.19 seen with 4 test workers on 2 cores); a flow that doubled or ignored
    # the rate is far off.
    assert frames_out > 50 and reconnects >= 2 and 12 <= fps_out <= 18.75 and uptime > 90
    [(bad_errors,)] = stack.lake("SELECT sum(errors) FROM camera_stats WHERE camera_id='cam-bad'")
    assert bad_errors >= 3

    def logs() -> list[tuple] | None:
        got = stack.lake(
            "SELECT event, camera_id, client_id, ip, user_agent FROM request_logs "
            "WHERE origin = 'video:commands' ORDER BY id"
        )
        return got if len(got) >= 5 else None  # status, start, stop, start, status

    got = wait_for(logs, 20, 0.5, "capture commands in request_logs")
    assert ("capture.start", "cam-off", "test-client", "10.0.0.7", "pytest") in got
    assert ("capture.stop", "cam-a", "test-client", None, None) in got
    assert any(e == "capture.status" and cam is None for e, cam, *_ in got)
    dead = stack.lake("SELECT reason FROM dead_letters WHERE origin = 'video:commands'")
    assert len(dead) == 3


def test_restart_keeps_a_stopped_camera_stopped(stack: VideoStack) -> None:
    stack.command(action="stop", camera_id="cam-off")
    stack.wait_state("cam-off", "stopped")
    time.sleep(1.5)  # let a snapshot (SNAPSHOT_INTERVAL_S=1) record it
    assert stack.flow is not None and stack.flow.stop() == 0
    stack.r.hdel(keys.VIDEO_STATUS, "cam-off", "cam-a")
    stack.start_flow("video-flow-2.log")
    stack.wait_state("cam-a", "streaming")
    assert stack.wait_state("cam-off", "stopped")["is_active"] is False
    stack.frames("cam-a", 2)


def test_idle_flow_waits_on_commands_instead_of_polling(stack: VideoStack) -> None:
    """Issue 10 item 13: with every camera stopped the flow waited in 50 ms polls (5-6 % of a
    core here, 45-65 % on a busier machine); now each partition waits on the command stream
    (`XREAD BLOCK`, up to 250 ms, shortened only by its once-a-second status report), and a
    command still takes effect at once.

    Counted, not timed: the flow's XREAD calls on its own redis-server over 10 s (measured on
    a quiet machine: 77 for the 4 partitions, 0.10 s of CPU; polling read the commands every
    100 ms per partition, ≥ 400). CPU seconds were the measure until a fresh-clone CI run on a
    loaded machine (load 10) saw the idle flow take 1.38 s of CPU in 10 s while waiting as it
    should: the stopped cameras' statistics still reach the lake every 2 s in this stack, and
    each of those commits costs several times more CPU on a contended machine. A loaded machine
    only lowers the count."""
    stack.wait_state("cam-a", "streaming")  # the flow reads commands
    for cam in CAMERAS:
        stack.command(action="stop", camera_id=cam["id"])
    for cam in CAMERAS:
        stack.wait_state(cam["id"], "stopped", "idle")
    assert stack.flow is not None and stack.flow.proc is not None
    proc = psutil.Process(stack.flow.proc.pid)

    def xreads() -> int:
        return int(stack.r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))

    time.sleep(2)  # the last reports and a snapshot settle
    before, cpu_before = xreads(), sum(proc.cpu_times()[:2])
    time.sleep(10)
    calls, cpu = xreads() - before, sum(proc.cpu_times()[:2]) - cpu_before
    bound = len(CAMERAS) * 10 * 5  # 5 a second per partition: the 250 ms wait, plus reports
    assert calls <= bound, f"{calls} XREADs in 10 s (bound {bound}; CPU {cpu:.2f} s): polling?"
    [reply] = stack.status_reply("cam-off")  # status still answered while waiting
    assert reply["state"] in ("stopped", "idle") and reply["is_active"] is False
    stack.command(action="start", camera_id="cam-a")
    stack.wait_state("cam-a", "streaming")
    stack.frames("cam-a", 2)

"""The video flow's pure logic with real values (real numpy frames, real OpenCV, real sockets):
bad frames are skipped and logged, the fps cap, statistics windows, the activity log's parsing,
status → Redis commands and alarms, the frame header, URL redaction and diagnosis."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from connectors.redis_streams import StreamBatch
from connectors.rtsp_camera import StatsDelta, StatusReport
from connectors.video_capture import (
    CameraCapture,
    CaptureOptions,
    Frame,
    FramePump,
    RateGate,
    diagnose,
    fit,
    redact_url,
    valid_image,
)
from core import keys
from core.records import CameraStatus, FrameHeader
from flows.request_logs import parse_log_batch
from flows.video_logic import CameraWindows, encode_frame, status_commands
from sim.camera_pattern import Painter, read_stamp
from tests.conftest import free_port, wait_for


def _frame(img: np.ndarray, seq: int = 1) -> Frame:
    return Frame("cam", seq, img, 1_800_000_000.0)


def test_encode_once_resized_to_fit_with_the_header() -> None:
    img = Painter(1280, 720, 15).paint()
    enc = encode_frame(_frame(img), 640, 480, 75)
    assert enc is not None and enc.channel == "video:cam"
    header, jpeg = FrameHeader.unpack(enc.message)
    assert (header.width, header.height) == (640, 360)  # aspect kept, never stretched
    out = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == (360, 640, 3) and read_stamp(out) is not None
    assert fit(320, 240, 640, 480) == (320, 240)  # never upscaled


def test_a_bad_frame_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = np.zeros((4, 4, 7), dtype=np.float64)  # no JPEG has 7 channels of doubles
    assert not valid_image(bad) and not valid_image(None) and not valid_image(np.zeros((0, 5)))
    assert valid_image(np.zeros((2, 2, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        assert encode_frame(_frame(bad, seq=7), 640, 480, 75) is None
    assert "frame 7 not encoded" in caplog.text


def test_the_delivery_thread_survives_a_failing_frame(caplog: pytest.LogCaptureFixture) -> None:
    """The real encoder on a real bad frame raises nothing but returns None; a delivery that
    raises (here: OpenCV asked for an impossible size) is logged and the next frame goes on."""
    done: list[int | None] = []

    def deliver(f: Frame) -> int | None:
        small = cv2.resize(f.image, (4, 4))  # raises cv2.error for the empty frame
        ok, buf = cv2.imencode(".jpg", small)
        return len(buf) if ok else None

    pump = FramePump("cam", deliver, done.append)
    try:
        with caplog.at_level(logging.ERROR):
            pump.offer(_frame(np.zeros((0, 0, 3), np.uint8), seq=1))
            wait_for(lambda: len(done) == 1, 5, what="the bad frame handled")
            pump.offer(_frame(np.zeros((8, 8, 3), np.uint8), seq=2))
            wait_for(lambda: len(done) == 2, 5, what="the next frame delivered")
    finally:
        pump.close()
    assert done[0] is None and isinstance(done[1], int)
    assert "frame 1 not delivered" in caplog.text


def test_rate_gate_keeps_a_camera_at_target_and_halves_a_double_rate_one() -> None:
    rng = np.random.default_rng(1)
    same, double = RateGate(15), RateGate(15)
    t = np.cumsum(rng.normal(1 / 15, 0.01, 300).clip(0.001))  # 20 s at 15 fps with jitter
    assert sum(same.due(x) for x in t) == 300
    t2 = np.arange(600) / 30  # 20 s at 30 fps
    assert 295 <= sum(double.due(x) for x in t2) <= 310  # 15 fps, plus the first burst


def _delta(at: datetime, **kw: float) -> StatsDelta:
    base = dict(frames_in=15, frames_out=15, bytes_out=300_000, dropped=0, bad_frames=0)
    base |= dict(reconnects=0, errors=0, uptime_s=1.0, observed_s=1.0)
    base |= kw
    return StatsDelta("cam", at, **base)  # type: ignore[arg-type]


def test_camera_windows_sum_deltas_and_emit_after_grace() -> None:
    length, grace = timedelta(seconds=60), timedelta(seconds=2)
    w = CameraWindows(length, grace)
    now = datetime.now(UTC)
    current = w._start(now)
    for i in range(3):  # this minute: held until it is over
        rows, discard = w.on_item(_delta(current + timedelta(seconds=i), reconnects=i))
        assert rows == [] and discard is False
    assert w.notify_at() == current + length + grace
    restored = CameraWindows(length, grace, w.snapshot())  # what a resume starts from
    rows, discard = restored.on_eof()  # the flow stops: the open window goes out as a part
    assert discard is True and len(rows) == 1
    row = rows[0]
    assert row["frames_in"] == 45 and row["reconnects"] == 3 and row["uptime_s"] == 3.0
    assert (row["window_start"], row["window_end"]) == (current, current + length)
    # A delta measured in a window already over is emitted at once (another part).
    old = current - 2 * length
    rows, discard = w.on_item(_delta(old))
    assert [r["window_start"] for r in rows] == [old] and discard is False


def test_activity_and_commands_parse_to_rows_or_dead_letters() -> None:
    ok_cmd = json.dumps({"action": "stop", "camera_id": "cam-a", "ip": "10.0.0.1"}).encode()
    batch = StreamBatch(
        keys.VIDEO_COMMANDS,
        [
            ("1-0", ok_cmd),
            ("2-0", b'{"action":"stop","camera_id":"nope"}'),
            ("3-0", b'{"action":"explode","camera_id":"cam-a"}'),
            ("4-0", None),
            ("5-0", b"\xff\xfe"),
            ("6-0", b'{"action":"status","metadata":{"x":"' + b"a" * 20_000 + b'"}}'),
        ],
    )
    out = parse_log_batch(batch, frozenset({"cam-a"}))
    assert [r["event"] for r in out.rows] == ["capture.stop"]
    assert out.rows[0]["ip"] == "10.0.0.1" and out.rows[0]["origin"] == keys.VIDEO_COMMANDS
    reasons = [r["reason"] for r in out.dead_rows]
    assert "unknown camera 'nope'" in reasons[0] and "action" in reasons[1]
    assert "no 'data' field" in reasons[2] and "more than" in reasons[4]
    assert [r["data"] for r in out.dead_rows][1] == b'{"action":"explode","camera_id":"cam-a"}'
    assert all(c[1] == keys.VIDEO_DEAD for c in out.dead)

    act = StreamBatch(keys.ACTIVITY_IN, [("7-0", b'{"event":"room.join","room_id":"r1"}')])
    [row] = parse_log_batch(act, frozenset()).rows
    assert row["event"] == "room.join" and row["room_id"] == "r1" and row["metadata"] == "{}"


def _status(state: str) -> CameraStatus:
    now = datetime.now(UTC)
    return CameraStatus(
        camera_id="cam-a", name="A", state=state, is_active=True,  # type: ignore[arg-type]
        rtsp_url="rtsp://h/x", error_message="boom" if state == "error" else None,
        state_since=now, target_fps=15, width=640, height=480, updated_at=now,
    )  # fmt: skip


def test_status_goes_to_redis_with_replies_and_alarms() -> None:
    cmds = status_commands(StatusReport(_status("error"), "reconnecting", ("video:reply:1",)))
    names = [c[0] for c in cmds]
    assert names == ["HSET", "PUBLISH", "RPUSH", "EXPIRE", "XADD"]
    alarm = json.loads(cmds[-1][4])
    assert cmds[-1][1] == keys.EVENTS_IN
    assert (alarm["source"], alarm["type"], alarm["level"]) == ("cam-a", "camera.error", "ERROR")
    assert [c[0] for c in status_commands(StatusReport(_status("error"), "error"))] == [
        "HSET",
        "PUBLISH",
    ]  # no second alarm while it stays in error
    recovered = status_commands(StatusReport(_status("streaming"), "error"))[-1]
    assert json.loads(recovered[4])["type"] == "camera.recovered"
    # The first stream after a start also says so (an alarm of the previous run clears) ...
    first = status_commands(StatusReport(_status("streaming"), "connecting", (), True))[-1]
    assert json.loads(first[4])["payload"]["after"] == "start"
    # ... but a reconnect while running does not.
    again = status_commands(StatusReport(_status("streaming"), "reconnecting"))
    assert [c[0] for c in again] == ["HSET", "PUBLISH"]


def test_frame_header_round_trip_and_refusal() -> None:
    h = FrameHeader(seq=2**40, captured_at=1.25, encoded_at=1.5, width=640, height=360)
    back, jpeg = FrameHeader.unpack(h.pack() + b"\xff\xd8")
    assert back == h and jpeg == b"\xff\xd8"
    with pytest.raises(ValueError, match="not a Venueflow video frame"):
        FrameHeader.unpack(b"JUNK" + bytes(40))


def test_urls_are_redacted_and_failures_diagnosed() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    port = free_port()
    assert "connection refused" in diagnose(f"rtsp://127.0.0.1:{port}/x", 1)
    assert "no host" in diagnose("rtsp:///x", 1)


def test_a_restarted_capture_is_not_taken_for_a_hanging_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The watchdog's "open hangs" timer counts only an open under way. It used to count from
    the previous generation's last open, so a camera started again (or reconnecting after its
    stream ended) long after that was at once declared hanging, its fresh capture abandoned and
    a second connection opened (seen in every loaded test run: "opening the stream hangs past
    its timeout" 2-30 ms after "capture started")."""
    opts = CaptureOptions(
        open_timeout_s=0.2, read_timeout_s=0.2, stall_s=1, backoff_max_s=0.1, error_after=3
    )
    cap = CameraCapture("cam", f"rtsp://127.0.0.1:{free_port()}/x", 5, opts, lambda f: None)
    try:
        cap.start()
        wait_for(lambda: cap.counters.errors >= 1, 10, what="a failed open")
        cap.stop()
        # Past the hang threshold (2 * open timeout + backoff + 5 s) since that open began.
        time.sleep(2 * opts.open_timeout_s + opts.backoff_max_s + 5 + 0.5)
        with caplog.at_level(logging.WARNING):
            cap.start()
            run = cap._run
            cap.check()
        assert cap._run is run, "the fresh capture was abandoned"
        assert "hangs" not in caplog.text
    finally:
        cap.close()

"""Live video and the activity log over HTTP, against the real app, flow, Redis and RTSP server.

One stack serves the module: snapshots and the camera API, MJPEG, WebSocket viewers sharing
one subscription (a viewer that does not keep up skips frames, it never slows the others),
capture commands over HTTP, and `GET`/`POST /logs`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import cv2
import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core import keys
from core.records import FrameHeader, RequestLog
from tests.conftest import API_KEY, login_http, wait_for
from tests.video_fixtures import VideoStack, require_gstreamer

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoStack]:
    require_gstreamer()
    s = VideoStack(
        tmp_path_factory.mktemp("video-http"),
        [{"id": "cam-a", "name": "Main", "fps": 15}],
        app=True,
    )
    try:
        s.wait_state("cam-a", "streaming")
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def http(stack: VideoStack) -> Iterator[httpx.Client]:
    assert stack.app is not None
    with httpx.Client(base_url=stack.app.base_url, timeout=10) as c:
        login_http(c)  # video and the read APIs need a login (or an admin key)
        yield c


def _ws_url(stack: VideoStack, camera: str, query: str = "") -> str:
    assert stack.app is not None
    return stack.app.base_url.replace("http://", "ws://") + f"/video/ws/{camera}{query}"


def test_snapshot_and_camera_api(stack: VideoStack, http: httpx.Client) -> None:
    r = http.get("/video/cam-a.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    cams = http.get("/api/cameras").json()
    assert [c["camera_id"] for c in cams] == ["cam-a"]
    assert cams[0]["status"]["state"] == "streaming"
    for path in ("/video/nope.jpg", "/video/nope.mjpeg", "/api/cameras/nope"):
        r = http.get(path)
        assert r.status_code == 404 and "unknown camera 'nope'" in r.json()["detail"]


def test_mjpeg_stream_sends_jpegs_unbuffered(stack: VideoStack, http: httpx.Client) -> None:
    with http.stream("GET", "/video/cam-a.mjpeg") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        assert r.headers["content-encoding"] == "identity"  # never gzip-buffered
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            if buf.count(b"--frame") >= 4:
                break
    parts = [p for p in buf.split(b"--frame\r\n") if p]
    for part in parts[:3]:
        head, _, body = part.partition(b"\r\n\r\n")
        assert b"Content-Type: image/jpeg" in head
        n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert body[:2] == b"\xff\xd8" and body[n - 2 : n] == b"\xff\xd9"


def test_websocket_viewers_share_one_subscription_slow_ones_skip(
    stack: VideoStack,
) -> None:
    url = _ws_url(stack, "cam-a")
    # no acks: TCP backpressure only
    with connect(url + "?ack=0", additional_headers=AUTH) as noack:
        for _ in range(5):
            FrameHeader.unpack(noack.recv(timeout=2))
    with (
        connect(url, additional_headers=AUTH) as fast,
        connect(url, additional_headers=AUTH) as slow,
    ):
        got_fast: list[FrameHeader] = []
        got_slow: list[FrameHeader] = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            h, jpeg = FrameHeader.unpack(fast.recv(timeout=2))
            assert jpeg[:2] == b"\xff\xd8"
            got_fast.append(h)
            fast.send("a")  # shown: ack
            try:  # the slow viewer reads but never acks
                while True:
                    got_slow.append(FrameHeader.unpack(slow.recv(timeout=0))[0])
            except TimeoutError:
                pass
        assert len(got_fast) >= 20, f"fast viewer got {len(got_fast)} frames in 2.5 s"
        assert len(got_slow) == 2, "a viewer that does not ack gets at most 2 frames"
        # Every viewer of the app shares one Redis subscription to the camera.
        [(_, subscribers)] = stack.r.pubsub_numsub(keys.video_channel("cam-a"))
        assert subscribers == 1

        slow.send("a")  # ready again: it gets the newest frame, not the backlog
        newest = FrameHeader.unpack(slow.recv(timeout=2))[0]
        assert newest.seq > got_slow[-1].seq + 10
        assert newest.seq >= got_fast[-1].seq


def test_websocket_for_an_unknown_camera_is_closed_with_the_reason(stack: VideoStack) -> None:
    with (
        connect(_ws_url(stack, "nope"), additional_headers=AUTH) as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4404
    assert "unknown camera" in info.value.rcvd.reason


def test_capture_commands_over_http(stack: VideoStack, http: httpx.Client) -> None:
    assert http.post("/api/cameras/cam-a/stop").status_code == 401
    assert http.post("/api/cameras/cam-a/explode", headers=AUTH).status_code == 404
    assert http.post("/api/cameras/nope/stop", headers=AUTH).status_code == 404
    r = http.post("/api/cameras/cam-a/stop", headers={**AUTH, "X-Client-Id": "ops-1"})
    assert r.status_code == 202 and r.json()["action"] == "stop"
    stack.wait_state("cam-a", "stopped")
    r = http.post("/api/cameras/cam-a/status", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"]["state"] == "stopped"
    assert http.post("/api/cameras/cam-a/start", headers=AUTH).status_code == 202
    stack.wait_state("cam-a", "streaming")
    assert http.get("/video/cam-a.jpg").status_code == 200

    def logged() -> list[tuple] | None:
        got = stack.lake(
            "SELECT event, client_id, ip FROM request_logs WHERE origin = 'video:commands'"
        )
        return got if len(got) >= 3 else None

    got = wait_for(logged, 20, 0.5, "the HTTP commands in request_logs")
    assert ("capture.stop", "ops-1", "127.0.0.1") in got


def test_post_and_get_logs(stack: VideoStack, http: httpx.Client) -> None:
    body = {"event": "kiosk.open", "room_id": "hall", "metadata": {"screen": 2}}
    assert http.post("/logs", json=body).status_code == 401
    bad = http.post("/logs", json={"event": "Bad Event!", "nope": 1}, headers=AUTH)
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"event", "nope"}
    big = {"event": "x.big", "metadata": {"blob": "x" * 20_000}}
    assert http.post("/logs", json=big, headers=AUTH).status_code == 413
    ids = []
    for i in range(3):
        r = http.post("/logs", json={**body, "client_id": f"k{i}"}, headers=AUTH)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    stack.r.xadd(keys.ACTIVITY_IN, {"data": b'{"event": 5}'})  # a bad entry from any client

    def listed() -> dict | None:
        doc = http.get("/logs", params={"event": "kiosk.open"}).json()
        return doc if doc["total"] == 3 else None

    doc = wait_for(listed, 20, 0.5, "three kiosk.open records from GET /logs")
    items = [RequestLog.model_validate(it) for it in doc["items"]]
    assert [it.id for it in items] == list(reversed(ids)), (ids, doc)  # newest first
    assert items[0].ip == "127.0.0.1", items[0]
    assert (items[0].user_agent or "").startswith("python-httpx"), items[0]
    assert items[0].metadata == {"screen": 2} and items[0].room_id == "hall", items[0]

    page2 = http.get("/logs", params={"event": "kiosk.", "size": 1, "page": 2}).json()
    assert page2["total"] == 3 and [it["id"] for it in page2["items"]] == [ids[1]], page2
    assert http.get("/logs", params={"room_id": "elsewhere"}).json()["total"] == 0
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert http.get("/logs", params={"since": future}).json()["total"] == 0
    assert http.get("/logs", params={"until": future, "client_id": "k1"}).json()["total"] == 1
    for params in ({"size": 0}, {"page": 0}, {"since": "2026-01-01T00:00:00"}, {"since": "x"}):
        assert http.get("/logs", params=params).status_code == 422, params

    def dead() -> list | None:
        got = stack.lake("SELECT reason FROM dead_letters WHERE origin = 'activity:in'")
        return got or None

    assert "event" in wait_for(dead, 20, 0.5, "the bad activity entry as a dead letter")[0][0]
    assert json.loads(stack.r.xrange(keys.VIDEO_DEAD)[-1][1][b"data"]) == {"event": 5}

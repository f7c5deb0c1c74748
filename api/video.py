"""HTTP and WebSocket routes for live video and cameras (the dashboard's FastAPI app).

- `WS /video/ws/{camera_id}`: binary messages, each a 32-byte `FrameHeader` + JPEG. The client
  sends any text message after each frame it has shown (an ack); at most `WINDOW` frames are
  in flight per viewer, so a slow viewer gets the newest frame when it is ready and skips the
  rest. `?ack=0` turns acks off (TCP backpressure only).
- `GET /video/{camera_id}.mjpeg`: the fallback, `multipart/x-mixed-replace` JPEGs, sent with
  `Content-Encoding: identity` (NiceGUI's gzip would otherwise buffer the endless stream).
- `GET /video/{camera_id}.jpg`: the newest frame (waits up to 3 s for one).
- `GET /video/player.js`: the browser player (bundled, no CDN).
- `GET /api/cameras`, `GET /api/cameras/{id}`: configured cameras with their live status.
- `POST /api/cameras/{id}/{start|stop|status}`: a capture command (API key); `status` waits
  for the video flow's answer.

Every viewer of a camera shares the hub's single subscription (`live.video_hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse
from redis.exceptions import RedisError

from api import models as api_models
from api.http import ApiKeyDep, Router, redis_client
from core import keys
from core.records import FRAME_HEADER_SIZE
from core.settings import Settings
from core.venue import VenueError, venue_for
from live.redis import RedisDown, Who
from live.video_hub import hub
from live.video_rooms import refresh_presence_forever, seed_default_room, send_command

log = logging.getLogger(__name__)
router = Router(tags=["video"])

WINDOW = 2  # frames in flight per WebSocket viewer
SEND_TIMEOUT_S = 10.0  # a viewer that takes no data for this long is disconnected
PLAYER_JS = Path(__file__).resolve().parent.parent / "ui" / "static" / "video_player.js"
ACTIONS = ("start", "stop", "status")


def _unknown(camera_id: str) -> JSONResponse:
    known = ", ".join(hub.camera_ids) or "none"
    return JSONResponse(
        {"detail": f"unknown camera {camera_id!r} (the venue file lists: {known})"},
        status_code=404,
    )


# --- WebSocket ---------------------------------------------------------------------------------


class _Viewer:
    """One WebSocket viewer: a sender that always sends the newest frame when allowed."""

    def __init__(self, ws: WebSocket, acks: bool):
        self.ws, self.acks = ws, acks
        self.credit = WINDOW
        self.wake = asyncio.Event()
        self.closed = False

    async def receive_acks(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                self.credit = min(WINDOW, self.credit + 1)
                self.wake.set()
        finally:
            self.closed = True
            self.wake.set()

    async def send_frames(self, feed: Any) -> None:
        last = 0 if feed.fresh() else feed.seq  # a fresh frame is shown at once
        feed.waiters.add(self.wake)
        try:
            self.wake.set()
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                if self.closed:
                    break
                got = feed.after(last) if (self.credit > 0 or not self.acks) else None
                if got is not None:
                    last, msg = got
                    if self.acks:  # at most WINDOW frames in flight: a send never waits long
                        self.credit -= 1
                        await self.ws.send_bytes(msg)
                    else:  # TCP backpressure only: a viewer that stops reading is dropped
                        await asyncio.wait_for(self.ws.send_bytes(msg), SEND_TIMEOUT_S)
                    if feed.seq > last:
                        self.wake.set()  # a newer frame came while sending
        finally:
            feed.waiters.discard(self.wake)


@router.websocket("/video/ws/{camera_id}")
async def video_ws(ws: WebSocket, camera_id: str) -> None:
    await ws.accept()
    if not hub.known(camera_id):
        await ws.close(code=4404, reason=f"unknown camera {camera_id!r}"[:120])
        return
    viewer = _Viewer(ws, acks=ws.query_params.get("ack", "1") != "0")
    feed = await hub.acquire(camera_id)
    receiver = asyncio.create_task(viewer.receive_acks())
    try:
        await viewer.send_frames(feed)
    except (WebSocketDisconnect, TimeoutError, RuntimeError, OSError):
        pass  # the viewer went away or stopped reading: nothing to clean up beyond finally
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        hub.release(camera_id)
        with contextlib.suppress(Exception):
            await ws.close()


# --- MJPEG and snapshots -----------------------------------------------------------------------


@router.get("/video/{camera_id}.mjpeg")
async def mjpeg(camera_id: str, request: Request) -> Response:
    if not hub.known(camera_id):
        return _unknown(camera_id)
    feed = await hub.acquire(camera_id)

    async def parts():
        try:
            last = 0 if feed.fresh() else feed.seq
            while not await request.is_disconnected():
                got = await feed.next_after(last, timeout=5.0)
                if got is None:
                    continue
                last, msg = got
                jpeg = msg[FRAME_HEADER_SIZE:]
                yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                    len(jpeg),
                    jpeg,
                )
        finally:
            hub.release(camera_id)

    return StreamingResponse(
        parts(),
        media_type="multipart/x-mixed-replace; boundary=frame",
        headers={"Content-Encoding": "identity", "Cache-Control": "no-store"},
    )


@router.get("/video/{camera_id}.jpg")
async def snapshot(camera_id: str) -> Response:
    if not hub.known(camera_id):
        return _unknown(camera_id)
    feed = await hub.acquire(camera_id)
    try:
        got = (0, feed.message) if feed.fresh() else await feed.next_after(feed.seq, 3.0)
    finally:
        hub.release(camera_id)
    if got is None or got[1] is None:
        status = await _status(camera_id)
        why = (status or {}).get("error_message") or f"state {(status or {}).get('state', '?')}"
        return JSONResponse({"detail": f"no frame from {camera_id} in 3 s ({why})"}, 503)
    return Response(
        got[1][FRAME_HEADER_SIZE:], media_type="image/jpeg", headers={"Cache-Control": "no-store"}
    )


@router.get("/video/player.js", include_in_schema=False)
async def player_js() -> Response:
    return Response(PLAYER_JS.read_bytes(), media_type="text/javascript")


# --- cameras and commands ----------------------------------------------------------------------


async def _status(camera_id: str) -> dict[str, Any] | None:
    try:
        raw = await redis_client().hget(keys.VIDEO_STATUS, camera_id)
    except (RedisError, OSError, TimeoutError):
        return None
    return json.loads(raw) if raw else None


@router.get("/api/cameras", response_model=list[api_models.CameraItem])
async def list_cameras() -> JSONResponse:
    try:
        raw = await redis_client().hgetall(keys.VIDEO_STATUS)
    except (RedisError, OSError, TimeoutError) as exc:
        return JSONResponse({"detail": f"redis unavailable: {exc}"}, status_code=503)
    statuses = {k.decode(): json.loads(v) for k, v in raw.items()}
    return JSONResponse(
        [
            {"camera_id": c, "viewers": hub.viewers(c), "status": statuses.get(c)}
            for c in hub.camera_ids
        ]
    )


@router.get("/api/cameras/{camera_id}", response_model=api_models.CameraItem)
async def get_camera(camera_id: str) -> JSONResponse:
    if not hub.known(camera_id):
        return _unknown(camera_id)
    return JSONResponse(
        {
            "camera_id": camera_id,
            "viewers": hub.viewers(camera_id),
            "status": await _status(camera_id),
        }
    )


@router.post(
    "/api/cameras/{camera_id}/{action}",
    status_code=202,
    response_model=api_models.CaptureQueued,
    responses={
        200: {"model": api_models.CaptureStatusReply},
        **{c: {"model": api_models.Problem} for c in (404, 503, 504)},
    },
)
async def post_command(
    camera_id: str,
    action: str,
    request: Request,
    _key: ApiKeyDep,
) -> JSONResponse:
    """Queue a capture command (202 with its id); `status` answers with the flow's reply."""
    if action not in ACTIONS:
        return JSONResponse(
            {"detail": f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"}, 404
        )
    if not hub.known(camera_id):
        return _unknown(camera_id)
    who = Who.of(
        request.headers.get("x-client-id"),
        request.client.host if request.client else None,
        request.headers.get("user-agent"),
    )
    reply_to = f"{keys.VIDEO_REPLY_PREFIX}{uuid.uuid4().hex}" if action == "status" else None
    try:
        eid = await send_command(action, camera_id, who, reply_to=reply_to)  # type: ignore[arg-type]
        if reply_to is None:
            return JSONResponse({"id": eid, "action": action, "camera_id": camera_id}, 202)
        got = await redis_client().blpop([reply_to], timeout=3)
    except (RedisDown, RedisError, OSError, TimeoutError) as exc:
        return JSONResponse({"detail": f"redis unavailable: {exc}"}, 503)
    if got is None:
        return JSONResponse(
            {"detail": "the video flow did not answer within 3 s (is it running?)", "id": eid}, 504
        )
    return JSONResponse({"id": eid, "status": json.loads(got[1])})


async def start(settings: Settings) -> None:
    """Start the hub for the venue file's cameras, the default room and presence refresh
    (from `app.on_startup`). A venue file that cannot be read leaves video empty, not the app
    down: the Cameras page says why."""
    try:
        camera_ids = [c.id for c in venue_for(settings.venue_config).cameras]
    except VenueError as exc:
        log.error("video: %s; no cameras shown", exc)
        camera_ids = []
    await hub.start(settings.effective_redis_url, camera_ids)
    await seed_default_room(camera_ids)
    hub.add_task(refresh_presence_forever(), "room-presence")


async def stop() -> None:
    await hub.stop()

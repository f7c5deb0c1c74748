"""The dashboard's video hub: one Redis subscription per watched camera, fanned out to every
viewer; plus the live camera status, rooms and members the video pages show.

Why this shape (go2rtc/Frigate's rule: one camera connection, any number of viewers):
- The video flow decodes and encodes each frame once and PUBLISHes it on `video:<camera_id>`.
  This process subscribes to a camera's channel when its first viewer arrives and unsubscribes
  `LINGER_S` after the last one leaves, so an unwatched camera costs the dashboard nothing.
- Each camera's `Feed` keeps the newest few messages. Viewers (WebSockets, MJPEG responses)
  each wait on their own wake-up event; a viewer that keeps up gets every frame in order (also
  the two a camera sometimes delivers within a millisecond), a viewer that fell more than
  `CATCH_UP` frames behind jumps to the newest: a slow viewer skips frames, it never grows a
  buffer or delays anyone else.
- The reader loop does nothing but hand messages to feeds (status messages are small and rare),
  so a burst of frames never backs up Redis's output buffer for this client.
- Status, rooms and members are folded into `model`. The subscription, its seed (statuses, rooms
  and members, read again after every reconnect), the reconnect and `changed` (at most 4 times
  a second for all pages together) are the `live.subscriber.LiveSubscriber` every live model
  shares; its emitter also unsubscribes cameras nobody watched for `LINGER_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from core import keys
from core.records import Room, RoomMember
from live.subscriber import LiveSubscriber

log = logging.getLogger(__name__)

LINGER_S = 10.0
RING = 4  # messages a feed keeps
CATCH_UP = 2  # a viewer at most this many frames behind gets the next one, else the newest


class Feed:
    """The newest frame message of one camera, and who waits for the next one."""

    def __init__(self, camera_id: str):
        self.camera_id = camera_id
        self.ring: deque[tuple[int, bytes]] = deque(maxlen=RING)
        self.message: bytes | None = None
        self.seq = 0  # counts messages received by this process
        self.received_at = 0.0  # monotonic
        self.refs = 0
        self.waiters: set[asyncio.Event] = set()
        self.release_at: float | None = None

    def push(self, message: bytes) -> None:
        self.message, self.received_at = message, time.monotonic()
        self.seq += 1
        self.ring.append((self.seq, message))
        for ev in self.waiters:
            ev.set()

    def clear(self) -> None:
        self.message = None
        self.ring.clear()

    def after(self, last: int) -> tuple[int, bytes] | None:
        """What to send a viewer whose last frame was `last`: the next frame in order while it
        keeps up, the newest once it is more than CATCH_UP behind; None if nothing is newer."""
        if self.seq <= last or not self.ring:
            return None
        if self.seq - last <= CATCH_UP:
            for item in self.ring:
                if item[0] > last:
                    return item
        return self.ring[-1]

    def fresh(self, max_age: float = 2.0) -> bool:
        return self.message is not None and time.monotonic() - self.received_at <= max_age

    async def next_after(self, seq: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest message once it is newer than `seq`, or None after `timeout`."""
        got = self.after(seq)
        if got is not None:
            return got
        ev = asyncio.Event()
        self.waiters.add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self.waiters.discard(ev)
        return self.after(seq)


@dataclass
class VideoModel:
    """What the video pages show live; mutated only on the event loop."""

    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → CameraStatus JSON
    rooms: dict[str, Room] = field(default_factory=dict)
    members: dict[str, dict[str, RoomMember]] = field(default_factory=dict)
    connected: bool = False
    version: int = 0

    def live_members(self, room_id: str) -> list[RoomMember]:
        """Members refreshed within the TTL, by join time."""
        now = datetime.now(UTC)
        fresh = [
            m
            for m in self.members.get(room_id, {}).values()
            if (now - m.last_seen).total_seconds() <= keys.ROOM_MEMBER_TTL_S
        ]
        return sorted(fresh, key=lambda m: (m.joined_at, m.member_id))


model = VideoModel()


def _members(raw: dict[bytes, bytes]) -> dict[str, RoomMember]:
    out = {}
    for k, v in raw.items():
        with contextlib.suppress(ValidationError):
            out[k.decode()] = RoomMember.model_validate_json(v)
    return out


class VideoHub:
    """Feeds per camera over one Redis pub/sub connection; status, rooms and members."""

    def __init__(self) -> None:
        self.camera_ids: list[str] = []
        self.feeds: dict[str, Feed] = {}
        self.live = LiveSubscriber(
            "video-hub",
            model,
            self._handle,
            channels=[keys.VIDEO_HUB, keys.LIVE_CAMERAS, keys.LIVE_ROOMS],
            seed=self._seed,
            on_tick=self._unsubscribe_idle,
        )

    # --- viewers -------------------------------------------------------------------------------

    def known(self, camera_id: str) -> bool:
        return camera_id in self.feeds

    async def acquire(self, camera_id: str) -> Feed:
        """Count a viewer of the camera; subscribe to its frames if nobody watched it."""
        feed = self.feeds[camera_id]
        feed.refs += 1
        feed.release_at = None
        await self.live.add_channel(keys.video_channel(camera_id))
        return feed

    def release(self, camera_id: str) -> None:
        feed = self.feeds.get(camera_id)
        if feed is None:
            return
        feed.refs = max(0, feed.refs - 1)
        if feed.refs == 0:
            feed.release_at = time.monotonic() + LINGER_S

    def viewers(self, camera_id: str) -> int:
        feed = self.feeds.get(camera_id)
        return feed.refs if feed else 0

    async def _unsubscribe_idle(self) -> None:
        now = time.monotonic()
        for cam, feed in self.feeds.items():
            if feed.refs == 0 and feed.release_at is not None and now >= feed.release_at:
                feed.release_at = None
                if self.live.subscribed_to(keys.video_channel(cam)):
                    feed.clear()
                    await self.live.remove_channel(keys.video_channel(cam))

    # --- the reader ----------------------------------------------------------------------------

    async def _seed(self, r: aioredis.Redis) -> None:
        statuses = await r.hgetall(keys.VIDEO_STATUS)
        for k, v in statuses.items():
            with contextlib.suppress(ValueError):
                model.cameras[k.decode()] = json.loads(v)
        rooms = await r.hgetall(keys.ROOMS)
        model.rooms = {}
        for v in rooms.values():
            with contextlib.suppress(ValidationError):
                room = Room.model_validate_json(v)
                model.rooms[room.id] = room
        for room_id in list(model.rooms):
            model.members[room_id] = _members(await r.hgetall(keys.room_members_key(room_id)))
        model.version += 1

    async def reload_room(self, room_id: str) -> None:
        """Re-read one room and its members (after a `live:rooms` message)."""
        r = self.live.redis
        if r is None:
            return
        raw = await r.hget(keys.ROOMS, room_id)
        if raw is None:
            model.rooms.pop(room_id, None)
            model.members.pop(room_id, None)
        else:
            with contextlib.suppress(ValidationError):
                model.rooms[room_id] = Room.model_validate_json(raw)
            model.members[room_id] = _members(await r.hgetall(keys.room_members_key(room_id)))
        model.version += 1

    def _handle(self, channel: str, data: bytes) -> None:
        """Frames go to their camera's feed as they are; the rest is folded into `model`."""
        if (camera_id := keys.camera_of_channel(channel)) is not None:
            feed = self.feeds.get(camera_id)
            if feed is not None:
                feed.push(data)
        elif channel == keys.LIVE_CAMERAS:
            try:
                doc = json.loads(data)
                model.cameras[str(doc["camera_id"])] = doc
                model.version += 1
            except (ValueError, KeyError, TypeError):
                log.warning("live:cameras: bad message ignored")
        elif channel == keys.LIVE_ROOMS:
            try:
                room_id = str(json.loads(data)["room_id"])
            except (ValueError, KeyError, TypeError):
                return
            self.live.spawn(self.reload_room(room_id), f"reload-room-{room_id}")

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, url: str, camera_ids: list[str]) -> None:
        if self.live.running:
            return
        self.camera_ids = list(camera_ids)
        self.feeds = {c: Feed(c) for c in camera_ids}
        await self.live.start(url)

    def add_task(self, coro: Any, name: str) -> None:
        """Run a background task for as long as the hub runs (presence refresh)."""
        self.live.spawn(coro, name)

    async def stop(self) -> None:
        await self.live.stop()


hub = VideoHub()
changed = hub.live.changed  # fired (no arguments) when `model` moved, throttled: read it then

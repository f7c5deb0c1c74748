"""Streaming rooms, presence and capture commands, as the dashboard does them.

Everything here writes Redis only (the UI never writes the lake): rooms live in the hash
`rooms`, members in `room:<id>:members` (each change announced on `live:rooms`), capture
commands go to `video:commands` for the video flow, and activity (connects, joins, leaves, room
changes) goes to `activity:in`, from where the video flow stores it in the lake's
`request_logs`. Capture commands carry who sent them and are logged by the flow from
`video:commands` itself, so they are never logged twice.

Presence survives a crash of this process: members are refreshed every `REFRESH_S` while
their tab is open and read as gone once `ROOM_MEMBER_TTL_S` passes without a refresh (any
dashboard process prunes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from datetime import UTC, datetime

from pydantic import ValidationError
from redis.exceptions import RedisError

from core import keys
from core.records import CaptureAction, CaptureCommand, Room, RoomMember
from live.redis import RedisDown, Who, log_activity, redis_client, xadd_json
from live.video_hub import model

log = logging.getLogger(__name__)

REFRESH_S = 10.0
DEFAULT_ROOM = "main"


#: Members this process keeps refreshed: (room id, member id) → member.
_local: dict[tuple[str, str], RoomMember] = {}


async def send_command(
    action: CaptureAction,
    camera_id: str | None,
    who: Who,
    room_id: str | None = None,
    reply_to: str | None = None,
) -> str:
    """XADD a capture command for the video flow; its entry id (RedisDown if Redis is down)."""
    cmd = CaptureCommand(
        action=action,
        camera_id=camera_id,
        reply_to=reply_to,
        client_id=who.client_id,
        ip=who.ip,
        user_agent=who.user_agent,
        room_id=room_id,
        ts=datetime.now(UTC),
    )
    return await xadd_json(keys.VIDEO_COMMANDS, cmd.model_dump_json(exclude_none=True))


async def _announce(room_id: str) -> None:
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await redis_client().publish(keys.LIVE_ROOMS, f'{{"room_id":"{room_id}"}}')


def _slug(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "room"
    return f"{base}-{secrets.token_hex(2)}"


async def create_room(name: str, camera_ids: list[str], who: Who, by: str | None) -> Room:
    """Validate and store a room (ValueError with the reason for bad input)."""
    unknown = [c for c in camera_ids if c not in model.cameras and c not in _known_cameras]
    if unknown:
        raise ValueError(f"unknown camera(s): {', '.join(unknown)}")
    try:
        room = Room(
            id=_slug(name),
            name=name.strip(),
            camera_ids=list(dict.fromkeys(camera_ids)),
            created_at=datetime.now(UTC),
            created_by=(by or None),
        )
    except ValidationError as exc:
        raise ValueError("; ".join(e["msg"] for e in exc.errors())) from None
    try:
        await redis_client().hset(keys.ROOMS, room.id, room.model_dump_json())
    except (RedisError, OSError, TimeoutError) as exc:
        raise RedisDown(f"redis unavailable: {exc}") from exc
    model.rooms[room.id] = room
    model.version += 1
    await _announce(room.id)
    await log_activity("room.create", who, room.id, metadata={"name": room.name})
    return room


async def delete_room(room_id: str, who: Who) -> None:
    try:
        r = redis_client()
        await r.hdel(keys.ROOMS, room_id)
        await r.delete(keys.room_members_key(room_id))
    except (RedisError, OSError, TimeoutError) as exc:
        raise RedisDown(f"redis unavailable: {exc}") from exc
    model.rooms.pop(room_id, None)
    model.version += 1
    await _announce(room_id)
    await log_activity("room.delete", who, room_id)


async def join(room_id: str, member_id: str, name: str, who: Who) -> RoomMember:
    now = datetime.now(UTC)
    member = RoomMember(
        member_id=member_id,
        name=name.strip()[:80] or "Guest",
        joined_at=now,
        last_seen=now,
        ip=who.ip,
        user_agent=who.user_agent,
    )
    try:
        await redis_client().hset(
            keys.room_members_key(room_id), member_id, member.model_dump_json()
        )
    except (RedisError, OSError, TimeoutError) as exc:
        raise RedisDown(f"redis unavailable: {exc}") from exc
    _local[(room_id, member_id)] = member
    model.members.setdefault(room_id, {})[member_id] = member
    model.version += 1
    await _announce(room_id)
    await log_activity("room.join", who, room_id, metadata={"name": member.name})
    return member


async def leave(room_id: str, member_id: str, who: Who, reason: str = "left") -> None:
    member = _local.pop((room_id, member_id), None)
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await redis_client().hdel(keys.room_members_key(room_id), member_id)
    model.members.get(room_id, {}).pop(member_id, None)
    model.version += 1
    await _announce(room_id)
    meta = {"reason": reason, **({"name": member.name} if member else {})}
    await log_activity("room.leave", who, room_id, metadata=meta)


async def refresh_presence_once(now: datetime | None = None) -> None:
    """Refresh this process's members in Redis, drop stale members of every room (tabs of a
    dashboard that crashed), and re-read every room's members (so `last_seen` refreshed by
    other dashboard processes is seen here too)."""
    r = redis_client()
    now = now or datetime.now(UTC)
    for (room_id, member_id), m in list(_local.items()):
        fresh = m.model_copy(update={"last_seen": now})
        _local[(room_id, member_id)] = fresh
        model.members.setdefault(room_id, {})[member_id] = fresh
        await r.hset(keys.room_members_key(room_id), member_id, fresh.model_dump_json())
    for room_id in list(model.rooms):
        raw = await r.hgetall(keys.room_members_key(room_id))
        members = {}
        for k, v in raw.items():
            with contextlib.suppress(ValidationError):
                members[k.decode()] = RoomMember.model_validate_json(v)
        stale = [
            mid
            for mid, m in members.items()
            if (now - m.last_seen).total_seconds() > keys.ROOM_MEMBER_TTL_S
        ]
        if stale:
            await r.hdel(keys.room_members_key(room_id), *stale)
            await _announce(room_id)
        model.members[room_id] = {k: m for k, m in members.items() if k not in stale}
    model.version += 1


async def refresh_presence_forever() -> None:
    while True:
        await asyncio.sleep(REFRESH_S)
        try:
            await refresh_presence_once()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("presence refresh failed (%s); will retry", exc)


_known_cameras: set[str] = set()


async def seed_default_room(camera_ids: list[str]) -> None:
    """A first room with every camera, once per Redis (so a new install has a room to open)."""
    _known_cameras.update(camera_ids)
    if not camera_ids:
        return
    try:
        r = redis_client()
        if await r.set(keys.ROOMS_SEEDED, "1", nx=True):
            room = Room(
                id=DEFAULT_ROOM,
                name="All cameras",
                camera_ids=camera_ids[:16],
                created_at=datetime.now(UTC),
                created_by="venueflow",
            )
            await r.hsetnx(keys.ROOMS, room.id, room.model_dump_json())
            await _announce(room.id)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("default room not created (%s)", exc)

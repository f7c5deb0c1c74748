"""The dashboard process's Redis: one shared client, and the writes every part of it makes.

Pages, live models, the HTTP routes and the login all talk to Redis through `redis_client()`
(one connection pool, made in the running event loop). `xadd_json` is how they append a record
to a stream; `log_activity` appends to the activity log (`activity:in`, stored by the video
flow in the lake's `request_logs`), best effort.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core import keys
from core.records import ActivityIn
from core.redis_conn import connect_async
from core.settings import get_settings

log = logging.getLogger(__name__)

_redis: aioredis.Redis | None = None


def redis_client() -> aioredis.Redis:
    """The app's shared Redis client (a connection pool), made in the running event loop."""
    global _redis
    if _redis is None:
        _redis = connect_async(
            get_settings().effective_redis_url,
            socket_connect_timeout=2,
            socket_timeout=3,
            health_check_interval=15,
        )
    return _redis


async def close_redis() -> None:
    global _redis
    if _redis is not None:
        await _redis.aclose()
        _redis = None


def redis_reason(exc: BaseException) -> str:
    """What a client is told when Redis could not be reached."""
    return f"redis unavailable: {type(exc).__name__}: {exc}"


class RedisDown(RuntimeError):
    """Redis could not be written; the message says so (pages show it, the API answers 503)."""


@dataclass(frozen=True, slots=True)
class Who:
    """Who did something: for the activity log and the commands."""

    client_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def of(cls, client_id: str | None, ip: str | None, user_agent: str | None) -> Who:
        return cls(client_id or None, (ip or "")[:64] or None, (user_agent or "")[:512] or None)


async def xadd_json(stream: str, doc: str) -> str:
    """XADD one JSON record as the `data` field; RedisDown with the reason on failure."""
    try:
        eid = await redis_client().xadd(stream, {"data": doc})
    except (RedisError, OSError, TimeoutError) as exc:
        raise RedisDown(redis_reason(exc)) from exc
    return eid.decode() if isinstance(eid, bytes) else str(eid)


async def log_activity(
    event: str,
    who: Who,
    room_id: str | None = None,
    camera_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str | None:
    """XADD one activity record; a Redis outage is logged, never raised (it is best effort)."""
    rec = ActivityIn(
        event=event,
        ts=datetime.now(UTC),
        client_id=who.client_id,
        ip=who.ip,
        user_agent=who.user_agent,
        room_id=room_id,
        camera_id=camera_id,
        metadata=metadata or {},
    )
    try:
        return await xadd_json(keys.ACTIVITY_IN, rec.model_dump_json(exclude_none=True))
    except RedisDown as exc:
        log.warning("activity %s not logged: %s", event, exc)
        return None

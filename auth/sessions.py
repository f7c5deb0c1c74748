"""Dashboard sessions in Redis, so every replica of the dashboard knows every login.

NiceGUI keys `app.storage.user` by the id in its signed session cookie and keeps each user's
storage in a dict of the process (`app.storage._users`). `use_redis_sessions` makes each such
storage a `RedisSession`: loaded from the Redis string `keys.session_key(id)` when the process
first meets the session, written back (whole, JSON, coalesced, in order) on every change, with
a TTL of `SESSION_MAX_AGE_S` + 1 h (a login cannot outlive it anyway, so Redis never fills
with dead sessions), deleted when emptied (logout and the login's session rekey empty the old one).

Coherence between replicas: the balancer keeps a browser on one replica, so the copy in its
memory is normally the only one in use. After a failover (or a balancer restart) another
replica may hold an older copy, loaded when it last served that browser: `refresh` re-reads
the session from Redis at every logged-in request and WebSocket handshake the auth middleware
checks (one GET, ~0.1 ms on loopback), before the login is judged — an old `seen_at` must not
end the login as idle. A refresh never overwrites a change of this process not yet written.

Why not NiceGUI's own Redis storage (`NICEGUI_REDIS_URL`): it opens a connection pool and a
pub/sub subscription for every session it ever sees and never closes them (NiceGUI 3.18 does
not prune `app.storage._users`), so every cookieless request — each health check of the
balancer, each new browser — would cost the process a Redis connection for good. Here each
process has one connection pool (`live.redis.redis_client`) for all sessions.

The key holds the SHA-256 of the session id, not the id: reading Redis does not hand out
cookies (they are signed with `STORAGE_SECRET` anyway). Session ids are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from nicegui.persistence import PersistentDict
from redis.exceptions import RedisError

from auth.settings import get_auth_settings
from core import keys
from live.redis import redis_client, redis_reason

log = logging.getLogger(__name__)

#: A session key outlives the longest login by this much, so that the app, not Redis, ends a
#: login and can tell the browser why (`expired`).
TTL_MARGIN_S = 3600


def session_key_of(session_id: str) -> str:
    """The Redis key of a session (its id hashed: see the module docstring)."""
    return keys.session_key(hashlib.sha256(session_id.encode()).hexdigest()[:32])


class RedisSession(PersistentDict):
    """One browser session's `app.storage.user`, kept in Redis."""

    def __init__(self, session_id: str) -> None:
        self.key = session_key_of(session_id)
        self._loading = False
        self._dirty = False
        self._changes = 0  # local changes so far: a refresh that raced one is dropped
        self._writer: asyncio.Task | None = None
        super().__init__(data={}, on_change=self._changed)

    # -- reading ------------------------------------------------------------------------------

    def _replace(self, data: dict[str, Any]) -> None:
        self._loading = True
        try:
            for k in set(self) - data.keys():
                del self[k]
            self.update(data)
        finally:
            self._loading = False

    async def _load(self) -> None:
        changes = self._changes
        try:
            raw = await redis_client().get(self.key)
        except (RedisError, OSError) as exc:
            log.warning("a session could not be read from Redis (%s)", redis_reason(exc))
            return
        pending = self._dirty or (self._writer is not None and not self._writer.done())
        if changes != self._changes or pending:
            return  # this process changed it meanwhile: its copy is the newer one
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            log.warning("a session in Redis is not JSON; it is treated as empty")
            data = {}
        if data != self:
            self._replace(data)

    async def initialize(self) -> None:
        await self._load()

    def initialize_sync(self) -> None:  # NiceGUI calls it only for `app.storage.general`
        raise NotImplementedError("RedisSession is only made in the event loop")

    async def refresh(self) -> None:
        """Take Redis's copy if another replica changed the session (see the docstring)."""
        await self._load()

    # -- writing ------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self._loading:
            return
        self._changes += 1
        self._dirty = True
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        """Write until no change is left (one writer per session: writes stay in order)."""
        ttl = int(get_auth_settings().session_max_age_s) + TTL_MARGIN_S
        while self._dirty:
            self._dirty = False
            try:
                if self:
                    await redis_client().set(self.key, json.dumps(dict(self)), ex=ttl)
                else:
                    await redis_client().delete(self.key)
            except (RedisError, OSError) as exc:
                log.warning("a session could not be written to Redis (%s)", redis_reason(exc))

    async def flush(self) -> None:
        """Until this process's changes are in Redis."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        await self.flush()


async def create_user_storage(session_id: str) -> None:
    """`app.storage._create_user_storage` with a `RedisSession` (see `use_redis_sessions`)."""
    from nicegui import app

    storage = RedisSession(session_id)
    app.storage._users[session_id] = storage
    await storage.initialize()


def use_redis_sessions() -> None:
    """Keep every dashboard session in Redis from now on (before the app serves a request).

    NiceGUI has no public hook for the user storage's kind; its middleware, ours and the login
    all make a session's storage through `app.storage._create_user_storage`."""
    from nicegui import app

    app.storage._create_user_storage = create_user_storage  # type: ignore[method-assign]


async def refresh(storage: Any) -> None:
    if isinstance(storage, RedisSession):
        await storage.refresh()


async def flush(storage: Any) -> None:
    if isinstance(storage, RedisSession):
        await storage.flush()

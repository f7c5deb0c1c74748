"""HTTP API on NiceGUI's FastAPI app: health, event ingest, event listing.

Ingest only validates and `XADD`s (design card): the events flow writes the lake, so an accepted
event is durable in Redis before we answer 202, and the API never writes the lake itself.
Listing reads the seed-003 cache (`events:recent`) for the plain first page and the lake for
everything else. Errors are answered as JSON with a reason, never as a stack trace.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.types import Message

from core import keys
from core.auth_keys import ApiKey
from core.keys import NOTIFIER_HEARTBEAT
from core.processes import FLOWS as FLOW_MODULES
from core.records import LEVELS, Event, event_stream_for, field_errors, stored_json
from core.settings import Settings, get_settings
from ui import api_models, auth
from ui.lake_queries import EventQuery, LakeUnavailable, fetch_events, newest_first

log = logging.getLogger(__name__)

#: Processes whose heartbeat /health reports: every flow run.py runs, and the notifier (an
#: alarm that cannot reach anyone is an outage too).
FLOWS: tuple[str, ...] = (*FLOW_MODULES, NOTIFIER_HEARTBEAT)

_redis: aioredis.Redis | None = None


def redis_client() -> aioredis.Redis:
    """The app's shared Redis client (a connection pool), made in the running event loop."""
    global _redis
    if _redis is None:
        _redis = aioredis.Redis.from_url(
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


def _redis_reason(exc: BaseException) -> str:
    return f"redis unavailable: {type(exc).__name__}: {exc}"


# --- health -------------------------------------------------------------------------------------


def _heartbeat(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"alive": False, "last_heartbeat": None}
    try:
        beat = json.loads(raw)
        at = datetime.fromisoformat(str(beat["at"])).astimezone(UTC)
        return {
            "alive": True,
            "last_heartbeat": at.isoformat().replace("+00:00", "Z"),
            "age_s": round((datetime.now(UTC) - at).total_seconds(), 3),
            "pid": beat.get("pid"),
        }
    except (ValueError, KeyError, TypeError):
        return {"alive": True, "last_heartbeat": None}


async def health() -> JSONResponse:
    """200 when Redis answers and every flow's heartbeat key is present, else 503 (same body)."""
    wanted = get_settings().health_flows
    flows = [f.strip() for f in wanted.split(",") if f.strip()] if wanted else list(FLOWS)
    body: dict[str, Any] = {"ok": False, "redis": {"ok": False}, "flows": {}}
    try:
        r = redis_client()
        await r.ping()
        beats = await r.mget([keys.heartbeat_key(f) for f in flows])
        body["redis"] = {"ok": True}
        body["flows"] = {f: _heartbeat(b) for f, b in zip(flows, beats, strict=True)}
    except (RedisError, OSError, TimeoutError) as exc:
        body["redis"] = {"ok": False, "error": _redis_reason(exc)}
        body["flows"] = {f: {"alive": False, "last_heartbeat": None} for f in flows}
    body["ok"] = body["redis"]["ok"] and all(f["alive"] for f in body["flows"].values())
    return JSONResponse(body, status_code=200 if body["ok"] else 503)


# --- ingest -------------------------------------------------------------------------------------


class _Refusal(Exception):
    """An early answer with a JSON body (turned into a response by `_refusal_handler`)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("detail"))
        self.status, self.body = status, body


async def _refusal_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, _Refusal)
    return JSONResponse(exc.body, status_code=exc.status)


def require_api_key(request: Request) -> ApiKey:
    """The caller's API key grant (kinds, bound gate). The auth middleware has checked it
    against the route's rule in `ui.auth.ROUTES` already; this checks again by the matched
    route (so a route is never open if the middleware is missing) and hands it to the handler.
    `API_KEYS` keys grant every kind; managed keys come from `run.py keys` or /users."""
    key = getattr(request.state, "api_key", None)
    if isinstance(key, ApiKey):
        return key
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    rule = auth.rule_for_route(path, request.method)
    if rule is None or not rule.keys:
        raise _Refusal(403, {"detail": f"{request.method} {path} accepts no API key"})
    got = auth.check_api_key(rule, request.headers.get("x-api-key"), f"{request.method} {path}")
    if isinstance(got, auth.Denied):
        raise _Refusal(got.status, {"detail": got.detail})
    return got


class BodyTooLarge(_Refusal):
    """413: the request body is (or declares to be) larger than the route's limit."""

    def __init__(self, what: str, limit: int):
        super().__init__(413, {"detail": f"{what} is larger than the limit of {limit} bytes"})


def limited(request: Request, limit: int, what: str = "request body") -> Request:
    """The same request whose body raises `BodyTooLarge` as soon as more than `limit` bytes
    have arrived: bytes are counted as they stream in (chunked uploads declare no length), so
    whatever reads it — `read_body`, or Starlette's multipart parser, which spools file parts
    to a temporary file — never reads, buffers or writes more than `limit` bytes. Before this
    the multipart route wrote a whole 1 GB chunked upload to disk, then answered 413."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(what, limit)
    size = 0

    async def receive() -> Message:
        nonlocal size
        msg = await request.receive()
        if msg["type"] == "http.request":
            size += len(msg.get("body", b""))
            if size > limit:
                raise BodyTooLarge(what, limit)
        return msg

    return Request(request.scope, receive)


async def read_body(request: Request, limit: int, what: str = "event body") -> bytes:
    """The body, refused with 413 as soon as it exceeds `limit` (never buffered beyond it)."""
    return b"".join([chunk async for chunk in limited(request, limit, what).stream()])


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    for e in errors:  # errors about the whole body have no location; name it
        e["field"] = e["field"] or "body"
    return JSONResponse({"detail": "invalid event", "errors": errors}, status_code=422)


def _stream_for(ev: Event, streams: list[str]) -> str:
    """Shard by source across EVENT_STREAMS (default just `events:in`); one source, one order."""
    return event_stream_for(ev.source, streams)


async def post_event(
    request: Request,
    _key: Annotated[ApiKey, Depends(require_api_key)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> JSONResponse:
    """Validate one event and XADD it to `events:in`; 202 with the stream entry id."""
    raw = await read_body(request, settings.max_event_bytes)
    try:
        raw.decode("utf-8")  # strict: invalid bytes are refused, never replaced
    except UnicodeDecodeError as exc:
        return _invalid([{"field": "body", "message": f"not UTF-8: {exc}", "type": "utf8"}])
    try:
        ev = Event.model_validate_json(raw)
    except ValidationError as exc:
        return _invalid(field_errors(exc))
    request_id = str(uuid.uuid4())
    try:
        entry_id = await redis_client().xadd(
            _stream_for(ev, keys.event_streams(settings)),
            {"data": ev.model_dump_json(exclude_none=True)},
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("POST /api/events: %s", _redis_reason(exc))
        return JSONResponse(
            {"detail": _redis_reason(exc), "requestId": request_id},
            status_code=503,
            headers={"X-Request-ID": request_id, "Retry-After": "1"},
        )
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return JSONResponse(
        {"id": eid, "requestId": request_id},
        status_code=202,
        headers={"X-Request-ID": request_id},
    )


# --- listing ------------------------------------------------------------------------------------


async def _from_cache(size: int) -> list[dict[str, Any]] | None:
    """The newest stored events from `events:recent`, or None if Redis cannot be read."""
    try:
        raw = await redis_client().lrange(keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1)
    except (RedisError, OSError, TimeoutError) as exc:
        log.info("events:recent unreadable, using the lake: %s", exc)
        return None
    items = []
    for doc in raw:
        try:
            items.append(stored_json(doc))
        except ValueError:
            continue
    return newest_first(items)[:size]


async def list_events(q: EventQuery) -> dict[str, Any]:
    """Page 1 without filters (size <= 50) from the cache, otherwise from the lake.

    The cache holds the newest stored events even before the lake sink has flushed them; it is
    only passed over when it has fewer rows than asked and the lake has more (e.g. Redis was
    restarted without persistence).
    """
    settings = get_settings()
    cached: list[dict[str, Any]] | None = None
    if q.page == 1 and q.size <= keys.RECENT_SIZE and not q.filtered:
        cached = await _from_cache(q.size)
        if cached is not None and len(cached) >= q.size:
            return {"page": 1, "size": q.size, "items": cached, "source": "cache"}
    lake = await fetch_events(settings.lake_dir, q)
    if cached and len(cached) >= len(lake.items):
        return {"page": 1, "size": q.size, "items": cached, "source": "cache"}
    return {
        "page": q.page,
        "size": q.size,
        "items": lake.items,
        "source": "lake",
        "total": lake.total,
    }


async def get_events(
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=200)] = 20,
    type: Annotated[str | None, Query(max_length=64)] = None,
    level: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """Stored events newest first (ts, then id, descending), filtered by type and level."""
    lv = (level or "").strip().upper() or None
    if lv is not None and lv not in LEVELS:
        return JSONResponse(
            {
                "detail": "invalid query",
                "errors": [
                    {
                        "field": "level",
                        "message": f"level must be one of {', '.join(LEVELS)}",
                        "type": "literal_error",
                    }
                ],
            },
            status_code=422,
        )
    q = EventQuery(page=page, size=size, type=(type or "").strip() or None, level=lv)
    try:
        return JSONResponse(await list_events(q))
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)


def register(app: FastAPI) -> None:
    """Add the routes to NiceGUI's FastAPI app (call before `ui.run`)."""
    app.add_exception_handler(_Refusal, _refusal_handler)
    app.add_api_route(
        "/health", health, methods=["GET"], tags=["health"], response_model=api_models.Health
    )
    app.add_api_route(
        "/api/health", health, methods=["GET"], tags=["health"], response_model=api_models.Health
    )
    app.add_api_route(
        "/api/events",
        post_event,
        methods=["POST"],
        status_code=202,
        tags=["events"],
        response_model=api_models.Accepted,
    )
    app.add_api_route(
        "/api/events",
        get_events,
        methods=["GET"],
        tags=["events"],
        response_model=api_models.EventList,
    )
    from ui import checkins_api  # here, not at the top: it imports this module

    checkins_api.register(app)  # gates: scans, verdicts, the tokens' public key
    from ui import participants_api, report_api  # same: they import this module

    participants_api.register(app)  # participants: import, list, QR codes, revoke
    report_api.register(app)  # the attendance report: CSV, JSON, printable HTML
    from ui import logs_api, video_api  # same: they import this module

    video_api.register(app)  # live video (WebSocket, MJPEG, snapshots), cameras, commands
    logs_api.register(app)  # the activity log: GET /logs, POST /logs
    from ui import auth_login  # same: it imports this module

    auth_login.register(app)  # login/logout, who am I, and the permission middleware


async def root_redirect() -> RedirectResponse:
    """`/` until a page takes it (ui.main adds this only when no page is registered there)."""
    return RedirectResponse("/events")

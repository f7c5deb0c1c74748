"""`POST /api/events` (ingest) and `GET /api/events` (listing).

Ingest only validates and `XADD`s (design card): the events flow writes the lake, so an accepted
event is durable in Redis before we answer 202, and the API never writes the lake itself.
Listing reads the seed-003 cache (`events:recent`) for the plain first page and the lake for
everything else. Errors are answered as JSON with a reason, never as a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import RedisError

from api import http, models
from core import keys
from core.records import LEVELS, Event, event_stream_for, field_errors, stored_json
from core.settings import get_settings
from storage.queries import EventQuery, LakeUnavailable, fetch_events, newest_first

log = logging.getLogger(__name__)
router = http.Router(tags=["events"])

# --- ingest -------------------------------------------------------------------------------------


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    for e in errors:  # errors about the whole body have no location; name it
        e["field"] = e["field"] or "body"
    return JSONResponse({"detail": "invalid event", "errors": errors}, status_code=422)


def _stream_for(ev: Event, streams: list[str]) -> str:
    """Shard by source across EVENT_STREAMS (default just `events:in`); one source, one order."""
    return event_stream_for(ev.source, streams)


@router.post("/api/events", status_code=202, response_model=models.Accepted)
async def post_event(
    request: Request,
    _key: http.ApiKeyDep,
    settings: http.SettingsDep,
) -> JSONResponse:
    """Validate one event and XADD it to `events:in`; 202 with the stream entry id."""
    raw = await http.read_body(request, settings.max_event_bytes)
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
        entry_id = await http.redis_client().xadd(
            _stream_for(ev, keys.event_streams(settings)),
            {"data": ev.model_dump_json(exclude_none=True)},
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("POST /api/events: %s", http.redis_reason(exc))
        return JSONResponse(
            {"detail": http.redis_reason(exc), "requestId": request_id},
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
        raw = await http.redis_client().lrange(keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1)
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


@router.get("/api/events", response_model=models.EventList)
async def get_events(
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=200)] = 20,
    type: Annotated[str | None, Query(max_length=64)] = None,
    level: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """Stored events newest first (ts, then id, descending), filtered by type and level."""
    lv = (level or "").strip().upper() or None
    if lv is not None and lv not in LEVELS:
        return http.invalid_query(
            "level", f"level must be one of {', '.join(LEVELS)}", "literal_error"
        )
    q = EventQuery(page=page, size=size, type=(type or "").strip() or None, level=lv)
    try:
        return JSONResponse(await list_events(q))
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)

"""`POST /api/events` (ingest), `POST /api/events/batch` (gateways) and `GET /api/events`.

Ingest only validates and `XADD`s (design card): the events flow writes the lake, so an accepted
event is durable in Redis before we answer 202, and the API never writes the lake itself.
Listing reads the seed-003 cache (`events:recent`) for the plain first page and the lake for
everything else. Errors are answered as JSON with a reason, never as a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
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


# The ingest routes take the `Request` only and call `http.require_api_key` and `get_settings`
# themselves (the key is checked all the same: the middleware put it in `request.state`).
# FastAPI's dependency solving for `ApiKeyDep` + `SettingsDep` was about a quarter of
# `POST /api/events`' time under cProfile (the app driven in process, 3,000 sequential
# requests: `solve_dependencies` 0.26 of 1.07 ms); without it, 436 → 406 µs CPU per request
# (same driver, no profiler).


def _stream_for(ev: Event, streams: list[str]) -> str:
    """Shard by source across `keys.event_write_streams` (the `STREAM_SHARDS` shards
    `events:in:{k}`, k = crc32(source) % N, else EVENT_STREAMS); one source, one order."""
    return event_stream_for(ev.source, streams)


@router.post("/api/events", status_code=202, response_model=models.Accepted)
async def post_event(request: Request) -> JSONResponse:
    """Validate one event and XADD it to `events:in`; 202 with the stream entry id."""
    await http.require_api_key(request)  # no `ApiKeyDep`: see above `_stream_for`
    settings = get_settings()
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
            _stream_for(ev, keys.event_write_streams(settings)),
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


# --- batch ingest (gateways) ----------------------------------------------------------------------

#: At most this many events per `POST /api/events/batch`.
MAX_BATCH = 1000
#: The batch body's bound, whatever MAX_EVENT_BYTES is: 1,000 events of 8 KiB.
MAX_BATCH_BYTES = 8 * 1024 * 1024

_batch = TypeAdapter(list[Event])


class ItemError(BaseModel):
    """Why one event of a batch was not stored: the single route's refusal body, plus its
    status (422 invalid, 413 larger than MAX_EVENT_BYTES, 503 Redis unavailable)."""

    status: int
    detail: str
    errors: list[dict[str, Any]] = Field(default_factory=list)


class ItemResult(BaseModel):
    """One event of the batch, in the batch's order: `id` (stored) or `error`."""

    id: str | None = None
    error: ItemError | None = None


class BatchResult(BaseModel):
    """200 (every event stored) or 207 (some refused): one result per event, in order."""

    results: list[ItemResult]
    accepted: int
    rejected: int
    requestId: str


def _batch_refusal(status: int, message: str, type_: str) -> JSONResponse:
    errors = [{"field": "body", "message": message, "type": type_}]
    return JSONResponse({"detail": "invalid batch", "errors": errors}, status_code=status)


def _item_errors(exc: ValidationError) -> dict[int, list[dict[str, Any]]]:
    """`list[Event]`'s validation errors by item index, located as the single route's are;
    key -1: errors about the batch itself (not a list, too long)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for e in exc.errors(include_url=False, include_input=False):
        loc = e["loc"]
        i = loc[0] if loc and isinstance(loc[0], int) else -1
        rest = loc[1:] if i >= 0 else loc
        field = ".".join(str(p) for p in rest) or "body"
        out.setdefault(i, []).append({"field": field, "message": e["msg"], "type": e["type"]})
    return out


@router.post("/api/events/batch", response_model=BatchResult)
async def post_event_batch(request: Request) -> JSONResponse:
    """A JSON array of 1 to 1,000 events, each validated as `POST /api/events` validates one;
    the valid ones XADDed to the streams the single route uses, one MULTI/EXEC per stream (all
    of a stream's events or none; one stream's keys share a Redis Cluster slot), the streams'
    transactions sent at once. 200 when all were stored, 207 when some were refused (a
    stream that could not be written: its events get 503 items; all of them: 503)."""
    await http.require_api_key(request)
    settings = get_settings()
    limit = min(MAX_BATCH * settings.max_event_bytes, MAX_BATCH_BYTES)
    raw = await http.read_body(request, limit, "batch body")
    try:
        raw.decode("utf-8")  # strict, as the single route
    except UnicodeDecodeError as exc:
        return _batch_refusal(422, f"not UTF-8: {exc}", "utf8")
    events: list[Event | None]
    errors: dict[int, list[dict[str, Any]]] = {}
    try:
        events = list(_batch.validate_json(raw))  # JSON mode, as the single route
    except ValidationError as exc:
        errors = _item_errors(exc)
        if -1 in errors:  # not JSON, not a list
            e = errors[-1][0]
            return _batch_refusal(422, e["message"], e["type"])
        events = _valid_items(raw, errors)
    n = len(events)
    if n == 0:
        return _batch_refusal(422, "an empty batch: send 1 to 1,000 events", "too_short")
    if n > MAX_BATCH:
        return _batch_refusal(413, f"{n} events; at most {MAX_BATCH} per batch", "too_long")
    results: list[dict[str, Any]] = []
    docs: list[tuple[int, str, str]] = []  # (index, stream, stored JSON)
    streams = keys.event_write_streams(settings)
    for i, ev in enumerate(events):
        if ev is None:
            errs = errors[i]
            results.append({"error": {"status": 422, "detail": "invalid event", "errors": errs}})
            continue
        doc = ev.model_dump_json(exclude_none=True)
        if len(doc) > (most := settings.max_event_bytes):
            message = f"event is {len(doc)} bytes, more than the limit of {most}"
            err = {"field": "body", "message": message, "type": "too_large"}
            results.append({"error": {"status": 413, "detail": message, "errors": [err]}})
            continue
        results.append({})
        docs.append((i, _stream_for(ev, streams), doc))
    request_id = str(uuid.uuid4())
    headers = {"X-Request-ID": request_id}
    by_stream: dict[str, list[tuple[int, str]]] = {}
    for i, stream, doc in docs:
        by_stream.setdefault(stream, []).append((i, doc))
    outcomes = await asyncio.gather(*(_xadd_all(st, items) for st, items in by_stream.items()))
    failed: list[str] = []
    accepted = 0
    for items, outcome in zip(by_stream.values(), outcomes, strict=True):
        if isinstance(outcome, str):  # the stream's transaction failed: none of it stored
            failed.append(outcome)
            for i, _ in items:
                results[i] = {"error": {"status": 503, "detail": f"not stored: {outcome}"}}
            continue
        accepted += len(items)
        for (i, _), eid in zip(items, outcome, strict=True):
            results[i] = {"id": eid.decode() if isinstance(eid, bytes) else str(eid)}
    if failed:
        log.warning("POST /api/events/batch: %s", failed[0])
        if not accepted:
            body = {"detail": failed[0], "results": results, "accepted": 0, "rejected": n}
            body["requestId"] = request_id
            return JSONResponse(body, 503, headers={**headers, "Retry-After": "1"})
    body = {"results": results, "accepted": accepted, "rejected": n - accepted}
    body["requestId"] = request_id
    return JSONResponse(body, status_code=200 if accepted == n else 207, headers=headers)


async def _xadd_all(stream: str, items: list[tuple[int, str]]) -> list[Any] | str:
    """XADD every document to `stream` in one MULTI/EXEC: the entry ids, or why not (then
    none was stored)."""
    try:
        pipe = http.redis_client().pipeline(transaction=True)
        for _, doc in items:
            pipe.xadd(stream, {"data": doc})
        return await pipe.execute()
    except (RedisError, OSError, TimeoutError) as exc:
        return http.redis_reason(exc)


def _valid_items(raw: bytes, errors: dict[int, list[dict[str, Any]]]) -> list[Event | None]:
    """The batch's events with None for the refused ones (`errors` by index). The items that
    passed JSON-mode validation are validated again from the parsed document; should one
    still fail, its errors join `errors` (never a 500)."""
    from pydantic_core import from_json

    items = from_json(raw)  # a list: `list[Event]` said nothing about the body itself
    out: list[Event | None] = []
    for i, item in enumerate(items):
        if i in errors:
            out.append(None)
            continue
        try:
            out.append(Event.model_validate(item))
        except ValidationError as exc:
            errors[i] = [{**e, "field": e["field"] or "body"} for e in field_errors(exc)]
            out.append(None)
    return out


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

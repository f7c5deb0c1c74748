"""The activity log over HTTP (seed 000): `GET /logs` reads the lake, `POST /logs` writes Redis.

`POST /logs` (API key) validates a `LogPost`, adds the caller's IP and user agent, and XADDs it
to `activity:in`; the video flow stores it in the lake's `request_logs` (the UI never writes the
lake). `GET /logs` pages through `request_logs` newest first with filters; like the lake
itself it shows a record once the flow has written its file (`LAKE_FLUSH_AGE_S`).

Queries run on worker threads (`run.io_bound`), each with its own in-memory DuckDB connection
holding the catalog's views, so the event loop never waits for a scan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pydantic_core import to_json

from api.http import ApiKeyDep, Router, invalid_query, read_body
from auth.permissions import current_user, personal_key
from core import keys
from core.records import MAX_LOG_BYTES, ActivityIn, LogPost, field_errors, stored_json
from core.settings import get_settings
from live.redis import RedisDown, xadd_json
from storage.queries import REQUEST_LOG_COLUMNS, LakeUnavailable, request_logs_page
from storage.sql_sandbox import pseudonym
from storage.tables import REQUEST_LOGS

router = Router(tags=["logs"])

PERSONAL = sorted(REQUEST_LOGS.personal)  #: pseudonymised for callers without personal access
COLUMNS = REQUEST_LOG_COLUMNS


@router.get("/logs")
async def get_logs(
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=200)] = 50,
    event: Annotated[str | None, Query(max_length=64)] = None,
    room_id: Annotated[str | None, Query(max_length=64)] = None,
    camera_id: Annotated[str | None, Query(max_length=64)] = None,
    client_id: Annotated[str | None, Query(max_length=128)] = None,
    ip: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
) -> JSONResponse:
    """Activity newest first (ts, then id). `event` ending in `.` or `*` matches a prefix
    (`room.` → room.join, room.leave, ...). `since`/`until` are ISO 8601 times. Callers who
    may not see personal data (analysts) get its columns as pseudonyms, as in free SQL, and
    cannot filter by them."""
    user = current_user()  # None for an admin key, which sees personal data in clear
    key = personal_key(user) if user is not None else None
    if key is not None and ip:
        return JSONResponse(
            {"detail": "filtering by ip needs access to personal data (participants.view)"}, 403
        )
    values = {"event": event, "room_id": room_id, "camera_id": camera_id}
    values |= {"client_id": client_id, "ip": ip}
    for name, ts in (("since", since), ("until", until)):
        if ts is not None and ts.tzinfo is None:
            return invalid_query(name, "needs a UTC offset, e.g. 2026-11-21T09:00:00Z")
    try:
        rows, total = await request_logs_page(get_settings().lake, values, since, until, page, size)
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, 503)
    items = []
    for r in rows:
        d = dict(zip(COLUMNS, r, strict=True))
        d["metadata"] = stored_json(d["metadata"]) if d["metadata"] else {}
        if key is not None:
            for col in PERSONAL:
                d[col] = pseudonym(key, d[col])
        items.append(d)
    body = {"page": page, "size": size, "total": int(total), "items": items}
    return JSONResponse(stored_json(to_json(body, inf_nan_mode="null")))


@router.post("/logs", status_code=202)
async def post_log(request: Request, _key: ApiKeyDep) -> JSONResponse:
    """Store one activity record (202 with its `activity:in` id)."""
    raw = await read_body(request, MAX_LOG_BYTES, "log record")  # 413 once it is too big
    try:
        post = LogPost.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "field": e["field"] or "body"} for e in field_errors(exc)]
        return JSONResponse({"detail": "invalid log record", "errors": errors}, 422)
    rec = ActivityIn(
        **post.model_dump(),
        ip=(request.client.host if request.client else None),
        user_agent=(request.headers.get("user-agent") or "")[:512] or None,
    )
    try:
        eid = await xadd_json(keys.ACTIVITY_IN, rec.model_dump_json(exclude_none=True))
    except RedisDown as exc:
        return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "1"})
    return JSONResponse({"id": eid}, 202)

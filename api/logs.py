"""The activity log over HTTP (seed 000): `GET /logs` reads the lake, `POST /logs` writes Redis.

`POST /logs` (API key) validates a `LogPost`, adds the caller's IP and user agent, and XADDs it
to `activity:in`; the video flow stores it in the lake's `request_logs` (the UI never writes the
lake). `GET /logs` pages through `request_logs` newest first with filters; like the lake
itself it shows a record once the flow has written its file (`LAKE_FLUSH_AGE_S`).

Queries run on worker threads (`run.io_bound`), each with its own in-memory DuckDB connection
holding the catalog's views, so the event loop never waits for a scan.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import duckdb
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from nicegui import run
from pydantic import ValidationError
from pydantic_core import to_json

from api.http import read_body, require_api_key
from auth.keys import ApiKey
from auth.permissions import current_user, personal_key
from core import keys
from core.records import ActivityIn, LogPost, field_errors, stored_json
from core.settings import get_settings
from live.redis import RedisDown, xadd_json
from storage.catalog import connect_memory, query
from storage.sql_sandbox import pseudonym
from storage.tables import REQUEST_LOGS

router = APIRouter(tags=["logs"])

MAX_LOG_BYTES = 16 * 1024
PERSONAL = sorted(REQUEST_LOGS.personal)  #: pseudonymised for callers without personal access
COLUMNS = (
    "id", "origin", "ts", "event", "client_id", "ip", "user_agent", "room_id", "camera_id",
    "metadata", "received_at",
)  # fmt: skip
FILTERS = ("event", "room_id", "camera_id", "client_id", "ip")

_local = threading.local()


class LakeUnavailable(RuntimeError):
    pass


def _connection(lake_dir: Path) -> duckdb.DuckDBPyConnection:
    con = getattr(_local, "con", None)
    if con is None or getattr(_local, "lake_dir", None) != lake_dir:
        con = connect_memory(lake_dir)
        con.execute("SET TimeZone = 'UTC'")
        _local.con, _local.lake_dir = con, lake_dir
    return con


def lake_query(lake_dir: Path, sql: str, params: list[Any]) -> tuple[list[str], list[tuple]]:
    """Blocking; call through `run.io_bound`. LakeUnavailable with the reason on failure."""
    try:
        return query(_connection(lake_dir), sql, params)
    except duckdb.Error as exc:
        raise LakeUnavailable(f"lake could not be read: {exc}") from exc


async def lake_rows(sql: str, params: list[Any]) -> tuple[list[str], list[tuple]]:
    result = await run.io_bound(lake_query, get_settings().lake, sql, params)
    if result is None:
        raise LakeUnavailable("the app is shutting down")
    return result


def _bad(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": "invalid query", "errors": [{"field": field, "message": message}]}, 422
    )


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
    clauses: list[str] = []
    params: list[Any] = []
    values = {"event": event, "room_id": room_id, "camera_id": camera_id}
    values |= {"client_id": client_id, "ip": ip}
    for name in FILTERS:
        v = (values[name] or "").strip()
        if not v:
            continue
        if name == "event" and v.endswith(("*", ".")):
            clauses.append("starts_with(event, ?)")
            params.append(v.rstrip("*"))
        else:
            clauses.append(f"{name} = ?")
            params.append(v)
    for name, ts, op in (("since", since, ">="), ("until", until, "<")):
        if ts is not None:
            if ts.tzinfo is None:
                return _bad(name, "needs a UTC offset, e.g. 2026-11-21T09:00:00Z")
            clauses.append(f"ts {op} ?")
            params.append(ts)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    cols = ", ".join(COLUMNS)
    try:
        # The page and the total from ONE query (one view of the lake): two queries raced a
        # file landing in between (total 3, items none — seen once in the test suite).
        _, rows = await lake_rows(
            f"SELECT {cols}, count(*) OVER () FROM request_logs{where} "
            "ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
            [*params, size, (page - 1) * size],
        )
        if rows:
            total = rows[0][-1]
            rows = [r[:-1] for r in rows]
        elif page == 1:
            total = 0
        else:  # past the last page: the total still tells the client where that is
            _, ((total,),) = await lake_rows(f"SELECT count(*) FROM request_logs{where}", params)
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
async def post_log(
    request: Request, _key: Annotated[ApiKey, Depends(require_api_key)]
) -> JSONResponse:
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

"""`POST /api/analytics/sql`: an analyst's free SQL over the lake, as on the analytics page.

`run_free_sql` is the one path for the page and this route: the role is checked here, each
browser session may run one query at a time and the whole dashboard `SQL_MAX_CONCURRENT`
(`storage.analytics.ADMISSION`), and the query runs in the sandbox (`storage.sql_sandbox`)
with personal columns pseudonymised for roles without personal access.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from nicegui import app, run

from api import models
from api.http import Router
from auth.permissions import can, current_user, personal_key
from auth.users import User
from core.settings import get_settings
from storage.analytics import (
    ADMISSION,
    MAX_SQL_CHARS,
    SqlBusy,
    SqlError,
    SqlRefused,
    SqlResult,
    run_sql,
)

router = Router(tags=["analytics"])


def cell(v: Any) -> Any:
    """A result value as the table shows it (times as text, bytes as their size)."""
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    return str(v)


def json_cell(v: Any) -> Any:
    """`cell` for JSON: NaN and infinities (valid DOUBLE values) as text, not a 500."""
    v = cell(v)
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


async def run_free_sql(user: User | None, holder: str, sql: str) -> SqlResult | None:
    """Typed SQL for `user` (page or API): SqlBusy when `holder` (the browser session)
    already has one running or all slots are taken; SqlRefused / SqlError with the reason;
    None if the app is shutting down."""
    if not can(user, "analytics.sql"):
        raise SqlRefused("your role may not run SQL")
    s = get_settings()
    with ADMISSION.slot(holder, s.sql_max_concurrent):
        return await run.io_bound(run_sql, s.lake_dir, sql, key=personal_key(user))


def browser_session() -> str:
    """The browser session (NiceGUI's browser id, the same for the page and the API)."""
    return str(app.storage.browser["id"])


@router.post(
    "/api/analytics/sql",
    response_model=models.SqlOut,
    responses={c: {"model": models.Problem} for c in (400, 422, 429, 503)},
    openapi_extra=models.json_body(models.SqlIn),
)
async def post_sql(request: Request) -> JSONResponse:
    """`POST /api/analytics/sql` `{"sql": "..."}` → `{columns, rows, truncated, elapsed_ms}`;
    400 refused / 422 failed / 429 busy, each with `detail`."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        body = None
    sql = body.get("sql") if isinstance(body, dict) else None
    if not isinstance(sql, str):
        return JSONResponse({"detail": 'send JSON {"sql": "SELECT ..."}'}, status_code=422)
    if len(sql) > MAX_SQL_CHARS:
        return JSONResponse(
            {"detail": f"the query is longer than {MAX_SQL_CHARS:,} characters"}, status_code=400
        )
    try:
        res = await run_free_sql(current_user(), browser_session(), sql)
    except SqlBusy as exc:
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "2"})
    except SqlRefused as exc:
        return JSONResponse({"detail": f"refused: {exc}"}, status_code=400)
    except SqlError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    if res is None:
        return JSONResponse({"detail": "the dashboard is shutting down"}, status_code=503)
    return JSONResponse(
        {
            "columns": res.columns,
            "rows": [[json_cell(v) for v in r] for r in res.rows],
            "truncated": res.truncated,
            "elapsed_ms": round(res.elapsed_s * 1000),
        }
    )

"""The login HTTP routes (the `/login` page and the user menu call them from the browser too).

- `POST /api/auth/login` `{"username", "password"}` (`Content-Type: application/json`, else
  415: a plain HTML form of another site cannot post it) → 200 `{"username", "role"}` and a
  NEW session cookie; 401 wrong name or password; 429 + `Retry-After` while locked out;
- `POST /api/auth/logout` (also a new, empty session cookie); `GET /api/auth/me` (who am I,
  what may I do);
- `GET /api/auth/routes` (organiser): every route of the running app with its rule.

What a login checks, the throttle, the audit trail and why the session id is renewed are
`auth.login`; this module only speaks HTTP.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from api import models
from api.http import Router, read_body
from auth.login import MAX_LOGIN_BYTES, Caller, fresh_session, is_json, login, logout, route_table
from auth.permissions import PERMISSIONS, can, current_user, start_session
from core.records import field_errors

router = Router(tags=["auth"])


class LoginBody(BaseModel):
    username: str
    password: str


def _storage() -> MutableMapping[str, Any] | None:
    from nicegui import app

    try:
        return app.storage.user
    except (RuntimeError, AssertionError, KeyError):
        return None


@router.post("/api/auth/login", response_model=models.LoginOut)
async def post_login(request: Request) -> JSONResponse:
    if not is_json(request.headers.get("content-type")):
        return JSONResponse(
            {"detail": "the login body must be JSON (Content-Type: application/json)"}, 415
        )
    raw = await read_body(request, MAX_LOGIN_BYTES, "login body")  # 413 beyond it
    try:
        body = LoginBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "field": e["field"] or "body"} for e in field_errors(exc)]
        return JSONResponse({"detail": "invalid login", "errors": errors}, 422)
    res = await login(body.username, body.password, Caller.of(request))
    if res.user is None:
        headers = {"Retry-After": str(math.ceil(res.retry_after))} if res.status == 429 else {}
        return JSONResponse({"detail": res.detail}, res.status, headers=headers)
    start_session(await fresh_session(request), res.user)
    return JSONResponse({"username": res.user.username, "role": res.user.role})


@router.post("/api/auth/logout", response_model=models.LogoutOut)
async def post_logout(request: Request) -> JSONResponse:
    name = await logout(_storage(), Caller.of(request))
    await fresh_session(request)
    return JSONResponse({"logged_out": name})


@router.get("/api/auth/me", response_model=models.MeOut)
async def get_me() -> JSONResponse:
    user = current_user()
    if user is None:  # the middleware answers first; kept for a session ending in between
        return JSONResponse({"detail": "login required"}, 401)
    perms = sorted(p for p in PERMISSIONS if can(user, p))
    return JSONResponse({"username": user.username, "role": user.role, "permissions": perms})


@router.get("/api/auth/routes", response_model=list[models.RouteRow])
async def get_routes(request: Request) -> JSONResponse:
    return JSONResponse(route_table(list(request.app.router.routes)))

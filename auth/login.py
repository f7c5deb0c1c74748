"""Logging in and out (the login page and the HTTP routes share `login`), and the audit
trail.

Every attempt — success, wrong password, refused while locked out — goes to the activity log
(`activity:in` → lake `request_logs`, events `auth.login.success|failure|locked`, with the
address, the user agent and the name tried), as do logouts and the organiser's changes to
users and API keys (`auth.user.*`, `auth.key.*`). Redis being down never blocks a login: the
record is then only in the dashboard's log.

The HTTP routes (`POST /api/auth/login`, `/logout`, `GET /api/auth/me`, `/routes`) are
`api.session`; the page is `ui.pages.login_page`.

Session fixation: NiceGUI keys `app.storage.user` by the `id` in its signed session cookie,
and hands that id out to anyone who opens a page. A login therefore never upgrades the id it
arrived with: `fresh_session` gives the browser a new id (set in this response's cookie),
moves the storage's other contents there and empties the old one, so a cookie captured or
planted before the login stays logged out; logout does the same, so the logged-in cookie is
dead afterwards. That is why logging in and out happen over HTTP (a NiceGUI event handler
runs over the page's WebSocket and cannot set a cookie).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from auth.permissions import (
    end_session,
    rule_for_route,
)
from auth.sessions import flush
from auth.settings import get_auth_settings
from auth.throttle import LoginThrottle
from auth.users import MAX_PASSWORD, User, user_store
from core.settings import get_settings
from live.redis import Who, log_activity

log = logging.getLogger(__name__)

MAX_LOGIN_BYTES = 4096
_throttle: LoginThrottle | None = None


def throttle() -> LoginThrottle:
    global _throttle
    if _throttle is None:
        st = get_auth_settings()
        _throttle = LoginThrottle(
            max_failures=st.login_max_failures,
            lockout_s=st.login_lockout_s,
            lockout_max_s=st.login_lockout_max_s,
            ip_max_failures=st.login_ip_max_failures,
            ip_window_s=st.login_ip_window_s,
        )
    return _throttle


@dataclass(frozen=True)
class Caller:
    """Where a request came from, for the throttle and the activity log."""

    ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, request: Any) -> Caller:
        client = getattr(request, "client", None)
        headers = getattr(request, "headers", {}) or {}
        return cls(
            (client.host if client else None), (headers.get("user-agent") or "")[:512] or None
        )


async def audit(event: str, caller: Caller, **metadata: Any) -> None:
    """One activity record (best effort: Redis down is logged here, never raised)."""
    log.info("%s %s from %s", event, metadata, caller.ip)
    meta = {k: v for k, v in metadata.items() if v is not None}
    await log_activity(event, Who.of(None, caller.ip, caller.user_agent), metadata=meta)


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    status: int  # 200, 401, 429
    detail: str
    retry_after: float = 0.0


async def login(username: str, password: str, caller: Caller) -> LoginResult:
    """Check a name and password (throttled) and log the attempt; the caller starts the
    session (in a fresh one: `fresh_session`)."""
    name = (username or "").strip().lower()[:64]
    ip = caller.ip or "unknown"
    wait = throttle().begin(name, ip)  # counted now, before the ~100 ms check (parallel guesses)
    if wait > 0:
        secs = math.ceil(wait)
        await audit("auth.login.locked", caller, username=name, retry_after_s=secs)
        return LoginResult(
            None, 429, f"too many failed logins; try again in {secs} s", retry_after=wait
        )
    store = user_store(get_settings().data_dir)
    try:
        user = await asyncio.to_thread(store.verify, name, password[: MAX_PASSWORD + 1])
    except BaseException:
        throttle().abandon(name, ip)
        raise
    if user is None:
        lock = throttle().failure(name, ip)
        await audit(
            "auth.login.failure", caller, username=name, locked_s=math.ceil(lock) if lock else None
        )
        detail = "wrong user name or password"
        if lock:
            detail += f"; too many failed logins, locked for {math.ceil(lock)} s"
        return LoginResult(None, 401, detail)
    throttle().success(name, ip)
    await audit("auth.login.success", caller, username=user.username, role=user.role)
    return LoginResult(user, 200, "ok")


async def logout(storage: MutableMapping[str, Any] | None, caller: Caller) -> str | None:
    name = end_session(storage) if storage is not None else None
    if name:
        await audit("auth.logout", caller, username=name)
    return name


async def fresh_session(request: Request) -> MutableMapping[str, Any]:
    """Give the browser of `request` a new session id (the response carries the new signed
    cookie) and return its storage. What the old storage held, except the login, moves to the
    new one; the old one is emptied (and so deleted from Redis: `auth.sessions`), so the old
    cookie opens nothing, on any replica."""
    from nicegui import app

    storages = app.storage._users  # NiceGUI has no public call to rekey a user's storage
    old_id = request.session.get("id")
    old = storages.get(old_id) if old_id else None
    new_id = str(uuid.uuid4())
    await app.storage._create_user_storage(new_id)
    new = storages[new_id]
    if old is not None:
        carry = {k: v for k, v in old.items() if k != "auth"}
        old.clear()
        new.update(carry)
        await flush(old)  # gone from Redis before the answer: no replica reopens it
    request.session["id"] = new_id
    return new


def is_json(content_type: str | None) -> bool:
    """`application/json` (parameters such as `charset` allowed), nothing else."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def route_table(routes: list[BaseRoute]) -> list[dict[str, Any]]:
    """Every route (and method) of the app with the matrix rule that covers it (None: none)."""
    out: list[dict[str, Any]] = []
    for route in routes:
        path = getattr(route, "path", "")
        if isinstance(route, WebSocketRoute) or type(route).__name__ == "APIWebSocketRoute":
            methods = ["WS"]
        elif isinstance(route, Mount):
            methods = ["*"]
        elif isinstance(route, Route) or hasattr(route, "methods"):
            methods = sorted(m for m in (getattr(route, "methods", None) or ["GET"]) if m != "HEAD")
        else:
            methods = ["*"]
        for m in methods:
            rule = rule_for_route(path, m)
            out.append(
                {
                    "path": path,
                    "method": m,
                    "kind": type(route).__name__,
                    "rule": None
                    if rule is None
                    else {
                        "path": rule.path,
                        "perm": rule.perm,
                        "roles": sorted(rule.roles),
                        "keys": sorted(rule.keys),
                        "page": rule.page,
                    },
                }
            )
    return out

"""The one gate every request passes: the route matrix of `auth.permissions`, enforced
before routing.

A pure ASGI middleware (not `BaseHTTPMiddleware`): it sees WebSocket handshakes too, and never
buffers the endless MJPEG responses. It sits inside NiceGUI's session middleware (added by
`ui.run` after ours, hence outside it), so the signed session cookie is already decoded.

- public routes pass;
- API-key routes: a valid key of an accepted kind passes (its grant is put in
  `request.state.api_key`); a bad key is 401, a key of the wrong kind 403;
- logged-in routes: no (valid) login → pages redirect to `/login?next=…`, APIs answer 401 JSON,
  WebSockets are refused at the handshake; a role without the permission gets 403 with why;
- a route that the matrix does not list is refused for everyone (403): routes added later
  cannot slip through unchecked. Paths that are no route at all pass on to the 404.

`KeyRequestBypass` sits outside everything (NiceGUI's middlewares included) and sends a request
that the matrix authenticates by API key alone past NiceGUI's session and request-tracking
middlewares: they did nothing for such a request but cost most of its time, and NiceGUI made a
new session id, a signed cookie and a user storage for every cookieless request.

Before all of that, a state-changing request (not GET/HEAD/OPTIONS) or a WebSocket handshake
that a browser sends for a page of another origin is refused with 403 (`auth.origin`):
whatever the route, public ones (login, logout) and NiceGUI's own socket included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from auth.origin import SAFE_METHODS, parse_allowed, refusal
from auth.permissions import Denied, Rule, check_api_key, roles_for, rule_for, session_user
from auth.settings import get_auth_settings

log = logging.getLogger(__name__)


async def _user_storage(scope: Scope) -> MutableMapping[str, Any] | None:
    """The session's `app.storage.user`, as Redis has it now (`auth.sessions.refresh`). For
    HTTP NiceGUI's request tracking has made it; a WebSocket handshake bypasses that
    middleware, so it is looked up (or loaded) by the session id here — NiceGUI offers no
    public call for that."""
    from nicegui import app

    from auth.sessions import refresh

    if scope["type"] == "http":
        try:
            storage = app.storage.user
        except (RuntimeError, AssertionError, KeyError):
            return None
    else:
        sid = (scope.get("session") or {}).get("id")
        if not sid:
            return None
        users = app.storage._users
        if sid not in users:
            await app.storage._create_user_storage(sid)
        storage = users.get(sid)
    await refresh(storage)  # another replica may have changed it (auth.sessions)
    return storage


def _is_route(scope: Scope) -> bool:
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", [])
    return any(route.matches(scope)[0] == Match.FULL for route in routes)


#: `rule_for` is a linear scan of the route matrix (POST /api/events is its 35th rule); paths
#: are few in practice, and the cache is bounded.
_rule_for = lru_cache(maxsize=4096)(rule_for)


#: Public routes that never read a session. `KeyRequestBypass` sends them past NiceGUI's
#: session middlewares too: the balancer checks each replica's /health every second without a
#: cookie, and NiceGUI would make (and keep in memory) a new session for every check.
SESSIONLESS = frozenset({"/health"})


def _key_only(rule: Rule | None, scope: Scope) -> bool:
    """True when `AuthMiddleware` decides this request by its API key alone (never by the
    session): a key route (`perm` None), or a route that also takes keys and got one; and
    the `SESSIONLESS` routes, which it lets pass whoever asks."""
    if scope["type"] == "http" and scope["path"] in SESSIONLESS:
        return True
    if rule is None or not rule.keys:
        return False
    return rule.perm is None or _header(scope, b"x-api-key") is not None


class KeyRequestBypass:
    """The outermost layer: an HTTP request decided by its API key alone goes to `fast`, the
    same app without NiceGUI's session, request-tracking, prefix-redirect and cache-control
    middlewares (`ui.main` builds them), or to `plain` (`fast` without the gzip layer, which
    parses the answer's headers even when it does not compress) when the client takes no gzip;
    everything else to `full`. The origin check, the route matrix, the security headers and
    the routes' own limits run in all three.

    Measured (cProfile of `python -m ui.main` under `bench.http`'s wrk run): the three
    `BaseHTTPMiddleware`s (a task group and memory streams each) and the session cookie signed
    on every cookieless request were most of `POST /api/events`' time (`python -m bench.http`,
    server CPU per request, back to back on the same busy 2-core machine: 2.52 ms before,
    0.46 ms with this and the ingest routes' other cuts; the floor 0.35 ms)."""

    def __init__(self, full: ASGIApp, fast: ASGIApp, plain: ASGIApp | None = None):
        self.full, self.fast, self.plain = full, fast, plain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = _rule_for(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if not _key_only(rule, scope):
            await self.full(scope, receive, send)
        elif self.plain is not None and "gzip" not in (_header(scope, b"accept-encoding") or ""):
            await self.plain(scope, receive, send)  # `fast` without the gzip layer
        else:
            await self.fast(scope, receive, send)


class AuthMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = "WS" if scope["type"] == "websocket" else scope["method"]
        path = scope["path"]
        what = f"{'WebSocket' if method == 'WS' else method} {path}"
        cross = None
        if method not in SAFE_METHODS:
            cross = refusal(method, _headers(scope), _allowed_origins())
        if cross is not None:
            log.warning("refused %s: %s", what, cross)
            await self._deny(scope, receive, send, None, Denied(403, cross))
            return
        rule = _rule_for(method, path)
        if rule is None:
            if _is_route(scope):
                log.warning("refused %s: the route is not in the permission matrix", what)
                await self._deny(scope, receive, send, None, Denied(403, (
                    f"{what} is not in the permission matrix (auth/permissions.py ROUTES); "
                    "refused for everyone until it is listed"
                )))  # fmt: skip
                return
            await self.app(scope, receive, send)  # no such route: the app answers 404/405
            return
        state = scope.setdefault("state", {})
        if rule.perm == "public":
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"x-api-key")
        if rule.keys and (header is not None or rule.perm is None):
            got = check_api_key(rule, header, what)
            if isinstance(got, Denied):
                await self._deny(scope, receive, send, rule, got)
                return
            state["api_key"] = got
            await self.app(scope, receive, send)
            return
        user, reason = session_user(await _user_storage(scope))
        if user is None:
            detail = "login required" + (f" (your session ended: {reason})" if reason else "")
            await self._deny(scope, receive, send, rule, Denied(401, detail), reason)
            return
        assert rule.perm is not None
        if user.role not in roles_for(rule.perm):
            who = ", ".join(sorted(roles_for(rule.perm)))
            detail = f"a {user.role} may not open {what} (needs {rule.perm}: {who})"
            await self._deny(scope, receive, send, rule, Denied(403, detail))
            return
        state["user"] = user
        await self.app(scope, receive, send)

    async def _deny(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rule: Rule | None,
        denied: Denied,
        reason: str | None = None,
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": denied.detail[:120]})
            return
        if rule is not None and rule.page and denied.status == 401:
            target = scope["path"]
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            query = {"next": target} | ({"reason": reason} if reason else {})
            await _respond(send, 303, b"", "text/plain", [(b"location", _login_url(query))])
            return
        if rule is not None and rule.page:
            body = _forbidden_html(denied.detail).encode()
            await _respond(send, denied.status, body, "text/html; charset=utf-8")
            return
        body = json.dumps({"detail": denied.detail}).encode()
        headers = [(b"www-authenticate", b"X-API-Key")] if denied.status == 401 else []
        await _respond(send, denied.status, body, "application/json", headers)


def _login_url(query: dict[str, str]) -> bytes:
    return ("/login?" + urlencode(query, quote_via=quote)).encode("latin-1")


def _allowed_origins() -> frozenset[tuple[str, str]]:
    return _parse_allowed(get_auth_settings().allowed_origins)


_parse_allowed = lru_cache(maxsize=4)(parse_allowed)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    ctype: str,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    headers = [
        (b"content-type", ctype.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _forbidden_html(detail: str) -> str:
    import html

    return (
        "<!doctype html><meta charset=utf-8><title>Not allowed · Venueflow</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>Not allowed</h1><p>{html.escape(detail)}.</p>"
        "<p><a href='/'>Overview</a> · <a href='/login'>Log in as someone else</a></p>"
    )

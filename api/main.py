"""The HTTP API alone: `python -m api.main` (`API_REPLICAS`, `run.py ui --api-replicas M`).

The same routers (`api.registry.ROUTERS`), the same permission middleware (`auth.middleware`,
the one route matrix `auth.permissions.ROUTES`) and the same security headers as the
dashboard, on a plain FastAPI app served by uvicorn: no NiceGUI, so no page re-rendering on
this event loop. Behind HAProxy (`ops.balancer`) it answers the requests that carry an
`X-API-Key` (gates, sensors, scripts) under `/api/` and `/logs`; browsers' requests (session
cookie) stay on the dashboards.

Why: with API requests on the dashboard's event loop they wait behind the re-rendering of
every open page (3-6 ms of CPU per user-second): `python -m bench.users --users 200`
measured API p99 9-16 s there (figures in bench/users.py and docs/operating.md "Replicas").

A session cookie means nothing here (NiceGUI's session middleware and user storage are not
mounted): a logged-in route without an API key answers 401 "login required", as for a
request without a login; and the session's own routes (`registry.SESSION_ROUTERS`:
/api/auth/login, logout, me, routes) are not served (HAProxy sends them to the dashboards).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import registry
from api import video as video_api
from api.http import KEEP_ALIVE_S
from core.settings import Settings, get_settings
from live import attendance as attendance_live
from live.redis import close_redis
from ops.processes import apply_umask, secure_data_dir

log = logging.getLogger("api")

#: Sent with every HTTP response. No other site may frame us (clickjacking: the modern
#: `frame-ancestors` and the older `X-Frame-Options`); browsers must not guess content types
#: (an upload served as text cannot run as a script); our URLs (room ids, filters) are not
#: passed on to other sites in `Referer`.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response (a pure ASGI middleware: the endless
    MJPEG streams pass unbuffered; the auth middleware's refusals get them too). Used by this
    app and the dashboard's (`ui.main`)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API-only app: every router but the session's, the permission middleware, the
    security headers, and the live parts the routes use (check-in verdict waits, the video
    hub)."""
    s = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await attendance_live.start(s.effective_redis_url, s.lake)
        await video_api.start(s)
        try:
            yield
        finally:
            await attendance_live.stop()
            await video_api.stop()
            await close_redis()

    app = FastAPI(
        title="Venueflow API",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # api.docs serves /api/openapi.json and /api/docs
        lifespan=lifespan,
    )
    api_only = tuple(r for r in registry.ROUTERS if r not in registry.SESSION_ROUTERS)
    registry.register(app, api_only)  # the HTTP API's routes, and the permission middleware
    app.add_middleware(SecurityHeaders)  # outside the permission middleware: refusals get them
    return app


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    apply_umask()
    settings = get_settings()
    secure_data_dir(settings.data_dir)
    app = create_app(settings)
    log.info("Venueflow API on http://%s:%d", settings.host, settings.port)
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 (HAProxy): the throttle sees the client.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S,
    )


if __name__ == "__main__":
    main()

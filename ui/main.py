"""The dashboard process: NiceGUI pages plus the HTTP API on the same server.

Run with `python -m ui.main` (run.py does, with REDIS_URL set). It shares no memory with the
flows: everything it shows comes from Redis (live channels, state keys) or the Parquet lake.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from nicegui import app, ui
from starlette.types import ASGIApp

from api import registry
from api import video as video_api
from api.http import KEEP_ALIVE_S
from api.main import SecurityHeaders
from auth.middleware import KeyRequestBypass
from auth.sessions import use_redis_sessions
from core.settings import Settings, get_settings
from live import attendance as attendance_live
from live import events as live
from live.redis import close_redis
from live.subscriber import set_page_update_budget
from ops.processes import apply_umask, secure_data_dir
from ui import handler_signatures, socket_packets, theme
from ui.pages import registry as pages

log = logging.getLogger("ui")


def storage_secret(settings: Settings) -> str:
    """`STORAGE_SECRET` from the environment, else a random one kept under DATA_DIR.

    Persisted so browser sessions survive a restart of the app; created with mode 0600.
    """
    if settings.storage_secret:
        return settings.storage_secret
    path = Path(settings.data_dir) / "ui" / "storage_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another replica, starting at the same time, writes it
            return _read_when_written(path)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value


def _read_when_written(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (value := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not value:
        raise RuntimeError(f"{path} stayed empty")
    return value


#: How long a page waits for its browser to come back; NiceGUI derives its socket pings from it
#: (every 0.8x, answer within 0.4x, at least 4 s and 2 s: NiceGUI's default 3 s gives those).
#: A busy dashboard process whose event loop lags past the ping timeout closes its sockets.
#: Measured (`python -m bench.users --users 200 --checkin-rate 200 --replicas 1 2`, shared
#: 2-core machine, load 3-11): with 3 s one replica kept 24-65 of 200 users' sockets, two
#: 125-187; with 10 s (pings every 8 s, 4 s to answer) both kept all 200. The price: a closed
#: tab's page (and its room membership) goes 10 s after it closed instead of 3 s. A killed
#: replica's pages move at once all the same (their sockets break; `tests/test_replicas.py`).
RECONNECT_TIMEOUT_S = 10.0


def _session_middleware() -> frozenset[type]:
    """NiceGUI's middlewares that only matter for browsers (sessions, its own paths)."""
    from nicegui.middlewares import RedirectWithPrefixMiddleware, SetCacheControlMiddleware
    from nicegui.storage import RequestTrackingMiddleware
    from starlette.middleware.sessions import SessionMiddleware

    return frozenset(
        {
            SessionMiddleware,
            RequestTrackingMiddleware,
            RedirectWithPrefixMiddleware,
            SetCacheControlMiddleware,
        }
    )


def _is_gzip(cls: object) -> bool:
    from starlette.middleware.gzip import GZipMiddleware

    return isinstance(cls, type) and issubclass(cls, GZipMiddleware)


def with_key_bypass(fastapi_app: FastAPI) -> None:
    """Build the app's middleware stack as configured, and without NiceGUI's session
    middlewares (with and without gzip), behind `KeyRequestBypass`, which sends requests
    decided by their API key alone to the latter. Hooked into `build_middleware_stack`
    because `ui.run` adds NiceGUI's middlewares after `setup` and the stack is built on the
    first ASGI call."""
    build = fastapi_app.build_middleware_stack

    def build_without(leave_out: frozenset[type]) -> ASGIApp:
        configured = fastapi_app.user_middleware
        fastapi_app.user_middleware = [m for m in configured if m.cls not in leave_out]
        try:
            return build()
        finally:
            fastapi_app.user_middleware = configured

    def build_both() -> ASGIApp:
        browser_only = _session_middleware()
        gzip = frozenset(m.cls for m in fastapi_app.user_middleware if _is_gzip(m.cls))
        fast = build_without(browser_only)
        plain = build_without(browser_only | gzip) if gzip else None
        return KeyRequestBypass(build(), fast, plain)

    fastapi_app.build_middleware_stack = build_both  # type: ignore[method-assign]


async def root_redirect() -> RedirectResponse:
    """`/` until a page takes it (`setup` adds this only when no page is registered there)."""
    return RedirectResponse("/events")


def setup(settings: Settings) -> None:
    """Register routes, pages and the live tasks on NiceGUI's app (before `ui.run`)."""
    registry.register(app)  # every HTTP API route, and the permission middleware
    app.add_middleware(SecurityHeaders)  # outside the permission middleware: refusals get them
    with_key_bypass(app)  # API-key requests skip NiceGUI's session middlewares
    pages.register_all()  # every page, /login and /users last
    if not any(getattr(r, "path", None) == "/" for r in app.routes):
        app.add_api_route("/", root_redirect, methods=["GET"], include_in_schema=False)
    handler_signatures.install()  # before any page is built
    socket_packets.install()
    redis_url = settings.effective_redis_url
    set_page_update_budget(settings.live_page_updates_per_s)

    async def _start() -> None:
        await live.start(redis_url)
        await attendance_live.start(redis_url, settings.lake)
        await video_api.start(settings)

    async def _stop() -> None:
        await live.stop()
        await attendance_live.stop()
        await video_api.stop()
        await close_redis()

    app.on_startup(_start)
    app.on_shutdown(_stop)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    apply_umask()  # started by hand too (`python -m ui.main`), not only by run.py
    settings = get_settings()
    secure_data_dir(settings.data_dir)
    use_redis_sessions()  # every replica sees every login (auth.sessions)
    setup(settings)
    log.info("Venueflow dashboard on http://%s:%d", settings.host, settings.port)
    ui.run(
        host=settings.host,
        port=settings.port,
        reload=False,
        show=False,
        title=theme.APP_NAME,
        storage_secret=storage_secret(settings),
        favicon=theme.FAVICON,
        show_welcome_message=False,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        ws_per_message_deflate=settings.ws_compression,
    )


if __name__ in {"__main__", "__mp_main__"}:
    main()

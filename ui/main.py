"""The dashboard process: NiceGUI pages plus the HTTP API on the same server.

Run with `python -m ui.main` (run.py does, with REDIS_URL set). It shares no memory with the
flows: everything it shows comes from Redis (live channels, state keys) or the Parquet lake.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from nicegui import app, ui

from core.settings import Settings, get_settings
from ui import api, attendance_live, live, pages, theme, video_api
from ui.pages import login_page, users_page

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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value


def use_session_dir(settings: Settings) -> None:
    """Keep NiceGUI's per-browser storage (the login sessions) under DATA_DIR/ui/sessions,
    mode 0700, instead of `.nicegui` in whatever folder the app was started from."""
    from nicegui.storage import Storage

    if os.environ.get("NICEGUI_STORAGE_PATH"):
        return
    path = (Path(settings.data_dir) / "ui" / "sessions").resolve()
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    Storage.path = path


def setup(settings: Settings) -> None:
    """Register routes, pages and the live tasks on NiceGUI's app (before `ui.run`)."""
    api.register(app)  # also the auth routes and the permission middleware (ui.auth_login)
    pages.register_all()
    login_page.register()  # /login
    users_page.register()  # /users (organisers)
    if not any(getattr(r, "path", None) == "/" for r in app.routes):
        app.add_api_route("/", api.root_redirect, methods=["GET"], include_in_schema=False)
    redis_url = settings.effective_redis_url

    async def _start() -> None:
        await live.start(redis_url)
        await attendance_live.start(redis_url, settings.lake)
        await video_api.start(settings)

    async def _stop() -> None:
        await live.stop()
        await attendance_live.stop()
        await video_api.stop()
        await api.close_redis()

    app.on_startup(_start)
    app.on_shutdown(_stop)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    use_session_dir(settings)
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
    )


if __name__ in {"__main__", "__mp_main__"}:
    main()

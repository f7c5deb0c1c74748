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


def setup(settings: Settings) -> None:
    """Register routes, pages and the live tasks on NiceGUI's app (before `ui.run`)."""
    api.register(app)
    pages.register_all()
    redis_url = settings.effective_redis_url

    async def _start() -> None:
        await live.start(redis_url)
        await attendance_live.start(redis_url, settings.lake_dir)
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

"""The ONE list of the dashboard's pages, and `register_all`, which serves them (`ui.main`
calls it). A new page: its module with a `register()`, and its line below. Kept out of the
package's `__init__` so that a page importing another page (`ui.pages.alarms_page`) does not
run, through the package, every other page first (an import ring).
"""

import asyncio
import contextlib

from nicegui import app

from core.settings import get_settings
from live import alarms as alarms_live
from ui.pages import (
    alarms_page,
    analytics_page,
    attendance_page,
    cameras_page,
    events_page,
    gate_page,
    login_page,
    notifications_page,
    overview_page,
    participants_page,
    report_page,
    rooms_page,
    users_page,
)


def _start_live() -> None:
    """The alarms subscriber and the overview's fps sampler run with the app (one each)."""
    tasks: list[asyncio.Task] = []

    async def start() -> None:
        await alarms_live.start(get_settings().effective_redis_url)
        tasks.append(asyncio.get_running_loop().create_task(overview_page.sample_forever()))

    async def stop() -> None:
        await alarms_live.stop()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        tasks.clear()

    app.on_startup(start)
    app.on_shutdown(stop)


def register_all() -> None:
    _start_live()
    overview_page.register()
    alarms_page.register()
    analytics_page.register()
    events_page.register()
    attendance_page.register()
    gate_page.register()
    participants_page.register()
    report_page.register()
    cameras_page.register()
    rooms_page.register()
    notifications_page.register()
    login_page.register()  # /login
    users_page.register()  # /users (organisers)

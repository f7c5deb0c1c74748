"""The ONE list of the HTTP API's routers, and `register`, which mounts them on the app.

Adding a route to a resource (three files): its handler with an `@router.<method>(path, ...)`
decorator in that resource's module, its line in `auth.permissions.ROUTES` (the permission
middleware refuses a route that has none), and its test. A new resource: a new module with
`router = Router(tags=[...])` (`api.http`), and its line in `ROUTERS` below. Within a
router, routes are matched in the order they are defined (a literal path such as
`/api/participants/qr.zip` before `/api/participants/{pid}`).
"""

from __future__ import annotations

from fastapi import FastAPI

from api import (
    alarms,
    analytics,
    checkins,
    docs,
    events,
    health,
    logs,
    participants,
    reports,
    session,
    video,
)
from api.http import Refusal, Router, refusal_handler
from auth.middleware import AuthMiddleware

#: In mounting order; `docs` last (it describes the routes before it).
ROUTERS: tuple[Router, ...] = (
    health.router,  # GET /health, /api/health
    events.router,  # events: ingest and listing
    checkins.router,  # gates: scans, verdicts, the tokens' public key
    participants.router,  # participants: import, list, QR codes, revoke
    reports.router,  # the attendance report: CSV, JSON, printable HTML
    video.router,  # live video (WebSocket, MJPEG, snapshots), cameras, commands
    logs.router,  # the activity log: GET /logs, POST /logs
    session.router,  # login/logout, who am I, the route table
    alarms.router,  # alarms: list, detail, ack, clear
    analytics.router,  # free SQL over the lake
    docs.router,  # /api/openapi.json and /api/docs
)


#: The routers of the browser's session (login, logout, who am I): they read and write NiceGUI's
#: `app.storage.user`, so only the dashboard (`ui.main`) serves them, not `api.main`.
SESSION_ROUTERS: tuple[Router, ...] = (session.router,)


def register(app: FastAPI, routers: tuple[Router, ...] = ROUTERS) -> None:
    """Mount the routers (all by default) and the permission middleware on the app: NiceGUI's
    (before `ui.run`, which adds the session middleware outside ours) or `api.main`'s."""
    app.add_exception_handler(Refusal, refusal_handler)
    for router in routers:
        router.mount(app)
    app.add_middleware(AuthMiddleware)

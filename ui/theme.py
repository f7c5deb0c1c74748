"""The dashboard's shared frame and look: header, navigation, level colours, favicon.

Every page calls `frame(...)` so that later pages (attendance, cameras, alarms) only add an entry
to `NAV` and get the same header; nothing here knows what a page shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from html import escape

from nicegui import ui

from core.settings import APP_NAME
from ui import alarm_banner
from ui.auth_menu import user_menu, visible_nav

#: Inline SVG favicon: served with the page itself, so the app needs no network and no asset file.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#1e3a5f"/>'
    '<path d="M7 9l9 15 9-15" fill="none" stroke="#5eead4" stroke-width="4" '
    'stroke-linecap="round" stroke-linejoin="round"/></svg>'
)

#: Quasar colour per event level (feed badges) and hex colour (chart series), in level order.
LEVEL_COLORS: dict[str, str] = {
    "INFO": "blue-grey-6",
    "WARN": "amber-8",
    "ERROR": "red-7",
    "CRITICAL": "deep-purple-7",
}
LEVEL_HEX: dict[str, str] = {
    "INFO": "#78909c",
    "WARN": "#ff8f00",
    "ERROR": "#d32f2f",
    "CRITICAL": "#512da8",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    icon: str


#: Pages in the header, in order. Attendance, Cameras and Alarms are added here when they exist.
NAV: list[NavItem] = [
    NavItem("Overview", "/", "dashboard"),
    NavItem("Alarms", "/alarms", "notifications_active"),
    NavItem("Events", "/events", "bolt"),
    NavItem("Attendance", "/attendance", "how_to_reg"),
    NavItem("Gate", "/gate", "qr_code_scanner"),
    NavItem("Participants", "/participants", "badge"),
    NavItem("Report", "/report", "summarize"),
    NavItem("Cameras", "/cameras", "videocam"),
    NavItem("Rooms", "/rooms", "meeting_room"),
    NavItem("Analytics", "/analytics", "query_stats"),
    NavItem("Notify", "/notifications", "campaign"),
]


@lru_cache(maxsize=256)
def nav_html(items: tuple[NavItem, ...], active: str) -> str:
    """The header's links as one HTML block (one element for NiceGUI, not three per link: a
    page build is most of a dashboard's CPU when many users connect, and these 33 elements
    were a fifth of it — docs/operating.md, Replicas). Built from `NAV`'s constants only,
    escaped anyway; an `<a>` per page as `ui.link` made, with Quasar's icon markup."""
    links = []
    for item in items:
        cls = "no-underline text-white px-3 py-1 rounded flex items-center gap-1"
        if item.path == active:
            cls += " bg-white/20"
        links.append(
            f'<a href="{escape(item.path)}" class="{cls}">'
            '<i class="q-icon notranslate material-icons text-lg" aria-hidden="true" '
            f'role="presentation">{escape(item.icon)}</i>'
            f"<span>{escape(item.label)}</span></a>"
        )
    return "".join(links)


@contextmanager
def frame(title: str, active: str) -> Iterator[None]:
    """Header with the app name and navigation, then the page's content in a padded column."""
    ui.page_title(f"{title} · {APP_NAME}")
    ui.colors(primary="#1e3a5f", secondary="#26a69a", accent="#5eead4")
    with ui.header(elevated=True).classes("items-center gap-6 px-6 py-2 bg-primary"):
        ui.label(APP_NAME).classes("text-xl font-bold tracking-wide text-white")
        # only what the user's role may open
        ui.html(nav_html(tuple(visible_nav(NAV)), active), sanitize=False).classes("flex gap-1")
        ui.space()
        alarm_banner.attach()  # open-alarm counter + the CRITICAL banner, on every page
        ui.label(title).classes("text-white/80")
        user_menu()  # who is logged in, log out
    with ui.column().classes("w-full max-w-screen-2xl mx-auto p-4 gap-4"):
        yield

"""The Overview page (`/`): the organiser's one screen — KPIs, live charts, alarms, cameras.

Nothing here subscribes to Redis: it reads the four live models the app already holds (one
subscriber each, see `live.events`, `live.attendance`, `live.alarms`, `live.video_hub`) when
their throttled `changed` events fire (≤ 4 Hz each, for all clients together), and updates only
what changed. Camera fps has no history in any model, so one app-wide sampler task
(`sample_forever`, started with the app) keeps the last minutes of each camera's fps.

Camera tiles (and camera figures) are only shown to roles with `cameras.view`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from nicegui import Client, ui

from auth.permissions import can, current_user
from core.records import LEVELS
from core.settings import get_settings
from core.venue import VenueError, venue_for
from live import alarms as alarms_live
from live import attendance as attendance_live
from live import events as live
from live.video_hub import changed as video_changed
from live.video_hub import hub
from live.video_hub import model as video_model
from ui import theme, widgets
from ui.pages.alarms_page import SEVERITY_COLORS, STATUS_COLORS
from ui.video_widgets import CameraTile, use_player, who_of

CHART_MINUTES = 30
FPS_SAMPLES = 300  # one a second: the last five minutes
ALARM_ROWS = 8

#: (HH:MM:SS UTC, camera id → fps out) once a second, for the fps chart.
fps_samples: deque[tuple[str, dict[str, float]]] = deque(maxlen=FPS_SAMPLES)


async def sample_forever() -> None:
    """Record every camera's current fps out once a second (app-wide, from `app.on_startup`)."""
    while True:
        now = datetime.now(UTC).strftime("%H:%M:%S")
        fps: dict[str, float] = {}
        for cam, st in video_model.cameras.items():
            try:
                fps[cam] = (
                    float(st.get("fps_out") or 0.0) if st.get("state") == "streaming" else 0.0
                )
            except (TypeError, ValueError):
                fps[cam] = 0.0
        fps_samples.append((now, fps))
        await asyncio.sleep(1.0)


def events_chart() -> dict[str, Any]:
    labels, series = live.model.chart()
    n = CHART_MINUTES
    return widgets.bar_chart(
        labels[-n:], [(lv, series[lv][-n:], theme.LEVEL_HEX[lv]) for lv in LEVELS]
    )


def arrivals_chart() -> dict[str, Any]:
    m = attendance_live.model
    gates = m.gate_ids()
    labels, series = m.chart(gates, CHART_MINUTES)
    return widgets.bar_chart(
        labels, [(m.gate_name(g), series[g], widgets.palette(i)) for i, g in enumerate(gates)]
    )


# Built once per process per model version and minute (the fps chart: per sample), shared by
# every client: see `widgets.Shared` and the events page, where per-client building was measured.
_events_chart = widgets.Shared(events_chart)
_arrivals_chart = widgets.Shared(arrivals_chart)


def _minute() -> int:
    return int(time.time() // 60)


def _fps_chart(camera_ids: tuple[str, ...]) -> dict[str, Any]:
    return fps_chart(list(camera_ids))


_fps_chart_shared = widgets.Shared(_fps_chart)


def fps_chart(camera_ids: list[str]) -> dict[str, Any]:
    samples = list(fps_samples)
    return {
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0, "type": "scroll"},
        "grid": {"left": 40, "right": 16, "top": 32, "bottom": 24},
        "xAxis": {"type": "category", "data": [t for t, _ in samples]},
        "yAxis": {"type": "value"},
        "series": [
            {
                "name": cam,
                "type": "line",
                "showSymbol": False,
                "data": [round(f.get(cam, 0.0), 1) for _, f in samples],
                "itemStyle": {"color": widgets.palette(i)},
            }
            for i, cam in enumerate(camera_ids)
        ],
    }


async def overview_page(client: Client) -> None:
    settings = get_settings()
    user = current_user()
    show_cameras = can(user, "cameras.view")
    try:
        cameras = venue_for(settings.venue_config).cameras
    except VenueError:
        cameras = []
    camera_ids = [c.id for c in cameras]
    state: dict[str, Any] = {"alarms": -1, "att": -1, "ev": -1}
    if show_cameras:
        use_player()

    with theme.frame("Overview", "/"):
        with ui.row().classes("w-full gap-4"):
            checked_lbl, checked_sub = widgets.kpi("Checked in / registered", "kpi-checked-in")
            inside_lbl, inside_sub = widgets.kpi("Inside now", "kpi-inside")
            rate_lbl, rate_sub = widgets.kpi("Events / min", "kpi-events-rate")
            with ui.card().classes("min-w-64 grow").props("flat bordered"):
                ui.label("Open alarms").classes("text-xs uppercase text-gray-500")
                alarms_total = ui.label("—").classes("text-3xl font-semibold")
                alarms_total.props('data-testid="kpi-alarms"')
                with ui.row().classes("gap-1"):
                    sev_badges = {
                        s: ui.badge(f"{s} 0", color=SEVERITY_COLORS[s]).props(
                            f'data-testid="kpi-alarms-{s.lower()}"'
                        )
                        for s in alarms_live.SEVERITIES
                    }
            cams_lbl, cams_sub = widgets.kpi("Cameras streaming", "kpi-cameras")

        with widgets.grid(440):
            with ui.card().classes("w-full").props("flat bordered"):
                ui.label("Events per minute by level (event time, UTC)").classes("font-medium")
                ev_chart = ui.echart(events_chart()).classes("w-full h-56")
                ev_chart.props('data-testid="chart-events"')
            with ui.card().classes("w-full").props("flat bordered"):
                ui.label("Arrivals per minute by gate (scan time, UTC)").classes("font-medium")
                arr_chart = ui.echart(arrivals_chart()).classes("w-full h-56")
                arr_chart.props('data-testid="chart-arrivals"')
            if show_cameras:
                with ui.card().classes("w-full").props("flat bordered"):
                    ui.label("Camera fps out (last 5 minutes)").classes("font-medium")
                    fps = ui.echart(fps_chart(camera_ids)).classes("w-full h-56")
                    fps.props('data-testid="chart-fps"')

        with ui.card().classes("w-full").props("flat bordered"):
            with ui.row().classes("w-full items-center"):
                ui.label("Active alarms").classes("font-medium")
                ui.space()
                ui.link("All alarms →", "/alarms")
            alarm_list = ui.column().classes("w-full gap-1").props('data-testid="overview-alarms"')

        tiles: dict[str, CameraTile] = {}
        if show_cameras and cameras:
            who = who_of(client)
            with widgets.grid(320):
                for cam in cameras:
                    tiles[cam.id] = CameraTile(cam.id, cam.name, cam.width, cam.height, who)

    def refresh_alarms() -> None:
        m = alarms_live.model
        if m.version == state["alarms"]:
            return
        state["alarms"] = m.version
        counts = m.counts()
        alarms_total.text = f"{sum(counts.values()):,}"
        for s, badge in sev_badges.items():
            badge.text = f"{s} {counts[s]}"
        alarm_list.clear()
        opened = m.sorted_open()
        with alarm_list:
            if not opened:
                ui.label("No open alarms.").classes("text-gray-500")
            for a in opened[:ALARM_ROWS]:
                row = ui.row().classes("w-full items-center gap-2 no-wrap")
                row.props["data-alarm-id"] = str(a.get("alarm_id"))  # set, never parsed
                row.props["data-status"] = str(a.get("status"))
                with row:
                    ui.badge(
                        str(a.get("severity")), color=SEVERITY_COLORS.get(a.get("severity"), "grey")
                    )
                    ui.badge(
                        str(a.get("status")), color=STATUS_COLORS.get(a.get("status"), "grey")
                    ).props("outline")
                    ui.label(
                        f"{a.get('rule_name') or a.get('rule_id')} — {a.get('source')}"
                    ).classes("font-medium")
                    ui.label(str(a.get("message") or "")).classes("text-sm text-gray-600 truncate")
            if len(opened) > ALARM_ROWS:
                ui.link(f"+ {len(opened) - ALARM_ROWS} more", "/alarms")

    def refresh_attendance() -> None:
        m = attendance_live.model
        if m.version != state["att"]:
            state["att"] = m.version
            t = m.totals or {}
            registered, checked = int(t.get("registered") or 0), int(t.get("checked_in") or 0)
            inside = int(t.get("inside") or 0)
            checked_lbl.text = f"{checked:,} / {registered:,}"
            checked_sub.text = f"{widgets.pct(checked, registered)} of registered"
            inside_lbl.text = f"{inside:,}"
            inside_sub.text = f"{widgets.pct(inside, registered)} of registered"
        widgets.set_chart(arr_chart, _arrivals_chart((m.version, _minute())))

    def refresh_events() -> None:
        m = live.model
        rate_lbl.text = f"{m.events_per_minute():,}"
        rate_sub.text = "live" if m.connected else "Redis unavailable"
        if m.version != state["ev"]:
            state["ev"] = m.version
        widgets.set_chart(ev_chart, _events_chart((m.version, _minute())))

    def refresh_video() -> None:
        streaming = sum(
            1 for c in camera_ids if (video_model.cameras.get(c) or {}).get("state") == "streaming"
        )
        cams_lbl.text = f"{streaming} / {len(camera_ids)}"
        cams_sub.text = "of the venue file's cameras"
        if show_cameras:
            last = fps_samples[-1][0] if fps_samples else None
            widgets.set_chart(fps, _fps_chart_shared((len(fps_samples), last), tuple(camera_ids)))
            for cam_id, tile in tiles.items():
                tile.update(video_model.cameras.get(cam_id), hub.viewers(cam_id))

    refresh_alarms()
    refresh_attendance()
    refresh_events()
    refresh_video()
    alarms_live.changed.subscribe(refresh_alarms)
    attendance_live.changed.subscribe(refresh_attendance)
    live.changed.subscribe(refresh_events)
    video_changed.subscribe(refresh_video)


def register() -> None:
    """Register the page route (call before `ui.run`)."""
    ui.page("/", title="Overview")(overview_page)

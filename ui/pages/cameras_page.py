"""The Cameras page: a live tile per camera of the venue file, and the per-minute statistics.

Tiles show frames through the shared hub (one Redis subscription per camera in this process,
whatever the number of open pages) and the capture status from `live:cameras`. The table below
reads the lake's `camera_stats` view (fps while streaming, drops, reconnects, uptime per minute).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nicegui import Client, ui

from core.settings import get_settings
from core.venue import VenueError, venue_for
from live.video_hub import changed, hub, model
from storage.queries import LakeUnavailable, camera_stats
from ui import theme
from ui.video_widgets import CameraTile, track_client, use_player, who_of

STATS_ROWS = 60
STATS_COLUMNS = [
    ("window_start", "Minute (UTC)"),
    ("camera_id", "Camera"),
    ("fps_in", "fps in"),
    ("fps_out", "fps out"),
    ("frames_out", "Frames out"),
    ("dropped", "Dropped"),
    ("reconnects", "Reconnects"),
    ("errors", "Failed opens"),
    ("uptime_pct", "Uptime %"),
]


def _cell(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return "—" if v is None else v


async def cameras_page(client: Client) -> None:
    settings = get_settings()
    use_player()
    with theme.frame("Cameras", "/cameras"):
        try:
            cameras = venue_for(settings.venue_config).cameras
        except VenueError as exc:
            ui.label(f"The venue file cannot be read: {exc}").classes("text-red-700")
            return
        if not cameras:
            ui.label("The venue file lists no cameras (add them under `cameras:`).")
        who = who_of(client)
        tiles: dict[str, CameraTile] = {}
        with (
            ui.element("div")
            .classes("w-full grid gap-4")
            .style("grid-template-columns: repeat(auto-fill, minmax(360px, 1fr))")
        ):
            for cam in cameras:
                tiles[cam.id] = CameraTile(cam.id, cam.name, cam.width, cam.height, who)

        with ui.card().classes("w-full").props("flat bordered"):
            with ui.row().classes("w-full items-center"):
                ui.label("Per-minute statistics (lake: camera_stats)").classes("font-medium")
                ui.space()
                info = ui.label("").classes("text-sm text-gray-500")
                ui.button(icon="refresh", on_click=lambda: load_stats()).props(
                    'flat dense data-testid="stats-refresh"'
                )
            table = ui.table(
                columns=[
                    {"name": k, "label": label, "field": k, "align": "left"}
                    for k, label in STATS_COLUMNS
                ],
                rows=[],
                row_key="key",
            ).classes("w-full")
            table.props('dense flat bordered data-testid="camera-stats"')

    def refresh() -> None:
        for cam_id, tile in tiles.items():
            tile.update(model.cameras.get(cam_id), hub.viewers(cam_id))

    async def load_stats() -> None:
        try:
            rows = await camera_stats(
                get_settings().lake, [k for k, _ in STATS_COLUMNS], STATS_ROWS
            )
        except LakeUnavailable as exc:
            info.text = str(exc)
            return
        table.rows = [
            {
                "key": f"{r[1]}@{r[0]}",
                **{k: _cell(v) for (k, _), v in zip(STATS_COLUMNS, r, strict=True)},
            }
            for r in rows
        ]
        info.text = f"newest {len(rows)} camera-minutes"

    refresh()
    changed.subscribe(refresh)
    track_client(client, "/cameras")
    ui.timer(0, load_stats, once=True)
    ui.timer(15.0, load_stats)


def register() -> None:
    ui.page("/cameras", title="Cameras")(cameras_page)

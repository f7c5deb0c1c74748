"""The Cameras page: a live tile per camera of the venue file, and the per-minute statistics.

Tiles show frames through the shared hub (one Redis subscription per camera in this process,
whatever the number of open pages) and the capture status from `live:cameras`. The table below
reads the lake's `camera_stats` view (fps while streaming, drops, reconnects, uptime per minute).
"""

from __future__ import annotations

from nicegui import Client, ui

from core.settings import get_settings
from core.venue import VenueError, venue_for
from live.video_hub import changed, hub, model
from storage.queries import LakeUnavailable, camera_stats
from ui import theme, widgets
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
        with widgets.grid(360):
            for cam in cameras:
                tiles[cam.id] = CameraTile(cam.id, cam.name, cam.width, cam.height, who)

        with ui.card().classes("w-full").props("flat bordered"):
            info = widgets.refresh_header(
                "Per-minute statistics (lake: camera_stats)", lambda: load_stats(), "stats-refresh"
            )
            table = widgets.data_table(STATS_COLUMNS)
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
        table.rows = widgets.lake_rows(
            STATS_COLUMNS,
            rows,
            lambda _i, r: f"{r[1]}@{r[0]}",
            time_format="%Y-%m-%d %H:%M",
            none="—",
        )
        info.text = f"newest {len(rows)} camera-minutes"

    refresh()
    changed.subscribe(refresh)
    track_client(client, "/cameras")
    ui.timer(0, load_stats, once=True)
    ui.timer(15.0, load_stats)


def register() -> None:
    ui.page("/cameras", title="Cameras")(cameras_page)

"""Pieces shared by the Cameras and Rooms pages: the live camera tile and who the viewer is.

A tile's picture is a plain `<img data-vf-camera=...>`; the bundled player script
(`/video/player.js`) gives it a WebSocket and shows frames as they come, so frames never pass
through NiceGUI's own websocket or Python-side element updates. The tile's text (state, fps,
drops, reconnects, last frame) is refreshed from `live.video_hub.model` by the page at ≤ 4 Hz.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from nicegui import Client, ui

from auth.permissions import permitted
from live.redis import RedisDown, Who, log_activity
from live.video_rooms import send_command

#: A transparent 1x1 GIF: the tile's picture until the first frame (no broken-image icon).
BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
STATE_COLORS = {
    "streaming": "positive",
    "connecting": "info",
    "reconnecting": "warning",
    "error": "negative",
    "stopped": "grey-7",
    "idle": "grey-5",
}


def use_player() -> None:
    """Load the player script on this page (once; it finds every tile by itself)."""
    ui.add_head_html('<script src="/video/player.js" defer></script>')


def who_of(client: Client) -> Who:
    try:
        ua = client.request.headers.get("user-agent")
    except RuntimeError:
        ua = None
    return Who.of(client.id, client.ip, ua)


def track_client(client: Client, page: str, room_id: str | None = None) -> None:
    """Log `client.connect` once the browser is connected and `client.disconnect` when it is
    gone for good (NiceGUI deletes the client after its reconnect timeout)."""
    who = who_of(client)

    async def connected() -> None:
        await log_activity("client.connect", who, room_id, metadata={"page": page})

    async def gone() -> None:
        await log_activity("client.disconnect", who, room_id, metadata={"page": page})

    ui.timer(0, connected, once=True)
    client.on_delete(gone)


def _age(iso: str | None) -> str:
    if not iso:
        return "—"
    try:
        ts = datetime.fromisoformat(iso)
    except ValueError:
        return "—"
    age = time.time() - ts.timestamp()
    return f"{max(age, 0):.1f} s ago" if age < 120 else f"{age / 60:.0f} min ago"


class CameraTile:
    """One camera: live picture, state badge, figures and capture buttons."""

    def __init__(
        self,
        camera_id: str,
        name: str,
        width: int,
        height: int,
        who: Who,
        room_id: str | None = None,
        notify: Callable[[str], Any] | None = None,
    ):
        self.camera_id, self.who, self.room_id = camera_id, who, room_id
        self._notify = notify or ui.notify
        with (
            ui.card()
            .classes("w-full p-2 gap-1")
            .props(f'flat bordered data-testid="tile-{camera_id}"')
        ):
            ui.element("img").props(
                f'data-vf-camera="{camera_id}" data-testid="video-{camera_id}" src="{BLANK}"'
            ).classes("w-full rounded bg-gray-800").style(f"aspect-ratio: {width} / {height}")
            with ui.row().classes("w-full items-center gap-2"):
                ui.label(name).classes("font-medium")
                ui.label(camera_id).classes("text-xs text-gray-500")
                ui.space()
                self.badge = ui.badge("unknown", color="grey").props(
                    f'data-testid="state-{camera_id}"'
                )
            self.figures = ui.label("—").classes("text-xs text-gray-600 font-mono")
            self.figures.props(f'data-testid="figures-{camera_id}"')
            self.error = ui.label("").classes("text-xs text-red-700 break-all")
            self.error.props(f'data-testid="error-{camera_id}"')
            with ui.row().classes("gap-2"):
                ui.button("Start", icon="play_arrow", on_click=self._cmd("start")).props(
                    f'dense flat color=positive data-testid="start-{camera_id}"'
                )
                ui.button("Stop", icon="stop", on_click=self._cmd("stop")).props(
                    f'dense flat color=negative data-testid="stop-{camera_id}"'
                )

    def _cmd(self, action: str) -> Callable[[], Awaitable[None]]:
        async def send() -> None:
            if not permitted("cameras.control"):  # checked when clicked, on the server
                return
            try:
                await send_command(action, self.camera_id, self.who, self.room_id)  # type: ignore[arg-type]
            except RedisDown as exc:
                self._notify(f"{action} not sent: {exc}")
                return
            self._notify(f"{action} sent to {self.camera_id}")

        return send

    def update(self, status: dict[str, Any] | None, viewers: int | None = None) -> None:
        if status is None:
            self.badge.text, self.badge.props["color"] = "no status yet", "grey"
            self.figures.text = "waiting for the video flow"
            self.error.text = ""
            return
        state = str(status.get("state"))
        self.badge.text = state
        self.badge.props["color"] = STATE_COLORS.get(state, "grey")
        self.badge.update()
        parts = [
            f"{status.get('fps_in', 0):.1f} fps in",
            f"{status.get('fps_out', 0):.1f} out",
            f"{status.get('dropped', 0)} dropped",
            f"{status.get('reconnects', 0)} reconnects",
            f"last frame {_age(status.get('last_frame_at'))}",
        ]
        if viewers is not None:
            parts.append(f"{viewers} viewer(s) here")
        self.figures.text = " · ".join(parts)
        self.error.text = status.get("error_message") or ""

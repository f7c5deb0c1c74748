"""Streaming rooms (seed 000): a room shows one or more cameras live, who is in it, and lets
the operator start and stop capture from there.

`/rooms` lists rooms and creates new ones; `/rooms/{room_id}` is the room: join under a name,
see everyone who joined (live, from `live:rooms`), leave — closing the tab leaves too. Joins,
leaves and connects go to the activity log (`request_logs`), capture commands carry the room.
"""

from __future__ import annotations

import contextlib

from nicegui import Client, app, ui
from pydantic import ValidationError
from redis.exceptions import RedisError

from auth.permissions import permitted
from core import keys
from core.records import Room
from core.settings import get_settings
from core.venue import VenueError, venue_for
from live.redis import RedisDown, redis_client
from live.video_hub import changed, model
from live.video_rooms import create_room, delete_room, join, leave
from ui import theme
from ui.video_widgets import CameraTile, track_client, use_player, who_of


def _cameras() -> dict[str, tuple[str, int, int]]:
    """Camera id → (name, width, height) from the venue file ({} if it cannot be read)."""
    try:
        cams = venue_for(get_settings().venue_config).cameras
    except VenueError:
        return {}
    return {c.id: (c.name, c.width, c.height) for c in cams}


async def _room(room_id: str) -> Room | None:
    """The room from Redis (the hub's model may not have seen a room created a moment ago)."""
    with contextlib.suppress(RedisError, OSError, TimeoutError, ValidationError):
        raw = await redis_client().hget(keys.ROOMS, room_id)
        if raw:
            return Room.model_validate_json(raw)
    return model.rooms.get(room_id)


async def rooms_page(client: Client) -> None:
    cameras = _cameras()
    who = who_of(client)
    with theme.frame("Rooms", "/rooms"):
        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("New room").classes("font-medium")
            with ui.row().classes("w-full items-end gap-4"):
                name = ui.input("Name").classes("w-64").props('data-testid="room-name"')
                picks = (
                    ui.select(
                        {c: f"{n} ({c})" for c, (n, _, _) in cameras.items()},
                        multiple=True,
                        label="Cameras",
                        value=list(cameras)[:1],
                    )
                    .classes("min-w-64")
                    .props('use-chips data-testid="room-cameras"')
                )
                ui.button("Create", icon="add", on_click=lambda: create()).props(
                    'data-testid="room-create"'
                )
        listing = ui.column().classes("w-full gap-2").props('data-testid="room-list"')

    async def create() -> None:
        if not permitted("rooms.manage"):
            return
        try:
            room = await create_room(name.value or "", list(picks.value or []), who, None)
        except (ValueError, RedisDown) as exc:
            ui.notify(f"Room not created: {exc}", type="negative")
            return
        ui.navigate.to(f"/rooms/{room.id}")

    async def remove(room_id: str) -> None:
        if not permitted("rooms.manage"):
            return
        try:
            await delete_room(room_id, who)
        except RedisDown as exc:
            ui.notify(f"Room not deleted: {exc}", type="negative")

    shown: list[tuple] = [()]

    def refresh() -> None:
        rows = tuple(
            (r.id, r.name, tuple(r.camera_ids), len(model.live_members(r.id)))
            for r in sorted(model.rooms.values(), key=lambda r: r.created_at)
        )
        if rows == shown[0]:
            return
        shown[0] = rows
        listing.clear()
        with listing:
            if not rows:
                ui.label("No rooms yet.").classes("text-gray-500")
            for room_id, room_name, cams, n in rows:
                card = ui.card().classes("w-full").props(f'flat bordered data-room-id="{room_id}"')
                with card, ui.row().classes("w-full items-center gap-4"):
                    ui.link(room_name, f"/rooms/{room_id}").classes("text-lg font-medium")
                    ui.label(", ".join(cams)).classes("text-sm text-gray-600")
                    ui.space()
                    ui.badge(f"{n} in the room", color="secondary")
                    ui.button(icon="delete", on_click=lambda rid=room_id: remove(rid)).props(
                        "flat dense color=negative"
                    )

    refresh()
    changed.subscribe(refresh)


async def room_page(room_id: str, client: Client) -> None:
    cameras = _cameras()
    room = await _room(room_id)
    use_player()
    with theme.frame("Rooms", "/rooms"):
        if room is None:
            ui.label(f"There is no room {room_id!r}.").props('data-testid="no-room"')
            ui.link("All rooms", "/rooms")
            return
        who = who_of(client)
        member_id = client.id
        joined = {"yes": False}
        with ui.row().classes("w-full items-center gap-4"):
            ui.label(room.name).classes("text-2xl font-semibold").props('data-testid="room-title"')
            ui.space()
            default = str(app.storage.user.get("name") or f"Guest {client.id[:4]}")
            name = ui.input("Your name", value=default).classes("w-56")
            name.props('data-testid="member-name"')
            button = ui.button("Join", icon="login").props('data-testid="join"')
        with ui.row().classes("w-full items-start gap-4 no-wrap"):
            with (
                ui.element("div")
                .classes("grow grid gap-4")
                .style("grid-template-columns: repeat(auto-fill, minmax(360px, 1fr))")
            ):
                tiles: dict[str, CameraTile] = {}
                for cam_id in room.camera_ids:
                    cam_name, w, h = cameras.get(cam_id, (cam_id, 640, 480))
                    tiles[cam_id] = CameraTile(cam_id, cam_name, w, h, who, room_id=room.id)
            with ui.card().classes("w-72").props("flat bordered"):
                count = ui.label("In the room").classes("font-medium")
                members = ui.column().classes("gap-1").props('data-testid="members"')

    async def toggle() -> None:
        if not permitted("rooms.view"):
            return
        try:
            if joined["yes"]:
                await leave(room.id, member_id, who)
                joined["yes"] = False
            else:
                app.storage.user["name"] = name.value
                await join(room.id, member_id, name.value or "Guest", who)
                joined["yes"] = True
        except RedisDown as exc:
            ui.notify(str(exc), type="negative")
        button.text = "Leave" if joined["yes"] else "Join"
        button.props(f"icon={'logout' if joined['yes'] else 'login'}")
        refresh()

    button.on_click(toggle)

    async def gone() -> None:
        if joined["yes"]:
            await leave(room.id, member_id, who, reason="disconnected")

    client.on_delete(gone)
    shown: list[tuple] = [()]

    def refresh() -> None:
        for cam_id, tile in tiles.items():
            tile.update(model.cameras.get(cam_id))
        people = tuple((m.member_id, m.name) for m in model.live_members(room.id))
        if people == shown[0]:
            return
        shown[0] = people
        count.text = f"In the room ({len(people)})"
        members.clear()
        with members:
            if not people:
                ui.label("Nobody yet.").classes("text-gray-500 text-sm")
            for mid, who_name in people:
                me = " (you)" if mid == member_id else ""
                with ui.row().classes("items-center gap-2").props(f'data-member-id="{mid}"'):
                    ui.icon("person").classes("text-secondary")
                    ui.label(who_name + me).props('data-testid="member"')

    refresh()
    changed.subscribe(refresh)
    track_client(client, f"/rooms/{room.id}", room.id)


def register() -> None:
    ui.page("/rooms", title="Rooms")(rooms_page)
    ui.page("/rooms/{room_id}", title="Room")(room_page)

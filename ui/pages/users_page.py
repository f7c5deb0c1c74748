"""The Users page (organisers): people and their roles, passwords, and machines' API keys.

Same store and rules as `run.py users|keys` (auth.users, auth.keys). Every action checks
`users.manage` again on the server when it runs (a page left open after a role change keeps
no power) and is written to the activity log (`auth.user.*`, `auth.key.*`, with who did it).
A new API key, or a generated password, is shown once in a dialog and never again.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import Client, ui

from auth.keys import KEY_KINDS, ApiKeyError, key_store
from auth.login import Caller, audit
from auth.permissions import Forbidden, require
from auth.users import ROLES, UserError, user_store
from core.settings import get_settings
from ui import theme

PERM = "users.manage"


def _ts(v: Any) -> str:
    return v.strftime("%Y-%m-%d %H:%M") if v is not None else "—"


def generated_password() -> str:
    return secrets.token_urlsafe(12)


async def users_page(client: Client) -> None:
    settings = get_settings()
    users, keys_ = user_store(settings.data_dir), key_store(settings.data_dir)
    caller = Caller.of(client.request)

    async def guarded(action: Callable[[], Awaitable[None]]) -> None:
        """Run an action if the current user still may; say why not otherwise."""
        try:
            require(PERM)
            await action()
        except Forbidden as exc:
            ui.notify(f"Not allowed: {exc}", type="negative")
        except (UserError, ApiKeyError) as exc:
            ui.notify(str(exc), type="warning")

    with theme.frame("Users", "/users"):
        with ui.card().classes("w-full"):
            ui.label("People").classes("text-lg font-medium")
            user_rows = ui.column().classes("w-full gap-1").props('data-testid="user-rows"')
            ui.separator()
            ui.label("Add a person").classes("font-medium")
            with ui.row().classes("items-end gap-3"):
                new_name = ui.input("User name").props('data-testid="new-username"')
                new_role = ui.select(list(ROLES), value="operator", label="Role")
                new_role.props('data-testid="new-role"')
                new_pw = ui.input(
                    "Password (empty: generate one)", password=True, password_toggle_button=True
                ).props('data-testid="new-password"')
                add_btn = ui.button("Add", icon="person_add").props('data-testid="add-user"')
        with ui.card().classes("w-full"):
            ui.label("API keys (devices, gates, scripts)").classes("text-lg font-medium")
            ui.markdown(
                "`device`: POST /api/events, POST /logs · `gate`: check-ins, verdicts, public "
                "key (optionally only at one gate) · `admin`: every API-key route. Keys in "
                "`API_KEYS` are not listed here; they grant every kind."
            ).classes("text-sm text-gray-600")
            key_rows = ui.column().classes("w-full gap-1").props('data-testid="key-rows"')
            ui.separator()
            with ui.row().classes("items-end gap-3"):
                key_name = ui.input("Name (who or what uses it)").props('data-testid="key-name"')
                key_kind = ui.select(list(KEY_KINDS), value="device", label="Kind")
                key_kind.props('data-testid="key-kind"')
                key_gate = ui.input("Gate id (gate keys, optional)").props('data-testid="key-gate"')
                key_btn = ui.button("Create key", icon="key").props('data-testid="create-key"')

    def show_once(title: str, secret: str, note: str) -> None:
        with ui.dialog() as dialog, ui.card().classes("gap-2"):
            ui.label(title).classes("text-lg")
            ui.label(note).classes("text-sm text-gray-700")
            shown = ui.label(secret).classes("font-mono break-all select-all bg-gray-100 p-2")
            shown.props('data-testid="secret"')
            ui.button("Done", on_click=dialog.close).props("flat")
        dialog.open()

    def render_users() -> None:
        user_rows.clear()
        with user_rows:
            for rec in users.all():
                with (
                    ui.row()
                    .classes("items-center gap-3 w-full")
                    .props(f'data-testid="user-{rec.username}"')
                ):
                    ui.label(rec.username).classes("font-mono w-48")
                    sel = ui.select(list(ROLES), value=rec.role).classes("w-40")
                    sel.on_value_change(
                        lambda e, n=rec.username: guarded(lambda: set_role(n, e.value))
                    )
                    ui.label(f"since {_ts(rec.created_at)}").classes("text-sm text-gray-500")
                    ui.space()
                    ui.button(
                        "Reset password", icon="password",
                        on_click=lambda n=rec.username: guarded(lambda: reset_password(n)),
                    ).props("flat dense")  # fmt: skip
                    ui.button(
                        icon="delete", on_click=lambda n=rec.username: guarded(lambda: remove(n))
                    ).props(f'flat dense color=negative data-testid="remove-{rec.username}"')

    def render_keys() -> None:
        key_rows.clear()
        with key_rows:
            recs = keys_.all()
            if not recs:
                ui.label("No managed API keys yet.").classes("text-gray-500")
            for k in recs:
                with (
                    ui.row()
                    .classes("items-center gap-3 w-full")
                    .props(f'data-testid="key-{k.key_id}"')
                ):
                    ui.label(k.key_id).classes("font-mono w-24")
                    ui.label(k.name).classes("w-48")
                    ui.badge(k.kind)
                    ui.label(f"gate {k.gate_id}" if k.gate_id else "").classes("w-28")
                    ui.label(f"by {k.created_by}, {_ts(k.created_at)}").classes(
                        "text-sm text-gray-500"
                    )
                    ui.space()
                    if k.revoked_at is not None:
                        ui.label(f"revoked {_ts(k.revoked_at)} by {k.revoked_by}").classes(
                            "text-sm text-red-700"
                        )
                    else:
                        ui.button(
                            "Revoke",
                            icon="block",
                            on_click=lambda i=k.key_id: guarded(lambda: revoke(i)),
                        ).props(f'flat dense color=negative data-testid="revoke-{k.key_id}"')

    async def add_user() -> None:
        me = require(PERM)
        pw = new_pw.value or generated_password()
        user = await asyncio.to_thread(users.add, new_name.value or "", new_role.value, pw)
        await audit("auth.user.add", caller, by=me.username, username=user.username, role=user.role)
        if not new_pw.value:
            show_once(f"Password of {user.username}", pw, "Give it to them; it is not shown again.")
        new_name.value = new_pw.value = ""
        ui.notify(f"{user.username} added as {user.role}", type="positive")
        render_users()

    async def set_role(name: str, role: str) -> None:
        me = require(PERM)
        try:
            user = users.set_role(name, role)
        finally:
            render_users()
        await audit("auth.user.role", caller, by=me.username, username=name, role=user.role)
        ui.notify(f"{name} is now {user.role}", type="positive")

    async def reset_password(name: str) -> None:
        me = require(PERM)
        pw = generated_password()
        await asyncio.to_thread(users.set_password, name, pw)
        await audit("auth.user.password", caller, by=me.username, username=name)
        show_once(
            f"New password of {name}", pw,
            "Their other sessions have ended. Give it to them; it is not shown again.",
        )  # fmt: skip

    async def remove(name: str) -> None:
        me = require(PERM)
        if name == me.username:
            raise UserError("you cannot remove yourself (ask another organiser)")
        users.remove(name)
        await audit("auth.user.remove", caller, by=me.username, username=name)
        ui.notify(f"{name} removed", type="positive")
        render_users()

    async def create_key() -> None:
        me = require(PERM)
        key, rec = keys_.create(
            key_name.value or "", key_kind.value, me.username, key_gate.value or None
        )
        await audit(
            "auth.key.create", caller, by=me.username, key_id=rec.key_id, kind=rec.kind,
            gate_id=rec.gate_id,
        )  # fmt: skip
        show_once(
            f"API key {rec.key_id} ({rec.kind})", key,
            "Send it as the X-API-Key header. Copy it now: only its digest is kept.",
        )  # fmt: skip
        key_name.value = key_gate.value = ""
        render_keys()

    async def revoke(key_id: str) -> None:
        me = require(PERM)
        rec = keys_.revoke(key_id, me.username)
        await audit("auth.key.revoke", caller, by=me.username, key_id=rec.key_id, kind=rec.kind)
        ui.notify(f"key {key_id} revoked", type="positive")
        render_keys()

    add_btn.on_click(lambda: guarded(add_user))
    key_btn.on_click(lambda: guarded(create_key))
    render_users()
    render_keys()


def register() -> None:
    ui.page("/users", title="Users")(users_page)

"""The header's share of auth: navigation entries the user may open, and the user menu.

`theme.frame` calls both, so every page gets them without knowing about roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from nicegui import app, ui

from auth.login import Caller, logout
from auth.permissions import can, current_user, rule_for

LOGOUT_JS = """
try {
  const r = await fetch('/api/auth/logout', {method: 'POST', credentials: 'same-origin'});
  return r.status;
} catch (e) { return 0; }
"""


class _Nav(Protocol):
    path: str


T = TypeVar("T", bound=_Nav)


def visible_nav(items: Iterable[T]) -> list[T]:
    """The entries whose page the current user may open (hiding is convenience: the
    middleware refuses the pages themselves)."""
    user = current_user()
    out = []
    for item in items:
        rule = rule_for("GET", item.path)
        if rule is not None and rule.perm is not None and can(user, rule.perm):
            out.append(item)
    return out


def user_menu() -> None:
    """Who is logged in, their role, and Log out (plus Users for organisers)."""
    user = current_user()
    if user is None:
        return

    async def do_logout() -> None:
        # The browser posts the logout, so that its response can set a new, empty session
        # cookie (`auth.login.fresh_session`); should that fail, the login ends here.
        try:
            status = await ui.run_javascript(LOGOUT_JS, timeout=10)
        except TimeoutError:
            status = None
        if status != 200:
            await logout(app.storage.user, Caller.of(ui.context.client.request))
        ui.navigate.to("/login?reason=logged+out")

    with ui.button(icon="account_circle").props(
        'flat color=white no-caps data-testid="user-menu"'
    ) as btn:
        ui.label(f"{user.username} · {user.role}").classes("ml-1")
        with ui.menu():
            if can(user, "users.manage"):
                ui.menu_item("Users and API keys", lambda: ui.navigate.to("/users"))
            ui.menu_item("Log out", do_logout).props('data-testid="logout"')
    btn.tooltip(f"Logged in as {user.username} ({user.role})")

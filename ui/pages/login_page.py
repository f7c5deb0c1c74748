"""The login page (`/login?next=…`): name and password, checked by `auth.login.login`.

Open to everyone (the middleware lets it through). When nobody has been created yet it says
how to create the first organiser on the server: there is no default user or password.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi.responses import RedirectResponse
from nicegui import Client, ui

from auth.permissions import current_user
from auth.users import user_store
from core.settings import get_settings
from ui import theme

REASONS = {
    "expired": "Your session has expired; please log in again.",
    "idle": "You were logged out after a while without activity; please log in again.",
    "removed": "Your user no longer exists; ask an organiser.",
    "password changed": "Your password was changed; please log in with the new one.",
    "logged out": "You are logged out.",
}


def safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no `//`): never an open redirect."""
    t = (target or "").strip()
    parts = urlsplit(t)
    if not t.startswith("/") or t.startswith("//") or parts.scheme or parts.netloc or "\\" in t:
        return "/"
    if parts.path == "/login":
        return "/"
    return t


FIRST_RUN = (
    "**No user exists yet.** Create the first organiser on the server:\n\n"
    "```\nuv run run.py users add NAME --role organiser\n```\n\n"
    "It asks for the password twice; then log in here."
)


#: The browser itself posts the login (`POST /api/auth/login`), so that the response can give
#: it a new session cookie (`auth.login.fresh_session`); the values are read from the two
#: inputs (element ids filled in), never sent back down the page's socket.
LOGIN_JS = """
const value = (id) => {
  const el = getHtmlElement(id);  // Quasar puts the element id on the <input> itself
  return (el.tagName === 'INPUT' ? el : el.querySelector('input')).value;
};
try {
  const r = await fetch('/api/auth/login', {
    method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({username: value(%d), password: value(%d)}),
  });
  let body = {};
  try { body = await r.json(); } catch (e) {}
  let detail = body.detail;
  if (typeof detail !== 'string') detail = 'login refused (' + r.status + ')';
  return {status: r.status, detail: detail};
} catch (e) {
  return {status: 0, detail: 'the server did not answer; try again'};
}
"""


async def login_page(client: Client, next: str = "/", reason: str | None = None):
    target = safe_next(next)
    if current_user() is not None:
        return RedirectResponse(target, status_code=303)
    ui.page_title(f"Log in · {theme.APP_NAME}")
    ui.colors(primary="#1e3a5f", secondary="#26a69a", accent="#5eead4")
    no_users = user_store(get_settings().data_dir).empty()
    with ui.column().classes("w-full items-center mt-16 gap-4"):
        ui.label(theme.APP_NAME).classes("text-3xl font-bold text-primary")
        with ui.card().classes("w-96 gap-3"):
            ui.label("Log in").classes("text-xl")
            if reason in REASONS:
                ui.label(REASONS[reason]).classes("text-amber-800").props('data-testid="reason"')
            if no_users:
                ui.markdown(FIRST_RUN).props('data-testid="first-run"')
            name = ui.input("User name").props('autocomplete=username data-testid="username"')
            name.classes("w-full")
            password = ui.input("Password", password=True, password_toggle_button=True)
            password.props('autocomplete=current-password data-testid="password"').classes("w-full")
            error = ui.label("").classes("text-red-700").props('data-testid="login-error"')
            error.set_visibility(False)
            button = ui.button("Log in", icon="login").props('data-testid="login"')
            button.classes("w-full")

    async def submit() -> None:
        if not name.value or not password.value:
            error.text = "Enter your user name and password."
            error.set_visibility(True)
            return
        button.disable()
        try:
            res = await ui.run_javascript(LOGIN_JS % (name.id, password.id), timeout=30)
        except TimeoutError:
            res = {"status": 0, "detail": "the server did not answer; try again"}
        finally:
            button.enable()
        if not isinstance(res, dict) or res.get("status") != 200:
            detail = str((res or {}).get("detail") or "login failed")
            error.text = detail[:1].upper() + detail[1:] + "."
            error.set_visibility(True)
            password.value = ""
            return
        ui.navigate.to(target)

    button.on_click(submit)
    password.on("keydown.enter", submit)
    name.on("keydown.enter", lambda: password.run_method("focus"))


def register() -> None:
    ui.page("/login", title="Log in")(login_page)

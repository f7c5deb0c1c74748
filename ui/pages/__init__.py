"""Dashboard pages; each module exposes `register()` so `ui.main` decides what is served."""

from ui.pages import events_page


def register_all() -> None:
    events_page.register()

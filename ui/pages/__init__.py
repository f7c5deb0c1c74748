"""Dashboard pages; each module exposes `register()` so `ui.main` decides what is served."""

from ui.pages import (
    attendance_page,
    cameras_page,
    events_page,
    gate_page,
    participants_page,
    report_page,
    rooms_page,
)


def register_all() -> None:
    events_page.register()
    attendance_page.register()
    gate_page.register()
    participants_page.register()
    report_page.register()
    cameras_page.register()
    rooms_page.register()

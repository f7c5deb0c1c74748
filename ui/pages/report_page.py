"""The Report page (`/report`): the attendance report, on screen.

It renders `storage.reports.attendance_report` — the very queries behind the CSV export and the
printable HTML, and documented for `run.py query` — so every number here is one an analyst can
reproduce. Refreshed on demand and every 30 s (lake queries, not live messages).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nicegui import ui

from api.reports import NO_SHOW_PAGE_LIMIT, load_report, local, venue
from core.records import CHECKIN_OUTCOMES
from core.venue import Venue
from storage.queries import LakeUnavailable
from storage.reports import Report, Section
from ui import theme

REFRESH_S = 30.0
KPIS = {
    "registered": "Registered",
    "checked_in": "Checked in",
    "no_shows": "No-shows",
    "entries": "Entries",
    "exits": "Exits",
    "refused": "Refused scans",
    "flagged": "Flagged scans",
    "revoked": "Revoked",
}


def _rows(sec: Section, ven: Venue, extra: dict[str, Any] | None = None) -> list[dict]:
    out = []
    for i, r in enumerate(sec.rows):
        d: dict[str, Any] = {"_key": i}
        for c, v in zip(sec.columns, r, strict=True):
            if isinstance(v, datetime):
                v = local(v, ven, seconds=v.second != 0 or v.microsecond != 0)
            elif isinstance(v, bool):
                v = "yes" if v else "no"
            d[c] = v
        for name, f in (extra or {}).items():
            d[name] = f(dict(zip(sec.columns, r, strict=True)))
        out.append(d)
    return out


def _columns(names: list[str]) -> list[dict[str, Any]]:
    return [
        {"name": c, "label": c.replace("_", " "), "field": c, "align": "left", "sortable": True}
        for c in names
    ]


def _chart(sec: Section, ven: Venue) -> dict[str, Any]:
    return {
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 44, "right": 16, "top": 16, "bottom": 28},
        "xAxis": {"type": "category", "data": [local(m, ven) for m, _ in sec.rows]},
        "yAxis": {"type": "value", "minInterval": 1},
        "series": [
            {
                "name": "entries",
                "type": "bar",
                "data": [int(n) for _, n in sec.rows],
                "itemStyle": {"color": "#26a69a"},
            }
        ],
    }


async def report_page() -> None:
    ven = venue()
    with theme.frame("Report", "/report"):
        with ui.row().classes("w-full items-center gap-3"):
            ui.label(f"Attendance report · {ven.event.name}").classes("text-lg font-semibold")
            ui.space()
            stamp = ui.label("").classes("text-sm text-gray-500").props('data-testid="generated"')
            ui.button(icon="refresh", on_click=lambda: load()).props(
                'flat dense data-testid="refresh"'
            )
            ui.link("Download CSV", "/reports/attendance.csv").props(
                'download data-testid="csv-link"'
            )
            ui.link("Printable report", "/reports/attendance.html", new_tab=True).props(
                'data-testid="html-link"'
            )
        error = ui.label("").classes("text-negative")
        kpi_row = ui.row().classes("w-full gap-4")
        with ui.card().classes("w-full").props("flat bordered"):
            ui.label(
                f"Arrival curve: accepted entries per minute, all gates ({ven.event.timezone})"
            ).classes("font-medium")
            chart = ui.echart(
                {"xAxis": {"type": "category", "data": []}, "yAxis": {}, "series": []}
            ).classes("w-full h-64")
            ui.label(
                "A minute appears once it has closed (the check-in flow's allowed lateness after "
                "its end)."
            ).classes("text-xs text-gray-500")
        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Per-gate totals").classes("font-medium")
            gates = ui.table(columns=[], rows=[], row_key="_key").classes("w-full")
            gates.props('dense flat data-testid="gate-totals"')
        with ui.row().classes("w-full gap-4 items-start"):
            with ui.card().classes("min-w-72").props("flat bordered"):
                ui.label("Peak minutes (top 10)").classes("font-medium")
                peaks = ui.table(columns=[], rows=[], row_key="_key").props(
                    'dense flat data-testid="peak-minutes"'
                )
            with ui.card().classes("min-w-72").props("flat bordered"):
                ui.label("Refused scans by status").classes("font-medium")
                refusals = ui.table(columns=[], rows=[], row_key="_key").props(
                    'dense flat data-testid="refusals"'
                )
        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Flagged scans").classes("font-medium")
            flagged = ui.table(columns=[], rows=[], row_key="_key", pagination=10).props(
                'dense flat data-testid="flagged"'
            )
        with ui.card().classes("w-full").props("flat bordered"):
            no_show_title = ui.label("No-shows").classes("font-medium")
            no_shows = ui.table(columns=[], rows=[], row_key="_key", pagination=25).props(
                'dense flat data-testid="no-shows"'
            )
            no_show_note = ui.label("").classes("text-xs text-gray-500")

    gate_names = {g.id: g.name for g in ven.gates}

    def show(rep: Report) -> None:
        s = rep.summary
        kpi_row.clear()
        with kpi_row:
            for key, label in KPIS.items():
                with ui.card().classes("min-w-36").props("flat bordered"):
                    ui.label(label).classes("text-xs uppercase text-gray-500")
                    ui.label(f"{s.get(key, 0):,}").classes("text-2xl font-semibold").props(
                        f'data-testid="kpi-{key}"'
                    )
        chart.options.clear()
        chart.options.update(_chart(rep["arrival_curve"], ven))
        chart.update()
        for table, sec, extra in (
            (
                gates,
                rep["gate_totals"],
                {"gate": lambda d: gate_names.get(d["gate_id"], "(not in the venue file)")},
            ),
            (peaks, rep["peak_minutes"], None),
            (refusals, rep["refusals"], {"meaning": lambda d: CHECKIN_OUTCOMES.get(d["status"])}),
            (flagged, rep["flagged"], None),
        ):
            table.columns = _columns([*sec.columns, *(extra or {})])
            table.rows = _rows(sec, ven, extra)
        ns = rep["no_shows"]
        no_show_title.text = f"No-shows ({s['no_shows']:,})"
        shown = Section(ns.key, ns.title, ns.sql, ns.columns, ns.rows[:NO_SHOW_PAGE_LIMIT])
        no_shows.columns = _columns(ns.columns)
        no_shows.rows = _rows(shown, ven)
        no_show_note.text = (
            f"The first {NO_SHOW_PAGE_LIMIT:,} are listed; the CSV has all {len(ns.rows):,}."
            if len(ns.rows) > NO_SHOW_PAGE_LIMIT
            else ""
        )
        stamp.text = f"generated {local(rep.generated_at, ven, seconds=True)}"

    async def load() -> None:
        try:
            rep = await load_report()
        except LakeUnavailable as exc:
            error.text = str(exc)
            return
        error.text = ""
        show(rep)

    ui.timer(0, load, once=True)
    ui.timer(REFRESH_S, load)


def register() -> None:
    """Register the page route (call before `ui.run`)."""
    ui.page("/report", title="Report")(report_page)

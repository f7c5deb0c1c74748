"""The Attendance page (`/attendance`): who is in, how fast they arrive, how loaded each gate is.

Everything here reads `live.attendance.model` when `live.attendance.changed` fires
(≤ 4 Hz for all clients together), never per scan: the check-in flow's totals document
(checked in / registered, inside now, flagged, refused, per-gate load, the newest verdicts) and
the arrivals per gate per minute (closed windows, plus an estimate for minutes still open).
"""

from __future__ import annotations

import time
from typing import Any

from nicegui import ui

from core.settings import get_settings
from core.venue import VenueError, venue_for
from live import attendance as attendance_live
from ui import theme, widgets
from ui.pages.gate_page import status_slot, verdict_row

FEED_ROWS = 50
KPI = "min-w-52"  # card width

COLUMNS = widgets.columns(
    [
        ("time", "Time (UTC)"),
        ("gate", "Gate"),
        ("direction", "Dir"),
        ("status", "Verdict"),
        ("name", "Participant"),
        ("reason", "Reason"),
    ]
)


def _venue_gates() -> dict[str, dict[str, Any]]:
    """Gate id → {name, capacity_per_minute} from the venue file (before the first totals)."""
    try:
        venue = venue_for(get_settings().venue_config)
    except VenueError:
        return {}
    return {
        g.id: {"name": g.name, "capacity_per_minute": g.capacity_per_minute} for g in venue.gates
    }


def _gates(fallback: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return ((attendance_live.model.totals or {}).get("gates") or {}) or fallback


def _chart_options(gates: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    labels, series = attendance_live.model.chart([gid for gid, _ in gates])
    return widgets.bar_chart(
        labels, [(name, series[gid], widgets.palette(i)) for i, (gid, name) in enumerate(gates)]
    )


# Built once per process per model version (and minute), shared by every client: see
# `widgets.Shared` and the events page, where per-client building was measured.
_chart = widgets.Shared(_chart_options)
_feed = widgets.Shared(lambda: [verdict_row(v) for v in attendance_live.model.recent(FEED_ROWS)])


def chart_now(gates: dict[str, dict[str, Any]]) -> Any:
    named = tuple((gid, str(g.get("name") or gid)) for gid, g in gates.items())
    return _chart((attendance_live.model.version, int(time.time() // 60)), named)


async def attendance_page() -> None:
    venue_gates = _venue_gates()
    state: dict[str, Any] = {"version": -1, "gate_ids": None}

    with theme.frame("Attendance", "/attendance"):
        with ui.row().classes("w-full items-center gap-4"):
            event_lbl = ui.label("").classes("text-lg font-medium")
            ui.space()
            updated_lbl = ui.label("").classes("text-sm text-gray-500")
            status = widgets.live_badge()

        with ui.row().classes("w-full gap-4"):
            checked_lbl, checked_sub = widgets.kpi("Checked in / registered", "kpi-checked-in", KPI)
            inside_lbl, inside_sub = widgets.kpi("Inside now", "kpi-inside", KPI)
            flagged_lbl, flagged_sub = widgets.kpi("Flagged", "kpi-flagged", KPI)
            refused_lbl, refused_sub = widgets.kpi("Refused scans", "kpi-refused", KPI)
            flagged_sub.text = "offline passes not valid, overturned"

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Arrivals per gate per minute (scan time, UTC)").classes("font-medium")
            chart = widgets.shared_chart(chart_now(_gates(venue_gates))).classes("w-full h-72")
            chart.props('data-testid="arrivals-chart"')
            ui.label(
                "Minutes still open for offline uploads are estimated from the verdicts seen."
            ).classes("text-xs text-gray-500")

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Gate load, last 60 s, against capacity").classes("font-medium")
            load_box = ui.column().classes("w-full gap-2")

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label(f"Latest verdicts (newest {FEED_ROWS})").classes("font-medium")
            feed = widgets.SharedRowsTable(rows=[], columns=COLUMNS, row_key="key")
            feed.classes("w-full")
            feed.props('flat dense wrap-cells data-testid="verdict-feed"')
            feed.add_slot("body", status_slot("vf-verdict-row", COLUMNS))

    gate_widgets: dict[str, tuple[ui.label, ui.linear_progress]] = {}

    def build_gates(gates: dict[str, dict[str, Any]]) -> None:
        load_box.clear()
        gate_widgets.clear()
        with load_box:
            for gid, g in gates.items():
                with ui.row().classes("w-full items-center gap-4 no-wrap"):
                    ui.label(str(g.get("name") or gid)).classes("w-56 font-medium truncate")
                    bar = ui.linear_progress(value=0, show_value=False, size="18px")
                    bar.classes("grow").props(f'rounded data-testid="gate-load-{gid}"')
                    lbl = ui.label("—").classes("w-96 text-sm tabular-nums")
                    lbl.props(f'data-testid="gate-load-text-{gid}"')
                gate_widgets[gid] = (lbl, bar)

    def refresh() -> None:
        m = attendance_live.model
        gates = _gates(venue_gates)
        if list(gates) != state["gate_ids"]:
            state["gate_ids"] = list(gates)
            build_gates(gates)
        if m.version != state["version"]:
            state["version"] = m.version
            t = m.totals or {}
            registered, checked = int(t.get("registered") or 0), int(t.get("checked_in") or 0)
            inside = int(t.get("inside") or 0)
            event_lbl.text = str((t.get("event") or {}).get("name") or "")
            checked_lbl.text = f"{checked:,} / {registered:,}"
            checked_sub.text = f"{widgets.pct(checked, registered)} of registered"
            inside_lbl.text = f"{inside:,}"
            inside_sub.text = f"{widgets.pct(inside, registered)} of registered"
            flagged_lbl.text = f"{int(t.get('flagged') or 0):,}"
            refused = m.refused()
            scans = sum(int(n) for n in (t.get("statuses") or {}).values())
            refused_lbl.text = f"{refused:,}"
            refused_sub.text = f"{widgets.pct(refused, scans)} of {scans:,} scans"
            updated_lbl.text = f"updated {str(t.get('updated_at') or '—')[:19].replace('T', ' ')}"
            widgets.show_live(status, m.connected)
            for gid, g in gates.items():
                if gid not in gate_widgets:
                    continue
                lbl, bar = gate_widgets[gid]
                cap = int(g.get("capacity_per_minute") or 0)
                n = int(g.get("last_minute") or 0)
                load = float(g.get("load") or 0.0)
                bar.value = min(1.0, load)
                color = "negative" if load > 1 else "warning" if load > 0.8 else "positive"
                bar.props(f"color={color}")
                lbl.text = (
                    f"{n} / {cap} per min ({load:.0%}) · in {int(g.get('entries') or 0):,}"
                    f" · out {int(g.get('exits') or 0):,} · refused {int(g.get('refused') or 0):,}"
                )
                over = " text-negative font-semibold" if load > 1 else ""
                lbl.classes(replace=f"w-96 text-sm tabular-nums{over}")
            widgets.put_prop(feed, "rows", _feed(m.version))
        widgets.set_chart(chart, chart_now(gates))

    refresh()
    attendance_live.changed.subscribe(refresh)


def register() -> None:
    """Register the page route (call before `ui.run`)."""
    ui.page("/attendance", title="Attendance")(attendance_page)

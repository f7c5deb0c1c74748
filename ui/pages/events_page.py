"""The Events page: live feed, counts per minute, KPIs, and the lake's history below.

Live parts read `live.events.model` when `live.events.changed` fires (≤ 4 Hz for all clients
together), never per event. The history table pages through the lake with the very function behind
`GET /api/events`, so what an operator sees and what the API answers cannot disagree.
Feed and history rows carry `data-event-id` so tests (and people) can find a given event.

What every open page shows alike is built and serialized once per process, not once per client:
the chart and the feed rows per model version (`widgets.Shared`), the history page per (version,
query) as one lake query all clients await. A push then costs a client only handing over shared
JSON (an identity check when unchanged) and its labels. Measured with `python -m bench.users
--users 200 --checkin-rate 200 --seconds 20 --replicas 1 --no-floor` (py-spy on the dashboard):
before, building the chart for each client on each push was 19 % of the process's CPU and every
client's 5 s history refresh a lake query of its own; see `widgets.Shared` for the rest.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime
from typing import Any

from nicegui import ui

from core.records import LEVELS
from core.settings import get_settings
from live import events as live
from storage.queries import EventPage, EventQuery, LakeUnavailable, fetch_events
from ui import theme, widgets

FEED_ROWS = 50
HISTORY_SIZE = 20
PAYLOAD_CHARS = 240

COLUMNS = widgets.columns(
    [
        ("time", "Time (UTC)"),
        ("source", "Source"),
        ("type", "Type"),
        ("level", "Level"),
        ("payload", "Payload"),
    ]
)


def _row_slot(css_class: str) -> str:
    """Quasar body slot: a row with the event id as `data-event-id` and a coloured level badge."""
    colors = json.dumps(theme.LEVEL_COLORS)
    return f"""
    <q-tr :props="props" :data-event-id="props.row.id" class="{css_class}">
      <q-td key="time" :props="props" class="font-mono whitespace-nowrap">
        {{{{ props.row.time }}}}
      </q-td>
      <q-td key="source" :props="props">{{{{ props.row.source }}}}</q-td>
      <q-td key="type" :props="props">{{{{ props.row.type }}}}</q-td>
      <q-td key="level" :props="props">
        <q-badge :color='{colors}[props.row.level] || "grey"' :label="props.row.level" />
      </q-td>
      <q-td key="payload" :props="props" class="font-mono text-xs vf-payload"
            style="white-space: normal; word-break: break-all; max-width: 36rem">
        {{{{ props.row.payload }}}}
      </q-td>
    </q-tr>
    """


def table_row(ev: dict[str, Any]) -> dict[str, Any]:
    """A stored event (JSON shape) → a display row (short UTC time, payload as compact text)."""
    try:
        ts = datetime.fromisoformat(str(ev.get("ts")))
        time = ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"
    except ValueError:
        time = str(ev.get("ts"))
    payload = json.dumps(ev.get("payload"), separators=(",", ":"), ensure_ascii=False)
    if len(payload) > PAYLOAD_CHARS:
        payload = payload[: PAYLOAD_CHARS - 1] + "…"
    return {
        "id": ev.get("id"),
        "time": time,
        "source": ev.get("source"),
        "type": ev.get("type"),
        "level": ev.get("level"),
        "payload": payload,
    }


def _event_table(css_class: str) -> ui.table:
    table = widgets.SharedRowsTable(rows=[], columns=COLUMNS, row_key="id").classes("w-full")
    table.props("dense flat bordered wrap-cells")
    table.add_slot("body", _row_slot(css_class))
    return table


def _chart_options() -> dict[str, Any]:
    labels, series = live.model.chart()
    return widgets.bar_chart(labels, [(lv, series[lv], theme.LEVEL_HEX[lv]) for lv in LEVELS])


_chart = widgets.Shared(_chart_options)
_feed = widgets.Shared(
    lambda type_, level: [table_row(e) for e in live.model.feed(type_, level, FEED_ROWS)]
)
_HISTORY_KEEP = 64
_HISTORY_MAX_AGE_S = 1.0  # the lake may gain rows without the live model moving
HistoryRows = tuple[EventPage, Any]  # the page and its rows, serialized once
_history: dict[tuple[str, EventQuery], tuple[int, float, asyncio.Future[HistoryRows]]] = {}


def chart_now() -> Any:
    """The chart's options for the model now (shared; the key moves with the minute too)."""
    return _chart((live.model.version, int(time.time() // 60)))


async def _history_rows(lake_dir: Any, q: EventQuery) -> HistoryRows:
    page = await fetch_events(lake_dir, q)
    return page, widgets.as_json([table_row(e) for e in page.items])


async def shared_history(lake_dir: Any, q: EventQuery, force: bool = False) -> HistoryRows:
    """`fetch_events(lake_dir, q)` and its table rows: one lake query per (model version, query),
    at most one a second, for all clients (a failed one is not kept); `force` (the refresh
    button) queries anew."""
    key, version, now = (str(lake_dir), q), live.model.version, time.monotonic()
    hit = _history.get(key)
    if (
        force
        or hit is None
        or hit[0] != version
        or now - hit[1] > _HISTORY_MAX_AGE_S
        or (hit[2].done() and hit[2].exception() is not None)
    ):
        _history.pop(key, None)
        hit = (version, now, asyncio.ensure_future(_history_rows(lake_dir, q)))
        _history[key] = hit
        while len(_history) > _HISTORY_KEEP:
            _history.pop(next(iter(_history)))
    return await asyncio.shield(hit[2])


def _age_text(age: float | None) -> str:
    if age is None:
        return "—"
    if age < 60:
        return f"{age:.1f} s ago"
    if age < 3600:
        return f"{age / 60:.1f} min ago"
    return f"{age / 3600:.1f} h ago"


def _window_text(window: tuple[str, str, int] | None) -> str:
    if window is None:
        return "—"
    start, end, count = window
    try:
        span = f"{datetime.fromisoformat(start):%H:%M:%S} to {datetime.fromisoformat(end):%H:%M:%S}"
    except ValueError:
        span = f"{start} to {end}"
    return f"{count:,} · {span}"


async def events_page() -> None:
    lake_dir = get_settings().lake
    state: dict[str, Any] = {"version": -1, "types": (), "history_version": -1}

    with theme.frame("Events", "/events"):
        with ui.row().classes("w-full items-end gap-4"):
            type_sel = ui.select({"": "All types"}, value="", label="Type").classes("w-56")
            type_sel.props('data-testid="filter-type"')
            level_sel = ui.select(
                {"": "All levels", **{lv: lv for lv in LEVELS}}, value="", label="Level"
            ).classes("w-40")
            level_sel.props('data-testid="filter-level"')
            ui.space()
            status = widgets.live_badge()

        with ui.row().classes("w-full gap-4"):
            total_lbl = widgets.small_kpi("Stored since app start", "kpi-total")
            rate_lbl = widgets.small_kpi("Events / min", "kpi-rate")
            age_lbl = widgets.small_kpi("Last event", "kpi-age")
            window_lbl = widgets.small_kpi("Last closed window", "kpi-window")

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Events per minute by level (event time, UTC)").classes("font-medium")
            chart = widgets.shared_chart(chart_now()).classes("w-full h-64")

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label(f"Live feed (newest {FEED_ROWS})").classes("font-medium")
            feed = _event_table("vf-feed-row")
            feed.props('data-testid="live-feed"')

        with ui.card().classes("w-full").props("flat bordered"):
            history_info = widgets.refresh_header(
                "History (lake)", lambda: load_history(force=True), "history-refresh"
            )
            history = _event_table("vf-history-row")
            history.props('data-testid="history"')
            pager = ui.pagination(1, 1, direction_links=True, on_change=lambda: load_history())

    def filters() -> tuple[str | None, str | None]:
        return (type_sel.value or None), (level_sel.value or None)

    async def load_history(force: bool = False) -> None:
        type_, level = filters()
        q = EventQuery(page=pager.value or 1, size=HISTORY_SIZE, type=type_, level=level)
        state["history_version"] = live.model.version
        try:
            page, rows = await shared_history(lake_dir, q, force)
        except LakeUnavailable as exc:
            history_info.text = str(exc)
            return
        widgets.put_prop(history, "rows", rows)  # shared, sent only when it is another page
        pages = max(1, math.ceil(page.total / HISTORY_SIZE))
        if pager.max != pages:
            pager.max = pages
        history_info.text = f"{page.total} events · page {q.page} of {pages}"

    def refresh_live() -> None:
        m = live.model
        if m.version != state["version"]:
            state["version"] = m.version
            type_, level = filters()
            widgets.put_prop(feed, "rows", _feed(m.version, type_, level))
            types = tuple(m.types)
            if types != state["types"]:
                state["types"] = types
                options = {"": "All types", **{t: t for t in types}}
                if type_sel.value and type_sel.value not in options:
                    options[type_sel.value] = type_sel.value  # keep the chosen filter
                type_sel.set_options(options)
            total_lbl.text = f"{m.total:,}"
            window_lbl.text = _window_text(m.last_window())
            widgets.show_live(status, m.connected)
        widgets.set_chart(chart, chart_now())
        rate_lbl.text = f"{m.events_per_minute():,}"
        age_lbl.text = _age_text(m.last_event_age_s())

    async def on_filter() -> None:
        state["version"] = -1
        refresh_live()
        if pager.value != 1:
            pager.value = 1  # its change handler reloads the history
        else:
            await load_history()

    type_sel.on_value_change(on_filter)
    level_sel.on_value_change(on_filter)

    async def auto_history() -> None:
        # Keep the first history page current while events arrive; deeper pages stay put.
        if (pager.value or 1) == 1 and live.model.version != state["history_version"]:
            await load_history()

    refresh_live()
    live.changed.subscribe(refresh_live)
    ui.timer(0, load_history, once=True)
    ui.timer(5.0, auto_history)


def register() -> None:
    """Register the page route (call before `ui.run`)."""
    ui.page("/events", title="Events")(events_page)

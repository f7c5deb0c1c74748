"""Small pieces several dashboard pages share: columns, lake cells, KPI cards, charts, badges.

A page keeps what is its own (its slots, filters, what a row means); what looks and works the
same on several pages lives here once, so a change to how a KPI card, a lake table or the live
badge looks is made in one place. Nothing here reads Redis or the lake.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any

import orjson  # NiceGUI's own JSON encoder (its dependency): `Fragment` is sent as is
from nicegui import ui

#: Series colours for charts whose series are not event levels (gates, cameras), in order.
PALETTE = ["#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#e53935", "#6d4c41"]

Columns = Sequence[tuple[str, str]]


def columns(pairs: Columns, *, sortable: bool = False) -> list[dict[str, Any]]:
    """(key, label) pairs → Quasar table columns, left aligned, the key as name and field."""
    extra = {"sortable": True} if sortable else {}
    return [{"name": k, "label": label, "field": k, "align": "left", **extra} for k, label in pairs]


def data_table(
    pairs: Columns, *, sortable: bool = False, pagination: int | None = None
) -> ui.table:
    """A full-width table with `pairs` as columns and `key` as row key, empty until rows come."""
    table = ui.table(
        columns=columns(pairs, sortable=sortable), rows=[], row_key="key", pagination=pagination
    )
    return table.classes("w-full")


def cell(
    v: Any, *, time_format: str = "%Y-%m-%d %H:%M:%S", digits: int | None = None, none: str = ""
) -> Any:
    """A value from the lake → a table cell: times as `time_format` (UTC, no zone), floats
    rounded to `digits` (if given), None as `none`."""
    if isinstance(v, datetime):
        return v.strftime(time_format)
    if digits is not None and isinstance(v, float):
        return round(v, digits)
    return none if v is None else v


def lake_rows(
    pairs: Columns,
    rows: Sequence[Sequence[Any]],
    key: Callable[[int, Sequence[Any]], str] = lambda i, _r: str(i),
    **cell_format: Any,
) -> list[dict[str, Any]]:
    """Result tuples in `pairs` order → table rows (`key` plus one formatted `cell` a column)."""
    return [
        {
            "key": key(i, r),
            **{k: cell(v, **cell_format) for (k, _), v in zip(pairs, r, strict=True)},
        }
        for i, r in enumerate(rows)
    ]


def _kpi_card(title: str, width: str) -> ui.card:
    card = ui.card().classes(width).props("flat bordered")
    with card:
        ui.label(title).classes("text-xs uppercase text-gray-500")
    return card


def kpi(title: str, test_id: str, width: str = "min-w-48 grow") -> tuple[ui.label, ui.label]:
    """A KPI card: a large value (`data-testid=test_id`) and a line of context below it."""
    with _kpi_card(title, width):
        value = ui.label("—").classes("text-3xl font-semibold").props(f'data-testid="{test_id}"')
        sub = ui.label("").classes("text-sm text-gray-500")
    return value, sub


def small_kpi(title: str, test_id: str) -> ui.label:
    """A compact KPI card: the value only."""
    with _kpi_card(title, "min-w-44"):
        return ui.label("—").classes("text-2xl font-semibold").props(f'data-testid="{test_id}"')


def pct(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"


def live_badge() -> ui.badge:
    """The badge that says whether the page's live model hears Redis (`data-testid=live-status`)."""
    return ui.badge("connecting…", color="grey").props('data-testid="live-status"')


def show_live(badge: ui.badge, connected: bool) -> None:
    if connected:
        badge.text, badge.props["color"] = "live", "positive"
    else:
        badge.text, badge.props["color"] = "Redis unavailable", "negative"
    badge.update()


def grid(min_px: int) -> ui.element:
    """A responsive grid: as many columns at least `min_px` wide as fit."""
    return (
        ui.element("div")
        .classes("w-full grid gap-4")
        .style(f"grid-template-columns: repeat(auto-fill, minmax({min_px}px, 1fr))")
    )


def refresh_header(title: str, on_refresh: Callable[[], Any], test_id: str) -> ui.label:
    """A card's header row: title, an info label (returned), and a refresh button."""
    with ui.row().classes("w-full items-center"):
        ui.label(title).classes("font-medium")
        ui.space()
        info = ui.label("").classes("text-sm text-gray-500")
        ui.button(icon="refresh", on_click=on_refresh).props(f'flat dense data-testid="{test_id}"')
    return info


def bar_chart(labels: list[str], series: list[tuple[str, list[int], str]]) -> dict[str, Any]:
    """ECharts options: stacked bars, one series per (name, values under `labels`, colour)."""
    return {
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0, "type": "scroll"},
        "grid": {"left": 40, "right": 16, "top": 32, "bottom": 24},
        "xAxis": {"type": "category", "data": labels},
        "yAxis": {"type": "value", "minInterval": 1},
        "series": [
            {"name": n, "type": "bar", "stack": "s", "data": d, "itemStyle": {"color": c}}
            for n, d, c in series
        ],
    }


def palette(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, orjson.Fragment) or isinstance(b, orjson.Fragment):
        return a is b
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def shared_chart(opts: orjson.Fragment) -> ui.echart:
    """An echart showing a `Shared` value (`ui.echart` itself reads its options as a dict)."""
    chart = ui.echart({})
    put_prop(chart, "options", opts)
    return chart


def set_chart(chart: ui.echart, opts: dict[str, Any] | orjson.Fragment) -> None:
    """Give `chart` the options `opts`, sending nothing to the browser when they are unchanged.

    `opts` may be a `Shared` value (the same on every client): it is put in place as is, and
    the very object already shown costs one identity check."""
    if isinstance(opts, orjson.Fragment):
        put_prop(chart, "options", opts)
        return
    if chart.options is opts:
        return
    unchanged = _same(chart.options, opts)
    put_prop(chart, "options", opts, send=not unchanged)  # hold the shared one from now on


def put_prop(element: ui.element, name: str, value: Any, *, send: bool = True) -> None:
    """Set `element`'s prop `name` to `value` as is and send the element (if it is another
    object and `send`).

    NiceGUI's props are an observable dict that deep-copies every list and dict assigned into
    observable ones, once per client: for a shared 50-row feed that copy was 17 % of the
    dashboard's CPU (py-spy, `python -m bench.users --users 200 --replicas 1 --no-floor`), and
    the copy defeats the identity check that skips an unchanged shared value. Putting it with
    the plain dict's `__setitem__` keeps the one shared object (read-only for every client)."""
    if element.props.get(name) is value:
        return
    dict.__setitem__(element.props, name, value)
    if send:
        element.update()


class Shared:
    """What every open page shows alike, built and serialized once per process per model
    version, not once per client per push: `shared(version, *args)` returns `build(*args)`,
    as JSON (an `orjson.Fragment`), built for that `version` (any hashable: a model's version,
    plus the minute for a chart of the last hour); the `keep` most recent `args` (a page's
    filters) are kept. Give it to an element with `put_prop` (a table: `SharedRowsTable`).

    When a rebuild comes out equal to the previous value for the same `args`, the previous
    object is returned, so `put_prop` skips an unchanged value by identity (`is`) and sends
    a new one without comparing.

    Measured (`python -m bench.users --users 200 --replicas 1 --no-floor`, py-spy on the
    dashboard): building the events chart for each client on each push was 19 % of its CPU;
    once that was shared, python-socketio's scan of every sent list and dict for binary parts
    (per client, per push) was 25 % and comparing charts as JSON per client 17 %. A fragment
    is one opaque value to that scan and is copied, not encoded, into each client's message."""

    def __init__(self, build: Callable[..., Any], keep: int = 32) -> None:
        self._build = build
        self._keep = keep
        self._latest: OrderedDict[tuple[Any, ...], tuple[Hashable, orjson.Fragment]] = OrderedDict()

    def __call__(self, version: Hashable, *args: Any) -> orjson.Fragment:
        entry = self._latest.get(args)
        if entry is not None and entry[0] == version:
            self._latest.move_to_end(args)
            return entry[2]
        raw = orjson.dumps(self._build(*args))
        value = entry[2] if entry is not None and entry[1] == raw else orjson.Fragment(raw)
        self._latest[args] = (version, raw, value)
        self._latest.move_to_end(args)
        while len(self._latest) > self._keep:
            self._latest.popitem(last=False)
        return value


def as_json(value: Any) -> orjson.Fragment:
    """`value` serialized once, to be sent as is to every client (see `Shared`)."""
    return orjson.Fragment(orjson.dumps(value))


class SharedRowsTable(ui.table):
    """A `ui.table` whose rows may be a `Shared` fragment (`put_prop(table, "rows", ...)`).

    It skips `ui.table`'s scan of every row for list cells before each send (which cannot read
    a fragment, and costs per client): the rows given here are formatted text, never lists."""

    def _to_dict(self) -> dict[str, Any]:
        return super(ui.table, self)._to_dict()

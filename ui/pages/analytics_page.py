"""The Analytics page (`/analytics`): ready-made DuckDB queries with charts, and free SQL;
and the same free SQL for scripts, `POST /api/analytics/sql`.

Ready-made queries run through `storage.analytics.run_ready` on a fresh, locked-down in-memory
DuckDB connection here. Typed SQL (`run_free_sql`, shared by the page and the API) is checked,
then run in a fresh child process the kernel forbids to write (`storage.sql_sandbox`), with
personal columns pseudonymised unless the user may see participants (`participants.view`:
organisers), and at most one query in flight per browser session and `SQL_MAX_CONCURRENT` in
all (`storage.analytics.ADMISSION`; over that: "busy", HTTP 429). Blocking work runs on a
worker thread (`run.io_bound`) so the event loop never waits. The free SQL box is only rendered
for roles with `analytics.sql`, and the handler checks that permission again before running
anything. Results show as a table with a CSV download; an error shows DuckDB's own message.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from nicegui import run, ui

from api.analytics import browser_session, cell, run_free_sql
from auth.permissions import can, current_user
from core.settings import get_settings
from storage.analytics import (
    EXAMPLE_SQL,
    MAX_ROWS,
    RANGES,
    READY,
    TIMEOUT_S,
    Chart,
    SqlBusy,
    SqlError,
    SqlRefused,
    SqlResult,
    run_ready,
)
from ui import theme, widgets

PALETTE = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#546e7a"]
#: Series that mean the same everywhere get the same colour as on the other pages.
NAMED_COLOURS = {
    **theme.LEVEL_HEX,
    "warnings": theme.LEVEL_HEX["WARN"],
    "errors": theme.LEVEL_HEX["ERROR"],
}
TABLE_ROWS = 1000  # rows sent to the browser table (the CSV has them all, up to MAX_ROWS)


def _colour(name: str, i: int) -> str:
    return NAMED_COLOURS.get(name, PALETTE[i % len(PALETTE)])


def _label(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%m-%d %H:%M")
    return "" if v is None else str(v)


def _num(v: Any) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, Decimal):
        return float(v)
    return v if isinstance(v, int | float) else None


def chart_options(chart: Chart, columns: list[str], rows: list[tuple]) -> dict[str, Any]:
    """ECharts options for a result: pivoted on `chart.series` if given, else one series per
    value column. Rows must be ordered by x (the ready queries are)."""
    ix = {c: i for i, c in enumerate(columns)}
    xs: list[str] = []
    for r in rows:
        x = _label(r[ix[chart.x]])
        if x not in xs:
            xs.append(x)
    series: dict[str, dict[str, Any]] = {}
    if chart.series:
        y = chart.y[0]
        for r in rows:
            name = _label(r[ix[chart.series]])
            data = series.setdefault(name, {x: 0 for x in xs})
            data[_label(r[ix[chart.x]])] = _num(r[ix[y]])
    else:
        for y in chart.y:
            series[y] = {_label(r[ix[chart.x]]): _num(r[ix[y]]) for r in rows}
    return {
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0, "type": "scroll"},
        "grid": {"left": 48, "right": 16, "top": 32, "bottom": 40, "containLabel": True},
        "xAxis": {"type": "category", "data": xs, "axisLabel": {"hideOverlap": True}},
        "yAxis": {"type": "value"},
        "series": [
            {
                "name": name,
                "type": chart.kind,
                "stack": "s" if chart.stack else None,
                "data": [data.get(x) for x in xs],
                "itemStyle": {"color": _colour(name, i)},
                "showSymbol": False,
            }
            for i, (name, data) in enumerate(series.items())
        ],
    }


def result_table(res: SqlResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Columns and rows for `ui.table` (names made unique: SQL allows duplicates)."""
    names: list[str] = []
    for c in res.columns:
        n, k = c, 1
        while n in names:
            k += 1
            n = f"{c}_{k}"
        names.append(n)
    cols = [
        {"name": n, "label": c, "field": n, "align": "left", "sortable": True}
        for n, c in zip(names, res.columns, strict=True)
    ]
    rows = [
        {"__key": i, **{n: cell(v) for n, v in zip(names, r, strict=True)}}
        for i, r in enumerate(res.rows[:TABLE_ROWS])
    ]
    return cols, rows


async def analytics_page() -> None:
    lake_dir = get_settings().lake_dir
    session_id = browser_session()
    may_sql = can(current_user(), "analytics.sql")
    cards: dict[str, tuple[ui.echart, ui.label]] = {}
    last: dict[str, SqlResult] = {}

    with theme.frame("Analytics", "/analytics"):
        with ui.row().classes("w-full items-end gap-4"):
            ui.label("Ready-made queries over the lake").classes("text-lg font-medium")
            ui.space()
            range_sel = ui.select(list(RANGES), value="24 h", label="Time range").classes("w-32")
            range_sel.props('data-testid="analytics-range"')
            ui.button(icon="refresh", on_click=lambda: load_ready()).props(
                'flat dense data-testid="analytics-refresh"'
            )
        with widgets.grid(520):
            for q in READY.values():
                with (
                    ui.card()
                    .classes("w-full gap-1")
                    .props(f'flat bordered data-testid="ready-{q.key}"')
                ):
                    ui.label(q.title).classes("font-medium")
                    ui.label(q.description).classes("text-xs text-gray-500")
                    chart = ui.echart(chart_options(q.chart, [], [])).classes("w-full h-64")
                    info = ui.label("").classes("text-xs text-gray-500")
                    info.props(f'data-testid="ready-info-{q.key}"')
                    with ui.row().classes("gap-2"):
                        ui.button(
                            "CSV", icon="download", on_click=lambda k=q.key: download(k)
                        ).props("flat dense")
                        if may_sql:
                            ui.button(
                                "Edit SQL", icon="edit", on_click=lambda s=q.sql: edit(s)
                            ).props("flat dense")
                cards[q.key] = (chart, info)

        if may_sql:
            with ui.card().classes("w-full").props('flat bordered data-testid="sql-box"'):
                ui.label("SQL (read-only)").classes("text-lg font-medium")
                ui.label(
                    "One SELECT (or WITH / FROM / DESCRIBE / EXPLAIN) over the catalog's views: "
                    "events, event_counts, checkins, participants, attendance_per_minute, "
                    "gate_totals, no_shows, camera_stats, alarms, dead_letters, request_logs, "
                    f"... At most {MAX_ROWS:,} rows and {TIMEOUT_S:g} s; no files, no "
                    "ATTACH/COPY/INSTALL/SET. Times are UTC."
                    + (
                        ""
                        if can(current_user(), "participants.view")
                        else " Personal columns (names, e-mails, IPs, ...) show as stable "
                        "pseudonyms p_…: joins and counts work on them."
                    )
                ).classes("text-xs text-gray-500")
                sql_box = ui.codemirror(EXAMPLE_SQL, language="SQL").classes("w-full h-48")
                sql_box.props('data-testid="sql-input"')
                with ui.row().classes("items-center gap-2"):
                    ui.button("Run", icon="play_arrow", on_click=lambda: run_free()).props(
                        'data-testid="sql-run"'
                    )
                    dl = ui.button(
                        "CSV", icon="download", on_click=lambda: download("__free__")
                    ).props('flat data-testid="sql-csv"')
                    dl.disable()
                    sql_info = ui.label("").classes("text-sm text-gray-600")
                    sql_info.props('data-testid="sql-info"')
                sql_error = ui.label("").classes(
                    "text-sm text-red-700 font-mono whitespace-pre-wrap"
                )
                sql_error.props('data-testid="sql-error"')
                sql_table = ui.table(columns=[], rows=[], row_key="__key", pagination=50)
                sql_table.classes("w-full").props(
                    'dense flat bordered wrap-cells data-testid="sql-result"'
                )

    def edit(sql: str) -> None:
        sql_box.value = sql

    def download(key: str) -> None:
        res = last.get(key)
        if res is None:
            ui.notify("Nothing to download yet", type="warning")
            return
        name = "query" if key == "__free__" else key
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        ui.download.content(res.csv(), f"{name}-{stamp}.csv", "text/csv")

    async def load_ready() -> None:
        for key, q in READY.items():
            chart, info = cards[key]
            try:
                res = await run.io_bound(run_ready, lake_dir, key, range_sel.value)
            except (SqlError, SqlRefused) as exc:
                info.text = f"unavailable: {exc}"
                continue
            if res is None:  # the app is shutting down
                return
            last[key] = res
            opts = chart_options(q.chart, res.columns, res.rows)
            chart.options.clear()
            chart.options.update(opts)
            chart.update()
            info.text = f"{len(res.rows)} rows · {res.elapsed_s * 1000:.0f} ms"

    async def run_free() -> None:
        user = current_user()
        if not can(user, "analytics.sql"):  # the server decides, not the page
            sql_error.text = "Your role may not run SQL."
            return
        sql_error.text, sql_info.text = "", "running…"
        try:
            res = await run_free_sql(user, session_id, sql_box.value or "")
        except SqlBusy as exc:
            sql_error.text, sql_info.text = f"Busy: {exc}", ""
            return
        except SqlRefused as exc:
            sql_error.text, sql_info.text = f"Refused: {exc}", ""
            return
        except SqlError as exc:
            sql_error.text, sql_info.text = str(exc), ""
            return
        if res is None:
            return
        last["__free__"] = res
        cols, rows = result_table(res)
        sql_table.columns = cols
        sql_table.rows = rows
        more = f" (limit {MAX_ROWS:,} reached: more rows exist)" if res.truncated else ""
        shown = f", first {TABLE_ROWS:,} shown" if len(res.rows) > TABLE_ROWS else ""
        sql_info.text = f"{len(res.rows):,} rows{more}{shown} · {res.elapsed_s * 1000:.0f} ms"
        dl.enable()

    range_sel.on_value_change(load_ready)
    ui.timer(0, load_ready, once=True)


def register() -> None:
    """Register the page route (call before `ui.run`; `POST /api/analytics/sql` is
    `api.analytics`)."""
    ui.page("/analytics", title="Analytics")(analytics_page)

"""The attendance report as files: CSV (for a spreadsheet), printable HTML, and JSON.

All three render one `storage.reports.Report`, i.e. the SQL queries documented there, run on
the dashboard's per-thread in-memory DuckDB connection (the catalog's views, `TimeZone` UTC).

- CSV: one file, one block per section (a title row, a header row, the rows, a blank row),
  UTF-8 with a BOM and CRLF line ends so Excel, LibreOffice and Numbers open it as is.
  `?section=gate_totals` gives that one table alone (plain CSV, for scripts).
- HTML: one self-contained page (inline CSS and SVG, no script, nothing fetched), with print
  CSS; the arrival curve is an SVG bar chart. Times in the event's time zone.

`/api/reports/attendance.(csv|json)` need an `admin` `X-API-Key`; `/reports/attendance.(csv|html)`
are the dashboard's links, guarded like its pages (a login with `report.view`).
"""

from __future__ import annotations

import html
import io
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic_core import to_json

from api import models as api_models
from api.http import ApiKeyDep, Router, invalid_query
from core import csv_safe
from core.records import CHECKIN_OUTCOMES
from core.settings import get_settings
from core.venue import Venue, venue_for
from storage.queries import LakeUnavailable, build_report, in_thread
from storage.reports import SECTIONS, Report, Section

router = Router(tags=["reports"])

#: Rows of the no-show list the printable page and the dashboard show (the CSV has all).
NO_SHOW_PAGE_LIMIT = 2_000


async def load_report() -> Report:
    """The attendance report of the lake (every section's query, on a worker thread)."""
    return await in_thread(build_report, get_settings().lake)


def venue() -> Venue:
    return venue_for(get_settings().venue_config)


# --- values -----------------------------------------------------------------------------------


def iso(v: datetime) -> str:
    return v.astimezone(UTC).isoformat().replace("+00:00", "Z")


def csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return float(v)
    return v


def local(v: datetime | None, ven: Venue, seconds: bool = False) -> str:
    if v is None:
        return ""
    return v.astimezone(ven.event.zone).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


# --- CSV ----------------------------------------------------------------------------------------


def report_csv(rep: Report, ven: Venue, section: str | None = None) -> str:
    buf = io.StringIO()
    w = csv_safe.writer(buf)  # CRLF line ends; formula-like cells neutralised
    if section is not None:
        sec = rep[section]
        w.writerow(sec.columns)
        w.writerows([csv_value(v) for v in r] for r in sec.rows)
        return "\ufeff" + buf.getvalue()
    w.writerow(["Attendance report", ven.event.name, ven.event.id])
    w.writerow(["Generated at (UTC)", iso(rep.generated_at)])
    w.writerow(["Times", "UTC (ISO 8601)"])
    w.writerow([])
    for sec in rep.sections.values():
        w.writerow([sec.title])
        w.writerow(sec.columns)
        w.writerows([csv_value(v) for v in r] for r in sec.rows)
        if not sec.rows:
            w.writerow(["(none)"])
        w.writerow([])
    return "\ufeff" + buf.getvalue()


# --- JSON --------------------------------------------------------------------------------------


def report_json(rep: Report) -> dict[str, Any]:
    import json

    return json.loads(
        to_json(
            {
                "generated_at": rep.generated_at,
                "sections": {
                    k: {"title": s.title, "sql": s.sql, "columns": s.columns, "rows": s.dicts()}
                    for k, s in rep.sections.items()
                },
            }
        )
    )


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #17202a;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; color: #1e3a5f; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .4rem; color: #1e3a5f;
     border-bottom: 2px solid #1e3a5f; padding-bottom: .15rem; }
.meta { color: #555; margin: 0 0 1rem; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: .6rem; }
.kpi { border: 1px solid #cfd8dc; border-radius: 6px; padding: .45rem .7rem; }
.kpi span { display: block; font-size: .72rem; text-transform: uppercase; color: #607d8b; }
.kpi b { font-size: 1.5rem; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0 .6rem; font-size: 13px; }
th, td { border: 1px solid #cfd8dc; padding: .2rem .45rem; text-align: left; vertical-align: top; }
th { background: #eceff1; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #607d8b; font-size: 12px; }
details { color: #546e7a; font-size: 12px; margin: .2rem 0; }
pre { white-space: pre-wrap; background: #f5f7f8; padding: .4rem; border-radius: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #455a64; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  details, .noprint { display: none; }
  h2 { break-after: avoid; }
  table, svg, .kpis { break-inside: avoid; }
  tr { break-inside: avoid; }
  @page { size: A4; margin: 14mm; }
}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _cell(v: Any, ven: Venue) -> str:
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, int | float | Decimal):
        return f'<td class="n">{v:,}</td>'
    if isinstance(v, datetime):
        return f"<td>{_e(local(v, ven, seconds=v.second != 0 or v.microsecond != 0))}</td>"
    return f"<td>{_e(v)}</td>"


def _table(
    sec: Section, ven: Venue, extra: dict[str, Any] | None = None, limit: int | None = None
) -> str:
    """A section's rows as a table; `extra` = {header: function(row dict) → value}."""
    extra = extra or {}
    heads = [*sec.columns, *extra]
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in heads), "</tr></thead><tbody>"]
    rows = sec.rows if limit is None else sec.rows[:limit]
    for r in rows:
        d = dict(zip(sec.columns, r, strict=True))
        cells = [_cell(v, ven) for v in r] + [_cell(f(d), ven) for f in extra.values()]
        out.append("<tr>" + "".join(cells) + "</tr>")
    if not sec.rows:
        out.append(f'<tr><td colspan="{len(heads)}" class="note">none</td></tr>')
    out.append("</tbody></table>")
    if limit is not None and len(sec.rows) > limit:
        out.append(
            f'<p class="note">The first {limit:,} of {len(sec.rows):,} are shown; the CSV export '
            "has them all.</p>"
        )
    return "".join(out)


def _sql_note(sec: Section) -> str:
    return (
        f'<details><summary>SQL (same numbers: <code>uv run run.py query "…"</code>)</summary>'
        f"<pre>{_e(sec.sql)}</pre></details>"
    )


def arrival_svg(sec: Section, ven: Venue, width: int = 1000, height: int = 260) -> str:
    """Accepted entries per minute as an inline SVG bar chart (no script, prints as is)."""
    points = [(m, int(n)) for m, n in sec.rows]
    if not points:
        return '<p class="note">No closed minute with entries yet.</p>'
    left, right, top, bottom = 48, 12, 12, 34
    pw, ph = width - left - right, height - top - bottom
    grid = max(1, math.ceil(max(n for _, n in points) / 4))  # 4 grid steps of whole entries
    peak = grid * 4
    step = pw / len(points)
    bw = max(step * 0.85, 0.6)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="Arrival curve: accepted entries per minute">'
    ]
    for i in range(5):  # horizontal grid lines with their value
        val = grid * i
        y = top + ph - ph * i / 4
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e0e6e9"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{val:.0f}</text>'
        )
    for i, (m, n) in enumerate(points):
        if n <= 0:
            continue
        h = ph * n / peak
        x = left + i * step + (step - bw) / 2
        parts.append(
            f'<rect x="{x:.2f}" y="{top + ph - h:.2f}" width="{bw:.2f}" height="{h:.2f}" '
            f'fill="#26a69a"><title>{_e(local(m, ven))}: {n} entries</title></rect>'
        )
    ticks = min(8, len(points))
    multi_day = points[0][0].astimezone(ven.event.zone).date() != (
        points[-1][0].astimezone(ven.event.zone).date()
    )
    for t in range(ticks):
        i = round(t * (len(points) - 1) / max(ticks - 1, 1))
        m = points[i][0].astimezone(ven.event.zone)
        label = m.strftime("%d %b %H:%M" if multi_day else "%H:%M")
        x = left + i * step + step / 2
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" '
            'stroke="#90a4ae"/>'
            f'<text x="{x:.1f}" y="{top + ph + 17}" text-anchor="middle">{_e(label)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#90a4ae"/>'
        f'<text x="{left + pw}" y="{height - 3}" text-anchor="end">minute '
        f"({_e(ven.event.timezone)}) · peak {max(n for _, n in points)} entries/min</text></svg>"
    )
    return "".join(parts)


def report_html(rep: Report, ven: Venue) -> str:
    s = rep.summary
    ev = ven.event
    gate_names = {g.id: g.name for g in ven.gates}
    capacity = {g.id: g.capacity_per_minute for g in ven.gates}
    kpi_labels = {
        "registered": "Registered",
        "checked_in": "Checked in",
        "no_shows": "No-shows",
        "revoked": "Revoked",
        "scans": "Scans",
        "entries": "Entries",
        "exits": "Exits",
        "refused": "Refused",
        "flagged": "Flagged",
    }
    rate = f"{s['checked_in'] / s['registered']:.1%}" if s["registered"] else "—"
    body = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Attendance report · {_e(ev.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Attendance report: {_e(ev.name)}</h1>",
        f"<p class='meta'>Event <code>{_e(ev.id)}</code> · {_e(local(ev.start, ven))} to "
        f"{_e(local(ev.end, ven))} ({_e(ev.timezone)}) · generated "
        f"{_e(local(rep.generated_at, ven, seconds=True))} · times in {_e(ev.timezone)}</p>",
        "<section id='summary'><h2>Summary</h2><div class='kpis'>",
        *(
            f"<div class='kpi' data-key='{k}'><span>{_e(label)}</span><b>{s.get(k, 0):,}</b></div>"
            for k, label in kpi_labels.items()
        ),
        f"<div class='kpi'><span>Turnout</span><b>{rate}</b></div></div>",
        _sql_note(rep["summary"]),
        "</section>",
        "<section id='arrival_curve'><h2>Arrival curve: accepted entries per minute, all gates"
        "</h2>",
        arrival_svg(rep["arrival_curve"], ven),
        "<p class='note'>A minute appears once it has closed (the check-in flow's allowed "
        "lateness after its end), so the last minute or two of a live event are not shown "
        "yet.</p>",
        _sql_note(rep["arrival_curve"]),
        "</section>",
        "<section id='gate_totals'><h2>Per-gate totals</h2>",
        _table(
            rep["gate_totals"],
            ven,
            {
                "gate": lambda d: gate_names.get(d["gate_id"], "(not in the venue file)"),
                "capacity / min": lambda d: capacity.get(d["gate_id"]),
            },
        ),
        _sql_note(rep["gate_totals"]),
        "</section>",
        "<section id='peak_minutes'><h2>Peak minutes (top 10)</h2>",
        _table(rep["peak_minutes"], ven),
        _sql_note(rep["peak_minutes"]),
        "</section>",
        "<section id='refusals'><h2>Refused scans by status</h2>",
        _table(rep["refusals"], ven, {"meaning": lambda d: CHECKIN_OUTCOMES.get(d["status"])}),
        _sql_note(rep["refusals"]),
        "</section>",
        "<section id='flagged'><h2>Flagged scans</h2>",
        "<p class='note'>An offline gate let someone through on a ticket that was not valid, "
        "or a verdict was overturned by an earlier scan of the same ticket.</p>",
        _table(rep["flagged"], ven),
        _sql_note(rep["flagged"]),
        "</section>",
        f"<section id='no_shows'><h2>No-shows ({s['no_shows']:,})</h2>",
        _table(rep["no_shows"], ven, limit=NO_SHOW_PAGE_LIMIT),
        _sql_note(rep["no_shows"]),
        "</section>",
        "<p class='note noprint'>Print this page (Ctrl/Cmd-P) for a paper copy; "
        "<a href='/reports/attendance.csv'>CSV for a spreadsheet</a>.</p>",
        "</body></html>",
    ]
    return "".join(body)


# --- routes -----------------------------------------------------------------------------------


def _filename(ext: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return f"attendance-{venue().event.id}-{stamp}.{ext}"


async def _csv_response(section: str | None) -> Response:
    if section is not None and section not in SECTIONS:
        return invalid_query(
            "section", f"section must be one of {', '.join(SECTIONS)}", "literal_error"
        )
    try:
        rep = await load_report()
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    name = _filename("csv") if section is None else f"{section}.csv"
    return Response(
        report_csv(rep, venue(), section),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/api/reports/attendance.csv", responses=api_models.binary("text/csv"))
async def api_csv(
    _key: ApiKeyDep,
    section: Annotated[str | None, Query()] = None,
) -> Response:
    """The attendance report as CSV: every section, or `?section=<key>` alone."""
    return await _csv_response(section)


@router.get("/reports/attendance.csv", include_in_schema=False)
async def dashboard_csv(section: str | None = None) -> Response:
    return await _csv_response(section)


@router.get("/api/reports/attendance.json", response_model=api_models.ReportJson)
async def api_json(_key: ApiKeyDep) -> JSONResponse:
    """The attendance report as JSON: each section's title, SQL, columns and rows."""
    try:
        return JSONResponse(report_json(await load_report()))
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)


@router.get("/reports/attendance.html", include_in_schema=False)
async def dashboard_html() -> Response:
    """The printable report: one self-contained HTML page."""
    try:
        rep = await load_report()
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return HTMLResponse(report_html(rep, venue()), headers={"Cache-Control": "no-store"})

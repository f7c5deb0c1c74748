"""The Gate page (`/gate`): a tablet at a gate scans tickets and shows each verdict big.

Choose the gate and direction once (remembered per browser; `/gate?gate=main&direction=in`
sets them), then type a token and press Enter — a USB/Bluetooth scanner does exactly that — or
scan with the camera (the locally bundled jsQR; no network needed). Each scan is sent through
`api.checkins.submit_checkin`, the same path as `POST /api/checkins`, and the verdict is
shown full-width: green accepted, amber duplicate/re-entry/exit-without-entry, red refused,
for a few seconds, then the page is ready for the next. Below: the gate's last verdicts (from
every device at this gate) and its load against its capacity.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nicegui import app, ui
from pydantic import ValidationError
from redis.exceptions import RedisError

from api.checkins import submit_checkin
from auth.permissions import permitted
from core.records import CheckIn, reason_of
from core.settings import get_settings
from core.venue import Venue, VenueError, venue_for
from live import attendance as attendance_live
from ui import theme

STATIC_URL = "/vf-static"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
SHOW_S = 3.0  # a verdict stays on screen this long
WAIT_S = 5.0  # longest wait for a verdict before showing "no answer yet"
QR_EVENT = "vf_qr_scanned"

#: Panel look per tone: background + text classes.
TONE_CLASSES: dict[str, str] = {
    "accepted": "bg-green-600 text-white",
    "warning": "bg-amber-400 text-black",
    "refused": "bg-red-700 text-white",
    "ready": "bg-slate-100 text-slate-600",
    "checking": "bg-sky-100 text-sky-900",
    "error": "bg-slate-700 text-white",
}
#: Quasar colour per tone (history badges, the attendance page's table).
TONE_COLORS: dict[str, str] = {"accepted": "positive", "warning": "amber-7", "refused": "negative"}
PANEL_BASE = "w-full items-center justify-center rounded-2xl p-8 gap-2 min-h-[16rem] text-center"

HISTORY_COLUMNS = [
    {"name": "time", "label": "Time (UTC)", "field": "time", "align": "left"},
    {"name": "status", "label": "Verdict", "field": "status", "align": "left"},
    {"name": "name", "label": "Participant", "field": "name", "align": "left"},
    {"name": "reason", "label": "Reason", "field": "reason", "align": "left"},
]


def status_label(status: str | None) -> str:
    return (status or "unknown").replace("_", " ").upper()


def verdict_row(v: dict[str, Any]) -> dict[str, Any]:
    """A verdict (JSON shape) → a table row: short time, status, tone, participant."""
    try:
        t = datetime.fromisoformat(str(v.get("ts"))).astimezone(UTC).strftime("%H:%M:%S")
    except ValueError:
        t = str(v.get("ts"))
    status = str(v.get("status"))
    return {
        "key": f"{v.get('nonce')}:{v.get('revision') or 0}:{int(bool(v.get('replayed')))}",
        "nonce": v.get("nonce"),
        "time": t,
        "status": status,
        "label": status_label(status),
        "tone": attendance_live.verdict_tone(status),
        "name": v.get("participant_name") or v.get("participant_id") or "—",
        "reason": v.get("reason") or "",
        "gate": v.get("gate_id"),
        "direction": v.get("direction"),
        "flagged": bool(v.get("flagged")),
        "revision": int(v.get("revision") or 0),
    }


def status_slot(css_class: str, columns: list[dict[str, Any]]) -> str:
    """Quasar body slot: a row with `data-nonce`, the status as a coloured badge."""
    colors = json.dumps(TONE_COLORS)
    cells = []
    for col in columns:
        name = col["name"]
        if name == "status":
            cells.append(
                '<q-td key="status" :props="props">'
                f"<q-badge :color='{colors}[props.row.tone] || \"grey\"' "
                ':label="props.row.label" />'
                '<q-badge v-if="props.row.flagged" color="deep-purple-7" label="FLAGGED" '
                'class="q-ml-xs" /></q-td>'
            )
        else:
            cells.append(f'<q-td key="{name}" :props="props">{{{{ props.row.{name} }}}}</q-td>')
    return (
        f'<q-tr :props="props" :data-nonce="props.row.nonce" :data-status="props.row.status" '
        f'class="{css_class}">' + "".join(cells) + "</q-tr>"
    )


def _venue() -> tuple[Venue | None, str | None]:
    try:
        return venue_for(get_settings().venue_config), None
    except VenueError as exc:
        return None, str(exc)


async def gate_page(gate: str | None = None, direction: str | None = None) -> None:
    venue, venue_error = _venue()
    store = app.storage.user
    gates = {g.id: f"{g.name} ({g.id})" for g in venue.gates} if venue else {}
    if gate:  # a query parameter wins, and is remembered
        store["gate"] = gate
    if direction in ("in", "out"):
        store["direction"] = direction
    chosen = store.get("gate")
    if chosen and chosen not in gates:
        if chosen == gate:  # asked for by name: shown, and the flow will say `unknown_gate`
            gates[chosen] = f"{chosen} (not in the venue file)"
        else:
            chosen = None
    chosen = chosen or next(iter(gates), None)
    device_id = f"web-{str(app.storage.browser.get('id', uuid.uuid4().hex))[:24]}"
    state: dict[str, Any] = {"seq": 0, "until": None, "history": None}

    ui.add_head_html(
        f'<script defer src="{STATIC_URL}/vendor/jsQR.js"></script>'
        f'<script defer src="{STATIC_URL}/gate_scan.js"></script>'
    )
    with theme.frame("Gate", "/gate"):
        if venue_error:
            ui.label(venue_error).classes("text-negative")
        with ui.row().classes("w-full items-center gap-4 flex-wrap"):
            gate_sel = (
                ui.select(gates, value=chosen, label="Gate")
                .classes("min-w-72 text-xl")
                .props('outlined data-testid="gate-select"')
            )
            dir_toggle = (
                ui.toggle({"in": "Entry", "out": "Exit"}, value=store.get("direction", "in"))
                .props('size=xl no-caps data-testid="direction"')
                .classes("text-xl")
            )
            ui.space()
            with ui.column().classes("min-w-72 gap-1"):
                load_lbl = ui.label("Load —").classes("text-sm text-gray-600")
                load_lbl.props('data-testid="gate-load"')
                load_bar = ui.linear_progress(value=0, show_value=False, size="14px")
                load_bar.props("rounded")

        with ui.row().classes("w-full items-center gap-4 no-wrap"):
            token_in = (
                ui.input(placeholder="Scan or type a ticket, then Enter")
                .classes("grow text-3xl")
                .props(
                    'autofocus outlined clearable input-class="text-3xl py-4" '
                    'autocomplete=off spellcheck=false data-testid="token-input"'
                )
            )
            cam_btn = ui.button("Scan with camera", icon="photo_camera").props(
                'size=xl no-caps data-testid="camera-button"'
            )

        video_box = ui.card().classes("w-full items-center").props("flat bordered")
        video_box.set_visibility(False)
        with video_box:
            video = ui.element("video").classes("w-full max-w-xl rounded-lg bg-black")
            video.props("autoplay muted playsinline")
            stop_btn = ui.button("Stop camera", icon="videocam_off").props("size=lg no-caps")

        panel = ui.column().classes(f"{PANEL_BASE} {TONE_CLASSES['ready']}")
        panel.props('data-testid="verdict"')
        with panel:
            status_lbl = ui.label("READY").classes("text-6xl font-black tracking-wide")
            status_lbl.props('data-testid="verdict-status"')
            name_lbl = ui.label("Scan the next ticket").classes("text-4xl font-semibold")
            name_lbl.props('data-testid="verdict-name"')
            reason_lbl = ui.label("").classes("text-2xl")
            reason_lbl.props('data-testid="verdict-reason"')

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("This gate's last 10 verdicts").classes("font-medium")
            history = ui.table(rows=[], columns=HISTORY_COLUMNS, row_key="key").classes("w-full")
            history.props('flat dense wrap-cells data-testid="gate-history"')
            history.add_slot("body", status_slot("vf-gate-row", HISTORY_COLUMNS))

    def show(tone: str, status: str, name: str, reason: str, hold: bool = True) -> None:
        panel.classes(replace=f"{PANEL_BASE} {TONE_CLASSES[tone]}")
        panel.props(f'data-tone="{tone}"')
        status_lbl.text, name_lbl.text, reason_lbl.text = status, name, reason
        state["until"] = time.monotonic() + SHOW_S if hold else None

    def ready() -> None:
        show("ready", "READY", "Scan the next ticket", "", hold=False)

    def show_verdict(v: dict[str, Any]) -> None:
        reason = str(v.get("reason") or "")
        if v.get("replayed"):
            reason += " · repeat of an earlier scan (counted once)"
        if v.get("flagged"):
            reason += " · FLAGGED"
        show(
            attendance_live.verdict_tone(str(v.get("status"))),
            status_label(str(v.get("status"))),
            str(v.get("participant_name") or v.get("participant_id") or ""),
            reason,
        )

    async def submit(token: str, method: str) -> None:
        if not permitted("gate.scan"):  # checked on the server at each scan, not only the page
            return
        token = (token or "").strip()
        if not token:
            return
        if not gate_sel.value:
            show("error", "NO GATE", "Choose this device's gate first", "")
            return
        state["seq"] += 1
        seq = state["seq"]
        try:
            checkin = CheckIn(
                gate_id=gate_sel.value,
                token=token,
                ts=datetime.now(UTC),
                device_id=device_id,
                method=method,  # type: ignore[arg-type]
                direction=dir_toggle.value or "in",
                nonce=uuid.uuid4().hex,
            )
        except ValidationError as exc:
            show("refused", "NOT A TICKET", "", reason_of(exc))
            return
        show("checking", "CHECKING…", "", "", hold=False)
        try:
            sent = await submit_checkin(checkin, WAIT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            if seq == state["seq"]:
                show("error", "NO CONNECTION", "Check-in service unreachable", str(exc)[:200])
            return
        if seq != state["seq"]:
            return  # a newer scan is on screen
        if sent.verdict is None:
            show(
                "error",
                "NO ANSWER YET",
                "The scan is queued; ask the supervisor",
                f"nonce {sent.nonce}",
            )
        else:
            show_verdict(sent.verdict)
        token_in.run_method("focus")

    async def on_enter(e: Any) -> None:
        value = e.args if isinstance(e.args, str) else token_in.value
        token_in.set_value("")
        await submit(value, "manual")

    async def on_qr(e: Any) -> None:
        value = e.args[0] if isinstance(e.args, list) and e.args else e.args
        if isinstance(value, str):
            await submit(value, "qr_scan")

    def on_qr_error(e: Any) -> None:
        msg = e.args[0] if isinstance(e.args, list) and e.args else e.args
        ui.notify(f"Camera unavailable: {msg}", type="warning", position="top")
        video_box.set_visibility(False)

    def start_camera() -> None:
        video_box.set_visibility(True)
        ui.run_javascript(f'vfScanner.start({video.id}, "{QR_EVENT}")')

    def stop_camera() -> None:
        ui.run_javascript("vfScanner.stop()")
        video_box.set_visibility(False)
        token_in.run_method("focus")

    def remember() -> None:
        store["gate"], store["direction"] = gate_sel.value, dir_toggle.value
        state["history"] = None
        refresh()
        token_in.run_method("focus")

    def refresh() -> None:
        m = attendance_live.model
        g = ((m.totals or {}).get("gates") or {}).get(gate_sel.value or "")
        if g:
            cap = int(g.get("capacity_per_minute") or 0)
            n = int(g.get("last_minute") or 0)
            load = float(g.get("load") or 0.0)
            load_lbl.text = f"Load {n} / {cap} per min ({load:.0%})"
            load_bar.value = min(1.0, load)
            load_bar.props(
                f"color={'negative' if load > 1 else 'warning' if load > 0.8 else 'positive'}"
            )
        else:
            load_lbl.text = "Load —"
            load_bar.value = 0
        rows = [verdict_row(v) for v in m.gate_history(gate_sel.value or "")]
        keys_now = [r["key"] for r in rows]
        if keys_now != state["history"]:
            state["history"] = keys_now
            history.rows = rows

    def tick() -> None:
        until = state["until"]
        if until is not None and time.monotonic() >= until:
            ready()

    token_in.on("keydown.enter", on_enter, js_handler="(e) => emit(e.target.value)")
    cam_btn.on_click(start_camera)
    stop_btn.on_click(stop_camera)
    gate_sel.on_value_change(remember)
    dir_toggle.on_value_change(remember)
    ui.on(QR_EVENT, on_qr)
    ui.on(f"{QR_EVENT}_error", on_qr_error)
    refresh()
    attendance_live.changed.subscribe(refresh)
    ui.timer(0.25, tick)


def register() -> None:
    """Register the page route and the bundled scanner scripts (call before `ui.run`)."""
    app.add_static_files(STATIC_URL, STATIC_DIR)
    ui.page("/gate", title="Gate")(gate_page)

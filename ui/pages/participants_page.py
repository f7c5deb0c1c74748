"""The Participants page (`/participants`): import a CSV, find people, show and manage tickets.

- Upload: the same parse and import as `run.py participants import` and `POST
  /api/participants`, with a progress bar while the check-in flow applies it and the import
  report (each bad row with its line number and reason) afterwards.
- Table: the lake's `participants` view, searched and paged on the server (the very query of
  `GET /api/participants`); a few seconds behind imports, which the page says.
- Dialog per participant: the current state from `participants:index` (what the gates use),
  the QR code inline (SVG) with PNG/SVG downloads, and revoke / reissue / restore.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from nicegui import events, run, ui
from redis.exceptions import RedisError

from api.participants import (
    MAX_IMPORT_BYTES,
    admin_op,
    current_token,
    fetch_participants,
    import_parsed,
    participant_detail,
    sync_redis,
)
from auth.permissions import current_user, permitted
from core import keys
from core.participants import ParsedCsv, parse_csv
from core.qr import qr_svg
from core.records import CHECKIN_OUTCOMES
from core.settings import get_settings
from live.redis import redis_client
from storage.erasure import ErasureError, erase_participant
from storage.queries import LakeUnavailable
from ui import theme, widgets

PAGE_SIZE = 25
BAD_ROWS_SHOWN = 500
IMPORT_WAIT_S = 120.0

COLUMNS = [
    {"name": "id", "label": "Id", "field": "id", "align": "left", "sortable": False},
    {"name": "name", "label": "Name", "field": "name", "align": "left"},
    {"name": "email", "label": "Email", "field": "email", "align": "left"},
    {"name": "organization", "label": "Organization", "field": "organization", "align": "left"},
    {"name": "category", "label": "Category", "field": "category", "align": "left"},
    {"name": "status", "label": "Status", "field": "status", "align": "left"},
    {"name": "serial", "label": "Serial", "field": "serial", "align": "right"},
]
BAD_COLUMNS = [
    {"name": "line", "label": "Line", "field": "line", "align": "right"},
    {"name": "reason", "label": "Reason", "field": "reason", "align": "left"},
]

_ROW_SLOT = """
<q-tr :props="props" :data-participant-id="props.row.id" class="cursor-pointer vf-participant"
      @click="$parent.$emit('open', props.row)">
  <q-td key="id" :props="props" class="font-mono">{{ props.row.id }}</q-td>
  <q-td key="name" :props="props">{{ props.row.name }}</q-td>
  <q-td key="email" :props="props">{{ props.row.email }}</q-td>
  <q-td key="organization" :props="props">{{ props.row.organization }}</q-td>
  <q-td key="category" :props="props">{{ props.row.category }}</q-td>
  <q-td key="status" :props="props">
    <q-badge :color="props.row.status === 'revoked' ? 'red-7' : 'teal-6'"
             :label="props.row.status" />
  </q-td>
  <q-td key="serial" :props="props">{{ props.row.serial }}</q-td>
</q-tr>
"""


async def _counts() -> tuple[int | None, int | None]:
    """(registered and active, known ids) from the flow's totals and `participants:index`."""
    r = redis_client()
    raw, known = await asyncio.gather(
        r.get(keys.ATTENDANCE_TOTALS), r.hlen(keys.PARTICIPANTS_INDEX)
    )
    registered = None
    if raw:
        try:
            registered = int(json.loads(raw).get("registered"))
        except (ValueError, TypeError):
            registered = None
    return registered, int(known)


def import_summary(res: dict[str, Any]) -> str:
    applied = (
        "applied by the check-in flow"
        if res["applied"]
        else "sent; the check-in flow is still applying it"
    )
    return (
        f"imported: {res['new']:,} new, {res['updated']:,} updated, {res['unchanged']:,} "
        f"unchanged, {len(res['bad']):,} bad rows — {applied}"
    )


async def participants_page() -> None:
    state: dict[str, Any] = {"progress": None, "importing": False}

    with theme.frame("Participants", "/participants"):
        with ui.row().classes("w-full gap-4 items-stretch"):
            registered_lbl = widgets.small_kpi("Registered (active)", "kpi-registered")
            known_lbl = widgets.small_kpi("Known ids", "kpi-known")
            ui.space()
            with ui.column().classes("justify-end"):
                ui.link("Export all QR codes (zip)", "/participants/qr.zip").props(
                    'data-testid="export-zip" download'
                ).classes("text-primary")

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Import a participants CSV").classes("font-medium")
            ui.label(
                "Header row first: id, name and optionally email, organization, category; "
                "other columns are kept as extra fields. Re-importing a file changes nothing; "
                "edited rows are updated. Bad rows are listed with their line number; the "
                "good rows are imported anyway."
            ).classes("text-sm text-gray-600")
            upload = (
                ui.upload(
                    label="Choose or drop a .csv file",
                    auto_upload=True,
                    max_file_size=MAX_IMPORT_BYTES,
                    on_upload=lambda e: on_upload(e),
                )
                .props('accept=".csv,.tsv,.txt,text/csv" flat bordered data-testid="upload"')
                .classes("w-full max-w-xl")
            )
            progress = ui.linear_progress(value=0, show_value=False).classes("max-w-xl")
            progress.visible = False
            progress_lbl = ui.label("").classes("text-sm text-gray-600")
            result_lbl = ui.label("").classes("font-medium").props('data-testid="import-result"')
            bad_table = ui.table(columns=BAD_COLUMNS, rows=[], row_key="line").classes("w-full")
            bad_table.props('dense flat bordered data-testid="bad-rows"')
            bad_table.visible = False
            bad_more = ui.label("").classes("text-sm text-gray-500")

        with ui.card().classes("w-full").props("flat bordered"):
            with ui.row().classes("w-full items-end gap-4"):
                search = ui.input(
                    "Search id, name, email, organization", on_change=lambda: reload(reset=True)
                ).props('clearable debounce=300 data-testid="search"')
                search.classes("w-96")
                status_sel = ui.select(
                    {"": "All", "active": "Active", "revoked": "Revoked"},
                    value="",
                    label="Status",
                    on_change=lambda: reload(reset=True),
                ).classes("w-40")
                ui.space()
                info = ui.label("").classes("text-sm text-gray-500").props('data-testid="info"')
                ui.button(icon="refresh", on_click=lambda: reload()).props(
                    'flat dense data-testid="refresh"'
                )
            table = ui.table(columns=COLUMNS, rows=[], row_key="id").classes("w-full")
            table.props('dense flat bordered data-testid="participants"')
            table.add_slot("body", _ROW_SLOT)
            table.on("open", lambda e: open_dialog(e.args["id"]))
            pager = ui.pagination(1, 1, direction_links=True, on_change=lambda: reload())
            ui.label(
                "The list reads the lake, a few seconds behind imports and changes; a "
                "participant's dialog shows the current state."
            ).classes("text-xs text-gray-500")

    dialog = ui.dialog()
    with dialog, ui.card().classes("min-w-96 max-w-2xl"):
        dialog_body = ui.column().classes("w-full gap-2").props('data-testid="participant-dialog"')

    async def refresh_counts() -> None:
        try:
            registered, known = await _counts()
        except (RedisError, OSError):
            registered_lbl.text = known_lbl.text = "Redis unavailable"
            return
        registered_lbl.text = "—" if registered is None else f"{registered:,}"
        known_lbl.text = "—" if known is None else f"{known:,}"

    async def reload(reset: bool = False) -> None:
        if reset and pager.value != 1:
            pager.value = 1  # its change handler reloads
            return
        q = (search.value or "").strip() or None
        try:
            page = await fetch_participants(
                q, status_sel.value or None, pager.value or 1, PAGE_SIZE
            )
        except LakeUnavailable as exc:
            info.text = str(exc)
            return
        table.rows = page["items"]
        pages = max(1, math.ceil(page["total"] / PAGE_SIZE))
        if pager.max != pages:
            pager.max = pages
        info.text = f"{page['total']:,} participants · page {pager.value or 1} of {pages}"

    def show_progress() -> None:
        p = state["progress"]
        if p is None:
            return
        phase, done, total = p
        progress.value = done / total if total else 1.0
        label = {"send": "sending", "apply": "applied by the check-in flow"}.get(phase, phase)
        progress_lbl.text = f"{label}: {done:,} / {total:,}"

    ui.timer(0.25, show_progress)

    async def on_upload(e: events.UploadEventArguments) -> None:
        if not permitted("participants.manage"):
            return
        if state["importing"]:
            ui.notify("An import is already running on this page", type="warning")
            return
        state["importing"] = True
        upload.disable()
        bad_table.visible = False
        bad_more.text = ""
        result_lbl.text = f"reading {e.file.name} …"
        result_lbl.classes(remove="text-negative text-positive text-orange-9")
        try:
            data = await e.file.read()
            parsed: ParsedCsv | None
            try:
                parsed = await run.io_bound(parse_csv, data)
            except ValueError as exc:
                result_lbl.text = f"{e.file.name}: {exc}"
                result_lbl.classes(add="text-negative")
                return
            if parsed is None:
                return
            show_bad(parsed.bad)
            if not parsed.participants:
                result_lbl.text = (
                    f"{e.file.name}: no valid participant ({parsed.bad_total} bad rows)"
                    if parsed.bad
                    else f"{e.file.name}: no participants in the file"
                )
                result_lbl.classes(add="text-negative")
                return
            result_lbl.text = f"importing {len(parsed.participants):,} participants …"
            progress.visible = True
            state["progress"] = ("send", 0, len(parsed.participants))

            def on_progress(phase: str, done: int, total: int) -> None:
                state["progress"] = (phase, done, total)  # read by the page's timer

            try:
                res = (await import_parsed(parsed, IMPORT_WAIT_S, on_progress)).as_dict()
            except (RedisError, OSError, RuntimeError) as exc:
                result_lbl.text = f"import failed: {exc}"
                result_lbl.classes(add="text-negative")
                return
            show_progress()
            result_lbl.text = import_summary(res)
            result_lbl.classes(add="text-orange-9" if res["bad"] else "text-positive")
            await refresh_counts()
            await asyncio.sleep(1.0)  # the lake catches up within a few seconds
            await reload()
        finally:
            state["importing"] = False
            state["progress"] = None
            progress.visible = False
            progress_lbl.text = ""
            upload.reset()
            upload.enable()

    def show_bad(bad: list) -> None:
        bad_table.rows = [{"line": b.line, "reason": b.reason} for b in bad[:BAD_ROWS_SHOWN]]
        bad_table.visible = bool(bad)
        bad_more.text = (
            f"… and {len(bad) - BAD_ROWS_SHOWN:,} more bad rows"
            if len(bad) > BAD_ROWS_SHOWN
            else ""
        )

    async def open_dialog(pid: str) -> None:
        await render_dialog(pid)
        dialog.open()

    async def render_dialog(pid: str) -> None:
        try:
            doc = await participant_detail(pid)
        except (LakeUnavailable, RedisError, OSError) as exc:
            ui.notify(f"could not load {pid}: {exc}", type="negative")
            return
        dialog_body.clear()
        with dialog_body:
            if doc is None:
                ui.label(f"No participant with id {pid}").classes("text-negative")
                return
            lake = doc["participant"] or {}
            revoked = doc["status"] == "revoked"
            with ui.row().classes("w-full items-center"):
                ui.label(doc["name"] or pid).classes("text-lg font-semibold")
                ui.space()
                ui.badge(doc["status"], color="red-7" if revoked else "teal-6").props(
                    'data-testid="dialog-status"'
                )
            details = [
                ("Id", pid),
                ("Email", lake.get("email")),
                ("Organization", lake.get("organization")),
                ("Category", lake.get("category")),
                ("Token serial", doc["serial"]),
                ("Checked in", "yes" if doc["checked_in"] else "no"),
            ]
            if revoked and lake.get("revoked_reason"):
                details.append(("Revoked because", lake.get("revoked_reason")))
            last = doc["checkins"]
            if last.get("last_status"):
                meaning = CHECKIN_OUTCOMES.get(last["last_status"], "")
                details.append(
                    ("Last scan", f"{last['last_status']} at {last['last_gate']} ({meaning})")
                )
            with ui.grid(columns=2).classes("gap-x-4 gap-y-0 text-sm"):
                for k, v in details:
                    ui.label(k).classes("text-gray-500")
                    ui.label("—" if v in (None, "") else str(v))
            if doc["index"] is None:
                ui.label(
                    "Not in the check-in flow's index yet (an import is being applied)."
                ).classes("text-sm text-gray-500")
            elif revoked:
                ui.label("Revoked: this ticket is refused at the gates.").classes("text-negative")
            else:
                svg = await run.io_bound(lambda: qr_svg(current_token(pid, doc["index"]), 5))
                if svg:
                    ui.html(svg, sanitize=False).classes("self-center").props(
                        'data-testid="qr-svg"'
                    )
                with ui.row().classes("gap-4 self-center"):
                    ui.link("Download PNG", f"/participants/{pid}/qr.png?download=true").props(
                        'download data-testid="qr-png-link"'
                    )
                    ui.link("Download SVG", f"/participants/{pid}/qr.svg?download=true").props(
                        'download data-testid="qr-svg-link"'
                    )
            if doc["index"] is not None:
                reason = None
                if not revoked:
                    reason = ui.input("Reason (shown at the gate)").classes("w-full")
                with ui.row().classes("w-full gap-2 justify-end"):
                    if revoked:
                        ui.button(
                            "Restore", icon="undo", on_click=lambda: act(pid, "restore")
                        ).props('color=teal data-testid="restore"')
                    else:
                        ui.button(
                            "Revoke",
                            icon="block",
                            on_click=lambda: act(
                                pid, "revoke", (reason.value or "")[:500] if reason else None
                            ),
                        ).props('color=negative data-testid="revoke"')
                    ui.button(
                        "Reissue", icon="autorenew", on_click=lambda: act(pid, "reissue")
                    ).props('outline data-testid="reissue"')
                    ui.button(
                        "Erase personal data", icon="delete_forever", on_click=lambda: erase(pid)
                    ).props('outline color=negative data-testid="erase"')
            ui.button("Close", on_click=dialog.close).props("flat").classes("self-end")

    async def erase(pid: str) -> None:
        """Erase after a confirmation: name, e-mail and extra columns everywhere (see
        `storage.erasure`); recorded with the organiser's name."""
        if not permitted("participants.manage"):
            return
        user = current_user()
        with ui.dialog() as confirm, ui.card():
            ui.label(
                f"Erase {pid}'s name, e-mail and extra columns from the lake and Redis, and "
                "revoke the ticket? This cannot be undone."
            )
            with ui.row().classes("justify-end w-full"):
                ui.button("Cancel", on_click=lambda: confirm.submit(False)).props("flat")
                ui.button("Erase", on_click=lambda: confirm.submit(True)).props(
                    'color=negative data-testid="erase-confirm"'
                )
        if not await confirm:
            return
        ui.notify(f"Erasing {pid}… (about 10 s)")
        try:
            res = await run.io_bound(
                erase_participant,
                get_settings(),
                sync_redis(),
                pid,
                f"ui:{user.username if user else '?'}",
            )
        except (LookupError, ErasureError, RedisError, OSError) as exc:
            ui.notify(f"erasure failed: {exc}", type="negative")
            return
        ui.notify(f"{pid}: personal data erased (erasure {res.erasure_id})", type="positive")
        dialog.close()
        ui.timer(1.0, reload, once=True)

    async def act(pid: str, op: str, reason: str | None = None) -> None:
        if not permitted("participants.manage"):
            return
        try:
            status, body = await admin_op(pid, op, reason)  # type: ignore[arg-type]
        except (RedisError, OSError) as exc:
            ui.notify(f"{op} failed: {exc}", type="negative")
            return
        if status == 404:
            ui.notify(body["detail"], type="negative")
        elif body.get("applied"):
            done = {"revoke": "revoked", "reissue": "reissued", "restore": "restored"}[op]
            ui.notify(f"{pid} {done}", type="positive")
        else:
            ui.notify(f"{op} sent; the check-in flow has not applied it yet", type="warning")
        await render_dialog(pid)
        await refresh_counts()
        ui.timer(3.0, reload, once=True)  # the lake shows the change a few seconds later

    ui.timer(0, reload, once=True)
    ui.timer(0, refresh_counts, once=True)
    ui.timer(5.0, refresh_counts)


def register() -> None:
    """Register the page route (call before `ui.run`)."""
    ui.page("/participants", title="Participants")(participants_page)

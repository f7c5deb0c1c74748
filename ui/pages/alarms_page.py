"""The Alarms page (`/alarms`): open alarms live, acknowledge / clear, and the history.

- Open alarms come from `live.alarms.model` (seeded from `alarms:active`, then `live:alarms`),
  refreshed when `live.alarms.changed` fires (≤ 4 Hz for all clients together). Filters by
  severity, status, source and rule; every column sorts.
- Acknowledge (organiser, operator) and Clear (organiser) take an optional comment. Buttons are
  only rendered for roles that may use them, and `alarm_actions.send_action` checks the role
  again on the server before anything is sent to the alarm flow.
- The history is the lake's `alarms` view — one row per transition with who, role, comment and
  when: the audit trail of acknowledgements. Filters: time range, rule, source, transition.
Rows carry `data-alarm-id` / `data-status` so tests (and people) can find a given alarm.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from nicegui import ui

from auth.permissions import can, current_user
from core.settings import get_settings
from live import alarms as alarms_live
from storage.analytics import RANGES, since_for
from storage.queries import (
    ALARM_HISTORY_COLUMNS,
    ALARM_HISTORY_ROWS,
    LakeUnavailable,
    alarm_history,
)
from ui import alarm_actions, theme, widgets
from ui.pages.notifications_page import attempts_table, load_attempts

HISTORY_ROWS = ALARM_HISTORY_ROWS
TRANSITIONS = ("raised", "acknowledged", "cleared", "escalated")
SEVERITY_COLORS = {
    "CRITICAL": "red-8",
    "MAJOR": "deep-orange-7",
    "MINOR": "amber-8",
    "WARNING": "blue-grey-6",
}
STATUS_COLORS = {
    "ACTIVE_UNACK": "negative",
    "ACTIVE_ACK": "warning",
    "CLEARED_UNACK": "info",
    "CLEARED_ACK": "grey-6",
}
OPEN_COLUMNS = [
    ("severity", "Severity"),
    ("status", "Status"),
    ("rule", "Rule"),
    ("source", "Source"),
    ("message", "Message"),
    ("count", "Count"),
    ("first_at", "First (UTC)"),
    ("last_at", "Last (UTC)"),
    ("acked", "Acknowledged"),
    ("cleared", "Cleared"),
]
HISTORY_LABELS = {
    "at": "At (UTC)",
    "transition": "Transition",
    "severity": "Severity",
    "rule_id": "Rule",
    "source": "Source",
    "status": "Status after",
    "by": "By",
    "role": "Role",
    "comment": "Comment",
    "value": "Value",
    "count": "Count",
    "message": "Message",
    "alarm_id": "Alarm",
}
HISTORY_COLUMNS = [(k, HISTORY_LABELS[k]) for k in ALARM_HISTORY_COLUMNS]


def _short(ts: Any) -> str:
    if not ts:
        return ""
    try:
        return datetime.fromisoformat(str(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(ts)


def open_row(a: dict[str, Any]) -> dict[str, Any]:
    """An Alarm JSON → a table row (display strings, plus what the action buttons need)."""
    acked = f"{a.get('acked_by')} · {_short(a.get('acked_at'))}" if a.get("acked_by") else ""
    cleared = (
        f"{a.get('cleared_by')} · {_short(a.get('cleared_at'))}" if a.get("cleared_by") else ""
    )
    status = str(a.get("status"))
    return {
        "id": a.get("alarm_id"),
        "severity": a.get("severity"),
        "status": status,
        "rule": a.get("rule_name") or a.get("rule_id"),
        "rule_id": a.get("rule_id"),
        "source": a.get("source"),
        "message": a.get("message") or "",
        "count": int(a.get("count") or 0),
        "first_at": _short(a.get("first_at")),
        "last_at": _short(a.get("last_at")),
        "acked": acked,
        "cleared": cleared,
        "comment": a.get("comment") or "",
        "can_ack": status.endswith("_UNACK"),
        "can_clear": status.startswith("ACTIVE"),
    }


def _open_slot(may_ack: bool, may_clear: bool) -> str:
    sev = json.dumps(SEVERITY_COLORS)
    st = json.dumps(STATUS_COLORS)
    cells = []
    for key, _ in OPEN_COLUMNS:
        if key == "severity":
            inner = (
                f"<q-badge :color='{sev}[props.row.severity] || \"grey\"' "
                ":label='props.row.severity' />"
            )
        elif key == "status":
            inner = (
                f"<q-badge outline :color='{st}[props.row.status] || \"grey\"' "
                ":label='props.row.status' />"
            )
        elif key == "message":
            inner = (
                "{{ props.row.message }}<div v-if='props.row.comment' "
                "class='text-xs text-gray-500'>“{{ props.row.comment }}”</div>"
            )
        else:
            inner = f"{{{{ props.row.{key} }}}}"
        cells.append(f'<q-td key="{key}" :props="props">{inner}</q-td>')
    buttons = []
    if may_ack:
        buttons.append(
            "<q-btn v-if='props.row.can_ack' dense flat color='primary' icon='done' "
            "label='Acknowledge' data-testid='ack-button' "
            "@click=\"() => $parent.$emit('ack', props.row)\" />"
        )
    if may_clear:
        buttons.append(
            "<q-btn v-if='props.row.can_clear' dense flat color='negative' icon='clear' "
            "label='Clear' data-testid='clear-button' "
            "@click=\"() => $parent.$emit('clear', props.row)\" />"
        )
    cells.append(f'<q-td key="actions" :props="props">{"".join(buttons)}</q-td>')
    return (
        '<q-tr :props="props" class="vf-alarm-row" :data-alarm-id="props.row.id" '
        ':data-status="props.row.status" :data-severity="props.row.severity">'
        + "".join(cells)
        + "</q-tr>"
    )


async def alarms_page(alarm: str | None = None) -> None:
    """`?alarm=<id>` (the link in every notification) narrows the history and the
    notifications to that alarm."""
    alarm = (alarm or "").strip()[:400] or None  # only ever a bound SQL parameter
    user = current_user()
    may_ack, may_clear = can(user, "alarms.ack"), can(user, "alarms.clear")
    state: dict[str, Any] = {"version": -1, "rows": None, "opts": None}

    with theme.frame("Alarms", "/alarms"):
        with ui.row().classes("w-full items-center gap-4"):
            ui.label("Open alarms").classes("text-lg font-medium")
            counts_lbl = ui.label("").classes("text-sm").props('data-testid="alarm-counts"')
            ui.space()
            status = widgets.live_badge()
        with ui.row().classes("w-full items-end gap-4"):
            sev_sel = (
                ui.select(list(alarms_live.SEVERITIES), multiple=True, value=[], label="Severity")
                .classes("w-64")
                .props('clearable data-testid="filter-severity"')
            )
            status_sel = (
                ui.select(list(alarms_live.STATUSES[:3]), multiple=True, value=[], label="Status")
                .classes("w-64")
                .props('clearable data-testid="filter-status"')
            )
            source_sel = ui.select({"": "All sources"}, value="", label="Source").classes("w-48")
            source_sel.props('data-testid="filter-source"')
            rule_sel = ui.select({"": "All rules"}, value="", label="Rule").classes("w-56")
            rule_sel.props('data-testid="filter-rule"')

        actions = {"name": "actions", "label": "", "field": "id", "align": "right"}
        columns = [*widgets.columns(OPEN_COLUMNS, sortable=True), actions]
        table = ui.table(rows=[], columns=columns, row_key="id").classes("w-full")
        table.props('dense flat bordered wrap-cells data-testid="open-alarms"')
        table.add_slot("body", _open_slot(may_ack, may_clear))
        table.add_slot(
            "no-data", '<div class="w-full text-center text-gray-500 py-4">No open alarms.</div>'
        )

        with ui.card().classes("w-full").props("flat bordered"):
            ui.label("Latest transitions (live)").classes("font-medium")
            feed = ui.column().classes("w-full gap-0 text-sm").props('data-testid="transitions"')

        with ui.card().classes("w-full").props("flat bordered"):
            with ui.row().classes("w-full items-end gap-4"):
                ui.label("History (lake: alarms) — the audit trail").classes("font-medium")
                ui.space()
                range_sel = ui.select(list(RANGES), value="24 h", label="Time range")
                range_sel.classes("w-32").props('data-testid="history-range"')
                h_rule = ui.input("Rule id").classes("w-40").props("clearable")
                h_source = ui.input("Source").classes("w-40").props("clearable")
                h_transition = ui.select(
                    {
                        "": "All",
                        **{t: t for t in TRANSITIONS},
                    },
                    value="",
                    label="Transition",
                ).classes("w-40")
                ui.button(icon="refresh", on_click=lambda: load_history()).props(
                    'flat dense data-testid="history-refresh"'
                )
            history_info = ui.label("").classes("text-sm text-gray-500")
            history = widgets.data_table(HISTORY_COLUMNS, sortable=True, pagination=25)
            history.props('dense flat bordered wrap-cells data-testid="alarm-history"')

        with ui.card().classes("w-full").props("flat bordered"):
            with ui.row().classes("w-full items-end gap-4"):
                ui.label(
                    "Notifications (lake: notifications) — every attempt, held back by quiet "
                    "hours, and escalation step" + (f" of {alarm}" if alarm else "")
                ).classes("font-medium")
                ui.space()
                ui.button(icon="refresh", on_click=lambda: load_notes()).props("flat dense")
            notes_info = ui.label("").classes("text-sm text-gray-500")
            notes = attempts_table()
            notes.props('dense flat bordered wrap-cells data-testid="alarm-notifications"')

    comment_dialog = ui.dialog()
    with comment_dialog, ui.card().classes("min-w-96"):
        dialog_title = ui.label("").classes("text-lg font-medium")
        comment = ui.textarea("Comment (optional)").classes("w-full")
        comment.props('data-testid="action-comment" maxlength=500 counter')
        with ui.row().classes("w-full justify-end"):
            ui.button("Cancel", on_click=comment_dialog.close).props("flat")
            confirm = ui.button("Send").props('data-testid="action-confirm"')
    pending: dict[str, str] = {}

    def ask(action: str, row: dict[str, Any]) -> None:
        pending.update(action=action, alarm_id=str(row.get("id")))
        verb = "Acknowledge" if action == "ack" else "Clear"
        dialog_title.text = f"{verb}: {row.get('rule')} — {row.get('source')}"
        confirm.text = verb
        comment.value = ""
        comment_dialog.open()

    async def send() -> None:
        comment_dialog.close()
        action, alarm_id = pending.get("action", ""), pending.get("alarm_id", "")
        try:
            # current_user() again: the session is the authority, not the page's first render
            await alarm_actions.send_action(current_user(), action, alarm_id, comment.value)
        except alarm_actions.ActionRefused as exc:
            ui.notify(f"Not sent: {exc}", type="negative")
            return
        ui.notify(f"{'Acknowledgement' if action == 'ack' else 'Clear'} sent", type="positive")

    confirm.on_click(send)
    table.on("ack", lambda e: ask("ack", e.args))
    table.on("clear", lambda e: ask("clear", e.args))

    def matches(a: dict[str, Any]) -> bool:
        if sev_sel.value and a.get("severity") not in sev_sel.value:
            return False
        if status_sel.value and a.get("status") not in status_sel.value:
            return False
        if source_sel.value and a.get("source") != source_sel.value:
            return False
        return not (rule_sel.value and a.get("rule_id") != rule_sel.value)

    def refresh(force: bool = False) -> None:
        m = alarms_live.model
        if m.version == state["version"] and not force:
            return
        state["version"] = m.version
        alarms = m.sorted_open()
        rows = [open_row(a) for a in alarms if matches(a)]
        if rows != state["rows"]:
            state["rows"] = rows
            table.rows = rows
        counts = m.counts()
        counts_lbl.text = " · ".join(f"{s} {n}" for s, n in counts.items()) + (
            f" · {m.unacked()} not acknowledged"
        )
        sources = sorted({str(a.get("source")) for a in alarms})
        rules = sorted({str(a.get("rule_id")) for a in alarms})
        if (sources, rules) != state["opts"]:
            state["opts"] = (sources, rules)
            for sel, items, all_label in (
                (source_sel, sources, "All sources"),
                (rule_sel, rules, "All rules"),
            ):
                opts = {"": all_label, **{x: x for x in items}}
                if sel.value and sel.value not in opts:
                    opts[sel.value] = sel.value
                sel.set_options(opts)
        feed.clear()
        with feed:
            for t in list(m.transitions)[:15]:
                who = f" by {t['by']}" if t.get("by") else ""
                line = ui.label(
                    f"{_short(t.get('at'))}  {t.get('transition')}  {t.get('severity')}  "
                    f"{t.get('rule_name') or t.get('rule_id')} — {t.get('source')}{who}"
                ).classes("font-mono text-xs")
                line.props["data-alarm-id"] = str(t.get("alarm_id"))  # set, never parsed
                line.props["data-transition"] = str(t.get("transition"))
        widgets.show_live(status, m.connected)

    for sel in (sev_sel, status_sel, source_sel, rule_sel):
        sel.on_value_change(lambda: refresh(force=True))

    async def load_notes() -> None:
        await load_attempts(notes, notes_info, alarm)

    async def load_history() -> None:
        filters = {
            "rule_id": (h_rule.value or "").strip(),
            "source": (h_source.value or "").strip(),
            "alarm_id": alarm or "",
        }
        try:
            rows = await alarm_history(
                get_settings().lake, since_for(range_sel.value), filters, h_transition.value or ""
            )
        except LakeUnavailable as exc:
            history_info.text = f"history unavailable: {exc}"
            return
        history.rows = widgets.lake_rows(HISTORY_COLUMNS, [r[:-1] for r in rows], digits=3)
        history_info.text = f"newest {len(rows)} transitions (max {HISTORY_ROWS})"

    for w in (range_sel, h_transition):
        w.on_value_change(load_history)
    for w in (h_rule, h_source):
        w.on("keydown.enter", load_history)
        w.on("clear", load_history)

    refresh()
    alarms_live.changed.subscribe(refresh)
    ui.timer(0, load_history, once=True)
    ui.timer(15.0, load_history)
    ui.timer(0, load_notes, once=True)
    ui.timer(15.0, load_notes)


def register() -> None:
    """Register the page route (call before `ui.run`)."""
    ui.page("/alarms", title="Alarms")(alarms_page)

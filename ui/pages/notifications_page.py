"""The Notifications page (`/notifications`): your own subscription, and (organisers) targets.

- **My notifications** (every role): the address alarms reach you at (an e-mail, sent through
  the venue file's `mail_url`, or an Apprise URL of a scheme the venue allows), which
  severities and rules, on which transitions; Save / Remove; *Send me a test* sends one now
  and says how it went. Kept in Redis (`notify:subscriptions`), read by the notifier for each
  transition. The address is shown only to its owner, redacted.
- **Targets** (organisers): the venue file's targets with their URLs redacted (secrets are
  `{env:…}` names, never values), whether each is failing (`notify:health`), a *Send test*
  button per target, the routes, and the newest attempts from the lake's `notifications`.
Every button checks its permission again on the server when clicked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nicegui import background_tasks, ui
from pydantic import ValidationError
from redis.exceptions import RedisError

from auth.permissions import can, current_user, permitted
from core import keys
from core.alarms import SEVERITIES
from core.notify_config import NotifyOn, redact
from core.notify_plan import Subscription, TargetHealth, address_problem
from core.records import reason_of
from core.settings import get_settings
from core.venue import venue_for
from live.redis import redis_client
from notify.apprise_sender import warm_up
from notify.senders import send_test, user_destination
from storage.queries import LakeUnavailable, notification_attempts
from ui import theme, widgets

ON_CHOICES: tuple[NotifyOn, ...] = ("raised", "acknowledged", "cleared", "escalated")
ATTEMPT_COLUMNS = [
    ("at", "At (UTC)"),
    ("result", "Result"),
    ("target", "Target"),
    ("route", "Route"),
    ("transition", "Transition"),
    ("level", "Level"),
    ("attempt", "Attempt"),
    ("latency_ms", "ms"),
    ("error", "Error"),
    ("alarm_id", "Alarm"),
]


def attempts_table() -> ui.table:
    return widgets.data_table(ATTEMPT_COLUMNS, sortable=True, pagination=20)


def _choose(options: list[str], label: str, value: list[str], test_id: str) -> ui.select:
    """A multiple choice of the subscription form."""
    sel = ui.select(options, multiple=True, label=label, value=value).classes("w-72")
    return sel.props(f'data-testid="{test_id}"')


async def load_attempts(table: ui.table, info: ui.label, alarm_id: str | None) -> None:
    try:
        rows = await notification_attempts(
            get_settings().lake, [k for k, _ in ATTEMPT_COLUMNS], alarm_id
        )
    except LakeUnavailable as exc:
        info.text = f"notifications unavailable: {exc}"
        return
    table.rows = widgets.lake_rows(ATTEMPT_COLUMNS, rows, digits=1)
    info.text = f"newest {len(rows)} notification attempts" + (
        f" of {alarm_id}" if alarm_id else ""
    )


async def notifications_page() -> None:
    user = current_user()
    assert user is not None  # the middleware let only logged-in users in
    venue = venue_for(get_settings().venue_config)
    n = venue.notifications
    r = redis_client()
    try:
        raw = await r.hget(keys.NOTIFY_SUBSCRIPTIONS, user.username)
    except (RedisError, OSError) as exc:
        raw = None
        ui.notify(f"Redis unavailable: {exc}", type="negative")
    current = Subscription.model_validate_json(raw) if raw else None
    rule_ids = sorted({"*", *(rule.id for rule in venue.alarm_rules)})
    # load Apprise's plugins now, off the event loop, so a test click does not wait for them
    background_tasks.create(asyncio.to_thread(warm_up), name="apprise-warm-up")

    with theme.frame("Notifications", "/notifications"):
        with ui.card().classes("w-full").props('flat bordered data-testid="my-subscription"'):
            ui.label("My notifications").classes("text-lg font-medium")
            ui.label(
                "Alarms reach you at this address: an e-mail address"
                + ("" if n.mail_url else " (not set up on this server: no mail_url)")
                + f", or an Apprise URL ({', '.join(s + '://' for s in n.user_schemes[:6])}…)."
            ).classes("text-sm text-gray-600")
            shown = redact(current.address) if current else ""
            address = ui.input("Address", value=current.address if current else "")
            address.classes("w-full").props('data-testid="sub-address" type=password')
            if shown:
                ui.label(f"Saved: {shown}").classes("text-xs text-gray-500")
            with ui.row().classes("w-full gap-4"):
                sev = _choose(
                    list(SEVERITIES),
                    "Severities",
                    list(current.severities) if current else ["CRITICAL", "MAJOR"],
                    "sub-severities",
                )
                rules = _choose(
                    rule_ids,
                    "Rules (* = all)",
                    list(current.rules) if current else ["*"],
                    "sub-rules",
                )
                on = _choose(
                    list(ON_CHOICES),
                    "On",
                    list(current.send_on) if current else ["raised", "cleared"],
                    "sub-on",
                )
                enabled = ui.switch("Enabled", value=current.enabled if current else True)
            status = ui.label("").classes("text-sm").props('data-testid="sub-status"')

            def form() -> Subscription | None:
                """The form as a valid subscription, or None (said why) — role checked again."""
                if not permitted("notify.subscribe"):
                    return None
                me = current_user()
                if me is None:
                    status.text = "your login has ended; log in again"
                    return None
                try:
                    sub = Subscription(
                        username=me.username,
                        address=address.value or "",
                        severities=sev.value or [],
                        rules=rules.value or ["*"],
                        send_on=on.value or [],
                        enabled=bool(enabled.value),
                    )
                except ValidationError as exc:
                    status.text = f"Not saved: {reason_of(exc)}"
                    return None
                why = address_problem(sub.address, n)
                if why:
                    status.text = f"Not saved: {why}"
                    return None
                return sub

            async def save() -> None:
                sub = form()
                if sub is None:
                    return
                try:
                    await redis_client().hset(
                        keys.NOTIFY_SUBSCRIPTIONS, sub.username, sub.model_dump_json()
                    )
                except (RedisError, OSError) as exc:
                    status.text = f"Not saved, Redis unavailable: {exc}"
                    return
                status.text = f"Saved: {redact(sub.address)}"

            async def remove() -> None:
                if not permitted("notify.subscribe"):
                    return
                me = current_user()
                if me is None:
                    return
                await redis_client().hdel(keys.NOTIFY_SUBSCRIPTIONS, me.username)
                status.text = "Removed: no alarm reaches you by notification now"

            async def test_me() -> None:
                sub = form()
                if sub is None:
                    return
                status.text = "Sending a test…"
                d = await send_test(user_destination(sub, n), n.link_base)
                status.text = (
                    f"Test delivered to {redact(sub.address)} in {d.latency_ms:.0f} ms"
                    if d.ok
                    else f"Test failed: {d.error}"
                )

            with ui.row():
                ui.button("Save", on_click=save).props('data-testid="sub-save"')
                ui.button("Send me a test", on_click=test_me).props(
                    'outline data-testid="sub-test"'
                )
                ui.button("Remove", on_click=remove).props("flat color=negative")

        if not can(user, "notify.manage"):
            return
        await _targets_section(n)


async def _targets_section(n: Any) -> None:
    try:
        raw = await redis_client().hgetall(keys.NOTIFY_HEALTH)
    except (RedisError, OSError):
        raw = {}
    health = {k.decode(): TargetHealth.model_validate_json(v) for k, v in raw.items()}
    with ui.card().classes("w-full").props('flat bordered data-testid="targets"'):
        ui.label("Targets (venue file: notifications.targets)").classes("text-lg font-medium")
        if not n.targets:
            ui.label("No targets: add `notifications:` to the venue file.").classes("text-sm")
        for t in n.targets:
            h = health.get(t.name, TargetHealth())
            with ui.row().classes("w-full items-center gap-4").props(f'data-target="{t.name}"'):
                ui.label(t.name).classes("font-medium w-40")
                ui.label("signed webhook" if t.is_webhook else "apprise").classes("w-32 text-sm")
                ui.label(t.shown_url).classes("font-mono text-xs grow")
                if h.failing:
                    ui.badge(f"failing ({h.failures})", color="negative").props(
                        f'title="{h.last_error or ""}"'
                    )
                else:
                    ui.badge(
                        "ok" if h.last_ok_at else "no attempt yet",
                        color="positive" if h.last_ok_at else "grey",
                    )
                result = ui.label("").classes("text-xs w-64")

                async def test(target=t, out=result) -> None:
                    if not permitted("notify.manage"):
                        return
                    out.text = "sending…"
                    d = await send_test(target, n.link_base)
                    out.text = f"ok in {d.latency_ms:.0f} ms" if d.ok else f"failed: {d.error}"

                ui.button("Send test", on_click=test).props("dense flat")
        ui.label("Routes").classes("font-medium pt-2")
        for route in n.routes:
            esc = (
                f" · unacknowledged after {route.escalate_after_min:g} min → {route.escalate_to}"
                + (f", every {route.repeat_every_min:g} min" if route.repeat_every_min else "")
                if route.escalate_to
                else ""
            )
            quiet = f" · quiet {', '.join(route.quiet_hours)}" if route.quiet_hours else ""
            ui.label(
                f"{route.name}: {'/'.join(route.severities)} · rules {', '.join(route.rules)} · "
                f"sources {', '.join(route.sources)} · on {', '.join(route.send_on)} → "
                f"{', '.join(route.targets)}{quiet}{esc}"
                + (" (escalation only)" if route.escalation_only else "")
            ).classes("text-sm")
    with ui.card().classes("w-full").props("flat bordered"):
        info = ui.label("").classes("text-sm text-gray-500")
        table = attempts_table()
        table.props('dense flat bordered wrap-cells data-testid="notification-attempts"')
    ui.timer(0, lambda: load_attempts(table, info, None), once=True)


def register() -> None:
    ui.page("/notifications", title="Notifications")(notifications_page)

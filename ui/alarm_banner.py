"""The impossible-to-miss CRITICAL alarm, on every dashboard page (one call in `theme.frame`).

- A counter in the header: open alarms not yet acknowledged (red when one is CRITICAL), a
  link to `/alarms`. It carries `data-critical="<n>"` for the browser script below.
- A banner (a seamless, persistent Quasar dialog at the top: it never blocks the page, and it
  cannot be dismissed) listing every CRITICAL alarm that is ACTIVE_UNACK, with Acknowledge
  (only for roles that may; the server checks again) and a link to `/alarms`. It appears live
  and stays until the alarm is acknowledged — by anyone, in any browser.
- While that banner has something to show, a small script flashes the tab title and plays a
  short tone generated with WebAudio (no sound file, nothing downloaded) every few seconds.
  Browsers only let a page make sound after a user gesture on it; the script unlocks audio on
  the first click or key press, and the title flashing works regardless.

All of it reads `live.alarms.model` when `live.alarms.changed` fires (≤ 4 Hz for all
clients together); nothing is pushed per alarm message.
"""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui
from nicegui.events import GenericEventArguments

from auth.permissions import can, current_user
from live import alarms as alarms_live
from ui import alarm_actions

BANNER_SHOWN = 3
ACK_EVENT = "vf_banner_ack"  # CRITICAL alarms listed in the banner; the rest are "+ n more"

SCRIPT = """
<script>
(() => {
  if (window.vfAlarm) return;
  const st = window.vfAlarm = {beeps: 0, flashing: false, ctx: null, title: null,
                               lastBeep: 0, count: 0};
  const unlock = () => {
    try {
      st.ctx = st.ctx || new (window.AudioContext || window.webkitAudioContext)();
      if (st.ctx.state === 'suspended') st.ctx.resume();
    } catch (e) { /* no audio device: the title still flashes */ }
  };
  document.addEventListener('pointerdown', unlock, {capture: true});
  document.addEventListener('keydown', unlock, {capture: true});
  st.beep = () => {
    st.beeps += 1;
    try {
      unlock();
      const ctx = st.ctx, t = ctx.currentTime;
      for (const [i, f] of [[0, 880], [1, 660], [2, 880]]) {
        const o = ctx.createOscillator(), g = ctx.createGain();
        o.type = 'square'; o.frequency.value = f;
        g.gain.setValueAtTime(0.0001, t + i * 0.18);
        g.gain.exponentialRampToValueAtTime(0.25, t + i * 0.18 + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.18 + 0.16);
        o.connect(g).connect(ctx.destination);
        o.start(t + i * 0.18); o.stop(t + i * 0.18 + 0.17);
      }
    } catch (e) { /* audio not allowed yet */ }
  };
  let tick = 0;
  setInterval(() => {
    const el = document.querySelector('[data-testid="alarm-counter"]');
    const n = el ? parseInt(el.getAttribute('data-critical') || '0', 10) : 0;
    const now = Date.now();
    if (n > 0) {
      if (!st.flashing) { st.flashing = true; st.title = document.title; }
      if (n > st.count || now - st.lastBeep > 5000) { st.lastBeep = now; st.beep(); }
      tick += 1;
      document.title = tick % 2 ? `\\u26a0 CRITICAL ALARM (${n})` : st.title;
    } else if (st.flashing) {
      st.flashing = false; document.title = st.title;
    }
    st.count = n;
  }, 500);
})();
</script>
"""


def _alarm_line(a: dict[str, Any]) -> str:
    name = a.get("rule_name") or a.get("rule_id")
    return f"{name} — {a.get('source')}: {a.get('message') or ''}"


def attach() -> None:
    """The header's alarm counter and the page's CRITICAL banner; call inside the header."""
    user = current_user()
    if not can(user, "alarms.view"):
        return  # the login page, or a role that may not see alarms: nothing to reveal
    ui.add_head_html(SCRIPT)
    state: dict[str, Any] = {"version": -1, "ids": None}
    may_ack = can(user, "alarms.ack")

    counter = ui.link(target="/alarms").classes("no-underline text-white")
    counter.props('data-testid="alarm-counter" data-critical="0"')
    with counter, ui.row().classes("items-center gap-1 px-2 py-1 rounded no-wrap") as pill:
        ui.icon("notifications").classes("text-lg")
        count_lbl = ui.label("0").props('data-testid="alarm-count"')

    dialog = ui.dialog().props("seamless persistent position=top full-width")
    with dialog:
        box = (
            ui.card()
            .classes("w-full bg-red-700 text-white gap-2 vf-critical-banner")
            .props('data-testid="critical-banner"')
            .style("animation: vf-pulse 1s ease-in-out infinite alternate; margin-top: 64px")
        )
    ui.add_css(
        "@keyframes vf-pulse { from { box-shadow: 0 0 0 0 rgba(220,38,38,.9); } "
        "to { box-shadow: 0 0 24px 8px rgba(220,38,38,.9); } }"
    )

    async def ack(e: GenericEventArguments) -> None:
        alarm_id = str(e.args)
        try:
            await alarm_actions.send_action(current_user(), "ack", alarm_id)
        except alarm_actions.ActionRefused as exc:
            ui.notify(f"Not acknowledged: {exc}", type="negative")
            return
        ui.notify(f"Acknowledgement sent for {alarm_id}", type="positive")

    ui.on(ACK_EVENT, ack)

    def build(crit: list[dict[str, Any]]) -> None:
        box.clear()
        with box:
            with ui.row().classes("w-full items-center gap-3"):
                ui.icon("warning").classes("text-4xl")
                ui.label(
                    f"CRITICAL ALARM{'S' if len(crit) > 1 else ''} — {len(crit)} not acknowledged"
                ).classes("text-xl font-bold")
                ui.space()
                ui.link("Open alarms", "/alarms").classes("text-white font-medium underline")
            for a in crit[:BANNER_SHOWN]:
                alarm_id = str(a.get("alarm_id"))
                row = ui.row().classes("w-full items-center gap-3 no-wrap")
                row.props["data-testid"] = "critical-alarm"
                row.props["data-alarm-id"] = alarm_id  # set, not parsed: ids may hold quotes
                with row:
                    ui.label(_alarm_line(a)).classes("text-base grow")
                    if may_ack:
                        # The click goes through a page-level listener (`ui.on` below): one
                        # made here, in a live-update callback, would lack the browser's
                        # session, and the server could not tell who acknowledged.
                        ui.button("Acknowledge", icon="done").props(
                            'color=white text-color=red-9 dense data-testid="banner-ack"'
                        ).on(
                            "click",
                            js_handler=f"() => emitEvent('{ACK_EVENT}', {json.dumps(alarm_id)})",
                        )
            if len(crit) > BANNER_SHOWN:
                ui.label(f"+ {len(crit) - BANNER_SHOWN} more on the alarms page")

    def refresh() -> None:
        m = alarms_live.model
        if m.version == state["version"]:
            return
        state["version"] = m.version
        crit = m.critical_unacked()
        unacked = m.unacked()
        count_lbl.text = str(unacked)
        counter.props(f'data-critical="{len(crit)}"')
        color = "bg-red-600" if crit else "bg-amber-600" if unacked else "bg-white/10"
        pill.classes(replace=f"items-center gap-1 px-2 py-1 rounded no-wrap {color}")
        ids = [str(a.get("alarm_id")) + str(a.get("updated_at")) for a in crit]
        if ids != state["ids"]:
            state["ids"] = ids
            if crit:
                build(crit)
                dialog.open()
            else:
                dialog.close()

    refresh()
    alarms_live.changed.subscribe(refresh)

"""Counting kinds: more than a limit of matching records per event-time window, for some
windows in a row (`flows.alarms_rules.window_observe`); resolved as the watermark closes quiet
windows (`window_close`). A counting kind says which records count, its `WindowSpec` per source
and its message; the default spec is `count` per `window_s`, cleared after `clear_windows`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.venue import Venue
from flows.alarm_kinds.base import Context, Kind, R
from flows.alarms_inputs import Obs
from flows.alarms_lifecycle import Signal
from flows.alarms_rules import WindowSeries, WindowSpec, window_close, window_observe, window_start


class Windowed(Kind[R]):
    series = WindowSeries

    def matches(self, rule: R, o: Obs, venue: Venue) -> bool:
        """Does this record count for the rule?"""
        raise NotImplementedError

    def message(self, rule: R, source: str, n: int, spec: WindowSpec) -> str:
        """What the alarm says when `n` records in a window fire or hold it."""
        raise NotImplementedError

    def spec(self, rule: Any, source: str, venue: Venue) -> WindowSpec:
        return WindowSpec(timedelta(seconds=rule.window_s), rule.count, rule.count, 1,
                          rule.clear_windows)  # fmt: skip

    def closes(self, rule: R, source: str, venue: Venue) -> bool:
        """May the clock close this source's windows (False: its series stays as it is)?"""
        return True

    def observe(self, rule: Any, o: Obs, cx: Context) -> Signal | None:
        if not self.matches(rule, o, cx.venue):
            return None
        spec = self.spec(rule, o.source, cx.venue)
        s = cx.series_of((rule.id, o.source), WindowSeries)
        wm = cx.clock.watermark(rule.lateness_s, cx.now)
        decision = window_observe(spec, s, o.ts, wm, o.dedupe)
        window = window_start(o.ts, spec.length)
        if not cx.decided(rule.kind, decision, rule.id, o, window):
            return None
        if decision not in ("fired", "held"):
            return None
        n = s.open[window]
        kind = "fire" if decision == "fired" else "hold"
        msg = self.message(rule, o.source, n, spec)
        return Signal(kind, rule.id, o.source, o.ts, float(n), spec.limit, msg)

    def tick(self, rule: Any, source: str, s: WindowSeries, cx: Context) -> list[Signal]:
        if not (s.open or s.firing) or not self.closes(rule, source, cx.venue):
            return []
        spec = self.spec(rule, source, cx.venue)
        wm = cx.clock.watermark(rule.lateness_s, cx.now)
        signals = []
        for end in window_close(spec, s, wm):
            cx.decisions[f"{rule.kind}:resolved"] += 1
            signals.append(Signal("resolve", rule.id, source, end, None, spec.limit,
                                  f"{source} back at or below {spec.clear_limit:g}"))  # fmt: skip
        return signals

"""`gate_congestion`: scans per gate per minute above `factor` x the gate's capacity for
`for_minutes` minutes in a row (`checkins:in`; a scan counts once per nonce)."""

from __future__ import annotations

from datetime import timedelta

from core.alarms import GateCongestionRule
from core.venue import Venue
from flows.alarm_kinds.windowed import Windowed
from flows.alarms_inputs import Obs
from flows.alarms_rules import WindowSpec

MINUTE = timedelta(minutes=1)


class GateCongestion(Windowed[GateCongestionRule]):
    model = GateCongestionRule

    def stream(self, rule: GateCongestionRule) -> str:
        return "checkins"

    def matches(self, rule: GateCongestionRule, o: Obs, venue: Venue) -> bool:
        return rule.watches(o.source) and venue.gate(o.source) is not None

    def closes(self, rule: GateCongestionRule, source: str, venue: Venue) -> bool:
        return venue.gate(source) is not None  # a gate removed from the venue file: inert

    def spec(self, rule: GateCongestionRule, source: str, venue: Venue) -> WindowSpec:
        cap = venue.gate(source).capacity_per_minute  # type: ignore[union-attr]
        clear = rule.clear_factor if rule.clear_factor is not None else rule.factor
        return WindowSpec(MINUTE, cap * rule.factor, cap * clear, rule.for_minutes,
                          rule.clear_minutes)  # fmt: skip

    def message(self, rule: GateCongestionRule, source: str, n: int, spec: WindowSpec) -> str:
        return f"gate {source}: {n} scans/min > {spec.limit:g} ({rule.factor:g} x capacity)"

"""`refused_burst`: more than `count` refused scans at one gate per `window_s` window
(`checkins:verdicts`; a verdict counts once per check-in, however often it is re-sent)."""

from __future__ import annotations

from core.alarms import RefusedBurstRule
from core.venue import Venue
from flows.alarm_kinds.windowed import Windowed
from flows.alarms_inputs import Obs
from flows.alarms_rules import WindowSpec


class RefusedBurst(Windowed[RefusedBurstRule]):
    model = RefusedBurstRule

    def stream(self, rule: RefusedBurstRule) -> str:
        return "verdicts"

    def matches(self, rule: RefusedBurstRule, o: Obs, venue: Venue) -> bool:
        return rule.watches(o.source) and o.type in rule.refused

    def message(self, rule: RefusedBurstRule, source: str, n: int, spec: WindowSpec) -> str:
        return f"gate {source}: {n} refused scans in {rule.window_s} s > {rule.count}"

"""`rate`: more than `count` matching events from one source per `window_s` window."""

from __future__ import annotations

from fnmatch import fnmatchcase

from core.alarms import RateRule
from core.venue import Venue
from flows.alarm_kinds.windowed import Windowed
from flows.alarms_inputs import Obs
from flows.alarms_rules import WindowSpec


class Rate(Windowed[RateRule]):
    model = RateRule

    def matches(self, rule: RateRule, o: Obs, venue: Venue) -> bool:
        return (
            fnmatchcase(o.type, rule.type)
            and fnmatchcase(o.source, rule.source)
            and (rule.level is None or o.level in rule.level)
        )

    def message(self, rule: RateRule, source: str, n: int, spec: WindowSpec) -> str:
        return f"{n} {rule.type} events from {source} in {rule.window_s} s > {rule.count}"

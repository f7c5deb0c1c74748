"""`absence`: no data from a source for `after_s` on the arrival clock
(`flows.alarms_rules.absence_check`). Reads events or scans (`input`); the clock fires it, data
resolves it. A plain source id is watched from the start, a glob from the first data it sees."""

from __future__ import annotations

from fnmatch import fnmatchcase

from core.alarms import AbsenceRule
from flows.alarm_kinds.base import Context, Kind
from flows.alarms_inputs import Obs
from flows.alarms_lifecycle import Signal
from flows.alarms_rules import AbsenceSeries, absence_check, absence_seen


def _plain(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[")


class Absence(Kind[AbsenceRule]):
    model = AbsenceRule
    series = AbsenceSeries

    def stream(self, rule: AbsenceRule) -> str:
        return rule.input

    def observe(self, rule: AbsenceRule, o: Obs, cx: Context) -> Signal | None:
        if not fnmatchcase(o.type, rule.type):
            return None
        if not any(fnmatchcase(o.source, p) for p in rule.sources):
            return None
        s = cx.series.get((rule.id, o.source))
        if not isinstance(s, AbsenceSeries):
            cx.series[(rule.id, o.source)] = AbsenceSeries(o.arrival)
            return None
        if absence_seen(s, o.arrival) != "back":
            return None
        cx.decisions["absence:back"] += 1
        return Signal("resolve", rule.id, o.source, o.ts)

    def watch(self, rule: AbsenceRule, cx: Context) -> None:
        arrival_now = cx.clock.arrival_now(cx.now)
        for p in rule.sources:
            if _plain(p) and not isinstance(cx.series.get((rule.id, p)), AbsenceSeries):
                cx.series[(rule.id, p)] = AbsenceSeries(arrival_now)  # watched from now

    def tick(self, rule: AbsenceRule, source: str, s: AbsenceSeries, cx: Context) -> list[Signal]:
        arrival_now = cx.clock.arrival_now(cx.now)
        if absence_check(rule.after_s, s, arrival_now) != "silent":
            return []
        cx.decisions["absence:silent"] += 1
        silent = (arrival_now - s.last).total_seconds()
        what = "gate scans" if rule.input == "checkins" else "data"
        return [Signal("fire", rule.id, source, s.last, round(silent, 1), rule.after_s,
                       f"no {what} from {source} for {rule.after_s:g} s")]  # fmt: skip

"""`raise_clear`: raised by one event type, cleared by another from the same source
(`flows.alarms_rules.raise_clear_decide`). Reads events; the clock decides nothing."""

from __future__ import annotations

from fnmatch import fnmatchcase

from core.alarms import RaiseClearRule
from flows.alarm_kinds.base import Context, Kind
from flows.alarms_inputs import Obs
from flows.alarms_lifecycle import Signal
from flows.alarms_rules import RaiseClearSeries, raise_clear_decide

_SIGNALS = {"fired": "fire", "held": "hold", "rearmed": "rearm", "resolved": "resolve"}


class RaiseClear(Kind[RaiseClearRule]):
    model = RaiseClearRule
    series = RaiseClearSeries

    def observe(self, rule: RaiseClearRule, o: Obs, cx: Context) -> Signal | None:
        if not fnmatchcase(o.source, rule.source):
            return None
        raises = fnmatchcase(o.type, rule.raise_on)
        if not raises and not fnmatchcase(o.type, rule.clear_on):
            return None
        s = cx.series_of((rule.id, o.source), RaiseClearSeries)
        latched = (rule.id, o.source) in cx.latched
        decision = raise_clear_decide(s, raises, o.ts, latched, rule.rearm_s)
        kind = _SIGNALS.get(decision)
        if not cx.decided("raise_clear", decision, rule.id, o) or kind is None:
            return None
        detail = o.payload.get("error") or o.payload.get("message")
        msg = f"{o.type} from {o.source}" + (f": {detail}" if detail else "")
        return Signal(kind, rule.id, o.source, o.ts, message=msg)  # type: ignore[arg-type]

"""`threshold`: a payload value beyond a limit for a pending period, cleared with hysteresis
(`flows.alarms_rules.threshold_decide`). Reads events; the clock decides nothing."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any

from core.alarms import ThresholdRule
from flows.alarm_kinds.base import Context, Kind
from flows.alarms_inputs import Obs
from flows.alarms_lifecycle import Signal
from flows.alarms_rules import ThresholdSeries, threshold_decide

_SIGNALS = {"fired": "fire", "held": "hold", "resolved": "resolve"}


class Threshold(Kind[ThresholdRule]):
    model = ThresholdRule
    series = ThresholdSeries

    def observe(self, rule: ThresholdRule, o: Obs, cx: Context) -> Signal | None:
        if not (fnmatchcase(o.type, rule.type) and fnmatchcase(o.source, rule.source)):
            return None
        v = number(o.payload.get(rule.field))
        if v is None:
            cx.decisions["threshold:no_value"] += 1
            return None
        s = cx.series_of((rule.id, o.source), ThresholdSeries)
        decision = threshold_decide(rule, s, v, o.ts)
        kind = _SIGNALS.get(decision)
        if not cx.decided("threshold", decision, rule.id, o) or kind is None:
            return None
        op = ">" if rule.above is not None else "<"
        msg = f"{rule.type} {rule.field} {v:g} {op} {rule.limit:g}" + (
            f" for {rule.for_s:g} s" if rule.for_s else ""
        )
        if kind == "resolve":
            msg = f"{rule.type} {rule.field} {v:g} back past {rule.clear_level:g}"
        return Signal(kind, rule.id, o.source, o.ts, v, rule.limit, msg)  # type: ignore[arg-type]


def number(v: Any) -> float | None:
    """A finite number, or None (missing, text, bool, too large for a float)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None

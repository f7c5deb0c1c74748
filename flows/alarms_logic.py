"""The alarm flow's step: observations, commands and clock ticks → alarm transitions.

One keyed state (key `all`) holds the clocks, every series (rule, source) and every alarm:
there are few of them (rules x sensors/gates/cameras), and one state lets a clock tick reach
every series — absence must raise while nothing arrives, and windows must close while quiet.
It runs in `op.stateful_batch` with `flows.cached_state` (Bytewax 0.21 snapshots every key
every epoch; `stateful_map` deep-copies).

Routing here, decisions elsewhere: `flows.alarms_rules` decides each rule kind's phase for one
series, `flows.alarms_lifecycle` what that means for the alarm. `Outcome.decisions` counts
every named outcome (tests and logs read it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from core import keys
from core.alarms import (
    AbsenceRule,
    AlarmCommand,
    GateCongestionRule,
    RaiseClearRule,
    RateRule,
    RefusedBurstRule,
    ThresholdRule,
)
from core.records import reason_of
from core.venue import Venue
from flows.alarms_clock import Clock
from flows.alarms_inputs import CommandIn, Input, Obs
from flows.alarms_lifecycle import (
    Life,
    RuleInfo,
    Signal,
    flush,
    live_message,
    on_command,
    transition_command,
)
from flows.alarms_lifecycle import on_signal as lifecycle_signal
from flows.alarms_lifecycle import resync as lifecycle_resync
from flows.alarms_rules import (
    AbsenceSeries,
    RaiseClearSeries,
    ThresholdSeries,
    WindowSeries,
    WindowSpec,
    absence_check,
    absence_seen,
    raise_clear_decide,
    threshold_decide,
    window_close,
    window_observe,
    window_start,
)
from flows.dead_letters import dead_letter

MINUTE = timedelta(minutes=1)
WindowRule = RateRule | GateCongestionRule | RefusedBurstRule


@dataclass(frozen=True, slots=True)
class Tick:
    """A clock tick (wall time): closes windows, checks absence, sends throttled repeats."""

    now: datetime


@dataclass
class AlarmsState:
    clock: Clock = field(default_factory=lambda: Clock(run_id=""))  # "" → resync at 1st step
    series: dict[tuple[str, str], Any] = field(default_factory=dict)
    life: Life = field(default_factory=Life)


@dataclass(slots=True)
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)  # lake `alarms`
    dead: list[tuple[tuple, dict[str, Any]]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)  # lake `late_records`
    redis: list[tuple] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)


def _series(st: AlarmsState, key: tuple[str, str], cls: type) -> Any:
    """The series of (rule, source); a fresh one if none, or if the rule changed kind in the
    venue file since it was made."""
    s = st.series.get(key)
    if not isinstance(s, cls):
        s = st.series[key] = cls()
    return s


def _plain(pattern: str) -> bool:
    return not any(c in pattern for c in "*?[")


class AlarmEngine:
    """The venue's enabled rules, indexed by input, and the step over them."""

    def __init__(self, venue: Venue, clock: Callable[[], datetime] | None = None):
        self.venue = venue
        self.rules = [r for r in venue.alarm_rules if r.enabled]
        self.info = {
            r.id: RuleInfo(r.id, r.name, r.kind, r.severity, r.escalate_at, r.escalate_to,
                           isinstance(r, ThresholdRule) and r.below is not None)
            for r in self.rules
        }  # fmt: skip
        self.by_stream: dict[str, list[Any]] = {"events": [], "checkins": [], "verdicts": []}
        for r in self.rules:
            if isinstance(r, GateCongestionRule):
                self.by_stream["checkins"].append(r)
            elif isinstance(r, RefusedBurstRule):
                self.by_stream["verdicts"].append(r)
            elif isinstance(r, AbsenceRule):
                self.by_stream[r.input].append(r)
            else:
                self.by_stream["events"].append(r)
        self._rule = {r.id: r for r in self.rules}
        self._now = clock or (lambda: datetime.now(UTC))

    # -- the step -------------------------------------------------------------------------------

    def step(self, st: AlarmsState | None, item: list[Input] | Tick) -> tuple[AlarmsState, Outcome]:
        st = st or AlarmsState()
        now = item.now if isinstance(item, Tick) else self._now()
        out = Outcome()
        if st.clock.restored(now):
            out.redis += lifecycle_resync(st.life)
        if not isinstance(item, Tick):
            for x in item:
                if isinstance(x, CommandIn):
                    self._command(st, x, now, out)
                else:
                    st.clock.observe(x.ts, x.arrival, now)
                    self._observe(st, x, now, out)
        self._evaluate(st, now, out)
        out.redis += flush(st.life, now)
        return st, out

    # -- observations ---------------------------------------------------------------------------

    def _observe(self, st: AlarmsState, o: Obs, now: datetime, out: Outcome) -> None:
        for rule in self.by_stream[o.stream]:
            if isinstance(rule, ThresholdRule):
                self._threshold(st, rule, o, now, out)
            elif isinstance(rule, RateRule | GateCongestionRule | RefusedBurstRule):
                self._windowed(st, rule, o, now, out)
            elif isinstance(rule, AbsenceRule):
                if fnmatchcase(o.type, rule.type) and any(
                    fnmatchcase(o.source, p) for p in rule.sources
                ):
                    s = st.series.get((rule.id, o.source))
                    if not isinstance(s, AbsenceSeries):
                        st.series[(rule.id, o.source)] = AbsenceSeries(o.arrival)
                        continue
                    if absence_seen(s, o.arrival) == "back":
                        out.decisions["absence:back"] += 1
                        self._signal(st, rule, Signal("resolve", rule.id, o.source, o.ts), now, out)
            elif isinstance(rule, RaiseClearRule):
                self._raise_clear(st, rule, o, now, out)

    def _threshold(self, st: AlarmsState, rule: ThresholdRule, o: Obs, now: datetime, out: Outcome):
        if not (fnmatchcase(o.type, rule.type) and fnmatchcase(o.source, rule.source)):
            return
        v = _number(o.payload.get(rule.field))
        if v is None:
            out.decisions["threshold:no_value"] += 1
            return
        s = _series(st, (rule.id, o.source), ThresholdSeries)
        decision = threshold_decide(rule, s, v, o.ts)
        out.decisions[f"threshold:{decision}"] += 1
        if decision == "too_late":
            out.late.append(_late_row(rule.id, o, None, now))
            return
        kind = {"fired": "fire", "held": "hold", "resolved": "resolve"}.get(decision)
        if kind is None:
            return
        op = ">" if rule.above is not None else "<"
        msg = f"{rule.type} {rule.field} {v:g} {op} {rule.limit:g}" + (
            f" for {rule.for_s:g} s" if rule.for_s else ""
        )
        if kind == "resolve":
            msg = f"{rule.type} {rule.field} {v:g} back past {rule.clear_level:g}"
        sig = Signal(kind, rule.id, o.source, o.ts, v, rule.limit, msg)  # type: ignore[arg-type]
        self._signal(st, rule, sig, now, out)

    def _matches_window(self, rule: WindowRule, o: Obs) -> bool:
        if isinstance(rule, RateRule):
            return (
                fnmatchcase(o.type, rule.type)
                and fnmatchcase(o.source, rule.source)
                and (rule.level is None or o.level in rule.level)
            )
        if rule.gates is not None and o.source not in rule.gates:
            return False
        if isinstance(rule, GateCongestionRule):
            return self.venue.gate(o.source) is not None
        return o.type in rule.refused

    def spec(self, rule: WindowRule, source: str) -> WindowSpec:
        if isinstance(rule, GateCongestionRule):
            cap = self.venue.gate(source).capacity_per_minute  # type: ignore[union-attr]
            clear = rule.clear_factor if rule.clear_factor is not None else rule.factor
            return WindowSpec(MINUTE, cap * rule.factor, cap * clear, rule.for_minutes,
                              rule.clear_minutes)  # fmt: skip
        length = timedelta(seconds=rule.window_s)
        return WindowSpec(length, rule.count, rule.count, 1, rule.clear_windows)

    def _windowed(self, st: AlarmsState, rule: WindowRule, o: Obs, now: datetime, out: Outcome):
        if not self._matches_window(rule, o):
            return
        spec = self.spec(rule, o.source)
        s = _series(st, (rule.id, o.source), WindowSeries)
        wm = st.clock.watermark(rule.lateness_s, now)
        decision = window_observe(spec, s, o.ts, wm, o.dedupe)
        out.decisions[f"{rule.kind}:{decision}"] += 1
        if decision == "too_late":
            out.late.append(_late_row(rule.id, o, window_start(o.ts, spec.length), now))
            return
        if decision in ("fired", "held"):
            n = s.open[window_start(o.ts, spec.length)]
            kind = "fire" if decision == "fired" else "hold"
            msg = _window_message(rule, o.source, n, spec)
            sig = Signal(kind, rule.id, o.source, o.ts, float(n), spec.limit, msg)
            self._signal(st, rule, sig, now, out)

    def _raise_clear(self, st: AlarmsState, rule: RaiseClearRule, o: Obs, now: datetime, out):
        if not fnmatchcase(o.source, rule.source):
            return
        raises = fnmatchcase(o.type, rule.raise_on)
        if not raises and not fnmatchcase(o.type, rule.clear_on):
            return
        s = _series(st, (rule.id, o.source), RaiseClearSeries)
        latched = (rule.id, o.source) in st.life.latched
        decision = raise_clear_decide(s, raises, o.ts, latched, rule.rearm_s)
        out.decisions[f"raise_clear:{decision}"] += 1
        if decision == "too_late":
            out.late.append(_late_row(rule.id, o, None, now))
            return
        kind = {"fired": "fire", "held": "hold", "rearmed": "rearm", "resolved": "resolve"}.get(
            decision
        )
        if kind:
            detail = o.payload.get("error") or o.payload.get("message")
            msg = f"{o.type} from {o.source}" + (f": {detail}" if detail else "")
            self._signal(st, rule, Signal(kind, rule.id, o.source, o.ts, message=msg), now, out)  # type: ignore[arg-type]

    # -- the clock: windows closing, absence ----------------------------------------------------

    def _evaluate(self, st: AlarmsState, now: datetime, out: Outcome) -> None:
        arrival_now = st.clock.arrival_now(now)
        for rule in self.rules:
            if isinstance(rule, AbsenceRule):
                for p in rule.sources:
                    if _plain(p) and not isinstance(st.series.get((rule.id, p)), AbsenceSeries):
                        st.series[(rule.id, p)] = AbsenceSeries(arrival_now)  # watched from now
        for (rule_id, source), s in list(st.series.items()):
            rule = self._rule.get(rule_id)
            if rule is None:
                continue  # a rule removed from the venue file: its series stay inert
            if (
                isinstance(s, WindowSeries)
                and (s.open or s.firing)
                and isinstance(rule, RateRule | GateCongestionRule | RefusedBurstRule)
                and (not isinstance(rule, GateCongestionRule) or self.venue.gate(source))
            ):
                spec = self.spec(rule, source)
                wm = st.clock.watermark(rule.lateness_s, now)
                for end in window_close(spec, s, wm):
                    out.decisions[f"{rule.kind}:resolved"] += 1
                    sig = Signal("resolve", rule_id, source, end, None, spec.limit,
                                 f"{source} back at or below {spec.clear_limit:g}")  # fmt: skip
                    self._signal(st, rule, sig, now, out)
            elif (
                isinstance(s, AbsenceSeries)
                and isinstance(rule, AbsenceRule)
                and absence_check(rule.after_s, s, arrival_now) == "silent"
            ):
                out.decisions["absence:silent"] += 1
                silent = (arrival_now - s.last).total_seconds()
                what = "gate scans" if rule.input == "checkins" else "data"
                sig = Signal("fire", rule_id, source, s.last, round(silent, 1), rule.after_s,
                             f"no {what} from {source} for {rule.after_s:g} s")  # fmt: skip
                self._signal(st, rule, sig, now, out)

    # -- lifecycle ------------------------------------------------------------------------------

    def _signal(self, st: AlarmsState, rule: Any, sig: Signal, now: datetime, out: Outcome):
        decision, change = lifecycle_signal(st.life, self.info[rule.id], sig, now)
        out.decisions[f"alarm:{decision}"] += 1
        if change is not None:
            out.rows.append(change.row)
            out.redis.append(
                ("PUBLISH", keys.LIVE_ALARMS, live_message(change.transition, change.doc))
            )
            out.redis.append(transition_command(change))

    def _command(self, st: AlarmsState, c: CommandIn, now: datetime, out: Outcome) -> None:
        try:
            if c.data is None:
                raise ValueError("stream entry has no 'data' field")
            cmd = AlarmCommand.model_validate_json(c.data)
        except Exception as exc:  # every reason becomes a dead letter
            self._dead(reason_of(exc), c, out)
            return
        decision, change, reason = on_command(st.life, cmd)
        out.decisions[f"command:{decision}"] += 1
        if reason is not None:
            self._dead(reason, c, out)
        if change is not None:
            out.rows.append(change.row)
            out.redis.append(
                ("PUBLISH", keys.LIVE_ALARMS, live_message(change.transition, change.doc))
            )
            out.redis.append(transition_command(change))

    def _dead(self, reason: str, c: CommandIn, out: Outcome) -> None:
        out.decisions["command:dead"] += 1
        out.dead.append(
            dead_letter(
                keys.ALARMS_DEAD, reason, keys.ALARMS_COMMANDS, c.entry_id, c.data, c.arrival
            )
        )


def _number(v: Any) -> float | None:
    """A finite number, or None (missing, text, bool, too large for a float)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _late_row(rule_id: str, o: Obs, ws: datetime | None, now: datetime) -> dict[str, Any]:
    return {
        "table_name": "alarms",
        "record_id": o.entry_id,
        "key": f"{rule_id}/{o.source}",
        "ts": o.ts,
        "window_start": ws,
        "detected_at": now,
    }


def _window_message(rule: WindowRule, source: str, n: int, spec: WindowSpec) -> str:
    if isinstance(rule, GateCongestionRule):
        return f"gate {source}: {n} scans/min > {spec.limit:g} ({rule.factor:g} x capacity)"
    if isinstance(rule, RefusedBurstRule):
        return f"gate {source}: {n} refused scans in {rule.window_s} s > {rule.count}"
    return f"{n} {rule.type} events from {source} in {rule.window_s} s > {rule.count}"

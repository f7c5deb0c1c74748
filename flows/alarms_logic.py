"""The alarm flow's step: observations, commands and clock ticks → alarm transitions.

One keyed state (key `all`) holds the clocks, every series (rule, source) and every alarm:
there are few of them (rules x sensors/gates/cameras), and one state lets a clock tick reach
every series — absence must raise while nothing arrives, and windows must close while quiet.
It runs in `op.stateful_batch` with `flows.cached_state` (Bytewax 0.21 snapshots every key
every epoch; `stateful_map` deep-copies).

Routing here, decisions elsewhere: the handler of each rule's kind (`flows.alarm_kinds`, one
table) observes, windows and words it, `flows.alarms_rules` holds the kinds' series and pure
decisions, `flows.alarms_lifecycle` decides what a signal means for the alarm.
`Outcome.decisions` counts every named outcome (tests and logs read it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import keys
from core.alarms import AlarmCommand
from core.records import reason_of
from core.venue import Venue
from flows.alarm_kinds import KINDS, Context, Kind
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
from flows.dead_letters import dead_letter


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


class AlarmEngine:
    """The venue's enabled rules, indexed by input, and the step over them."""

    def __init__(self, venue: Venue, clock: Callable[[], datetime] | None = None):
        self.venue = venue
        self.rules = [r for r in venue.alarm_rules if r.enabled]
        self.info = {
            r.id: RuleInfo(r.id, r.name, r.kind, r.severity, r.escalate_at, r.escalate_to,
                           r.escalates_below)
            for r in self.rules
        }  # fmt: skip
        self.by_stream: dict[str, list[tuple[Any, Kind]]] = {
            "events": [], "checkins": [], "verdicts": []
        }  # fmt: skip
        for r in self.rules:
            kind = KINDS[r.kind]
            self.by_stream[kind.stream(r)].append((r, kind))
        self._rule = {r.id: r for r in self.rules}
        self._now = clock or (lambda: datetime.now(UTC))

    # -- the step -------------------------------------------------------------------------------

    def step(self, st: AlarmsState | None, item: list[Input] | Tick) -> tuple[AlarmsState, Outcome]:
        st = st or AlarmsState()
        now = item.now if isinstance(item, Tick) else self._now()
        out = Outcome()
        if st.clock.restored(now):
            out.redis += lifecycle_resync(st.life)
        cx = Context(self.venue, now, st.clock, st.series, st.life.latched, out.decisions, out.late)
        if not isinstance(item, Tick):
            for x in item:
                if isinstance(x, CommandIn):
                    self._command(st, x, now, out)
                else:
                    st.clock.observe(x.ts, x.arrival, now)
                    self._observe(st, x, cx, out)
        self._evaluate(st, cx, out)
        out.redis += flush(st.life, now)
        return st, out

    # -- observations and the clock: each rule's kind decides ---------------------------------

    def _observe(self, st: AlarmsState, o: Obs, cx: Context, out: Outcome) -> None:
        for rule, kind in self.by_stream[o.stream]:
            sig = kind.observe(rule, o, cx)
            if sig is not None:
                self._signal(st, rule, sig, cx.now, out)

    def _evaluate(self, st: AlarmsState, cx: Context, out: Outcome) -> None:
        for rule in self.rules:
            KINDS[rule.kind].watch(rule, cx)
        for (rule_id, source), s in list(st.series.items()):
            rule = self._rule.get(rule_id)
            if rule is None:
                continue  # a rule removed from the venue file: its series stay inert
            kind = KINDS[rule.kind]
            if isinstance(s, kind.series):  # else made before the rule changed kind: inert
                for sig in kind.tick(rule, source, s, cx):
                    self._signal(st, rule, sig, cx.now, out)

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

"""What an alarm rule kind's handler is, and what it may use during one step of the engine.

A handler holds no state: everything a rule remembers lives in its series (one per rule and
source, a dataclass kept in the engine's state, so snapshots carry it), and what it decides
leaves as a `Signal` for `flows.alarms_lifecycle`. The engine (`flows.alarms_logic`) routes
each observation and clock tick to the handler of the rule's kind and feeds the signals to the
lifecycle; it knows no kind by name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from core.venue import Venue
from flows.alarms_clock import Clock
from flows.alarms_inputs import Obs
from flows.alarms_lifecycle import Signal

R = TypeVar("R")  # the kind's rule model (a `core.alarms` rule)
Key = tuple[str, str]  # (rule id, source)


@dataclass(slots=True)
class Context:
    """One engine step as a handler sees it (the engine makes one per step)."""

    venue: Venue
    now: datetime  # wall time of the step
    clock: Clock
    series: dict[Key, Any]
    latched: set[Key]  # (rule, source) pairs a person cleared by hand (the lifecycle's latch)
    decisions: Counter[str]  # every named outcome, `<kind>:<outcome>`
    late: list[dict[str, Any]]  # lake `late_records` rows

    def series_of(self, key: Key, cls: type) -> Any:
        """The series of (rule, source); a fresh one if none, or if the rule changed kind in the
        venue file since it was made."""
        s = self.series.get(key)
        if not isinstance(s, cls):
            s = self.series[key] = cls()
        return s

    def decided(
        self, kind: str, decision: str, rule_id: str, o: Obs, window: datetime | None = None
    ) -> bool:
        """Count `kind:decision`; False for `too_late`, which is reported as late data (lake
        `late_records`, with the observation's window if the kind counts in windows)."""
        self.decisions[f"{kind}:{decision}"] += 1
        if decision != "too_late":
            return True
        self.late.append({
            "table_name": "alarms",
            "record_id": o.entry_id,
            "key": f"{rule_id}/{o.source}",
            "ts": o.ts,
            "window_start": window,
            "detected_at": self.now,
        })  # fmt: skip
        return False


class Kind(Generic[R]):
    """One rule kind's behaviour. Subclass it in a module of its own and list it in
    `flows.alarm_kinds.KINDS`; override what the kind does, the defaults do nothing."""

    #: The kind's rule model (`core.alarms`); its `kind` literal is the registry's key.
    model: type[R]
    #: The dataclass of one (rule, source) series; `tick` only sees series of this class (a
    #: series made before the venue file changed the rule's kind stays inert).
    series: type

    def stream(self, rule: R) -> str:
        """The observations the rule reads: `events`, `checkins` (scans) or `verdicts`."""
        return "events"

    def observe(self, rule: R, o: Obs, cx: Context) -> Signal | None:
        """One observation of the rule's stream (matching it is the handler's business)."""
        return None

    def watch(self, rule: R, cx: Context) -> None:
        """Every step, before `tick`: start series that need no observation to exist."""

    def tick(self, rule: R, source: str, s: Any, cx: Context) -> list[Signal]:
        """Every step: what the clock alone decides for one of the rule's series."""
        return []

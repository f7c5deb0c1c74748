"""The alarm rule kinds: each kind's handler, in one table (`KINDS`, kind name → handler).

A rule kind is its model in `core.alarms` (what the venue file may say, validated at load) and
its handler here (`base.Kind`: which observations it reads, how it matches and windows them,
what the clock decides, what the alarm says). The engine (`flows.alarms_logic`) only looks the
handler up by `rule.kind`. Why the models stay in `core.alarms`: every process (dashboard,
run.py, simulators) parses the venue file through `core.venue`, and `core/` must not import
`flows/`, while handlers need the flow's series, clocks and signals.

Recipe: add an alarm rule kind (e.g. `stuck`: a value that has not changed for N s)

1. `core/alarms.py`: the model, `class StuckRule(_Rule)` with `kind: Literal["stuck"]` and
   its fields (validators for what the venue file may get wrong); add it to the `AlarmRule`
   union. Set `has_value: ClassVar[bool] = False` if its signals carry no value (then the
   venue file may not escalate it).
2. `flows/alarm_kinds/stuck.py`: `class Stuck(Kind[StuckRule])` with `model`, `series` (a
   dataclass: all the kind remembers per (rule, source); snapshots pickle it) and the methods
   it needs: `stream` (default `events`), `observe` → a `Signal` or None, `watch`, `tick` (the
   clock: windows closing, silence). Keep the decision a pure function the tests can call;
   count each outcome with `cx.decided("stuck", outcome, ...)` (it reports `too_late` data
   to the lake). A counting kind subclasses `windowed.Windowed` (matches/spec/message).
3. `flows/alarm_kinds/__init__.py`: import it and add `Stuck()` to `_HANDLERS` below.

(The first six kinds keep their series and decisions in `flows.alarms_rules`: snapshots name
a series class by its module, so moving them would break resuming from an older snapshot.)

Tests: the kind's rules through `AlarmEngine` as `tests/test_alarm_rules.py` does (fire, hold,
resolve, late data, a venue file changed between runs), and its bad rules in the venue file.
A model without a handler (or the reverse) stops the import here (`tests/test_alarm_kinds.py`).
"""

from __future__ import annotations

from core.alarms import RULE_MODELS, rule_kind
from flows.alarm_kinds.absence import Absence
from flows.alarm_kinds.base import Context, Kind
from flows.alarm_kinds.gate_congestion import GateCongestion
from flows.alarm_kinds.raise_clear import RaiseClear
from flows.alarm_kinds.rate import Rate
from flows.alarm_kinds.refused_burst import RefusedBurst
from flows.alarm_kinds.threshold import Threshold

_HANDLERS: tuple[Kind, ...] = (
    Threshold(),
    Rate(),
    Absence(),
    RaiseClear(),
    GateCongestion(),
    RefusedBurst(),
)


def table(handlers: tuple[Kind, ...], models: dict[str, type]) -> dict[str, Kind]:
    """Kind name → handler; ImportError unless there is exactly one handler per model."""
    kinds = {rule_kind(h.model): h for h in handlers}
    if len(kinds) != len(handlers) or {k: h.model for k, h in kinds.items()} != models:
        raise ImportError(
            f"alarm rule models {sorted(models)} need one handler each, got "
            f"{sorted(rule_kind(h.model) for h in handlers)} (flows/alarm_kinds/__init__.py)"
        )
    return kinds


KINDS: dict[str, Kind] = table(_HANDLERS, RULE_MODELS)

__all__ = ["KINDS", "Context", "Kind"]

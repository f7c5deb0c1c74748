"""The alarm rule kinds' table (`flows.alarm_kinds`): one handler per kind the venue file
accepts, and the engine reaches each kind only through it."""

from __future__ import annotations

import pytest

from core.alarms import RULE_MODELS
from core.venue import VenueError, load_venue
from flows.alarm_kinds import KINDS, table
from flows.alarm_kinds.rate import Rate
from flows.alarm_kinds.threshold import Threshold
from flows.alarms_logic import AlarmEngine
from tests.alarm_helpers import at, ev, venue_with


def test_every_rule_kind_the_venue_file_accepts_has_its_handler() -> None:
    assert set(KINDS) == set(RULE_MODELS) >= {r.kind for r in load_venue().alarm_rules}
    assert len(RULE_MODELS) == 6
    assert all(KINDS[k].model is m for k, m in RULE_MODELS.items())


def test_a_kind_without_a_handler_or_with_two_stops_the_import() -> None:
    with pytest.raises(ImportError, match="need one handler each"):
        table((Threshold(),), RULE_MODELS)
    with pytest.raises(ImportError, match="need one handler each"):
        table((*KINDS.values(), Rate()), RULE_MODELS)


class _LoudRate(Rate):
    def message(self, rule, source, n, spec) -> str:  # type: ignore[no-untyped-def]
        return f"LOUD {n} from {source}"


def test_the_engine_reaches_a_kind_only_through_the_table(monkeypatch) -> None:
    monkeypatch.setitem(KINDS, "rate", _LoudRate())
    rules = "  - {id: r, name: R, kind: rate, severity: MAJOR, type: X, count: 1}\n"
    engine = AlarmEngine(venue_with(rules), clock=lambda: at(2))
    st, _ = engine.step(None, [ev("s-1", "X", 1), ev("s-1", "X", 2)])
    assert st.life.alarms["r|s-1|1"].message == "LOUD 2 from s-1"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{id: a, name: A, kind: refused_burst, severity: MAJOR, count: 1, gates: [main, moon]}",
         "alarm_rules.0.gates names unknown gate(s): ['moon']"),
        ("{id: a, name: A, kind: absence, severity: MAJOR, sources: [x], after_s: 5, "
         "escalate_at: 1, escalate_to: CRITICAL}", "absence rules have no value to escalate on"),
        ("{id: a, name: A, kind: raise_clear, severity: MAJOR, raise_on: x, clear_on: y, "
         "escalate_at: 1, escalate_to: CRITICAL}", "raise_clear rules have no value to escalate"),
    ],
)  # fmt: skip
def test_what_a_kind_declares_is_checked_when_the_venue_file_loads(rule: str, message: str) -> None:
    with pytest.raises(VenueError) as err:
        venue_with(f"  - {rule}\n")
    assert message in str(err.value)

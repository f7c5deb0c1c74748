"""The dashboard's live alarm model (seed + `live:alarms` messages) and its action checks,
on plain dicts shaped like the flow's `Alarm` JSON (the same pydantic model validates them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auth.users import User
from core.alarms import Alarm
from live.alarms import AlarmsModel, model
from ui.alarm_actions import ActionRefused, check_action, command

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def alarm(status: str = "ACTIVE_UNACK", count: int = 1, s: float = 0, **kw) -> dict:
    at = (T0 + timedelta(seconds=s)).isoformat()
    doc = {
        "alarm_id": "gas|gas-1|1", "rule_id": "gas", "rule_name": "Gas high",
        "kind": "threshold", "source": "gas-1", "severity": "CRITICAL", "status": status,
        "message": "GAS ppm 150 > 100", "count": count, "first_at": at, "last_at": at,
        "raised_at": at, "updated_at": at, **kw,
    }  # fmt: skip
    return Alarm.model_validate(doc).model_dump(mode="json")


def test_lifecycle_and_banner_state() -> None:
    m = AlarmsModel()
    assert m.apply("raised", alarm())
    assert [a["alarm_id"] for a in m.critical_unacked()] == ["gas|gas-1|1"]
    assert m.counts()["CRITICAL"] == 1 and m.unacked() == 1
    assert m.apply("repeated", alarm(count=5, s=3))
    assert m.open["gas|gas-1|1"]["count"] == 5
    assert not m.apply("repeated", alarm(count=5, s=3))  # duplicate
    # The ack carries the command's (earlier) time: still applied, it is further in the life.
    assert m.apply("acknowledged", alarm("ACTIVE_ACK", count=5, s=2, acked_by="otto"))
    assert m.critical_unacked() == [] and m.unacked() == 0
    assert not m.apply("repeated", alarm(count=6, s=4))  # stale: says "not acknowledged"
    assert m.apply("cleared", alarm("CLEARED_ACK", count=5, s=5, cleared_by="rule"))
    assert m.open == {}
    assert not m.apply("raised", alarm())  # a replay of a finished alarm never comes back
    assert [t["transition"] for t in m.transitions] == ["cleared", "acknowledged", "raised"]
    assert m.transitions[1]["by"] == "otto"


def test_seed_is_the_present_and_older_messages_do_not_undo_it() -> None:
    m = AlarmsModel()
    m.apply("raised", alarm())
    other = alarm() | {"alarm_id": "gas|gas-2|1", "source": "gas-2"}
    m.apply("raised", other)
    # reconnect: gas-1 was acknowledged meanwhile, gas-2 cleared and acknowledged (gone)
    m.seed([alarm("ACTIVE_ACK", s=2)])
    assert list(m.open) == ["gas|gas-1|1"] and m.open["gas|gas-1|1"]["status"] == "ACTIVE_ACK"
    assert not m.apply("raised", alarm())  # queued before the seed: behind it
    assert not m.apply("repeated", other)
    assert m.critical_unacked() == []


@pytest.mark.parametrize(
    ("role", "action", "allowed"),
    [
        ("organiser", "ack", True),
        ("organiser", "clear", True),
        ("operator", "ack", True),
        ("operator", "clear", False),
        ("analyst", "ack", False),
        ("analyst", "clear", False),
    ],
)
def test_actions_are_checked_on_the_server(role: str, action: str, allowed: bool) -> None:
    model.open = {"gas|gas-1|1": alarm()}
    user = User(username="u", role=role)
    try:
        if allowed:
            assert check_action(user, action, "gas|gas-1|1")["alarm_id"] == "gas|gas-1|1"
            cmd = command(user, action, "gas|gas-1|1", "  looked at it ")
            assert (cmd.by, cmd.role, cmd.comment, cmd.action) == (
                "u",
                role,
                "looked at it",
                action,
            )
        else:
            with pytest.raises(ActionRefused, match="may not"):
                check_action(user, action, "gas|gas-1|1")
        with pytest.raises(ActionRefused, match="log in"):
            check_action(None, action, "gas|gas-1|1")
        with pytest.raises(ActionRefused):
            check_action(user, action, "no|such|1")
    finally:
        model.open = {}


def test_impossible_transitions_are_refused_before_sending() -> None:
    user = User(username="olga", role="organiser")
    model.open = {"gas|gas-1|1": alarm("ACTIVE_ACK"), "gas|gas-2|1": alarm("CLEARED_UNACK")}
    try:
        with pytest.raises(ActionRefused, match="already acknowledged"):
            check_action(user, "ack", "gas|gas-1|1")
        with pytest.raises(ActionRefused, match="already cleared"):
            check_action(user, "clear", "gas|gas-2|1")
    finally:
        model.open = {}

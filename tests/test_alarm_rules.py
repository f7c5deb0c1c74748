"""Alarm rule semantics on event time, through the same engine the flow runs (no Bytewax, no
Redis): pending periods, hysteresis against a hovering value, stale data, late data, windows,
and the lifecycle (ack, clear, the anti-flap latch after a person's clear, bad commands)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from core.venue import VenueError
from flows import alarms_clock
from flows.alarms_inputs import CommandIn, Obs
from flows.alarms_logic import AlarmEngine, AlarmsState, Tick
from tests.alarm_helpers import at, command, command_in, ev, scan, venue_with, verdict

GAS = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100, for_s: 20, clear_at: 90, clear_for_s: 10, lateness_s: 5}
"""


class Run:
    """The engine over a scripted input; wall time follows the inputs' arrival times."""

    def __init__(self, rules: str):
        self.now = at(0)
        self.engine = AlarmEngine(venue_with(rules), clock=lambda: self.now)
        self.st: AlarmsState | None = None
        self.rows: list[dict[str, Any]] = []
        self.late: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.redis: list[tuple] = []
        self.decisions: Counter[str] = Counter()

    def feed(self, *items: Obs | CommandIn) -> Run:
        for x in items:
            self.now = max(self.now, x.arrival)
            self._take(*self.engine.step(self.st, [x]))
        return self

    def tick(self, s: float) -> Run:
        self.now = at(s)
        self._take(*self.engine.step(self.st, Tick(self.now)))
        return self

    def _take(self, st: AlarmsState, out) -> None:
        self.st = st
        self.rows += out.rows
        self.late += out.late
        self.dead += [row for _, row in out.dead]
        self.redis += out.redis
        self.decisions += out.decisions

    def transitions(self) -> list[tuple[str, str]]:
        return [(r["alarm_id"], r["transition"]) for r in self.rows]

    @property
    def alarms(self):
        assert self.st is not None
        return self.st.life.alarms


def gas(s: float, ppm: float, source: str = "gas-1", arrival: float | None = None) -> Obs:
    return ev(source, "GAS", s, {"ppm": ppm}, arrival=arrival)


# --- threshold -----------------------------------------------------------------------------------


def test_pending_period_must_hold_in_event_time_before_raising() -> None:
    run = Run(GAS).feed(*(gas(s, 101) for s in range(0, 20, 5)))
    assert run.rows == []  # breaching for 15 s only
    run.feed(gas(20, 104.5))
    assert run.transitions() == [("gas|gas-1|1", "raised")]
    a = run.alarms["gas|gas-1|1"]
    assert (a.status, a.value, a.threshold, a.first_at, a.severity) == (
        "ACTIVE_UNACK", 104.5, 100, at(20), "CRITICAL"
    )  # fmt: skip


def test_a_dip_inside_the_pending_period_restarts_it() -> None:
    run = Run(GAS).feed(*(gas(s, 101) for s in range(0, 12, 2)), gas(12, 99))
    run.feed(*(gas(s, 101) for s in range(14, 34, 2)))
    assert run.rows == []  # 14 → 32: 18 s
    run.feed(gas(34, 101))
    assert run.transitions() == [("gas|gas-1|1", "raised")]
    assert run.decisions["threshold:pending_reset"] == 1


def test_hysteresis_a_value_hovering_at_the_limit_never_flaps() -> None:
    hover = [99.0, 101.0, 100.5, 99.5, 100.0, 102.0]
    readings = [gas(s, hover[s % len(hover)]) for s in range(600)]
    run = Run(GAS).feed(*readings)
    # Raised once (the first 20 s of continuous breach never happen: 99 interrupts), so push it:
    assert run.rows == []
    run = Run(GAS.replace("for_s: 20", "for_s: 0")).feed(*readings)
    assert run.transitions() == [("gas|gas-1|1", "raised")]  # once, never cleared
    breaching = sum(1 for r in readings if r.payload["ppm"] > 100)
    assert run.alarms["gas|gas-1|1"].count == breaching
    # Dipping below clear_at for less than clear_for_s does not clear either.
    run.feed(*(gas(600 + s, 85) for s in range(5)), gas(605, 95))
    assert run.decisions["threshold:clearing_reset"] == 1 and len(run.rows) == 1
    run.feed(*(gas(606 + s, 85) for s in range(10)))
    assert len(run.rows) == 1  # 606 → 615: 9 s
    run.feed(gas(616, 84))
    assert run.transitions()[-1] == ("gas|gas-1|1", "cleared")
    assert run.rows[-1]["by"] == "rule" and run.rows[-1]["event_ts"] == at(616)
    assert "gas|gas-1|1" in run.alarms  # CLEARED_UNACK stays until someone acknowledges it
    assert run.alarms["gas|gas-1|1"].status == "CLEARED_UNACK"


def test_below_limit_with_clear_level_above_it() -> None:
    rule = """
  - {id: cold, name: Too cold, kind: threshold, severity: MINOR, type: TEMP, field: celsius,
     below: 5, clear_at: 8}
"""
    run = Run(rule).feed(
        ev("t-1", "TEMP", 0, {"celsius": 4}),
        ev("t-1", "TEMP", 1, {"celsius": 7}),  # above 5 but not back past 8: still active
        ev("t-1", "TEMP", 2, {"celsius": "n/a"}),  # not a number: ignored, counted
        ev("t-1", "TEMP", 2.5, {"celsius": 10**400}),  # too large for a float: the same
        ev("t-1", "TEMP", 3, {"celsius": 8}),
    )
    assert run.transitions() == [("cold|t-1|1", "raised"), ("cold|t-1|1", "cleared")]
    assert run.decisions["threshold:no_value"] == 2


def test_late_reading_within_lateness_breaks_a_pending_period() -> None:
    run = Run(GAS).feed(*(gas(s, 101) for s in (15, 20, 25, 30)))
    run.feed(gas(27, 80, arrival=31))  # 3 s out of order (lateness 5): the breach was broken
    assert run.decisions["threshold:pending_reset"] == 1
    run.feed(gas(36, 101))
    assert run.rows == []  # pending restarted at 36


def test_reading_later_than_lateness_is_reported_not_evaluated() -> None:
    run = Run(GAS).feed(*(gas(s, 101) for s in (15, 20, 25, 30)))
    late = gas(20, 80, arrival=31)  # 10 s behind the newest reading: too late
    run.feed(late)
    assert run.decisions["threshold:too_late"] == 1
    assert [(x["record_id"], x["table_name"], x["key"]) for x in run.late] == [
        (late.entry_id, "alarms", "gas/gas-1")
    ]
    run.feed(gas(35, 101))
    assert run.transitions() == [("gas|gas-1|1", "raised")]  # 15 → 35 held after all


# --- absence: stale data must raise ---------------------------------------------------------------

SILENT = """
  - {id: silent, name: Silent, kind: absence, severity: MINOR, sources: [gas-1, "temp-*"],
     after_s: 10}
"""


def test_absence_raises_on_clock_ticks_alone_and_clears_when_data_returns() -> None:
    run = Run(SILENT).tick(0).feed(ev("temp-1", "TEMP", 1))
    run.tick(5).tick(9.9)
    assert run.rows == []
    run.tick(10.5)  # nothing else arrived at all: gas-1 (watched since 0) is silent
    assert run.transitions() == [("silent|gas-1|1", "raised")]
    run.tick(11.5)  # temp-1 last sent at 1
    assert run.transitions()[-1] == ("silent|temp-1|1", "raised")
    assert run.alarms["silent|temp-1|1"].message == "no data from temp-1 for 10 s"
    run.tick(30)
    assert len(run.rows) == 2  # one alarm per source, however long the silence lasts
    run.feed(ev("gas-1", "GAS", 31, {"ppm": 1}))
    assert run.transitions()[-1] == ("silent|gas-1|1", "cleared")
    # An old reading uploaded late still proves the sensor is alive (arrival time counts).
    run.feed(ev("temp-1", "TEMP", 2, arrival=32))
    assert run.transitions()[-1] == ("silent|temp-1|1", "cleared")


def test_absence_does_not_count_the_flows_own_downtime(monkeypatch) -> None:
    run = Run(SILENT).feed(ev("gas-1", "GAS", 0), ev("temp-1", "TEMP", 0))
    run.tick(5)
    monkeypatch.setattr(alarms_clock, "RUN_ID", "a later process")
    run.tick(3600)  # restored an hour later: downtime is not silence
    assert run.rows == []
    run.tick(3611)  # but silence after the restart is
    assert {t for _, t in run.transitions()} == {"raised"} and len(run.rows) == 2


def test_absence_of_gate_scans_watches_gates() -> None:
    rule = """
  - {id: idle, name: Gate idle, kind: absence, severity: WARNING, input: checkins,
     sources: [main], after_s: 30}
"""
    run = Run(rule).feed(scan("main", 0), ev("main", "GAS", 20, {"ppm": 1}))  # an event: not a scan
    run.tick(31)
    assert run.transitions() == [("idle|main|1", "raised")]
    assert run.alarms["idle|main|1"].message == "no gate scans from main for 30 s"
    run.feed(scan("main", 32))
    assert run.transitions()[-1] == ("idle|main|1", "cleared")


# --- windows: rate, gate congestion, refused bursts ----------------------------------------------

DOORS = """
  - {id: doors, name: Doors forced, kind: rate, severity: MAJOR, type: DOOR, level: [CRITICAL],
     source: "door-*", count: 2, window_s: 60, clear_windows: 1, lateness_s: 5}
"""


def door(s: float, level: str = "CRITICAL", arrival: float | None = None) -> Obs:
    return ev("door-1", "DOOR", s, {"state": "forced"}, level=level, arrival=arrival)


def test_rate_raises_on_the_count_exceeding_and_clears_after_a_quiet_window() -> None:
    run = Run(DOORS).feed(door(1), door(2), door(2.5, "INFO"))
    assert run.rows == []
    run.feed(door(3), door(4))
    assert run.transitions() == [("doors|door-1|1", "raised")]
    assert run.alarms["doors|door-1|1"].count == 2 and run.alarms["doors|door-1|1"].value == 4
    run.feed(door(58, arrival=62))  # out of order, window [0, 60) still open (lateness 5)
    assert run.alarms["doors|door-1|1"].count == 3
    run.tick(70)  # window [0, 60) closes with 5 > 2: still firing
    assert len(run.rows) == 1
    run.feed(door(30, arrival=71))  # its window has closed: too late, reported
    assert run.decisions["rate:too_late"] == 1 and run.late[0]["window_start"] == at(0)
    run.tick(130)  # window [60, 120) closed empty: cleared
    assert run.transitions()[-1] == ("doors|door-1|1", "cleared")
    run.feed(door(131), door(132), door(133))
    assert run.transitions()[-1] == ("doors|door-1|2", "raised")  # a new alarm, seq + 1


def test_a_source_clock_running_ahead_does_not_make_everyone_late() -> None:
    run = Run(DOORS).feed(ev("door-9", "DOOR", 240, level="CRITICAL", arrival=1))  # 4 min ahead
    run.feed(door(2), door(3), door(4))
    assert run.transitions() == [("doors|door-1|1", "raised")]
    assert run.decisions["rate:too_late"] == 0


def test_gate_congestion_counts_scans_per_minute_against_capacity() -> None:
    rule = """
  - {id: busy, name: Busy, kind: gate_congestion, severity: WARNING, factor: 1.5,
     clear_factor: 1.0, for_minutes: 1, clear_minutes: 2}
"""
    run = Run(rule).feed(*(scan("main", i) for i in range(14)))  # limit 10 x 1.5 = 15
    run.feed(scan("main", 20, nonce="n-1"), scan("main", 21, nonce="n-1"))  # a retried upload
    assert run.rows == [] and run.decisions["gate_congestion:duplicate"] == 1
    run.feed(scan("main", 22), scan("side", 23), scan("nowhere", 24))
    assert run.transitions() == [("busy|main|1", "raised")]
    run.feed(*(scan("main", 60 + i) for i in range(12)))  # 12 > clear limit 10
    run.tick(269)  # watermark 239 (lateness 30): minute 180 still open
    assert len(run.rows) == 1
    run.tick(271)
    assert run.transitions()[-1] == ("busy|main|1", "cleared")  # minutes 120 and 180 quiet
    assert run.rows[-1]["event_ts"] == at(240)  # end of the second quiet minute


def test_refused_burst_counts_each_checkin_once_and_only_refusals() -> None:
    rule = """
  - {id: forged, name: Forged, kind: refused_burst, severity: MAJOR, count: 3, window_s: 60,
     gates: [main]}
"""
    run = Run(rule).feed(
        verdict("main", "invalid_signature", 1, "c1"),
        verdict("main", "invalid_signature", 2, "c1"),  # re-sent after a crash: counted once
        verdict("main", "accepted", 3),
        verdict("main", "duplicate", 4),
        verdict("side", "unknown_token", 5),  # another gate, not in the rule
        verdict("main", "revoked", 6),
        verdict("main", "wrong_event", 7),
    )
    assert run.rows == []
    run.feed(verdict("main", "gate_closed", 8))
    assert run.transitions() == [("forged|main|1", "raised")]


def test_raise_clear_camera_error_and_recovery() -> None:
    rule = """
  - {id: cam, name: Camera down, kind: raise_clear, severity: MAJOR, raise_on: camera.error,
     clear_on: camera.recovered}
"""
    err = {"state": "error", "error": "connection refused"}
    run = Run(rule).feed(ev("cam-1", "camera.error", 1, err), ev("cam-1", "camera.error", 2, err))
    assert run.transitions() == [("cam|cam-1|1", "raised")]
    assert run.alarms["cam|cam-1|1"].count == 2
    assert run.alarms["cam|cam-1|1"].message == "camera.error from cam-1: connection refused"
    run.feed(ev("cam-1", "camera.recovered", 3))
    run.feed(ev("cam-1", "camera.error", 2.5, err, arrival=4))  # stale: must not re-raise
    assert run.transitions()[-1] == ("cam|cam-1|1", "cleared") and len(run.late) == 1
    run.feed(ev("cam-1", "camera.error", 5, err))
    assert run.transitions()[-1] == ("cam|cam-1|2", "raised")


def test_escalation_raises_the_severity_once_while_active() -> None:
    rule = GAS.replace("severity: CRITICAL", "severity: MAJOR").replace(
        "for_s: 20", "for_s: 0, escalate_at: 150, escalate_to: CRITICAL"
    )
    run = Run(rule).feed(gas(0, 120), gas(1, 160), gas(2, 170), gas(3, 120))
    assert run.transitions() == [("gas|gas-1|1", "raised"), ("gas|gas-1|1", "escalated")]
    assert [r["severity"] for r in run.rows] == ["MAJOR", "CRITICAL"]
    assert run.alarms["gas|gas-1|1"].severity == "CRITICAL"
    assert run.alarms["gas|gas-1|1"].count == 4
    run.feed(gas(4, 80), gas(15, 80), gas(16, 200))  # cleared; a new alarm starts escalated
    assert run.alarms["gas|gas-1|2"].severity == "CRITICAL"


def test_raise_clear_after_a_manual_clear_rearms_only_after_a_quiet_gap() -> None:
    rule = """
  - {id: cam, name: Camera down, kind: raise_clear, severity: MAJOR, raise_on: camera.error,
     clear_on: camera.recovered, rearm_s: 60}
"""
    err = {"error": "timeout"}
    run = Run(rule).feed(ev("cam-1", "camera.error", 0, err), ev("cam-1", "camera.error", 100, err))
    assert run.transitions() == [("cam|cam-1|1", "raised")]  # a gap without a clear: a repeat
    run.feed(command_in(command("clear", "cam|cam-1|1"), 101))
    run.feed(ev("cam-1", "camera.error", 110, err))  # the same trouble going on: no flapping
    assert run.transitions()[-1] == ("cam|cam-1|1", "cleared")
    run.feed(ev("cam-1", "camera.error", 170, err))  # 60 s after the last one: a new occurrence
    assert run.transitions()[-1] == ("cam|cam-1|2", "raised")


# --- lifecycle: people's commands ----------------------------------------------------------------

FAST_GAS = GAS.replace("for_s: 20", "for_s: 0")


def test_ack_then_rule_clear_leaves_the_hash_with_who_and_when() -> None:
    run = Run(FAST_GAS).feed(gas(0, 120))
    run.feed(command_in(command("ack", "gas|gas-1|1", by="otto", role="operator", comment="on it")))
    a = run.alarms["gas|gas-1|1"]
    assert (a.status, a.acked_by, a.comment) == ("ACTIVE_ACK", "otto", "on it")
    ack = run.rows[-1]
    assert (ack["transition"], ack["by"], ack["role"], ack["comment"], ack["status"]) == (
        "acknowledged", "otto", "operator", "on it", "ACTIVE_ACK"
    )  # fmt: skip
    run.feed(gas(1, 80), gas(12, 80))
    assert run.rows[-1]["status"] == "CLEARED_ACK" and "gas|gas-1|1" not in run.alarms
    assert ("HDEL", "alarms:active", "gas|gas-1|1") in run.redis
    assert [r["revision"] for r in run.rows] == [1, 2, 3]


def test_manual_clear_does_not_reraise_until_the_condition_has_ended() -> None:
    run = Run(FAST_GAS).feed(gas(0, 120))
    run.feed(command_in(command("clear", "gas|gas-1|1", by="olga", comment="sensor checked")))
    assert run.rows[-1]["status"] == "CLEARED_UNACK" and run.rows[-1]["by"] == "olga"
    run.feed(*(gas(s, 130) for s in range(1, 30)))  # the same condition goes on: no flapping
    assert len(run.rows) == 2 and run.decisions["alarm:suppressed"] == 0
    run.feed(gas(30, 80), gas(41, 80))  # the rule sees it end (hysteresis) …
    assert run.decisions["alarm:unlatched"] == 1
    run.feed(gas(42, 120))  # … so a new breach is a new alarm
    assert run.transitions()[-1] == ("gas|gas-1|2", "raised")


def test_bad_commands_are_refused_with_a_reason_and_retries_apply_once() -> None:
    run = Run(FAST_GAS).feed(gas(0, 120))
    ack = command("ack", "gas|gas-1|1", role="operator")
    run.feed(command_in(ack), command_in(ack))  # a retried command: applied once
    assert run.decisions["command:duplicate_command"] == 1 and len(run.rows) == 2
    bad = [
        command("ack", "gas|gas-1|1"),  # already acknowledged
        command("clear", "gas|gas-1|1", role="operator"),  # operators may not clear
        command("ack", "gas|gas-1|1", role="analyst"),
        command("ack", "gas|nope|1"),
        command("ack", "not-an-id"),
        {
            "command_id": "12345678",
            "action": "mute",
            "alarm_id": "x",
            "by": "a",
            "role": "b",
            "at": "2026-01-01T00:00:00Z",
        },
        b"{not json",
        {**command("ack", "gas|gas-1|1"), "at": "2099-01-01T00:00:00"},  # a wrong clock
    ]
    run.feed(*(command_in(b) for b in bad))
    reasons = [d["reason"] for d in run.dead]
    assert len(reasons) == len(bad) and len(run.rows) == 2
    assert "already acknowledged" in reasons[0]
    assert "role 'operator' may not clear" in reasons[1]
    assert "role 'analyst' may not ack" in reasons[2]
    assert reasons[3] == "unknown alarm gas|nope|1"
    assert "not an alarm id" in reasons[4]
    assert reasons[5].startswith("action:")
    assert reasons[7].startswith("at: Value error, ts lies more than")
    assert all(d["origin"] == "alarms:commands" for d in run.dead)
    run.feed(gas(1, 80), gas(12, 80), command_in(command("clear", "gas|gas-1|1")))
    assert "already cleared and acknowledged" in run.dead[-1]["reason"]


# --- the venue file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("  - {id: a, name: A, kind: threshold, severity: MAJOR, type: GAS, field: ppm}",
         "alarm_rules.0.threshold: Value error, give exactly one of `above` or `below`"),
        ("  - {id: a, name: A, kind: threshold, severity: MAJOR, type: GAS, field: ppm, "
         "above: 10, clear_at: 20}", "clear_at must be <= above"),
        ("  - {id: a, name: A, kind: gate_congestion, severity: MAJOR, gates: [moon]}",
         "alarm_rules.0.gates names unknown gate(s): ['moon']"),
        ("  - {id: a, name: A, kind: raise_clear, severity: LOUD, raise_on: x, clear_on: y}",
         "alarm_rules.0.raise_clear.severity"),
        ("  - {id: a, name: A, kind: sometimes, severity: MAJOR}", "alarm_rules.0: "),
        ("  - {id: a, name: A, kind: rate, severity: MAJOR, count: 1, escalate_at: 5, "
         "escalate_to: MINOR}", "escalate_to must be more severe than severity"),
        ("  - {id: a, name: A, kind: rate, severity: MAJOR, count: 1, escalate_at: 5}",
         "give both escalate_at and escalate_to"),
        ("  - {id: a, name: A, kind: absence, severity: MAJOR, sources: [x], after_s: 5}\n"
         "  - {id: a, name: B, kind: absence, severity: MAJOR, sources: [y], after_s: 5}",
         "duplicate alarm rule id(s): a"),
    ],
)  # fmt: skip
def test_bad_rules_stop_the_venue_file_with_the_field_path(rules: str, message: str) -> None:
    with pytest.raises(VenueError) as err:
        venue_with(rules + "\n")
    assert message in str(err.value)


def test_the_example_venue_has_every_rule_kind() -> None:
    from core.venue import load_venue

    kinds = {r.kind for r in load_venue().alarm_rules}
    assert kinds == {"threshold", "rate", "absence", "raise_clear", "gate_congestion",
                     "refused_burst"}  # fmt: skip


def test_a_changed_venue_file_does_not_break_the_restored_state() -> None:
    """Rules renamed, changed in kind or removed between runs: the old state stays usable."""
    old = Run(GAS + DOORS).feed(gas(0, 120), door(1), door(2), door(3))
    assert old.transitions() == [("doors|door-1|1", "raised")]  # gas: still pending
    new = Run("""
  - {id: gas, name: Gas now a rate, kind: rate, severity: MINOR, type: GAS, count: 0}
""")
    new.st = old.st
    new.feed(gas(30, 120)).tick(300)  # the pending threshold series is replaced by a window
    assert new.transitions() == [("gas|gas-1|1", "raised"), ("gas|gas-1|1", "cleared")]
    assert "doors|door-1|1" in new.alarms  # a removed rule's alarm can still be handled
    new.feed(command_in(command("clear", "doors|door-1|1"), 301))
    assert new.transitions()[-1] == ("doors|door-1|1", "cleared")

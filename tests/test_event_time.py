"""Semantics of the event-time window counter (the decision logic, driven with explicit times)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import flows.event_time as et
from flows.events_logic import Group, preaggregate

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def groups_at(*times: datetime, type_: str = "GAS") -> list:
    rows = [{"id": f"{i}-0", "type": type_, "level": "INFO", "ts": t} for i, t in enumerate(times)]
    return preaggregate(rows, MIN)


def test_window_closes_after_lateness_and_counts_every_event() -> None:
    c = et.TumblingCounter(MIN, timedelta(seconds=10))
    st, out = c.step(
        None, groups_at(T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=59)), T0
    )
    assert out == []
    # 59 s seen at T0; the watermark reaches 12:01 after 11 s of system time.
    st, out = c.step(st, [], T0 + timedelta(seconds=10))
    assert out == []
    st, out = c.step(st, [], T0 + timedelta(seconds=12))
    assert out == [et.Closed("GAS\x1fINFO", T0, 3)]


def test_out_of_order_within_lateness_lands_in_its_minute() -> None:
    c = et.TumblingCounter(MIN, timedelta(seconds=30))
    st, _ = c.step(None, groups_at(T0 + timedelta(seconds=65)), T0)
    st, out = c.step(st, groups_at(T0 + timedelta(seconds=50)), T0 + timedelta(seconds=1))
    assert out == []
    st, out = c.step(st, [], T0 + timedelta(seconds=40))
    assert et.Closed("GAS\x1fINFO", T0, 1) in out


def test_too_late_is_reported_never_dropped_even_for_an_idle_key() -> None:
    c = et.TumblingCounter(MIN, timedelta(seconds=10))
    st, _ = c.step(None, groups_at(T0, type_="DOOR"), T0)
    st, closed = c.step(st, [], T0 + timedelta(minutes=5))
    assert closed == [et.Closed("DOOR\x1fINFO", T0, 1)]
    # The DOOR key has no open window any more; a 4-minute-old DOOR event is still late.
    st, out = c.step(
        st, groups_at(T0 + timedelta(seconds=5), type_="DOOR"), T0 + timedelta(minutes=5)
    )
    assert len(out) == 1 and isinstance(out[0], et.Late) and out[0].group.count == 1


def test_restart_after_downtime_does_not_age_the_backlog(monkeypatch) -> None:
    c = et.TumblingCounter(MIN, timedelta(seconds=10))
    st, _ = c.step(None, groups_at(T0), T0)
    restored = pickle.loads(pickle.dumps(st))
    monkeypatch.setattr(et, "RUN_ID", "a later process")
    # Down for an hour; the backlog written meanwhile starts right after T0.
    st, out = c.step(restored, groups_at(T0 + timedelta(seconds=2)), T0 + timedelta(hours=1))
    assert not any(isinstance(o, et.Late) for o in out)
    st, out = c.step(st, [], T0 + timedelta(hours=1, seconds=75))
    assert out == [et.Closed("GAS\x1fINFO", T0, 2)]


def test_preaggregate_groups_by_type_level_and_minute() -> None:
    got = dict(
        preaggregate(
            [
                {"id": "1", "type": "A", "level": "INFO", "ts": T0},
                {"id": "2", "type": "A", "level": "INFO", "ts": T0 + timedelta(seconds=3)},
                {"id": "3", "type": "A", "level": "WARN", "ts": T0},
            ],
            MIN,
        )
    )
    g: Group = got["A\x1fINFO"]
    assert (g.count, g.max_ts, g.window_start) == (2, T0 + timedelta(seconds=3), T0)
    assert got["A\x1fWARN"].count == 1

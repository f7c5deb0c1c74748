"""The events flow's fast decoder agrees with the pydantic contract (`core.records.Event`) on
generated input, good and bad: a fast-accepted event has exactly the model's values, and a
batch gives the same lake rows, broadcast documents, window groups and dead letters (same
reasons, same bytes) as the per-event model path (`flows.events_logic`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import to_json

from connectors.redis_streams import StreamBatch
from core import keys
from core.records import MAX_CLOCK_SKEW, UiClickPayload, parse_event
from flows.events_fast import _iso, decode_batch, fast_event, live_messages, payload_check
from flows.events_live import pack, pack_live
from flows.events_logic import _public, live_commands, parse_batch, preaggregate
from tests.test_bad_input import bad_input

MAX = 4096
LENGTH = timedelta(seconds=60)

ids = st.one_of(
    st.sampled_from(["s", "gas-1", "edge.2", "A_b-c", "x" * 64, "x" * 65, "-x", "a b", "é", ""]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,70}", fullmatch=True),
    st.text(max_size=8),
)
types = st.one_of(
    st.sampled_from(["GAS", "ui.click", "ui.keydown", "a:b", "t" * 64, "t" * 65, "a b", ""]),
    st.from_regex(r"[A-Za-z0-9_.:\-]{1,70}", fullmatch=True),
)
levels = st.sampled_from(["INFO", "WARN", "ERROR", "CRITICAL", "info", "DEBUG", ""])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
numbers = st.one_of(
    st.integers(-5, 100_005),
    st.floats(-1, 100_001, allow_nan=False),
    st.sampled_from([0, 100_000, 100_000.0, -0.0, 1e-300, True, "5", None]),
)
short = st.text(max_size=3) | st.text(min_size=30, max_size=34) | st.sampled_from(["", "/"])
ui_payloads = st.fixed_dictionaries(
    {"page": short, "target": short, "x": numbers, "y": numbers, "session": short},
    optional={"key": short, "extra": json_values},
) | st.fixed_dictionaries({"page": short, "key": short, "session": short}, optional={"x": numbers})
payloads = st.one_of(
    st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    ui_payloads,
    json_values,
)
zones = st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+05:30", "-11:45", "+23:59", "+24:00"])
fractions = st.sampled_from(["", ".0", ".000", ".1", ".123", ".123456", ".1234567", ".000000", ","])


@st.composite
def timestamps(draw: st.DrawFn) -> object:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.none() | st.integers(0, 2**41) | st.floats(0, 2e12) | st.text(max_size=12))
    now = datetime.now(UTC).replace(tzinfo=None)
    dt = draw(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=(now + timedelta(days=2)))
        | st.datetimes(
            min_value=(now + MAX_CLOCK_SKEW - timedelta(minutes=2)).replace(tzinfo=None),
            max_value=(now + MAX_CLOCK_SKEW + timedelta(hours=8)).replace(tzinfo=None),
        )
    )
    sep = draw(st.sampled_from(["T", "T", "t", " "]))
    base = (
        dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
        if dt.year >= 1000
        else f"{dt.year:04d}-01-01T00:00:00"
    )
    if kind == 5:
        base = draw(
            st.sampled_from(
                [
                    "2026-02-30T00:00:00",
                    "2026-13-01T00:00:00",
                    "2026-01-01T24:00:00",
                    "2026-01-01T23:59:60",
                    "0000-01-01T00:00:00",
                ]
            )
        )
    return base + draw(fractions) + draw(zones)


@st.composite
def events(draw: st.DrawFn) -> bytes:
    ev: dict[str, object] = {}
    for name, strat in (("source", ids), ("type", types), ("level", levels)):
        if draw(st.integers(0, 30)):
            ev[name] = draw(strat)
    if draw(st.booleans()):
        ev["payload"] = draw(payloads)
    if draw(st.booleans()):
        ev["ts"] = draw(timestamps())
    if not draw(st.integers(0, 20)):
        ev[draw(st.text(max_size=4))] = 1
    text = json.dumps(ev, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    if not draw(st.integers(0, 15)) and '"level":' in text:  # a duplicated key
        text = text.replace('"level":', '"level": "WARN", "level":', 1)
    return text.encode()


good_events = st.builds(
    lambda src, typ, lv, p: json.dumps(
        {"source": src, "type": typ, "level": lv, "payload": p}
    ).encode(),
    st.sampled_from(["s-1", "web"]),
    st.sampled_from(["GAS", "ui.click"]),
    st.sampled_from(["INFO", "WARN"]),
    st.dictionaries(st.text(max_size=3), json_values, max_size=3),
)
any_input = st.one_of(events(), bad_input, good_events)

FAST = dict(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(**FAST)
@given(data=any_input)
def test_a_fast_accepted_event_has_exactly_the_models_values(data: bytes) -> None:
    latest = datetime.now(UTC) + MAX_CLOCK_SKEW
    got = fast_event(data, MAX, latest)
    if got is None:
        return  # the model decides (checked against the old path in the batch test below)
    ev = parse_event(data, MAX)  # raises if the fast path accepted what the model refuses
    source, typ, level, payload, ts, ts_iso = got
    assert (source, typ, level, payload, ts) == (ev.source, ev.type, ev.level, ev.payload, ev.ts)
    assert to_json(payload) == to_json(ev.payload)
    if ts is not None:
        assert ts.tzinfo is UTC or ts.utcoffset() == timedelta(0)
        assert ts_iso is None or f'"{ts_iso}"'.encode() == to_json(ev.ts)


def _old(batch: StreamBatch) -> tuple:
    p = parse_batch(batch, MAX)
    rows = [{k: v for k, v in r.items() if k != "_payload"} for r in p.rows]
    docs = [to_json(_public(r)) for r in p.rows]
    groups = [
        (k, g.window_start, g.count, g.max_ts, g.members) for k, g in preaggregate(p.rows, LENGTH)
    ]
    return rows, docs, groups, p.dead, p.dead_rows, live_commands(p.rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.one_of(any_input, st.none(), good_events), min_size=1, max_size=12),
    ms=st.integers(10**12, 2 * 10**12),
    same_ms=st.booleans(),
)
def test_a_batch_gives_what_the_model_path_gives(entries: list, ms: int, same_ms: bool) -> None:
    batch = StreamBatch(
        keys.EVENTS_IN,
        [(f"{ms if same_ms else ms + i}-{i}", d) for i, d in enumerate(entries)],
    )
    rows, docs, groups, dead, dead_rows, cmds = _old(batch)
    new = decode_batch(batch, MAX, LENGTH)
    assert new.rows() == rows
    assert new.docs == docs
    assert [(k, g.window_start, g.count, g.max_ts, g.members) for k, g in new.groups] == groups
    assert new.dead == dead  # the same `events:dead` entries: reason, origin, bytes
    assert new.dead_rows == dead_rows
    if rows:
        table = new.table().to_pylist()
        assert table == rows
        newest, msg = live_messages(new)
        assert cmds[-1] == ("PUBLISH", keys.LIVE_EVENTS, msg)
        assert ("LPUSH", keys.EVENTS_RECENT, *reversed(newest)) in cmds
    else:
        assert live_messages(new) is None


def test_iso_is_pydantics_json_for_utc_times() -> None:
    for dt in (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 120, tzinfo=UTC),
        datetime(999, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0))),
    ):
        assert f'"{_iso(dt)}"'.encode() == to_json(dt)


def test_payload_check_is_derived_from_the_model() -> None:
    check = payload_check(UiClickPayload)
    assert check is not None
    ok = {"page": "/", "target": "#a", "x": 0, "y": 100_000.0, "session": "s"}
    assert check(ok)
    for bad in (
        {**ok, "x": -1},
        {**ok, "x": True},
        {**ok, "x": "5"},  # the model accepts it: left to the model, not refused
        {**ok, "page": ""},
        {**ok, "extra": 1},
        {k: v for k, v in ok.items() if k != "session"},
    ):
        assert not check(bad)


def test_live_commands_are_one_round_trip_of_resp() -> None:
    batch = StreamBatch(
        keys.EVENTS_IN,
        [
            ("1-0", b'{"source":"s","type":"GAS","level":"INFO","payload":{"a":"\\u00e9"}}'),
            ("1-1", b"not json"),
        ],
    )
    cmds = pack_live(decode_batch(batch, MAX, LENGTH))
    wire = b"".join(w for _, w in cmds)
    # EVAL (every events:new message), LPUSH, LTRIM, PUBLISH live:events, XADD; each with the
    # key that places it on a Redis Cluster.
    assert [k for k, _ in cmds] == [keys.EVENTS_NEW] + [keys.EVENTS_RECENT] * 3 + [keys.EVENTS_DEAD]
    assert wire.startswith(b"*5\r\n$4\r\nEVAL\r\n")
    assert pack(b"LTRIM", keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1) in wire
    assert wire.count(b"events:dead") == 1

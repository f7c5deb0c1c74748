"""Property-based bad input against the running flow: every bad entry is dead-lettered with a
reason and its original bytes, the flow stays alive, and valid events are unaffected."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.redis_streams import StreamBatch
from core import keys
from core.records import DeadLetter
from flows.request_logs import parse_log_batch
from tests.conftest import FlowProcess, RedisServer, wait_for

MAX_BYTES = 4096

VALID = {"source": "s", "type": "GAS", "level": "INFO", "payload": {"ppm": 1}}
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
not_a_string = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=3)
not_an_object = json_scalars | st.lists(json_scalars, max_size=3)


def _enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


wrong_types = st.one_of(
    not_a_string.map(lambda v: {**VALID, "source": v}),
    not_a_string.map(lambda v: {**VALID, "type": v}),
    st.text()
    .filter(lambda t: t not in ("INFO", "WARN", "ERROR", "CRITICAL"))
    .map(lambda v: {**VALID, "level": v}),
    not_an_object.map(lambda v: {**VALID, "payload": v}),
    st.sampled_from(["yesterday", "2026-13-45T00:00:00", [1]]).map(lambda v: {**VALID, "ts": v}),
    st.dictionaries(
        st.text(min_size=1).filter(lambda k: k not in VALID and k != "ts"),
        json_scalars,
        min_size=1,
        max_size=3,
    ).map(lambda extra: {**VALID, **extra}),
).map(_enc)
missing_fields = st.sampled_from(["source", "type", "level"]).map(
    lambda f: _enc({k: v for k, v in VALID.items() if k != f})
)
bad_ui_payloads = st.one_of(
    st.just({"page": "/", "target": "#a", "x": 1, "y": 2}),  # no session
    st.just({"page": "/", "target": "#a", "x": "left", "y": 2, "session": "s"}),
    st.just({"page": "/", "target": "#a", "x": -5, "y": 2, "session": "s"}),
).map(lambda p: _enc({**VALID, "type": "ui.click", "payload": p}))
huge = st.integers(MAX_BYTES + 1, MAX_BYTES * 20).map(
    lambda n: _enc({**VALID, "payload": {"blob": "x" * n}})
)
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc"]).map(
    lambda bad: _enc(VALID).replace(b'"s"', b'"s' + bad + b'"', 1)
)
not_json = st.binary(min_size=0, max_size=200).filter(lambda b: not _is_json_object(b))
#: NaN, ±Infinity and a number that overflows to infinity, anywhere in a payload: accepted
#: before and then broke `GET /api/events` (issue 10).
NON_FINITE_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400")
MARK = "__non_finite__"
nested = st.recursive(
    st.just(MARK) | json_scalars.filter(lambda v: v != MARK),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
non_finite = st.tuples(
    st.dictionaries(st.text(max_size=5), nested, min_size=1, max_size=3).filter(
        lambda p: MARK in json.dumps(p)
    ),
    st.sampled_from(NON_FINITE_TOKENS),
).map(lambda pt: _enc({**VALID, "payload": pt[0]}).replace(f'"{MARK}"'.encode(), pt[1]))
bad_ui_floats = st.sampled_from([b"NaN", b"Infinity", b"1e999"]).map(
    lambda tok: _enc(
        {
            **VALID,
            "type": "ui.click",
            "payload": {"page": "/", "target": "#a", "x": MARK, "y": 2, "session": "s"},
        }
    ).replace(f'"{MARK}"'.encode(), tok)
)
bad_ids = st.sampled_from(["=HYPERLINK(1)", "@SUM(1)", "-x", "+x", "a b", "a:b", "a|b", "x" * 65])
bad_sources = bad_ids.map(lambda v: _enc({**VALID, "source": v}))
bad_input = st.one_of(
    wrong_types,
    missing_fields,
    bad_ui_payloads,
    huge,
    invalid_utf8,
    not_json,
    non_finite,
    bad_ui_floats,
    bad_sources,
)


def _is_json_object(b: bytes) -> bool:
    try:
        return isinstance(json.loads(b), dict)
    except ValueError:
        return False


@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[tuple[redis.Redis, FlowProcess]]:
    tmp = tmp_path_factory.mktemp("bad-input")
    srv = RedisServer(tmp / "redis")
    srv.start()
    data = tmp / "data"
    data.mkdir()
    env = {
        "REDIS_URL": srv.url,
        "DATA_DIR": str(data),
        "MAX_EVENT_BYTES": str(MAX_BYTES),
        "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0",
    }
    fp = FlowProcess("events", env, data / "flow.log").start()
    r = redis.Redis.from_url(srv.url)
    yield r, fp
    fp.kill()
    r.close()
    srv.kill()


def _stored_ids(r: redis.Redis) -> set[str]:
    return {json.loads(d)["id"] for d in r.lrange(keys.EVENTS_RECENT, 0, -1)}


def _dead_for(r: redis.Redis, origin_id: str) -> dict | None:
    for _, fields in r.xrevrange(keys.EVENTS_DEAD, count=20):
        if fields.get(b"origin_id", b"").decode() == origin_id:
            return fields
    return None


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=bad_input)
def test_every_bad_input_is_dead_lettered_and_valid_ones_pass(running, bad: bytes) -> None:
    r, flow = running
    bad_id = r.xadd(keys.EVENTS_IN, {"data": bad}).decode()
    good_id = r.xadd(keys.EVENTS_IN, {"data": _enc(VALID)}).decode()

    fields = wait_for(lambda: _dead_for(r, bad_id), 20, 0.01, f"dead letter for {bad!r:.80}")
    dead = DeadLetter.model_validate({k.decode(): v for k, v in fields.items()})
    assert dead.data == bad  # the original bytes, untouched
    assert dead.reason.strip()
    assert (dead.origin, dead.origin_id) == ("events:in", bad_id)
    wait_for(lambda: good_id in _stored_ids(r), 20, 0.01, "the valid event after it")
    assert flow.alive(), flow.log_tail()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=non_finite)
def test_non_finite_numbers_are_dead_lettered_with_the_field(running, bad: bytes) -> None:
    r, flow = running
    eid = r.xadd(keys.EVENTS_IN, {"data": bad}).decode()
    fields = wait_for(lambda: _dead_for(r, eid), 20, 0.01, f"dead letter for {bad!r:.80}")
    reason = fields[b"reason"].decode()
    assert reason.startswith("payload: ") and "finite number" in reason, reason
    assert fields[b"data"] == bad
    assert flow.alive(), flow.log_tail()


def test_non_finite_numbers_sent_by_publish_are_dead_lettered(running) -> None:
    """The PUBLISH door (`events:publish`) refuses them the same way, with the reason."""
    r, flow = running
    wait_for(lambda: r.pubsub_numsub(keys.EVENTS_PUBLISH)[0][1] >= 1, 30, what="subscribed")
    tag = uuid.uuid4().hex[:8]
    bad = b'{"source":"p-%s","type":"GAS","level":"INFO","payload":{"ppm":NaN}}' % tag.encode()
    assert r.publish(keys.EVENTS_PUBLISH, bad) == 1

    def dead() -> dict | None:
        for _, fields in r.xrevrange(keys.EVENTS_DEAD, count=50):
            if fields.get(b"data") == bad:
                return fields
        return None

    fields = wait_for(dead, 20, 0.02, "the PUBLISHed NaN event's dead letter")
    # The pub/sub bridge puts it on the events stream unchanged (one door into the flows).
    assert fields[b"origin"] == keys.EVENTS_IN.encode()
    assert b"payload: " in fields[b"reason"] and b"finite" in fields[b"reason"]
    assert flow.alive()


def test_activity_and_capture_commands_with_non_finite_metadata_are_dead_lettered() -> None:
    """The video flow's decoder (`activity:in`, `video:commands`): the same rule, by the same
    record types."""
    entries = [
        ("1-0", b'{"event":"room.join","metadata":{"x":NaN}}'),
        ("1-1", b'{"event":"room.join","metadata":{"a":[{"b":-Infinity}]}}'),
        ("1-2", b'{"event":"room.join","camera_id":"=cmd"}'),
        ("1-3", b'{"event":"room.join","metadata":{"x":1.5}}'),
    ]
    got = parse_log_batch(StreamBatch(keys.ACTIVITY_IN, entries), frozenset({"cam"}))
    assert [row["id"] for row in got.rows] == ["1-3"]
    reasons = [d["reason"] for d in got.dead_rows]
    assert "metadata: " in reasons[0] and "at x" in reasons[0]
    assert "at a.0.b" in reasons[1]
    assert reasons[2].startswith("camera_id: ")
    cmds = [("2-0", b'{"action":"status","metadata":{"fps":Infinity}}')]
    got = parse_log_batch(StreamBatch(keys.VIDEO_COMMANDS, cmds), frozenset({"cam"}))
    assert not got.rows and "finite number" in got.dead_rows[0]["reason"]


def test_entry_without_data_field_is_dead_lettered(running) -> None:
    r, flow = running
    eid = r.xadd(keys.EVENTS_IN, {"payload": b"{}"}).decode()
    dead = wait_for(lambda: _dead_for(r, eid), 20, 0.02, "dead letter")
    assert b"no 'data' field" in dead[b"reason"]
    assert flow.alive()

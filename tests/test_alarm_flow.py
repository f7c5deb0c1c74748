"""The alarm flow end to end: real Redis, real Bytewax processes (recovery on), the real lake.

- a burst of 10k triggering events is ONE alarm (count 10,000), one `raised` row, one
  `raised` notification; people's ack/clear through `alarms:commands` become transitions with
  who and when; bad commands land in `alarms:dead` (and the lake) with the reason;
- kill -9 mid-burst (twice) changes nothing: the lake history and `alarms:active` equal what
  the same engine decides over the same entries in this process, and the hash equals the
  state recomputed from the lake.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from connectors.redis_streams import StreamBatch
from core import keys
from core.tokens import load_signer
from core.venue import load_venue
from flows.alarms_inputs import parse_batch
from flows.alarms_logic import AlarmEngine
from tests.alarm_helpers import command, write_alarm_venue, xadd_command
from tests.conftest import FlowProcess, wait_for
from tests.lake_helpers import rows

RULES = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100, clear_at: 90}
"""


def _flow(flow_env: dict[str, str], data_dir: Path, tmp_path: Path) -> FlowProcess:
    env = {**flow_env, "VENUE_CONFIG": str(write_alarm_venue(tmp_path / "venue.yaml", RULES))}
    return FlowProcess("alarms", env, data_dir / "alarms-flow.log")


def _gas(source: str, ppm: float, ts: datetime) -> str:
    return json.dumps(
        {"source": source, "type": "GAS", "level": "WARN", "payload": {"ppm": ppm},
         "ts": ts.isoformat()}
    )  # fmt: skip


def _xadd_events(r: redis.Redis, docs: list[str], chunk: int = 1000) -> None:
    for i in range(0, len(docs), chunk):
        pipe = r.pipeline(transaction=False)
        for d in docs[i : i + chunk]:
            pipe.xadd(keys.EVENTS_IN, {"data": d})
        pipe.execute()


def _hash(r: redis.Redis) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in r.hgetall(keys.ALARMS_ACTIVE).items()}


def test_burst_is_one_alarm_and_people_ack_and_clear_it(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    flow = _flow(flow_env, data_dir, tmp_path).start()
    live = r.pubsub()
    live.subscribe(keys.LIVE_ALARMS)
    wait_for(lambda: r.get(keys.heartbeat_key("alarms")), 60, what="the alarm flow to run")
    t0 = datetime.now(UTC) - timedelta(seconds=30)
    burst = [_gas("gas-burst", 120 + i % 7, t0 + timedelta(milliseconds=i)) for i in range(10_000)]
    _xadd_events(r, burst)
    aid = "gas|gas-burst|1"
    alarm = wait_for(
        lambda: (a := _hash(r).get(aid)) and a["count"] == 10_000 and a, 60, what="count 10k"
    )
    assert alarm["status"] == "ACTIVE_UNACK" and alarm["severity"] == "CRITICAL"
    assert list(_hash(r)) == [aid]  # one alarm per (rule, source)

    # A person acknowledges (operator), another clears (organiser); retries apply once.
    ack = command("ack", aid, by="otto", role="operator", comment="checking the hall")
    xadd_command(r, ack)
    xadd_command(r, ack)
    wait_for(lambda: _hash(r)[aid]["status"] == "ACTIVE_ACK", 30, what="acknowledged")
    assert _hash(r)[aid]["acked_by"] == "otto"
    # Bad commands: refused with the reason, the flow goes on.
    xadd_command(r, command("ack", "gas|gas-nowhere|1"))
    xadd_command(r, command("clear", aid, by="anna", role="analyst"))
    xadd_command(r, b'{"action": "clear"')
    xadd_command(r, command("clear", aid, by="olga", role="organiser", comment="ventilated"))
    wait_for(lambda: aid not in _hash(r), 30, what="CLEARED_ACK to leave alarms:active")

    dead = wait_for(lambda: len(e := r.xrange(keys.ALARMS_DEAD)) >= 3 and e, 30, what="dead")
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert len(reasons) == 3
    assert reasons[0] == "unknown alarm gas|gas-nowhere|1"
    assert "role 'analyst' may not clear" in reasons[1]
    assert "Invalid JSON" in reasons[2]
    assert dead[2][1][b"data"] == b'{"action": "clear"'

    history = wait_for(
        lambda: len(h := rows(data_dir, "select transition, status, \"by\", role, comment, count, "
                              "\"at\", event_ts from alarms where alarm_id = 'gas|gas-burst|1' "
                              "order by revision")) == 3 and h,
        60, what="3 transitions in the lake",
    )  # fmt: skip
    assert [h[:5] for h in history] == [
        ("raised", "ACTIVE_UNACK", "rule", None, None),
        ("acknowledged", "ACTIVE_ACK", "otto", "operator", "checking the hall"),
        ("cleared", "CLEARED_ACK", "olga", "organiser", "ventilated"),
    ]
    assert history[0][6] is not None and history[0][7] is not None  # rule: when + event time
    assert history[1][6] == datetime.fromisoformat(ack["at"]) and history[1][7] is None
    assert history[2][5] == 10_000
    wait_for(
        lambda: rows(data_dir, "select count(*) from dead_letters "
                     "where origin = 'alarms:commands'")[0][0] == 3,
        60, what="dead letters in the lake",
    )  # fmt: skip

    messages: list[dict] = []
    while (m := live.get_message(timeout=1.0)) is not None:  # everything published so far
        if m["type"] == "message":
            messages.append(json.loads(m["data"]))
    transitions = [m["transition"] for m in messages]
    assert transitions.count("raised") == 1  # no duplicate notification
    assert transitions.count("acknowledged") == 1 and transitions.count("cleared") == 1
    assert transitions.count("repeated") < 100  # throttled: ≤ 1 per second per alarm
    live.close()
    assert flow.stop() == 0


SOURCES = 40
PER_SOURCE = 300


def _load(rng: random.Random) -> tuple[list[str], list[tuple[int, dict]]]:
    """Per source: runs of breaching and clear readings (several alarms each, seq 1, 2, …),
    interleaved across sources; plus acks/clears for alarms that will exist by then."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    series: list[list[str]] = []
    for s in range(SOURCES):
        docs, high = [], rng.random() < 0.5
        for i in range(PER_SOURCE):
            if rng.random() < 0.03:
                high = not high
            ppm = rng.uniform(101, 150) if high else rng.uniform(40, 89)
            docs.append(_gas(f"gas-{s:02d}", ppm, t0 + timedelta(milliseconds=10 * i)))
        series.append(docs)
    events = [d for i in range(PER_SOURCE) for docs in series for d in docs[i : i + 1]]
    commands = []
    for s in rng.sample(range(SOURCES), 15):
        action = rng.choice(["ack", "clear"])
        commands.append((rng.randrange(len(events)), command(action, f"gas|gas-{s:02d}|1")))
    return events, sorted(commands, key=lambda c: c[0])


def _expected(r: redis.Redis, venue_path: Path) -> tuple[dict, dict]:
    """The same engine over the same entries, in the merged source's order."""
    order = [keys.ALARMS_COMMANDS, keys.EVENTS_IN]
    entries = []
    for idx, stream in enumerate(order):
        for eid, fields in r.xrange(stream):
            ms, seq = (int(x) for x in eid.decode().split("-"))
            entries.append(((ms, idx, seq), stream, eid.decode(), fields.get(b"data")))
    engine = AlarmEngine(load_venue(venue_path))
    st, history = None, {}
    for _, stream, eid, data in sorted(entries):
        items = parse_batch(StreamBatch(stream, [(eid, data)]), frozenset([keys.EVENTS_IN]), 65536)
        st, out = engine.step(st, items)
        for row in out.rows:
            history[(row["alarm_id"], row["revision"])] = (row["transition"], row["status"])
    assert st is not None
    return history, {aid: (a.status, a.count) for aid, a in st.life.alarms.items()}


def test_kill_9_mid_burst_loses_and_duplicates_nothing(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(20261122)
    flow = _flow(flow_env, data_dir, tmp_path).start()
    events, commands = _load(rng)

    sent = [0]  # chunks sent
    restarted = threading.Event()  # the producer waits at 2/3 until the 1st restart ran

    def produce() -> None:
        pending = list(commands)
        for n, i in enumerate(range(0, len(events), 300)):
            if n == 27:
                restarted.wait(60)
            while pending and pending[0][0] < i + 300:
                xadd_command(r, pending.pop(0)[1])
            _xadd_events(r, events[i : i + 300])
            sent[0] = n + 1
            time.sleep(0.05)

    def running() -> None:
        """Wait until this incarnation of the flow processes input (its own heartbeat)."""
        pid = flow.proc.pid  # type: ignore[union-attr]
        wait_for(
            lambda: (b := r.get(keys.heartbeat_key("alarms"))) and json.loads(b)["pid"] == pid,
            60, what="the alarm flow to run",
        )  # fmt: skip

    running()
    producer = threading.Thread(target=produce)
    producer.start()
    for at_chunk in (12, 29):  # of 40: both crashes while the load is being written
        wait_for(lambda n=at_chunk: sent[0] >= n, 60, 0.01, what=f"{at_chunk} chunks sent")
        flow.kill()
        flow.start()
        running()
        restarted.set()
    producer.join()

    venue_path = Path(flow.env["VENUE_CONFIG"])
    history, state = _expected(r, venue_path)
    assert len(history) > SOURCES  # the load raised and cleared many alarms

    def lake_history() -> list[tuple]:
        return rows(data_dir, "select alarm_id, revision, transition, status from alarms")

    got = wait_for(
        lambda: len(h := lake_history()) >= len(history) and h, 90, what="the whole history"
    )
    assert len(got) == len(history), "a transition was written twice"
    assert {(a, rev): (t, s) for a, rev, t, s in got} == history
    # the notifier's input, alarms:transitions, holds every transition exactly once too
    stream = [json.loads(f[b"data"]) for _, f in r.xrange(keys.ALARMS_TRANSITIONS)]
    seen = [(m["alarm"]["alarm_id"], m["revision"]) for m in stream]
    assert len(seen) == len(set(seen)), "a transition was written twice to alarms:transitions"
    assert {
        k: (m["transition"], m["alarm"]["status"]) for k, m in zip(seen, stream, strict=True)
    } == history

    def hash_state() -> dict:
        return {aid: (a["status"], a["count"]) for aid, a in _hash(r).items()}

    wait_for(lambda: hash_state() == state, 30, what="alarms:active == the engine's state")
    latest = rows(
        data_dir, "select alarm_id, status from alarm_latest where status <> 'CLEARED_ACK'"
    )
    assert dict(latest) == {aid: s for aid, (s, _) in state.items()}
    assert flow.alive()
    assert flow.stop() == 0


def test_published_event_reaches_the_alarm_rules(
    r: redis.Redis, events_flow: FlowProcess, flow_env: dict[str, str], data_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Issue 10 item 15: an event sent by `PUBLISH events:publish` was stored but never seen
    by the alarm rules. Now the events flow bridges it into `events:in`, the one door."""
    flow = _flow(flow_env, data_dir, tmp_path).start()
    try:
        wait_for(lambda: r.get(keys.heartbeat_key("alarms")), 60, what="the alarm flow to run")
        wait_for(lambda: r.pubsub_numsub(keys.EVENTS_PUBLISH)[0][1] >= 1, 60, what="subscribed")
        r.publish(keys.EVENTS_PUBLISH, _gas("gas-pub", 150, datetime.now(UTC)))
        alarm = wait_for(lambda: _hash(r).get("gas|gas-pub|1"), 30, what="the alarm raised")
        assert alarm["status"] == "ACTIVE_UNACK" and alarm["count"] == 1
        # Stored once, through the stream (the same row as an XADDed event would have).
        got = wait_for(
            lambda: rows(data_dir, "select stream from events where source = 'gas-pub'"),
            30,
            what="the lake row",
        )
        assert got == [("events:in",)]
    finally:
        flow.stop()
        assert events_flow.stop() == 0


CONGESTION = """
  - {id: busy, name: Busy, kind: gate_congestion, severity: WARNING, factor: 1.5,
     for_minutes: 1, gates: [main]}
"""
BUSY = "busy|main|1"


def xadd_sharded_scans(r: redis.Redis | RedisCluster, data_dir: Path, n: int, shards: int) -> None:
    """`n` scans at gate `main` in one minute, each XADDed to its participant's input shard
    (`keys.checkins_in`, as the API routes them: the tokens are real, for `n` people). With
    `shards` = 2 neither shard alone holds more than the rule's 15 scans a minute."""
    signer = load_signer(data_dir)
    ts = (datetime.now(UTC) - timedelta(seconds=2)).isoformat()
    per_shard: dict[str, int] = {}
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        tok = signer.mint("alarm-test", f"CG{i:03d}")
        stream = keys.checkins_in(tok, "main", shards)
        per_shard[stream] = per_shard.get(stream, 0) + 1
        doc = {
            "gate_id": "main",
            "token": tok,
            "direction": "in",
            "nonce": f"congest-{i:04d}",
            "ts": ts,
        }
        pipe.xadd(stream, {"data": json.dumps(doc)})
    pipe.execute()
    assert sorted(per_shard) == keys.checkin_streams(shards), per_shard
    assert all(c <= 15 for c in per_shard.values()) or shards == 1, per_shard


def test_gate_congestion_reads_every_checkin_input_shard(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    """STREAM_SHARDS=2: scans go to `checkins:in:{0}` and `checkins:in:{1}`; the alarm flow
    reads both, so 24 scans in a minute at a gate of capacity 10 (limit 15) raise
    `gate_congestion` although neither shard alone exceeds the limit."""
    env = {**flow_env, "STREAM_SHARDS": "2",
           "VENUE_CONFIG": str(write_alarm_venue(tmp_path / "venue.yaml", CONGESTION))}  # fmt: skip
    flow = FlowProcess("alarms", env, data_dir / "alarms-flow.log").start()
    try:
        wait_for(lambda: r.get(keys.heartbeat_key("alarms")), 60, what="the alarm flow to run")
        xadd_sharded_scans(r, data_dir, 24, 2)
        alarm = wait_for(lambda: _hash(r).get(BUSY), 30, what="the congestion alarm")
        assert alarm["status"] == "ACTIVE_UNACK"
        assert "24 scans/min" in alarm["message"] or alarm["count"] >= 1, alarm
        assert list(_hash(r)) == [BUSY]
        assert flow.alive(), flow.log_tail()
    finally:
        assert flow.stop() == 0

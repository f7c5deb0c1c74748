"""Venueflow on a real Redis Cluster: three masters on loopback started from Debian's
redis-server (`sim.redis_cluster`, `redis-cli --cluster create`), REDIS_URL `redis+cluster://`.

- `core.redis_conn`: a cluster URL gives a cluster client; a database other than 0 is refused;
- the live subscriber (`live.subscriber`, PSUBSCRIBE and SUBSCRIBE on one node) hears what is
  published on every node, and seeds from keys in any slot;
- alarms end to end: a rule fires from an event (`events:in`), the alarm is in `alarms:active`,
  on `live:alarms` and in the lake; acknowledged and cleared through the HTTP API; the notifier
  delivers raise and clear to a real loopback HTTP receiver (its outbox keys share `{notify}`);
  the dashboard's /health sees Redis and the flows;
- the events flow with STREAM_SHARDS=3 (shards on two masters): HTTP, bridge and XADD input in
  the lake exactly once, windows, events:new/events:recent, dead letters with reasons, and
  kill -9 mid-load with nothing lost or duplicated; the sensor simulator writes to the shards.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from core import keys
from core.records import event_stream_for
from core.redis_conn import cluster_params, connect, connect_async, is_cluster, transaction
from core.settings import Settings
from core.tokens import load_signer
from live.subscriber import LiveSubscriber
from ops.processes import PROJECT_DIR
from sim.redis_cluster import LocalRedisCluster
from tests.alarm_helpers import write_alarm_venue
from tests.attendance_helpers import EVENT_ID, add_participants, write_venue
from tests.conftest import API_KEY, AppProcess, FlowProcess, add_user, login_http, wait_for
from tests.lake_helpers import event_rows, rows, scalar, windows_match_events
from tests.notify_helpers import SECRET, NotifierProcess, WebhookReceiver, write_notify_venue
from tests.test_alarm_flow import BUSY, CONGESTION, xadd_sharded_scans

RULES = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100, clear_at: 90}
"""
AID = "gas|gas-cl|1"


def cluster_name(base: str, tag: str) -> str:
    """What `core.keys` calls `base` in a cluster deployment (this process runs without one)."""
    return keys.slot_tagged(base, tag, cluster=True)


# --- connecting --------------------------------------------------------------------------------


def test_a_cluster_url_gives_a_cluster_client(rc: RedisCluster, redis_cluster) -> None:
    url = redis_cluster.url
    assert is_cluster(url) and not is_cluster("redis://127.0.0.1:6379/0")
    seeds, _ = cluster_params(url)
    assert [p for _, p in seeds] == redis_cluster.ports
    assert len(rc.get_primaries()) == 3
    # One seed is enough: the client learns the other nodes from it.
    one = connect(f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}")
    try:
        for i in range(20):  # keys in many slots, so on every node
            one.set(f"k{i}", i)
        assert {n.port for n in one.get_primaries()} == set(redis_cluster.ports)
        assert int(rc.get("k19")) == 19
    finally:
        one.close()
    with pytest.raises(ValueError, match="only database 0"):
        connect(f"{url}/3")
    with pytest.raises(ValueError, match="host:port"):
        connect("redis+cluster://127.0.0.1")
    connect(f"{url}/0").close()  # /0 is what every cluster has


def test_tagged_keys_written_together_share_a_slot(rc: RedisCluster) -> None:
    outbox = ["cursor", "jobs", "due", "inflight", "done", "escalations", "escalation", "health",
              "attempts"]  # fmt: skip
    slots = {rc.keyslot(cluster_name(f"notify:{k}", "notify")) for k in outbox}
    assert len(slots) == 1
    assert rc.keyslot(cluster_name("alarms:transitions", "alarms:transitions")) == rc.keyslot(
        cluster_name("alarms:transitions:seen", "alarms:transitions")
    )
    # A single server keeps the names it always had.
    assert keys.slot_tagged("notify:jobs", "notify", cluster=False) == "notify:jobs"


# --- the live subscriber ---------------------------------------------------------------------


@dataclass
class Model:
    connected: bool = False
    version: int = 0
    messages: list[tuple[str, str]] = field(default_factory=list)
    seeded: dict = field(default_factory=dict)

    def apply(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data.decode()))
        self.version += 1

    async def seed(self, r) -> None:
        self.seeded = {k.decode(): v.decode() for k, v in (await r.hgetall("seed:a")).items()}
        self.seeded |= {"b": (await r.get("seed:b") or b"").decode()}
        self.version += 1


async def _until(pred, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_live_subscriber_hears_every_node(rc: RedisCluster, redis_cluster) -> None:
    """SUBSCRIBE and PSUBSCRIBE on the one node `RedisCluster.pubsub()` picks hear a PUBLISH
    made on each of the three masters; the seed reads keys on different nodes."""
    rc.hset("seed:a", "x", "1")
    rc.set("seed:b", "2")
    assert rc.keyslot("seed:a") != rc.keyslot("seed:b")
    model = Model()
    sub = LiveSubscriber("cluster-test", model, model.apply, channels=["live:one", "live:two"],
                         patterns=["verdict:*"], seed=model.seed)  # fmt: skip
    await sub.start(redis_cluster.url)
    try:
        await _until(lambda: model.connected, what="the subscription")
        assert model.seeded == {"x": "1", "b": "2"}
        sent = []
        for n in rc.get_primaries():  # publish on each master directly
            with redis.Redis(host=n.host, port=n.port) as node:
                for ch in ("live:one", "live:two", f"verdict:g{n.port}"):
                    node.publish(ch, f"{ch}@{n.port}")
                    sent.append((ch, f"{ch}@{n.port}"))
        await _until(lambda: sorted(model.messages) == sorted(sent), what=f"{sent}")
        # Channels added while running, and a reconnect after the node's connection is cut.
        await sub.add_channel("live:three")
        await asyncio.sleep(0.2)
        rc.publish("live:three", "3")
        await _until(lambda: ("live:three", "3") in model.messages, what="an added channel")
    finally:
        await sub.stop()


async def test_async_client_transaction_in_one_slot(redis_cluster) -> None:
    """`redis_conn.transaction` on a fresh asyncio cluster client (not initialized yet: with
    `r.pipeline(transaction=True)` the close then failed, "Event loop is closed")."""
    r = connect_async(redis_cluster.url)
    try:
        pipe = await transaction(r)
        pipe.hset("{t}:a", "k", "v")
        pipe.zadd("{t}:b", {"k": 1})
        pipe.eval("return redis.call('HGET', KEYS[1], ARGV[1])", 1, "{t}:a", "k")
        assert await pipe.execute() == [1, 1, b"v"]
    finally:
        await r.aclose()


# --- alarms and notifications end to end -----------------------------------------------------


@pytest.fixture
def alarm_stack(
    rc: RedisCluster, redis_cluster: LocalRedisCluster, tmp_path: Path
) -> Iterator[tuple[AppProcess, WebhookReceiver, Path]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    hook = WebhookReceiver().start()
    venue = write_notify_venue(tmp_path / "venue.yaml", RULES, f"""
  targets:
    - {{name: hook, url: "{hook.url}", secret: "{{env:TEST_HOOK_SECRET}}"}}
  routes:
    - {{name: everything, targets: [hook], send_on: [raised, cleared]}}
""")  # fmt: skip
    env = {
        "REDIS_URL": redis_cluster.url, "DATA_DIR": str(data_dir), "API_KEYS": API_KEY,
        "SNAPSHOT_INTERVAL_S": "1", "LAKE_FLUSH_AGE_S": "0", "VENUE_CONFIG": str(venue),
        "TEST_HOOK_SECRET": SECRET, "HEALTH_FLOWS": "alarms,notifications",
    }  # fmt: skip
    add_user(data_dir, "op-1", "operator")
    procs = [
        FlowProcess("alarms", env, data_dir / "alarms-flow.log").start(),
        FlowProcess("notifications", env, data_dir / "notify-flow.log").start(),
        NotifierProcess(env, data_dir / "notifier.log").start(),
    ]
    app = AppProcess(env, data_dir / "app.log")
    try:
        app.wait_ready()
        for who in ("alarms", "notifications", "notifier"):
            wait_for(lambda w=who: rc.get(keys.heartbeat_key(w)), 90, what=f"{who} to run")
        yield app, hook, data_dir
    finally:
        app.stop()
        for p in procs:
            if p.alive():
                p.kill()
        hook.stop()


def test_alarm_fires_is_acked_cleared_and_notified_on_a_cluster(
    rc: RedisCluster, alarm_stack: tuple[AppProcess, WebhookReceiver, Path]
) -> None:
    app, hook, data_dir = alarm_stack
    ps = rc.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.LIVE_ALARMS)
    heard: list[dict] = []
    try:
        with httpx.Client(base_url=app.base_url, timeout=20) as http:
            health = http.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["redis"] == {"ok": True}

            doc = {"source": "gas-cl", "type": "GAS", "level": "WARN", "payload": {"ppm": 150},
                   "ts": datetime.now(UTC).isoformat()}  # fmt: skip
            rc.xadd(keys.EVENTS_IN, {"data": json.dumps(doc)})
            wait_for(lambda: rc.hget(keys.ALARMS_ACTIVE, AID), 60, what="the alarm raised")

            def live(transition: str) -> bool:
                while (m := ps.get_message(timeout=0.05)) is not None:
                    heard.append(json.loads(m["data"]))
                return any(h["transition"] == transition for h in heard)

            wait_for(lambda: live("raised"), 30, what="the raise on live:alarms")
            wait_for(lambda: hook.bodies(), 60, what="the raise at the webhook receiver")

            login_http(http, "op-1")
            resp = http.post(f"/api/alarms/{AID}/ack", json={"comment": "on it"})
            assert resp.status_code == 202, resp.text
            wait_for(
                lambda: json.loads(rc.hget(keys.ALARMS_ACTIVE, AID))["status"] == "ACTIVE_ACK",
                30, what="acknowledged",
            )  # fmt: skip
        with httpx.Client(base_url=app.base_url, timeout=20,
                          headers={"X-API-Key": API_KEY}) as admin:  # fmt: skip
            resp = admin.post(f"/api/alarms/{AID}/clear", json={"comment": "ventilated"})
            assert resp.status_code == 202, resp.text
        wait_for(lambda: not rc.hexists(keys.ALARMS_ACTIVE, AID), 30, what="cleared and acked")
        wait_for(lambda: live("cleared"), 30, what="the clear on live:alarms")
        wait_for(lambda: len(hook.bodies()) >= 2, 60, what="the clear at the webhook receiver")
        assert [b["status"] for b in hook.bodies()] == ["firing", "resolved"]
        assert len(set(hook.ids())) == 2  # each notification once

        def lake() -> list[tuple] | None:
            got = rows(data_dir, f"select transition from alarms where alarm_id = '{AID}' "
                                 "order by revision")  # fmt: skip
            return got if len(got) >= 3 else None

        assert wait_for(lake, 60, 0.5, "three transitions in the lake") == [
            ("raised",),
            ("acknowledged",),
            ("cleared",),
        ]
        done = cluster_name("notify:done", "notify")
        assert rc.zcard(done) == 2 and rc.hlen(cluster_name("notify:jobs", "notify")) == 0
        attempts = wait_for(
            lambda: rows(data_dir, "select result from notifications"), 60, 0.5,
            "the attempts in the lake",
        )  # fmt: skip
        assert sorted(attempts) == [("delivered",), ("delivered",)]
    finally:
        ps.close()


# --- events end to end -----------------------------------------------------------------------


SHARDS = 3


def _ev(i: int, source: str) -> dict:
    return {"source": source, "type": ["GAS", "TEMP", "DOOR"][i % 3],
            "level": ["INFO", "WARN", "ERROR"][i % 3], "payload": {"i": i},
            "ts": datetime.now(UTC).isoformat()}  # fmt: skip


def _xadd_sharded(rc: RedisCluster, docs: list[dict], streams: list[str]) -> None:
    """XADD each event to its source's shard (`core.records.event_stream_for`), as a sensor
    does; one cluster pipeline (its commands go to each stream's node)."""
    pipe = rc.pipeline(transaction=False)
    for d in docs:
        pipe.xadd(event_stream_for(d["source"], streams), {"data": json.dumps(d)})
    pipe.execute()


@pytest.fixture
def events_env(redis_cluster: LocalRedisCluster, tmp_path: Path) -> dict[str, str]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return {
        "REDIS_URL": redis_cluster.url, "DATA_DIR": str(data_dir), "API_KEYS": API_KEY,
        "WINDOW_S": "2", "ALLOWED_LATENESS_S": "1", "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0", "STREAM_SHARDS": str(SHARDS),
    }  # fmt: skip


def _shards(env: dict[str, str]) -> list[str]:
    return keys.event_write_streams(Settings(_env_file=None, stream_shards=SHARDS))


def test_events_end_to_end_on_a_cluster(rc: RedisCluster, events_env: dict[str, str]) -> None:
    """STREAM_SHARDS=3 on three masters: events in through POST /api/events, the pub/sub bridge
    and direct XADDs (to the shards and to the plain `events:in`), plus refused ones: every
    stored event is in the lake once, on `events:new` once, the newest in `events:recent`, the
    windows sum to the rows, and each refused one is a dead letter with its reason (in
    `events:dead` and the lake)."""
    data_dir = Path(events_env["DATA_DIR"])
    shards = _shards(events_env)
    # The shards' hash tags {0} {1} {2} hash to slots 13907, 9842, 5649: with redis-cli's
    # even split of the slots, two different masters (the third and the second).
    nodes = {rc.get_node_from_key(s).port for s in shards}
    assert len(nodes) == 2, nodes
    live_nodes = {rc.get_node_from_key(k).port for k in (keys.EVENTS_NEW, keys.EVENTS_RECENT)}
    assert len(live_nodes) == 2  # the live sender writes to two masters per batch

    flow = FlowProcess("events", events_env, data_dir / "events-flow.log").start()
    app = AppProcess(events_env, data_dir / "app.log")
    ps = rc.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.LIVE_EVENTS, keys.EVENTS_NEW)
    heard: dict[str, list[bytes]] = {keys.LIVE_EVENTS: [], keys.EVENTS_NEW: []}

    def listen() -> None:
        while (m := ps.get_message(timeout=0.05)) is not None:
            heard[m["channel"].decode()].append(m["data"])

    try:
        app.wait_ready()
        wait_for(lambda: rc.get(keys.heartbeat_key("events")), 90, what="the events flow")
        wait_for(
            lambda: sum(n.redis_connection.pubsub_numsub(keys.EVENTS_PUBLISH)[0][1]
                        for n in rc.get_primaries()) >= 1,
            60, what="the bridge's subscription",
        )  # fmt: skip
        n_xadd, n_plain, n_http, n_pub = 300, 20, 40, 30
        _xadd_sharded(rc, [_ev(i, f"s-{i % 7}") for i in range(n_xadd)], shards)
        for i in range(n_plain):  # a writer that does not shard: `events:in` is read too
            rc.xadd(keys.EVENTS_IN, {"data": json.dumps(_ev(i, "plain"))})
        with httpx.Client(base_url=app.base_url, headers={"X-API-Key": API_KEY}) as http:
            for i in range(n_http):
                resp = http.post("/api/events", json=_ev(i, f"http-{i % 5}"))
                assert resp.status_code == 202, resp.text
        for i in range(n_pub):
            rc.publish(keys.EVENTS_PUBLISH, json.dumps(_ev(i, f"pub-{i % 4}")))
        bad = [b"not json", json.dumps({"source": "s-1", "type": "T"}).encode()]
        for data in bad:
            rc.xadd(shards[1], {"data": data})
        rc.xadd(shards[2], {"other": "field"})

        n = n_xadd + n_plain + n_http + n_pub
        wait_for(lambda: event_rows(data_dir) >= n or not flow.alive(), 90, 0.5,
                 "every event in the lake")  # fmt: skip
        assert flow.alive(), flow.log_tail()
        time.sleep(1)  # a duplicate written late would show now
        assert event_rows(data_dir) == n
        assert rows(data_dir, "select count(distinct payload) from events where source like "
                              "'s-%'") == [(n_xadd,)]  # fmt: skip
        assert rows(data_dir, "select count(distinct (stream, id)) from events") == [(n,)]
        streams = dict(rows(data_dir, "select stream, count(*) from events group by 1"))
        assert set(streams) == {*shards, keys.EVENTS_IN}, streams
        assert rc.llen(keys.EVENTS_RECENT) == keys.RECENT_SIZE

        # Dead letters with reasons, on `events:dead` and in the lake.
        dead = wait_for(lambda: (d := rows(data_dir, "select origin, reason from dead_letters"))
                        and len(d) >= 3 and d, 60, 0.5, "three dead letters")  # fmt: skip
        assert len(dead) == 3 and {o for o, _ in dead} == {shards[1], shards[2]}
        assert all(reason for _, reason in dead)
        assert any("data" in reason for _, reason in dead)
        assert rc.xlen(keys.EVENTS_DEAD) == 3
        assert all(f[b"reason"] for _, f in rc.xrange(keys.EVENTS_DEAD))

        # Windows: the closed ones sum to the rows (all closed once the events are 3 s old).
        wait_for(
            lambda: scalar(data_dir, "select coalesce(sum(count), 0) from event_counts") == n,
            60, 0.5, "the windows to sum to the rows",
        )  # fmt: skip
        assert windows_match_events(data_dir, 2) == []

        wait_for(lambda: listen() or len(heard[keys.EVENTS_NEW]) >= n, 30, what="events:new")
        assert len(heard[keys.EVENTS_NEW]) == n
        assert len({json.loads(d)["id"] + json.loads(d)["stream"] for d in
                    heard[keys.EVENTS_NEW]}) == n  # fmt: skip
        assert heard[keys.LIVE_EVENTS]
        assert flow.alive(), flow.log_tail()
    finally:
        ps.close()
        app.stop()
        if flow.alive():
            assert flow.stop() == 0, flow.log_tail()


def test_events_kill_9_mid_load_on_a_cluster(rc: RedisCluster, events_env: dict[str, str]) -> None:
    """20k events XADDed to the three shards while the flow is killed with SIGKILL three times
    and restarted: each is in the lake exactly once, and the windows sum to them."""
    data_dir = Path(events_env["DATA_DIR"])
    shards = _shards(events_env)
    flow = FlowProcess("events", events_env, data_dir / "events-flow.log").start()
    try:
        wait_for(lambda: rc.get(keys.heartbeat_key("events")), 90, what="the events flow")
        n, chunk = 20_000, 500
        done = threading.Event()

        def produce() -> None:
            for start in range(0, n, chunk):
                _xadd_sharded(rc, [_ev(i, f"k-{i % 11}") for i in range(start, start + chunk)],
                              shards)  # fmt: skip
                time.sleep(0.05)
            done.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        rng = random.Random(13)
        mid_load = []
        for _ in range(3):
            time.sleep(rng.uniform(0.8, 2.5))
            flow.kill()
            mid_load.append(not done.is_set())
            flow.start()
        producer.join(120)
        assert done.is_set()
        assert mid_load[0], "the first kill came after the load"
        wait_for(lambda: event_rows(data_dir) >= n, 120, 0.5, "every event in the lake")
        time.sleep(2)  # a duplicate written late would show now
        assert event_rows(data_dir) == n
        assert scalar(data_dir, "select count(distinct payload) from events") == n
        assert {s for (s,) in rows(data_dir, "select distinct stream from events")} == set(shards)
        wait_for(
            lambda: scalar(data_dir, "select coalesce(sum(count), 0) from event_counts") == n,
            60, 0.5, "the windows to sum to the rows",
        )  # fmt: skip
        assert windows_match_events(data_dir, 2) == []
        assert flow.alive(), flow.log_tail()
    finally:
        if flow.alive():
            flow.kill()


def test_sensor_simulator_writes_to_a_cluster(rc: RedisCluster, events_env: dict[str, str]) -> None:
    """`sim.sensors` with a cluster URL XADDs to every shard (on two masters)."""
    run = subprocess.run(
        [sys.executable, "-m", "sim.sensors", "--rate", "300", "--seconds", "2"],
        cwd=PROJECT_DIR, env={**os.environ, **events_env}, capture_output=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lengths = [rc.xlen(s) for s in _shards(events_env)]
    assert all(lengths) and sum(lengths) > 50, lengths
    assert rc.exists(keys.EVENTS_IN) == 0


def test_erasure_scrubs_every_node_and_rewrites_each_aof(rc: RedisCluster, redis_cluster) -> None:
    """`storage.erasure.erase_in_redis` on a cluster: the keys of every master are scanned, and
    each master's append-only file is rewritten (the erased value leaves every node's files)."""
    from storage.erasure import erase_in_redis

    for i in range(12):  # keys in many slots: on every master
        rc.xadd(f"stream:{i}", {"data": json.dumps({"name": "Erin Erased", "i": i})})
        rc.hset(f"hash:{i}", "p", json.dumps({"name": "Erin Erased"}))
    nodes = {rc.get_node_from_key(f"stream:{i}").port for i in range(12)}
    assert len(nodes) == 3
    assert erase_in_redis(rc, {"Erin Erased"}) == 24
    assert all(rc.xlen(f"stream:{i}") == 0 for i in range(12))
    assert b"Erin Erased" not in rc.hget("hash:3", "p")
    for port in redis_cluster.ports:
        files = [f for f in redis_cluster.node_dir(port).rglob("appendonly*") if f.is_file()]
        assert files, port
        assert all(b"Erin Erased" not in f.read_bytes() for f in files), port


# --- check-ins end to end ----------------------------------------------------------------------


def _checkins_env(cluster: LocalRedisCluster, tmp: Path, shards: int) -> dict[str, str]:
    data_dir = tmp / "data"
    data_dir.mkdir()
    return {
        "REDIS_URL": cluster.url, "DATA_DIR": str(data_dir), "API_KEYS": API_KEY,
        "VENUE_CONFIG": str(write_venue(tmp / "venue.yaml", allow_entry_after_exit=True)),
        "SNAPSHOT_INTERVAL_S": "1", "LAKE_FLUSH_AGE_S": "0", "STREAM_SHARDS": str(shards),
        "CHECKIN_ALLOWED_LATENESS_S": "2",
    }  # fmt: skip


def _lake_rows(data_dir: Path, sql: str) -> list[tuple]:
    try:
        return rows(data_dir, sql)
    except Exception:  # no table yet: nothing flushed
        return []


@pytest.mark.parametrize("shards", [2, 1])
def test_checkins_end_to_end_on_a_cluster(
    rc: RedisCluster, redis_cluster: LocalRedisCluster, tmp_path: Path, shards: int
) -> None:
    """The check-in flow (its deciders, the Bytewax part) and the app on three masters:
    participants through POST /api/participants, scans through POST /api/checkins with their
    verdicts (accepted, duplicate, exit, forged, unknown), each verdict again at
    GET /api/checkins/<nonce>, and every decision in the lake exactly once."""
    env = _checkins_env(redis_cluster, tmp_path, shards)
    data_dir = Path(env["DATA_DIR"])
    signer = load_signer(data_dir)  # before the flow and the app: the key pair they share
    if shards == 2:  # the input shards {0} and {1} lie on two different masters
        ins = [keys.sharded("checkins:in", k, 2) for k in range(2)]
        assert len({rc.get_node_from_key(s).port for s in ins}) == 2
    flow = FlowProcess("checkins", env, data_dir / "flow.log").start()
    app = AppProcess(env, data_dir / "app.log")
    people = [f"C{i:02d}" for i in range(12)]
    try:
        app.wait_ready()
        wait_for(lambda: rc.get(keys.heartbeat_key("checkins")), 90, what="the check-in flow")
        with httpx.Client(base_url=app.base_url, timeout=30,
                          headers={"X-API-Key": API_KEY}) as http:  # fmt: skip
            resp = http.post("/api/participants", params={"wait": 45},
                             json=[{"id": p, "name": f"Name {p}"} for p in people])  # fmt: skip
            assert resp.status_code == 200 and resp.json()["applied"], resp.text
            assert rc.hlen(keys.PARTICIPANTS_INDEX) == len(people)

            def post(token: str, gate: str = "main", direction: str = "in") -> dict:
                body = {"gate_id": gate, "token": token, "direction": direction,
                        "nonce": uuid.uuid4().hex}  # fmt: skip
                resp = http.post("/api/checkins", json=body, params={"wait": 10})
                assert resp.status_code == 200, resp.text
                assert resp.json()["nonce"] == body["nonce"]
                return resp.json()

            got: list[dict] = []
            for p in people:
                tok = signer.mint(EVENT_ID, p)
                got.append(post(tok))
                got.append(post(tok))  # again: a duplicate
                if p.endswith(("0", "5")):
                    got.append(post(tok, "exit", "out"))
            # `run.py participants revoke` (the CLI path) on the cluster: refused from now on.
            gone = "C99"
            resp = http.post("/api/participants", params={"wait": 30},
                             json=[{"id": gone, "name": "Name C99"}])  # fmt: skip
            assert resp.status_code == 200 and resp.json()["applied"], resp.text
            cli = subprocess.run(
                [sys.executable, "run.py", "participants", "revoke", gone, "--wait", "30"],
                cwd=PROJECT_DIR, env={**os.environ, **env}, capture_output=True, timeout=60,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr[-2000:]
            got.append(post(signer.mint(EVENT_ID, gone)))
            assert got[-1]["status"] == "revoked", got[-1]
            tok0 = signer.mint(EVENT_ID, people[0])
            forged = f"{tok0.split('.')[0]}.{signer.mint(EVENT_ID, people[1]).split('.')[1]}"
            got.append(post(forged))
            got.append(post(signer.mint(EVENT_ID, "NOBODY")))
            # An offline gate's backlog (POST /api/checkins/batch, one cluster pipeline over
            # both shards): an hour ago, before every entry above, so each is a late entry
            # that overturns nothing but is decided and stored once.
            ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            backlog = [{"gate_id": "side", "token": signer.mint(EVENT_ID, p), "direction": "out",
                        "nonce": uuid.uuid4().hex, "ts": ago, "offline": True}
                       for p in people[:6]]  # fmt: skip
            resp = http.post("/api/checkins/batch", json=backlog)
            assert resp.status_code == 202 and resp.json()["count"] == 6, resp.text

            def stored(nonce: str) -> dict | None:
                g = http.get(f"/api/checkins/{nonce}")
                return g.json() if g.status_code == 200 else None

            for b in backlog:
                v = wait_for(lambda n=b["nonce"]: stored(n), 30, what="a backlog verdict")
                assert v["offline"] and v["status"] == "exit_without_entry", v
                got.append(v)
            statuses = [v["status"] for v in got]
            assert statuses.count("accepted") == len(people) + 3  # 12 entries, 3 exits
            assert statuses.count("duplicate") == len(people)
            assert statuses.count("exit_without_entry") == 6
            assert statuses[-2] != "accepted" and statuses[-1] != "accepted"
            for v in got:
                again = http.get(f"/api/checkins/{v['nonce']}")
                assert again.status_code == 200, again.text
                assert again.json()["status"] == v["status"]
            assert http.get("/api/checkins/never-sent").status_code == 404

        decisions = wait_for(
            lambda: len(_lake_rows(data_dir, "select nonce from checkin_decisions")) >= len(got),
            60, 0.5, "every decision in the lake",
        )  # fmt: skip
        time.sleep(1)  # a duplicate written late would show now
        decisions = rows(data_dir, "select nonce, status from checkin_decisions")
        assert sorted(decisions) == sorted((v["nonce"], v["status"]) for v in got)
        assert scalar(data_dir, "select count(distinct id) from participants") == len(people) + 1
        assert flow.alive(), flow.log_tail()
    finally:
        app.stop()
        if flow.alive():
            assert flow.stop() == 0, flow.log_tail()


@pytest.mark.parametrize("shards", [2, 1])
def test_checkins_kill_9_mid_load_on_a_cluster(
    rc: RedisCluster, redis_cluster: LocalRedisCluster, tmp_path: Path, shards: int
) -> None:
    """STREAM_SHARDS=2 (and 1) on three masters, 2,000 scans XADDed to their shards while the
    check-in flow (with its deciders) is killed with SIGKILL twice and restarted: every scan has the
    verdict an undisturbed run gives (in → accepted, in → duplicate, out → accepted,
    in → accepted, per person), nobody is admitted twice, and the lake holds each decision once."""
    env = _checkins_env(redis_cluster, tmp_path, shards)
    data_dir = Path(env["DATA_DIR"])
    signer = load_signer(data_dir)
    people = [f"K{i:03d}" for i in range(500)]
    flow = FlowProcess("checkins", env, data_dir / "flow.log").start()
    try:
        add_participants(rc, people, shards)
        wait_for(lambda: rc.hlen(keys.PARTICIPANTS_INDEX) == len(people), 90,
                 what="the participants applied")  # fmt: skip
        plan = [("in", "accepted"), ("in", "duplicate"), ("out", "accepted"), ("in", "accepted")]
        expected: dict[str, str] = {}
        docs: list[tuple[str, dict]] = []
        for step, (direction, status) in enumerate(plan):
            for p in people:
                tok = signer.mint(EVENT_ID, p)
                nonce = f"kill-{p}-{step}"
                expected[nonce] = status
                doc = {"gate_id": "main", "token": tok, "direction": direction, "nonce": nonce}
                docs.append((keys.checkins_in(tok, "main", shards), doc))

        def produce() -> None:
            for i in range(0, len(docs), 100):
                pipe = rc.pipeline(transaction=False)
                for stream, d in docs[i : i + 100]:
                    pipe.xadd(stream, {"data": json.dumps(d)})
                pipe.execute()
                time.sleep(0.1)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        rng = random.Random(2026)
        mid_load = []
        for _ in range(2):
            time.sleep(rng.uniform(0.5, 1.5))
            flow.kill()
            mid_load.append(producer.is_alive())
            flow.start()
        producer.join(60)
        assert not producer.is_alive()
        assert mid_load[0], "the first kill came after the load"

        nonces = list(expected)

        def verdicts() -> dict[str, str] | None:
            raws = rc.mget_nonatomic([keys.verdict_key(n) for n in nonces])
            if not all(raws):
                return None
            return {json.loads(v)["nonce"]: json.loads(v)["status"] for v in raws}

        got = wait_for(lambda: verdicts() or not flow.alive(), 90, 0.5, "every verdict")
        assert flow.alive(), flow.log_tail()
        if not isinstance(got, dict):  # debugging aid
            raws = rc.mget_nonatomic([keys.verdict_key(n) for n in nonces])
            missing = [n for n, v in zip(nonces, raws, strict=True) if v is None]
            raise AssertionError(f"{len(missing)} verdicts missing, e.g. {missing[:5]}")
        wrong = {n: (got[n], s) for n, s in expected.items() if got[n] != s}
        assert not wrong, f"{len(wrong)} verdicts differ, e.g. {list(wrong.items())[:5]}"

        wait_for(
            lambda: len(_lake_rows(data_dir, "select nonce from checkin_decisions"))
            >= len(nonces), 90, 0.5, "every decision in the lake",
        )  # fmt: skip
        time.sleep(1.5)  # a duplicate written late would show now
        decisions = rows(data_dir, "select nonce, revision, status from checkin_decisions")
        assert len(decisions) == len(nonces)
        assert {n: s for n, _, s in decisions} == expected
        # the `checkins` view (one row per `checkin_id`): input shards give ids apart
        # (`<entry id>@<k>`), so no scan of one shard hides another's with the same entry id
        admitted = rows(
            data_dir,
            "select participant_id, count(*) from checkins "
            "where status = 'accepted' and direction = 'in' group by 1",
        )
        assert sorted(admitted) == [(p, 2) for p in people]  # entry, and re-entry after the exit
        assert flow.alive(), flow.log_tail()
    finally:
        if flow.alive():
            flow.kill()


def test_gate_congestion_from_checkin_shards_on_a_cluster(
    rc: RedisCluster, redis_cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    """The alarm flow on three masters with STREAM_SHARDS=2 reads both `checkins:in:{k}`
    (on two masters): 24 scans a minute at a gate of capacity 10 raise `gate_congestion`,
    though neither shard alone exceeds the limit of 15."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {
        "REDIS_URL": redis_cluster.url, "DATA_DIR": str(data_dir), "API_KEYS": API_KEY,
        "SNAPSHOT_INTERVAL_S": "1", "LAKE_FLUSH_AGE_S": "0", "STREAM_SHARDS": "2",
        "VENUE_CONFIG": str(write_alarm_venue(tmp_path / "venue.yaml", CONGESTION)),
    }  # fmt: skip
    flow = FlowProcess("alarms", env, data_dir / "alarms-flow.log").start()
    try:
        wait_for(lambda: rc.get(keys.heartbeat_key("alarms")), 90, what="the alarm flow")
        xadd_sharded_scans(rc, data_dir, 24, 2)
        alarm = wait_for(lambda: rc.hget(keys.ALARMS_ACTIVE, BUSY), 30, what="the alarm")
        assert json.loads(alarm)["status"] == "ACTIVE_UNACK"
        got = wait_for(
            lambda: _lake_rows(data_dir, f"select transition from alarms where alarm_id='{BUSY}'"),
            60, 0.5, "the raise in the lake",
        )  # fmt: skip
        assert got == [("raised",)]
        assert flow.alive(), flow.log_tail()
    finally:
        if flow.alive():
            assert flow.stop() == 0, flow.log_tail()

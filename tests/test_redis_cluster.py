"""Venueflow on a real Redis Cluster: three masters on loopback started from Debian's
redis-server (`sim.redis_cluster`, `redis-cli --cluster create`), REDIS_URL `redis+cluster://`.

- `core.redis_conn`: a cluster URL gives a cluster client; a database other than 0 is refused;
- the live subscriber (`live.subscriber`, PSUBSCRIBE and SUBSCRIBE on one node) hears what is
  published on every node, and seeds from keys in any slot;
- alarms end to end: a rule fires from an event (`events:in`), the alarm is in `alarms:active`,
  on `live:alarms` and in the lake; acknowledged and cleared through the HTTP API; the notifier
  delivers raise and clear to a real loopback HTTP receiver (its outbox keys share `{notify}`);
  the dashboard's /health sees Redis and the flows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from core import keys
from core.redis_conn import cluster_params, connect, connect_async, is_cluster, transaction
from live.subscriber import LiveSubscriber
from sim.redis_cluster import LocalRedisCluster
from tests.conftest import API_KEY, AppProcess, FlowProcess, add_user, login_http, wait_for
from tests.lake_helpers import event_rows, rows
from tests.notify_helpers import SECRET, NotifierProcess, WebhookReceiver, write_notify_venue

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


def test_events_end_to_end_on_a_cluster(
    rc: RedisCluster, redis_cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    """XADDed events reach the lake once each, `events:recent` and `live:events`."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {
        "REDIS_URL": redis_cluster.url, "DATA_DIR": str(data_dir), "API_KEYS": API_KEY,
        "WINDOW_S": "2", "ALLOWED_LATENESS_S": "1", "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0",
    }  # fmt: skip
    flow = FlowProcess("events", env, data_dir / "events-flow.log").start()
    ps = rc.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.LIVE_EVENTS)
    try:
        wait_for(lambda: rc.get(keys.heartbeat_key("events")), 90, what="the events flow")
        n = 300
        for i in range(n):
            doc = {"source": f"s-{i % 7}", "type": "T", "level": "INFO", "payload": {"i": i}}
            rc.xadd(keys.EVENTS_IN, {"data": json.dumps(doc)})
        wait_for(lambda: event_rows(data_dir) >= n or not flow.alive(), 90, 0.5,
                 "every event in the lake")  # fmt: skip
        assert flow.alive(), flow.log_tail()
        assert event_rows(data_dir) == n
        assert rows(data_dir, "select count(distinct payload) from events") == [(n,)]
        assert rc.llen(keys.EVENTS_RECENT) == keys.RECENT_SIZE
        wait_for(lambda: ps.get_message(timeout=0.1), 30, what="a message on live:events")
        assert flow.alive(), flow.log_tail()
    finally:
        ps.close()
        if flow.alive():
            assert flow.stop() == 0, flow.log_tail()


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

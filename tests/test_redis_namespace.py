"""Two deployments on one Redis server never hear each other (issue 10, item 6).

Redis pub/sub channels are global across databases, so before `REDIS_NAMESPACE` a second
deployment showed the alarms of the first, and a check-in waiting for its verdict was answered
by the first message with its nonce on any deployment's verdict channel. Here two real
deployments (events, check-in and alarm flows + the app each) share one real redis-server, with
namespaces `alpha` and `beta`; a raw client PSUBSCRIBEd to `*` sees every message published,
and every key is scanned at the end.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from core import keys
from core.settings import Settings
from core.tokens import load_signer
from tests.attendance_helpers import EVENT_ID, venue_yaml
from tests.conftest import API_KEY, AppProcess, FlowProcess, RedisServer, wait_for

FLOWS = ("events", "checkins", "alarms")
RULES = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100, clear_at: 90}
"""


class Deployment:
    """One `run.py up`'s worth of processes (flows + app) under a namespace."""

    def __init__(self, work: Path, redis_url: str, namespace: str):
        self.ns = namespace
        self.p = keys.prefix_of(namespace)  # this test process has no namespace itself
        self.data = work / namespace
        self.data.mkdir(parents=True)
        venue = work / f"{namespace}-venue.yaml"
        venue.write_text(venue_yaml() + "alarm_rules:\n" + RULES)
        self.env = {
            "REDIS_URL": redis_url,
            "REDIS_NAMESPACE": namespace,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(venue),
            "WINDOW_S": "2",
            "ALLOWED_LATENESS_S": "1",
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "HEALTH_FLOWS": ",".join(FLOWS),
        }
        self.signer = load_signer(self.data)
        self.flows = [FlowProcess(f, self.env, self.data / f"{f}.log").start() for f in FLOWS]
        self.app = AppProcess(self.env, self.data / "app.log")
        self.http = httpx.Client(base_url=self.app.base_url, timeout=20)

    def key(self, base: str) -> str:
        return self.p + base

    def close(self) -> None:
        self.http.close()
        self.app.stop()
        for f in self.flows:
            if f.alive():
                f.kill()


def test_namespace_is_validated() -> None:
    assert keys.prefix_of("") == "" and keys.prefix_of("venue-2.test") == "venue-2.test:"
    for bad in ("a:b", "a*", "a?", "[ab]", " a", "-a", "x" * 65):
        with pytest.raises(ValueError, match="REDIS_NAMESPACE"):
            keys.prefix_of(bad)
        with pytest.raises(ValueError, match="redis_namespace"):
            Settings(redis_namespace=bad)


def test_two_deployments_on_one_redis_never_hear_each_other(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    raw = redis.Redis.from_url(srv.url)
    ps = raw.pubsub(ignore_subscribe_messages=True)
    ps.psubscribe("*")
    heard: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            msg = ps.get_message(timeout=0.2)
            if msg is not None:
                heard.append((msg["channel"].decode(), msg["data"]))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deps: list[Deployment] = []
    try:
        deps = [Deployment(tmp_path, srv.url, ns) for ns in ("alpha", "beta")]
        a, b = deps
        for d in deps:
            d.app.wait_ready(180)
            for f in FLOWS:
                wait_for(
                    lambda d=d, f=f: raw.exists(d.key(keys.heartbeat_key(f))),
                    120,
                    what=f"{d.ns}'s {f} flow",
                )
            pid = f"P-{d.ns}"
            op = {"op": "upsert", "participant": {"id": pid, "name": f"Name {d.ns}"}}
            raw.xadd(d.key(keys.PARTICIPANTS_IN), {"data": json.dumps(op)})
            wait_for(lambda d=d, pid=pid: raw.hget(d.key(keys.PARTICIPANTS_INDEX), pid), 60)

        # Both gates send a scan with the SAME nonce at the same moment: each request is
        # answered with its own deployment's verdict.
        nonce = uuid.uuid4().hex

        def scan(d: Deployment) -> httpx.Response:
            body = {
                "gate_id": "main",
                "token": d.signer.mint(EVENT_ID, f"P-{d.ns}"),
                "nonce": nonce,
            }
            return d.http.post(
                "/api/checkins", json=body, params={"wait": 10}, headers={"X-API-Key": API_KEY}
            )

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(scan, deps))
        for d, got in zip(deps, answers, strict=True):
            assert got.status_code == 200, got.text
            assert got.json()["participant_id"] == f"P-{d.ns}"
            assert got.json()["status"] == "accepted"
            stored = json.loads(raw.get(d.key(keys.verdict_key(nonce))))
            assert stored["participant_id"] == f"P-{d.ns}"

        # A gas alarm in alpha only.
        gas = {"source": "gas-alpha", "type": "GAS", "level": "WARN", "payload": {"ppm": 500}}
        sent = a.http.post("/api/events", json=gas, headers={"X-API-Key": API_KEY})
        assert sent.status_code == 202, sent.text
        wait_for(lambda: raw.hlen(a.key(keys.ALARMS_ACTIVE)), 60, what="alpha's alarm")
        wait_for(lambda: raw.llen(a.key(keys.EVENTS_RECENT)), 60, what="alpha's stored event")
        wait_for(lambda: any(c == a.key(keys.LIVE_ALARMS) for c, _ in heard), 30, what="live alarm")
        assert raw.hlen(b.key(keys.ALARMS_ACTIVE)) == 0
        assert raw.llen(b.key(keys.EVENTS_RECENT)) == 0
        # What each app subscribed to, by name: only its own namespace's channels.
        subscribed = {c.decode() for c in raw.pubsub_channels()}
        assert subscribed and all(c.startswith(("alpha:", "beta:")) for c in subscribed)
        for d in deps:
            assert d.key(keys.LIVE_ALARMS) in subscribed, subscribed
    finally:
        stop.set()
        listener.join(5)
        for d in deps:
            d.close()

    # Every message published went to a namespaced channel, and none of one deployment's
    # data went to the other's channels.
    channels = {c for c, _ in heard}
    assert channels, "nothing was published"
    stray = sorted(c for c in channels if not c.startswith(("alpha:", "beta:")))
    assert not stray, stray
    for c, data in heard:
        other = "beta" if c.startswith("alpha:") else "alpha"
        assert f"P-{other}".encode() not in data and f"gas-{other}".encode() not in data, c
    for kind in (keys.verdict_channel("main"), keys.LIVE_ALARMS, keys.EVENTS_NEW):
        assert a.key(kind) in channels, (kind, sorted(channels))
    assert b.key(keys.verdict_channel("main")) in channels
    assert b.key(keys.LIVE_ALARMS) not in channels  # beta raised no alarm, and heard none
    # Every key either deployment created is under its namespace.
    all_keys = [k.decode() for k in raw.scan_iter(count=1000)]
    assert all_keys
    stray = sorted(k for k in all_keys if not k.startswith(("alpha:", "beta:")))
    assert not stray, stray
    for d in deps:
        assert any(k.startswith(d.p) for k in all_keys)
    ps.close()
    raw.close()
    srv.kill()

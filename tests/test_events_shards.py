"""Sharded event input (`STREAM_SHARDS`, issue 13): the HTTP routes and the sensor simulator
write each event to `events:in:{crc32(source) % N}`, and nothing to the plain `events:in`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest
import redis

from core.settings import Settings
from ops.processes import PROJECT_DIR, child_env
from tests.support import API_KEY, AppProcess, RedisServer

AUTH = {"X-API-Key": API_KEY}


def shard(source: str, n: int) -> str:
    """The documented rule (docs/contract.md), written out again: CRC-32 of the UTF-8 bytes."""
    return f"events:in:{{{zlib.crc32(source.encode()) % n}}}"


def data_of(r: redis.Redis, stream: str, entry_id: str) -> dict:
    entries = r.xrange(stream, entry_id, entry_id)
    assert len(entries) == 1, (stream, entry_id, entries)
    return json.loads(entries[0][1][b"data"])


@pytest.fixture
def redis_server(tmp_path: Path):
    rs = RedisServer(tmp_path / "redis")
    rs.start()
    yield rs
    rs.kill()


def test_routes_write_each_event_to_its_sources_shard(tmp_path, redis_server) -> None:
    """POST /api/events and a batch spanning three shards (plus refused items): every stored
    event is in its source's shard, the answers in the batch's order, each shard's events in
    the batch's order."""
    data = tmp_path / "data"
    data.mkdir()
    env = {"REDIS_URL": redis_server.url, "DATA_DIR": str(data), "API_KEYS": API_KEY}
    app = AppProcess({**env, "STREAM_SHARDS": "3"}, tmp_path / "app.log").wait_ready()
    r = redis.Redis.from_url(redis_server.url)
    try:
        base = {"type": "GAS", "level": "INFO", "payload": {"ppm": 1}}
        one = httpx.post(
            f"{app.base_url}/api/events", json={**base, "source": "gas-1"}, headers=AUTH
        )
        assert one.status_code == 202, one.text
        assert data_of(r, shard("gas-1", 3), one.json()["id"])["source"] == "gas-1"

        items: list[dict] = [
            {**base, "source": f"gw-{i % 9}", "payload": {"i": i}} for i in range(30)
        ]
        items[4] = {"type": "GAS"}  # refused: 422, in its place
        resp = httpx.post(f"{app.base_url}/api/events/batch", json=items, headers=AUTH)
        assert resp.status_code == 207, resp.text
        doc = resp.json()
        assert (doc["accepted"], doc["rejected"]) == (29, 1)
        results = doc["results"]
        assert results[4]["error"]["status"] == 422
        by_shard: dict[str, list[str]] = {}
        for i, (item, res) in enumerate(zip(items, results, strict=True)):
            if i == 4:
                continue
            stream = shard(item["source"], 3)
            assert data_of(r, stream, res["id"]) == item
            by_shard.setdefault(stream, []).append(res["id"])
        assert len(by_shard) == 3  # the batch spanned every shard
        for stream, ids in by_shard.items():  # one transaction per shard: in order, nothing else
            assert [e[0].decode() for e in r.xrange(stream) if e[0].decode() in ids] == ids
        assert r.exists("events:in") == 0
    finally:
        app.stop()
        r.close()


def test_sensor_simulator_shards_by_source(tmp_path, redis_server) -> None:
    data = tmp_path / "data"
    data.mkdir()
    s = Settings(_env_file=None, data_dir=data, redis_url=redis_server.url, stream_shards=2)
    env = child_env(s, redis_server.url, STREAM_SHARDS="2")
    run = subprocess.run(
        [sys.executable, "-m", "sim.sensors", "--rate", "300", "--seconds", "2"],
        cwd=PROJECT_DIR,
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    r = redis.Redis.from_url(redis_server.url)
    total = 0
    for k in range(2):
        stream = f"events:in:{{{k}}}"
        for _, fields in r.xrange(stream):
            ev = json.loads(fields[b"data"]) if fields[b"data"].endswith(b"}") else None
            if ev is not None:
                assert shard(ev["source"], 2) == stream
            total += 1
    assert total > 50
    assert r.exists("events:in") == 0
    r.close()


def test_pubsub_bridge_xadds_to_the_sources_shard(tmp_path, redis_server) -> None:
    """A PUBLISHed event enters through its source's shard (the events flow's bridge)."""
    from tests.support import FlowProcess, wait_for

    data = tmp_path / "data"
    data.mkdir()
    env = {
        "REDIS_URL": redis_server.url,
        "DATA_DIR": str(data),
        "STREAM_SHARDS": "2",
        "SNAPSHOT_INTERVAL_S": "1",
    }
    flow = FlowProcess("events", env, data / "flow.log").start()
    r = redis.Redis.from_url(redis_server.url)
    try:
        wait_for(lambda: r.pubsub_numsub("events:publish")[0][1] >= 1, 60, 0.25, "subscribed")
        sources = [f"dev-{i}" for i in range(20)]
        for src in sources:
            ev = {"source": src, "type": "GAS", "level": "INFO", "payload": {}}
            assert r.publish("events:publish", json.dumps(ev)) == 1
        wait_for(
            lambda: r.xlen("events:in:{0}") + r.xlen("events:in:{1}") >= 20, 30, 0.25, "bridged"
        )
        for k in range(2):
            for _, fields in r.xrange(f"events:in:{{{k}}}"):
                assert shard(json.loads(fields[b"data"])["source"], 2) == f"events:in:{{{k}}}"
        assert r.xlen("events:in:{0}") and r.xlen("events:in:{1}")
        assert r.exists("events:in") == 0
        assert flow.stop() == 0
    finally:
        if flow.alive():
            flow.kill()
        r.close()

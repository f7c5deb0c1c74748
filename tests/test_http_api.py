"""The HTTP API against real processes: redis-server, the events flow, `python -m ui.main`.

One stack (Redis + flow + app) serves the module; tests that stop parts of it build their own.
Events posted by one test never confuse another: listing tests use their own `type` values or
compare against ids they posted themselves.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis

from core import keys
from tests.conftest import API_KEY, AppProcess, FlowProcess, RedisServer, login_http, wait_for
from tests.ui_fixtures import healthy

MAX_EVENT_BYTES = 4096
STORED_KEYS = {"id", "stream", "source", "type", "level", "payload", "ts", "received_at"}
AUTH = {"X-API-Key": API_KEY}


class Stack:
    """Redis, the events flow and the app as real processes (the conftest's classes), shared
    by the module: starting them costs seconds, and most tests only need them running."""

    def __init__(self, work: Path):
        self.redis_server = RedisServer(work / "redis")
        self.redis_server.start()
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.data = work / "data"
        self.data.mkdir()
        # The conftest's `flow_env`, plus a small event limit so 413 needs no big bodies.
        self.env = {
            "REDIS_URL": self.redis_server.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "WINDOW_S": "2",
            "ALLOWED_LATENESS_S": "1",
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
            "HEALTH_FLOWS": "events",
        }
        self.flow: FlowProcess | None = None
        self.app: AppProcess | None = None
        try:
            self.flow = FlowProcess("events", self.env, self.data / "events-flow.log").start()
            self.app = AppProcess(self.env, self.data / "app.log").wait_ready()
            healthy(self.app)
            self.http = httpx.Client(base_url=self.app.base_url, timeout=10)
            login_http(self.http)  # listing events needs a login (or an admin key)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.app is not None:
            if hasattr(self, "http"):
                self.http.close()
            self.app.stop()
        if self.flow is not None and self.flow.alive():
            self.flow.stop()
        self.redis.close()
        self.redis_server.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("api"))
    try:
        yield s
    finally:
        s.close()


def post(http: httpx.Client, body: object, **kw) -> httpx.Response:
    return http.post("/api/events", json=body, headers=AUTH, **kw)


def event(type_: str = "GAS", level: str = "INFO", **extra) -> dict:
    return {"source": "sensor-1", "type": type_, "level": level, "payload": {"ppm": 1}, **extra}


# --- ingest -------------------------------------------------------------------------------------


def test_post_needs_a_valid_api_key(stack: Stack) -> None:
    before = stack.redis.xlen(keys.EVENTS_IN)
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        r = stack.http.post("/api/events", json=event(), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json() == {"detail": "missing or invalid X-API-Key"}
    assert stack.redis.xlen(keys.EVENTS_IN) == before


def test_no_configured_keys_refuses_every_key(stack: Stack) -> None:
    env = dict(stack.env, API_KEYS="")
    app = AppProcess(env, stack.data / "app-no-keys.log").wait_ready()
    try:
        r = httpx.post(f"{app.base_url}/api/events", json=event(), headers=AUTH)
        assert r.status_code == 401
        detail = r.json()["detail"]
        assert detail.startswith("missing or invalid X-API-Key") and "API_KEYS is empty" in detail
    finally:
        app.stop()


def test_post_accepted_is_in_events_in(stack: Stack) -> None:
    body = event("GAS", "WARN", payload={"ppm": 120})
    r = post(stack.http, body)
    assert r.status_code == 202, r.text
    doc = r.json()
    assert set(doc) == {"id", "requestId"}
    assert uuid.UUID(doc["requestId"]).version == 4
    assert r.headers["X-Request-ID"] == doc["requestId"]
    entries = stack.redis.xrange(keys.EVENTS_IN, doc["id"], doc["id"])
    assert len(entries) == 1
    _, fields = entries[0]
    assert set(fields) == {b"data"}
    assert json.loads(fields[b"data"]) == body  # ts left out: the flow uses the entry's time


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"type": "GAS", "level": "INFO"}, {"source"}),
        (event(level="LOUD"), {"level"}),
        (
            {"source": "web", "type": "ui.click", "level": "INFO", "payload": {"page": "/"}},
            {"payload.target", "payload.x", "payload.y", "payload.session"},
        ),
        (
            {
                "source": "web",
                "type": "ui.keydown",
                "level": "INFO",
                "payload": {"page": "/", "key": "", "session": "s", "extra": 1},
            },
            {"payload.key", "payload.extra"},
        ),
        ({**event(), "payload": [1, 2]}, {"payload"}),
        ({**event(), "ts": "not a time"}, {"ts"}),
        ({**event(), "unexpected": True}, {"unexpected"}),
        (b"{not json", {"body"}),
        (b'{"source": "\xff\xfe", "type": "GAS", "level": "INFO"}', {"body"}),
        (b"[]", {"body"}),
    ],
    ids=[
        "missing-source",
        "bad-level",
        "click-missing-fields",
        "keydown-bad-fields",
        "payload-not-object",
        "bad-ts",
        "unknown-field",
        "not-json",
        "not-utf8",
        "not-object",
    ],
)
def test_post_invalid_names_each_bad_field(stack: Stack, body: object, fields: set[str]) -> None:
    before = stack.redis.xlen(keys.EVENTS_IN)
    if isinstance(body, bytes):
        r = stack.http.post(
            "/api/events", content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
    else:
        r = post(stack.http, body)
    assert r.status_code == 422, r.text
    doc = r.json()
    assert doc["detail"] == "invalid event"
    assert {e["field"] for e in doc["errors"]} == fields
    assert all(e["message"] and e["type"] for e in doc["errors"])
    assert stack.redis.xlen(keys.EVENTS_IN) == before


def test_post_oversized_is_413(stack: Stack) -> None:
    before = stack.redis.xlen(keys.EVENTS_IN)
    big = event(payload={"blob": "x" * MAX_EVENT_BYTES})
    r = post(stack.http, big)
    assert r.status_code == 413, r.text
    assert str(MAX_EVENT_BYTES) in r.json()["detail"]

    # Without Content-Length (chunked upload) the limit holds while reading.
    def chunks() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = stack.http.post("/api/events", content=chunks(), headers=AUTH)
    assert r.status_code == 413, r.text
    assert stack.redis.xlen(keys.EVENTS_IN) == before


# --- listing ------------------------------------------------------------------------------------


def wait_in_lake(http: httpx.Client, n: int, **params: str) -> dict:
    """Wait until the lake holds `n` events matching the filters (the sink writes each
    snapshot with LAKE_FLUSH_AGE_S=0)."""

    def ready() -> dict | None:
        doc = http.get("/api/events", params={"size": 200, **params}).json()
        # `total` and the page are two scans; rows written between them may make them differ.
        ok = doc.get("source") == "lake" and doc.get("total") == n == len(doc["items"])
        return doc if ok else None

    return wait_for(ready, 20, 0.2, f"{n} events in the lake for {params}")


def test_listing_pages_newest_first_with_filters(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    type_a, type_b = f"door.{run}", f"gas.{run}"
    base = datetime.now(UTC) - timedelta(minutes=2)
    posted = []
    for i in range(24):
        posted.append(
            {
                "source": f"sensor-{i % 3}",
                "type": type_a if i % 2 else type_b,
                "level": ("INFO", "WARN", "ERROR")[i % 3],
                "payload": {"i": i},
                "ts": (base + timedelta(seconds=i)).isoformat(),
            }
        )
    random.Random(7).shuffle(posted)  # arrival order differs from event time
    for body in posted:
        assert post(stack.http, body).status_code == 202

    all_a = wait_in_lake(stack.http, 12, type=type_a)["items"]
    assert [e["payload"]["i"] for e in all_a] == list(range(23, 0, -2))  # by ts, newest first
    for item in all_a:
        assert set(item) == STORED_KEYS
        assert item["type"] == type_a
        assert isinstance(item["payload"], dict)
        assert item["ts"].endswith("Z") and item["received_at"].endswith("Z")
        assert item["stream"] == keys.EVENTS_IN

    # Pages of 5 tile the whole ordered list without gaps or repeats.
    paged = []
    for page in (1, 2, 3):
        r = stack.http.get("/api/events", params={"type": type_a, "page": page, "size": 5})
        doc = r.json()
        assert r.status_code == 200 and doc["source"] == "lake"
        assert (doc["page"], doc["size"], doc["total"]) == (page, 5, 12)
        paged += doc["items"]
    assert [e["id"] for e in paged] == [e["id"] for e in all_a]
    beyond = stack.http.get("/api/events", params={"type": type_a, "page": 4, "size": 5}).json()
    assert beyond["items"] == [] and beyond["total"] == 12

    # Level filter, alone and with the type filter (case-insensitive level).
    both = stack.http.get("/api/events", params={"type": type_b, "level": "warn"}).json()
    assert both["source"] == "lake"
    expected = sorted(
        (p["payload"]["i"] for p in posted if p["type"] == type_b and p["level"] == "WARN"),
        reverse=True,
    )
    assert [e["payload"]["i"] for e in both["items"]] == expected
    errors = stack.http.get("/api/events", params={"level": "ERROR", "size": 200}).json()
    assert errors["items"] and all(e["level"] == "ERROR" for e in errors["items"])


def test_first_page_comes_from_the_cache(stack: Stack) -> None:
    ids = []
    for i in range(6):
        r = post(stack.http, event("cache.check", payload={"i": i}))
        assert r.status_code == 202
        ids.append(r.json()["id"])
    newest = list(reversed(ids))

    def cached_page() -> dict | None:
        doc = stack.http.get("/api/events", params={"size": 5}).json()
        return doc if [e["id"] for e in doc["items"]] == newest[:5] else None

    doc = wait_for(cached_page, 5, what="the newest events in events:recent")
    assert doc["source"] == "cache" and doc["page"] == 1 and doc["size"] == 5
    assert "total" not in doc
    assert all(set(e) == STORED_KEYS for e in doc["items"])

    # The same events, read from the lake once flushed: same shape, same order.
    lake = wait_in_lake(stack.http, 6, type="cache.check")
    assert [e["id"] for e in lake["items"]] == newest
    by_id = {e["id"]: e for e in lake["items"]}
    assert all(by_id[e["id"]] == e for e in doc["items"])

    # Not page 1, too large, or filtered: the lake.
    for params in ({"page": 2, "size": 5}, {"size": 60}, {"level": "INFO", "size": 5}):
        d = stack.http.get("/api/events", params=params).json()
        assert d["source"] == "lake" and "total" in d, params
    d = stack.http.get("/api/events", params={"size": 60}).json()
    assert [e["id"] for e in d["items"][:5]] == newest[:5]


@pytest.mark.parametrize(
    "params",
    [{"size": 0}, {"size": 201}, {"page": 0}, {"page": "x"}, {"level": "LOUD"}],
    ids=["size-0", "size-201", "page-0", "page-not-int", "bad-level"],
)
def test_listing_rejects_bad_parameters(stack: Stack, params: dict) -> None:
    r = stack.http.get("/api/events", params=params)
    assert r.status_code == 422, r.text


def test_health_while_everything_runs(stack: Stack) -> None:
    for path in ("/health", "/api/health"):
        r = stack.http.get(path)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["ok"] is True and doc["redis"] == {"ok": True}
        events = doc["flows"]["events"]
        assert events["alive"] is True
        assert datetime.fromisoformat(events["last_heartbeat"]) <= datetime.now(UTC)


# --- failures -----------------------------------------------------------------------------------


def test_health_and_ingest_when_flow_then_redis_stop(
    redis_server: RedisServer, r: redis.Redis, events_flow: FlowProcess, app_process: AppProcess
) -> None:
    healthy(app_process)
    with httpx.Client(base_url=app_process.base_url, timeout=10) as http:
        login_http(http)
        assert post(http, event("before.stop")).status_code == 202

        def stored() -> bool:  # the flow took it (it is in the cache) before we stop it
            items = http.get("/api/events", params={"size": 1}).json()["items"]
            return [e["type"] for e in items] == ["before.stop"]

        wait_for(stored, 5, what="the flow to store the event")
        assert events_flow.stop() == 0

        # The heartbeat key expires (TTL 10 s) once the flow no longer refreshes it.
        def flow_dead() -> httpx.Response | None:
            resp = http.get("/health")
            return resp if resp.status_code == 503 else None

        resp = wait_for(flow_dead, 15, 0.25, "/health to report the stopped flow")
        doc = resp.json()
        assert doc["ok"] is False and doc["redis"] == {"ok": True}
        assert doc["flows"]["events"]["alive"] is False
        # Ingest still works: Redis keeps the event until the flow comes back.
        assert post(http, event("while.stopped")).status_code == 202
        assert r.xlen(keys.EVENTS_IN) == 2

        redis_server.kill()
        resp = http.get("/health")
        assert resp.status_code == 503
        doc = resp.json()
        assert doc["redis"]["ok"] is False and "redis unavailable" in doc["redis"]["error"]
        resp = post(http, event("redis.down"))
        assert resp.status_code == 503
        assert "redis unavailable" in resp.json()["detail"]
        # A batch: 503 with the reason, each item saying it was not stored (one MULTI/EXEC).
        resp = http.post(
            "/api/events/batch", json=[event("redis.down"), {"type": "x"}], headers=AUTH
        )
        assert resp.status_code == 503, resp.text
        doc = resp.json()
        assert "redis unavailable" in doc["detail"] and resp.headers["Retry-After"] == "1"
        assert (doc["accepted"], doc["rejected"]) == (0, 2)
        first, second = (x["error"] for x in doc["results"])
        assert first["status"] == 503 and first["detail"].startswith("not stored: redis unav")
        assert second["status"] == 422
        # Listing falls back to the lake, which the stopped flow flushed on its way out.
        resp = http.get("/api/events", params={"size": 5})
        assert resp.status_code == 200 and resp.json()["source"] == "lake"
        assert [e["type"] for e in resp.json()["items"]] == ["before.stop"]
        assert app_process.proc.poll() is None  # the app lives on without Redis


# --- batch ingest -------------------------------------------------------------------------------


def post_batch(http: httpx.Client, body: object, headers: dict | None = None) -> httpx.Response:
    return http.post("/api/events/batch", json=body, headers=AUTH if headers is None else headers)


def stored(r: redis.Redis, entry_id: str, stream: str = keys.EVENTS_IN) -> bytes:
    """The `data` of one stream entry (exactly one must have that id)."""
    entries = r.xrange(stream, entry_id, entry_id)
    assert len(entries) == 1, entries
    return entries[0][1][b"data"]


def test_batch_mixed_items_answer_in_order_and_store_each_valid_one_once(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    items: list[object] = [
        event(f"batch.{tag}", "WARN", payload={"ppm": 120}),
        {"type": "GAS", "level": "INFO"},  # no source
        {**event(f"batch.{tag}", "INFO"), "source": "sensor-2", "ts": "2026-01-02T03:04:05Z"},
        5,  # not an object
        {"source": "web", "type": "ui.click", "level": "INFO", "payload": {"page": "/"}},
        {**event(f"batch.{tag}"), "payload": {"blob": "x" * MAX_EVENT_BYTES}},  # too large
        event(f"batch.{tag}", "ERROR"),
    ]
    before = stack.redis.xlen(keys.EVENTS_IN)
    r = post_batch(stack.http, items)
    assert r.status_code == 207, r.text
    doc = r.json()
    assert (doc["accepted"], doc["rejected"]) == (3, 4)
    assert (
        uuid.UUID(doc["requestId"]).version == 4 and r.headers["X-Request-ID"] == doc["requestId"]
    )
    res = doc["results"]
    assert len(res) == len(items)
    assert [("id" in x, "error" in x) for x in res] == [
        (True, False), (False, True), (True, False), (False, True), (False, True),
        (False, True), (True, False),
    ]  # fmt: skip
    # Each refusal is the single route's, for the same item.
    for i in (1, 3, 4):
        single = post(stack.http, items[i])
        assert single.status_code == 422
        assert res[i]["error"] == {"status": 422, **single.json()}, (i, res[i])
    assert res[5]["error"]["status"] == 413 and str(MAX_EVENT_BYTES) in res[5]["error"]["detail"]
    assert {e["field"] for e in res[3]["error"]["errors"]} == {"body"}
    # Each valid one is in events:in once, with what the single route writes for it.
    ids = [res[i]["id"] for i in (0, 2, 6)]
    assert len(set(ids)) == 3
    assert stack.redis.xlen(keys.EVENTS_IN) == before + 3
    for i, eid in zip((0, 2, 6), ids, strict=True):
        single = post(stack.http, items[i])
        assert single.status_code == 202
        assert stored(stack.redis, eid) == stored(stack.redis, single.json()["id"])
    assert json.loads(stored(stack.redis, ids[1]))["ts"].startswith("2026-01-02T03:04:05")


def test_batch_all_valid_is_200_and_reaches_the_lake(stack: Stack) -> None:
    tag = f"batch.all.{uuid.uuid4().hex[:8]}"
    items = [event(tag, payload={"n": i}) for i in range(150)]
    r = post_batch(stack.http, items)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["accepted"], doc["rejected"]) == (150, 0)
    assert all(set(x) == {"id"} for x in doc["results"])
    ids = [x["id"] for x in doc["results"]]
    assert ids == sorted(ids, key=lambda e: tuple(map(int, e.split("-"))))  # in order
    assert [json.loads(stored(stack.redis, e))["payload"]["n"] for e in ids] == list(range(150))
    got = wait_in_lake(stack.http, 150, type=tag)
    assert sorted(e["payload"]["n"] for e in got["items"]) == list(range(150))


def test_batch_limits_and_bad_bodies(stack: Stack) -> None:
    before = stack.redis.xlen(keys.EVENTS_IN)
    r = post_batch(stack.http, [event()] * 1001)
    assert r.status_code == 413, r.text
    assert "1001 events; at most 1000" in r.json()["errors"][0]["message"]
    # The body is bounded (1,000 times MAX_EVENT_BYTES here), declared or chunked.
    big = json.dumps([event(payload={"blob": "x" * 4000})] * 1100).encode()
    assert len(big) > 1000 * MAX_EVENT_BYTES
    hdr = {**AUTH, "Content-Type": "application/json"}
    r = stack.http.post("/api/events/batch", content=big, headers=hdr)
    assert r.status_code == 413 and str(1000 * MAX_EVENT_BYTES) in r.json()["detail"], r.text

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    r = stack.http.post("/api/events/batch", content=chunks(), headers=hdr)
    assert r.status_code == 413, r.text
    for body in (b"[]", b"{not json", b'{"events": []}', b'[{"source": "\xff"}]', b"null"):
        r = stack.http.post("/api/events/batch", content=body, headers=hdr)
        assert r.status_code == 422, (body, r.text)
        doc = r.json()
        assert doc["detail"] == "invalid batch" and doc["errors"][0]["field"] == "body", doc
    assert stack.redis.xlen(keys.EVENTS_IN) == before


def test_batch_keys_as_the_single_route(stack: Stack) -> None:
    from auth.keys import KeyStore

    store = KeyStore(stack.data)
    gate = store.create("batch gate", "gate", "test", "main")[0]
    device = store.create("batch device", "device", "test")[0]
    before = stack.redis.xlen(keys.EVENTS_IN)
    for headers, status in (({}, 401), ({"X-API-Key": "wrong"}, 401), ({"X-API-Key": gate}, 403)):
        r = post_batch(stack.http, [event()], headers)
        assert r.status_code == status, r.text
        single = stack.http.post("/api/events", json=event(), headers=headers)
        assert single.status_code == status
    assert stack.redis.xlen(keys.EVENTS_IN) == before
    r = post_batch(stack.http, [event()], {"X-API-Key": device})
    assert r.status_code == 200, r.text
    # A login (no key) is no way in either: devices write, people read.
    assert stack.http.post("/api/events/batch", json=[event()]).status_code == 401


def test_batch_uses_the_namespace_and_the_stream_shards(stack: Stack) -> None:
    from core.records import event_stream_for

    streams = ["ns1:events:in", "ns1:events:in:2"]
    env = dict(stack.env, REDIS_NAMESPACE="ns1", EVENT_STREAMS="events:in,events:in:2")
    app = AppProcess(env, stack.data / "app-ns.log").wait_ready()
    try:
        items = [event(source=f"gw-{i}") for i in range(20)]
        r = httpx.post(f"{app.base_url}/api/events/batch", json=items, headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        for item, res in zip(items, r.json()["results"], strict=True):
            stream = event_stream_for(item["source"], streams)
            assert json.loads(stored(stack.redis, res["id"], stream)) == item
        assert {event_stream_for(x["source"], streams) for x in items} == set(streams)
        single = httpx.post(f"{app.base_url}/api/events", json=items[0], headers=AUTH, timeout=10)
        assert stored(stack.redis, single.json()["id"], event_stream_for("gw-0", streams))
    finally:
        app.stop()

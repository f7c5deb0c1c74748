"""The events flow end to end against a real Redis, real Bytewax processes and the real lake."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx

from core import keys
from core.records import StoredEvent
from ops.processes import child_env
from storage.lake_maintenance import history, maintain
from tests.conftest import API_KEY, FlowProcess, wait_for
from tests.lake_helpers import Maintainer, event_rows, rows, scalar, windows_match_events


def ev(i: int, **kw) -> dict:
    e = {
        "source": f"sensor-{i % 7}",
        "type": ["GAS", "TEMP", "DOOR"][i % 3],
        "level": ["INFO", "WARN", "ERROR", "CRITICAL"][i % 4],
        "payload": {"i": i},
    }
    e.update(kw)
    return e


def xadd_many(r, events: list[dict], chunk: int = 1000) -> None:
    for start in range(0, len(events), chunk):
        pipe = r.pipeline(transaction=False)
        for e in events[start : start + chunk]:
            pipe.xadd(keys.EVENTS_IN, {"data": json.dumps(e)})
        pipe.execute()


def test_three_inputs_store_every_event_once_and_windows_sum(events_flow, app_process, r, data_dir):
    """10k events: 4k XADD, 3k HTTP, 3k PUBLISH → 10k rows; window counts sum to the rows."""
    wait_for(lambda: r.pubsub_numsub(keys.EVENTS_PUBLISH)[0][1] >= 1, 30, what="flow subscribed")
    xadd_many(r, [ev(i, source="stream") for i in range(4000)])
    with httpx.Client(base_url=app_process.base_url, headers={"X-API-Key": API_KEY}) as http:
        for i in range(3000):
            resp = http.post("/api/events", json=ev(i, source="http"))
            assert resp.status_code == 202, resp.text
    received = 0
    for i in range(3000):
        received += r.publish(keys.EVENTS_PUBLISH, json.dumps(ev(i, source="pubsub")))
    assert received == 3000  # every PUBLISH reached the flow's subscription

    wait_for(lambda: event_rows(data_dir) >= 10_000, 60, 0.5, "10k rows in the lake")
    got = dict(rows(data_dir, "SELECT source, count(*) FROM events GROUP BY 1"))
    assert got == {"stream": 4000, "http": 3000, "pubsub": 3000}
    assert scalar(data_dir, "SELECT count(DISTINCT (stream, id)) FROM events") == 10_000

    wait_for(
        lambda: scalar(data_dir, "SELECT coalesce(sum(count), 0) FROM event_counts") == 10_000,
        60,
        0.5,
        "window counts to sum to 10k",
    )
    assert windows_match_events(data_dir, 2) == []
    assert r.llen(keys.EVENTS_RECENT) == keys.RECENT_SIZE
    for doc in r.lrange(keys.EVENTS_RECENT, 0, -1):  # the published shape is the schema's
        StoredEvent.model_validate_json(doc)
    assert events_flow.stop() == 0


def test_kill_9_during_load_loses_and_duplicates_nothing(flow_env, r, data_dir):
    """200k events while the flow is killed with SIGKILL at random points and restarted —
    with lake maintenance (compaction, checkpoints, vacuum) running as often as it may and
    killed too, so crashes also land in the middle of it."""
    env = {
        **flow_env,
        "LAKE_FLUSH_ROWS": "20000",
    }
    events_flow = FlowProcess("events", env, data_dir / "flow.log").start()
    menv = child_env(events_flow.settings, flow_env["REDIS_URL"], **env)
    maintainer = Maintainer(menv, data_dir / "maintain.log", every=0.5).start()
    try:
        n = 200_000
        rng = random.Random(7)
        done = threading.Event()

        def produce() -> None:
            for start in range(0, n, 2000):
                now = datetime.now(UTC).isoformat()
                xadd_many(r, [ev(i, ts=now) for i in range(start, start + 2000)], chunk=2000)
                time.sleep(0.03)
            done.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        kills = 0
        while kills < 4:
            time.sleep(rng.uniform(0.8, 3.0))
            events_flow.kill()
            maintainer.kill()
            kills += 1
            events_flow.start()
            maintainer.start()
        producer.join(120)
        assert done.is_set()

        wait_for(lambda: event_rows(data_dir) >= n, 120, 0.5, "200k rows in the lake")
        time.sleep(2)  # a duplicate written late would show now
        assert event_rows(data_dir) == n
        assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == n
        wait_for(
            lambda: scalar(data_dir, "SELECT coalesce(sum(count), 0) FROM event_counts") == n,
            60,
            0.5,
            "window counts to sum to 200k",
        )
        assert windows_match_events(data_dir, 2) == []
        # No window was emitted twice: one on-time row per (window, type, level).
        twice = rows(
            data_dir,
            "SELECT window_start, type, level FROM event_count_parts "
            "WHERE NOT late GROUP BY ALL HAVING count(*) > 1",
        )
        assert twice == []
        assert events_flow.alive(), events_flow.log_tail()

        # Compaction ran (and was killed) during the load; once more, with vacuum of every
        # replaced file, while the flow runs: then count again.
        lake = events_flow.settings.lake
        assert "OPTIMIZE" in {h["operation"] for h in history(lake, "events")}
        maintain(lake, retention_h=0)
        assert event_rows(data_dir) == n
        assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == n
    finally:
        events_flow.kill()
        maintainer.kill()


def test_redis_restart_loses_nothing_and_flow_survives(redis_server, events_flow, r, data_dir):
    xadd_many(r, [ev(i) for i in range(3000)])
    wait_for(lambda: event_rows(data_dir) >= 3000, 60, 0.3, "first 3k rows")
    redis_server.stop()  # clean shutdown: AOF flushed
    time.sleep(2)
    assert events_flow.alive(), "the flow must ride out a Redis outage"
    redis_server.start()
    xadd_many(r, [ev(i) for i in range(3000, 6000)])
    wait_for(lambda: event_rows(data_dir) >= 6000, 60, 0.3, "all 6k rows after the restart")
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 6000
    assert events_flow.alive()


def test_late_events_land_in_late_records_and_corrections(events_flow, r, data_dir):
    """Events older than the allowed lateness are stored, counted as a correction, and listed."""
    now = datetime.now(UTC)
    xadd_many(r, [ev(i, ts=now.isoformat(), type="GAS", level="INFO") for i in range(20)])
    wait_for(
        lambda: scalar(data_dir, "SELECT coalesce(sum(count),0) FROM event_counts") == 20,
        30,
        0.3,
        "on-time window",
    )
    old = (now - timedelta(minutes=10)).isoformat()
    xadd_many(r, [ev(i, ts=old, type="GAS", level="INFO") for i in range(100, 105)])
    wait_for(lambda: scalar(data_dir, "SELECT count(*) FROM late_records") == 5, 30, 0.3, "late")
    assert scalar(data_dir, "SELECT count(*) FROM events") == 25
    late = rows(data_dir, "SELECT count, late_count FROM event_counts WHERE late_count > 0")
    assert late == [(5, 5)]
    assert windows_match_events(data_dir, 2) == []


def test_backlog_after_flow_downtime_is_not_late(events_flow, r, data_dir):
    """Events that queue up while the flow is down are counted on time, not as late."""
    now = datetime.now(UTC)
    xadd_many(r, [ev(i, ts=now.isoformat()) for i in range(50)])
    wait_for(lambda: event_rows(data_dir) >= 50, 30, 0.3, "first rows")
    assert events_flow.stop() == 0
    time.sleep(0.5)
    xadd_many(r, [ev(i, ts=datetime.now(UTC).isoformat()) for i in range(50, 100)])
    time.sleep(4)  # longer than window + lateness
    events_flow.start()
    wait_for(
        lambda: scalar(data_dir, "SELECT coalesce(sum(count),0) FROM event_counts") == 100,
        30,
        0.3,
        "all counted",
    )
    assert scalar(data_dir, "SELECT count(*) FROM late_records") == 0
    assert windows_match_events(data_dir, 2) == []


def test_rows_reach_the_lake_after_input_stops(flow_env, r, data_dir):
    """The last rows before a quiet period are written within LAKE_FLUSH_AGE_S, not held until
    more input or a stop (Bytewax snapshots a sink only in periods it receives items)."""
    env = {**flow_env, "LAKE_FLUSH_AGE_S": "1", "SNAPSHOT_INTERVAL_S": "1"}
    live = r.pubsub(ignore_subscribe_messages=True)
    live.subscribe(keys.LIVE_EVENT_COUNTS)
    flow = FlowProcess("events", env, data_dir / "flow.log").start()
    try:
        xadd_many(r, [ev(i) for i in range(3)])
        r.xadd(keys.EVENTS_IN, {"data": b"not json"})
        wait_for(lambda: event_rows(data_dir) == 3, 15, 0.2, "3 rows without further input")
        wait_for(
            lambda: scalar(data_dir, "SELECT count(*) FROM dead_letters") == 1,
            15,
            0.2,
            "the dead letter in the lake",
        )
        wait_for(
            lambda: scalar(data_dir, "SELECT coalesce(sum(count),0) FROM event_counts") == 3,
            15,
            0.2,
            "the closed window in the lake",
        )
        assert flow.alive()
    finally:
        flow.kill()


def test_every_stored_event_is_broadcast_once_in_order_as_stored(events_flow, r, data_dir):
    """`events:new` (sent by the source's read-ahead thread, outside the epochs) carries each
    valid event once, in stream order, exactly as the lake stores it; refused ones are not
    broadcast; `live:events` totals count the same events."""
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(keys.EVENTS_NEW, keys.LIVE_EVENTS)
    wait_for(lambda: r.exists(keys.heartbeat_key("events")), 60, 0.2, "the flow running")
    sent = []
    for i in range(600):
        e = ev(i, ts=(datetime.now(UTC) - timedelta(seconds=i % 5)).isoformat())
        if i % 50 == 7:
            e["level"] = "LOUD"  # refused: a dead letter, never broadcast
        if i % 3 == 0:
            del e["ts"]  # defaults to the time Redis accepted it
        sent.append((r.xadd(keys.EVENTS_IN, {"data": json.dumps(e)}).decode(), e))
        if i % 100 == 99:
            time.sleep(0.05)  # several batches, some of one event
    valid = [eid for eid, e in sent if e["level"] != "LOUD"]
    docs: list[bytes] = []
    totals = 0
    deadline = time.monotonic() + 60
    while (len(docs) < len(valid) or totals < len(valid)) and time.monotonic() < deadline:
        msg = ps.get_message(timeout=0.5)
        if msg is None:
            continue
        if msg["channel"] == keys.LIVE_EVENTS.encode():
            totals += json.loads(msg["data"])["total"]
        else:
            docs.append(msg["data"])
    got = [StoredEvent.model_validate_json(d) for d in docs]
    assert [g.id for g in got] == valid  # each once, in stream order
    wait_for(lambda: event_rows(data_dir) >= len(valid), 60, 0.5, "the rows in the lake")
    stored = {
        eid: (payload, ts, received)
        for eid, payload, ts, received in rows(
            data_dir, "SELECT id, payload, ts, received_at FROM events"
        )
    }
    assert len(stored) == len(valid)
    for g, d in zip(got, docs, strict=True):
        payload, ts, received = stored[g.id]
        assert json.loads(payload) == g.payload == json.loads(d)["payload"]
        assert (ts, received) == (g.ts, g.received_at)
    assert totals == len(valid)
    ps.close()

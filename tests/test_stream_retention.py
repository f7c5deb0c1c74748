"""The input stream is trimmed only behind old snapshots: bounded memory, nothing unread lost."""

from __future__ import annotations

import json

from core import keys
from tests.conftest import wait_for
from tests.lake_helpers import event_rows


def test_stream_is_trimmed_only_behind_old_snapshots(flow_env, data_dir, r):
    from tests.conftest import FlowProcess

    env = {**flow_env, "STREAM_RETENTION_S": "2"}
    flow = FlowProcess("events", env, data_dir / "flow.log").start()
    try:
        ev = {"source": "s", "type": "GAS", "level": "INFO", "payload": {}}
        pipe = r.pipeline()
        for _ in range(5000):
            pipe.xadd(keys.EVENTS_IN, {"data": json.dumps(ev)})
        pipe.execute()
        wait_for(lambda: event_rows(data_dir) == 5000, 30, 0.3, "rows in the lake")
        wait_for(lambda: r.xlen(keys.EVENTS_IN) < 5000, 30, 0.3, "the stream to be trimmed")
        assert event_rows(data_dir) == 5000
    finally:
        flow.kill()


def test_a_fast_stream_is_trimmed_in_one_call(r):
    """One trim removes everything behind the snapshot, not only Redis's default 10,000
    entries per approximate XTRIM (a stream fed faster than that per trim never shrank)."""
    import time

    from connectors.redis_streams import Retention

    pipe = r.pipeline(transaction=False)
    for i in range(1, 60_001):
        pipe.xadd(keys.EVENTS_IN, {"data": "{}"}, id=f"{i}-0")
    pipe.execute()
    retention = Retention(r, 0.05)
    retention.snapshot({keys.EVENTS_IN: "50000-0"})
    time.sleep(0.1)
    retention.snapshot({keys.EVENTS_IN: "60000-0"})
    left = r.xlen(keys.EVENTS_IN)
    assert 10_000 <= left <= 10_000 + 100  # whole nodes (100 entries) go; nothing after 50000
    first = r.xrange(keys.EVENTS_IN, count=1)[0][0]
    assert 49_900 < int(first.split(b"-")[0]) <= 50_000

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

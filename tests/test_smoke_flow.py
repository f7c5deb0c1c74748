import json

from tests.conftest import wait_for


def test_flow_starts_and_stores(events_flow, r, data_dir):
    for i in range(10):
        r.xadd("events:in", {"data": json.dumps({"source": "s", "type": "T", "level": "INFO", "payload": {"i": i}})})
    wait_for(lambda: r.llen("events:recent") == 10, 30, what="recent")
    assert events_flow.stop() == 0

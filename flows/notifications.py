"""The notifications flow: every notification attempt (`notify:attempts`) → lake `notifications`.

Run by `run.py up` / `demo`; alone: `uv run run.py flow notifications`.

```
notify:attempts (resumable) ─▶ validate ─┬─▶ lake notifications (exactly once)
                                         └─▶ lake dead_letters (an entry that is no attempt)
```

Why a flow and not the notifier writing Parquet: the lake's exactly-once mechanism (numbered
files + the source offset in one snapshot) is the Bytewax lake sink's; the notifier only
XADDs, which it does in the same Redis transaction that records the attempt's outcome.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.redis_sink import RedisCommandSink
from connectors.redis_streams import RedisStreamSource, StreamBatch
from core import keys
from core.notify_plan import AttemptRow
from core.records import dumps, reason_of
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from flows.lake_output import lake_output as flow_lake_output

FLOW_NAME = "notifications"


def parse_attempts(b: StreamBatch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(lake rows, dead-letter rows) of one batch."""
    rows, dead = [], []
    for eid, data in b.entries:
        try:
            rows.append(AttemptRow.model_validate_json(data or b"").model_dump())
        except ValueError as exc:
            dead.append(
                {"origin": b.stream, "origin_id": eid, "reason": reason_of(exc), "data": data,
                 "received_at": datetime.now(UTC)}
            )  # fmt: skip
    return rows, dead


def build_flow(s: Settings | None = None) -> Dataflow:
    s = s or get_settings()
    install_stop_handlers()
    url = s.effective_redis_url
    flow = Dataflow(FLOW_NAME)
    batches = op.input(
        "attempts",
        flow,
        RedisStreamSource(url, [keys.NOTIFY_ATTEMPTS], retention=s.stream_retention_s),
    )
    beats = op.input("heartbeat", flow, HeartbeatSource())
    lake_output = flow_lake_output(s, beats, prefix="notify.")
    parsed = op.map("parse", batches, parse_attempts)
    lake_output(
        "attempts_lake", op.filter_map("rows", parsed, lambda p: ("n", p[0]) if p[0] else None),
        "notifications",
    )  # fmt: skip
    lake_output(
        "dead_lake", op.filter_map("dead", parsed, lambda p: ("d", p[1]) if p[1] else None),
        "dead_letters",
    )  # fmt: skip
    beat_cmds = op.map(
        "beat_cmds",
        beats,
        lambda t: [
            ("SET", keys.heartbeat_key(FLOW_NAME), dumps({"at": t, "pid": os.getpid()}), "EX", 5)
        ],
    )
    op.output("redis_out", beat_cmds, RedisCommandSink(url))
    return flow


flow = build_flow()

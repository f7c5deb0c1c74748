"""The events flow: Redis (stream + pub/sub) → validate → lake, live channels, windowed counts.

Run it with `uv run run.py flow events` (recovery on; see run.py) or
`python -m bytewax.run flows.events:flow -r DIR -s 2 -b 0`.

```
pubsub (at-most-once) ─▶ XADD to events:in (the bridge: one door into the flows)
streams (resumable, read ahead in a thread: validate + pre-aggregate per batch, and send
         events:new / events:recent / live:events / events:dead at once, outside the epochs)
   ──▶ batch ──┬─▶ events (lake, exactly once)
               ├─▶ dead letters (lake dead_letters)
               └─▶ window groups ─▶ event-time windows ─┬─▶ event_counts
                                             late ──────┴─▶ late_records
```
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.redis_pubsub import RedisPubSubSource, bridge_commands
from connectors.redis_readahead import ReadAheadStreamSource
from connectors.redis_sink import RedisCommandSink
from connectors.redis_streams import StreamBatch
from core import keys
from core.records import dumps
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from flows.event_time import Late, TumblingCounter
from flows.events_fast import Batch, decode_batch
from flows.events_live import LiveSender
from flows.events_logic import late_rows, window_row
from flows.lake_output import lake_output as flow_lake_output

FLOW_NAME = "events"


def build_flow(s: Settings | None = None) -> Dataflow:
    s = s or get_settings()
    install_stop_handlers()
    url = s.effective_redis_url
    length = timedelta(seconds=s.window_s)
    lateness = timedelta(seconds=s.allowed_lateness_s)

    flow = Dataflow(FLOW_NAME)
    # Validation and the live outputs run in the source's read-ahead thread, outside the epoch
    # barrier (see connectors.redis_readahead): a broadcast never waits for a snapshot.
    sender = LiveSender(url)

    def prepare(b: StreamBatch) -> Batch:
        batch = decode_batch(b, s.max_event_bytes, length)
        sender.send(batch)
        batch.docs, batch.minutes = [], Counter()  # sent: not carried through the dataflow
        return batch

    streams = op.input(
        "streams",
        flow,
        ReadAheadStreamSource(url, keys.event_streams(s), prepare, retention=s.stream_retention_s),
    )
    # PUBLISHed events enter through the streams too (see connectors.redis_pubsub): the alarm
    # flow, which reads the streams, sees them exactly as XADDed ones.
    pubsub = op.input("pubsub", flow, RedisPubSubSource(url, keys.EVENTS_PUBLISH))
    write_streams = keys.event_write_streams(s)  # the shard of each message's source
    bridged = op.map("bridge", pubsub, lambda b: bridge_commands(b, write_streams))
    op.output("bridge_out", bridged, RedisCommandSink(url))

    beats = op.input("heartbeat", flow, HeartbeatSource())

    lake_output = flow_lake_output(s, beats)

    rows = op.filter_map("rows", streams, lambda b: (b.stream, b.columns()) if len(b) else None)
    lake_output("events_lake", rows, "events")
    dead = op.filter_map(
        "dead_rows", streams, lambda b: (b.stream, b.dead_rows) if b.dead_rows else None
    )
    lake_output("dead_lake", dead, "dead_letters")

    # Windowed counts per (type, level) on event time; ticks close windows while quiet.
    # One item per batch (its list of groups): fewer items through the runtime.
    groups = op.map("groups", streams, lambda b: ("all", b.groups))
    counter = TumblingCounter(length, lateness)
    window_in = op.merge(
        "window_in",
        groups,
        op.map("ticks_keyed", beats, lambda _t: ("all", [])),
    )
    results = op.stateful_flat_map("count_windows", window_in, counter.step)
    counts = op.map("count_rows", results, lambda kr: window_row(kr[1], length))
    lake_output(
        "counts_lake", op.map("counts_keyed", counts, lambda r: ("counts", [r])), "event_counts"
    )
    late = op.filter_map(
        "late_rows",
        results,
        lambda kr: ("late", late_rows(kr[1].key, kr[1].group)) if isinstance(kr[1], Late) else None,
    )
    lake_output("late_lake", late, "late_records")

    # Window counts and the heartbeat: one Redis pipeline per batch.
    live_counts = op.map(
        "live_counts", counts, lambda r: [("PUBLISH", keys.LIVE_EVENT_COUNTS, dumps(r))]
    )
    beat_cmds = op.map(
        "beat_cmds",
        beats,
        lambda t: [
            ("SET", keys.heartbeat_key(FLOW_NAME), dumps({"at": t, "pid": os.getpid()}), "EX", 5)
        ],
    )
    redis_cmds = op.merge("redis_cmds", live_counts, beat_cmds)
    op.output("live_out", redis_cmds, RedisCommandSink(url))
    gc.freeze()  # modules and settings: out of the collector's full passes
    return flow


flow = build_flow()

"""The alarm flow: events, gate scans, verdicts and people's commands → alarms with a lifecycle.

Run it with `uv run run.py flow alarms` (recovery on); `run.py up/demo` start it.

```
alarms:commands ─┐
events:in ───────┤ (one merged, resumable  ┌─▶ lake alarms (one row per transition, exactly once)
checkins:in(:{k})┤  source: one order)     ├─▶ alarms:active (HSET/HDEL), live:alarms
checkins:verdicts┘─▶ parse ─▶ rules + lifecycle (state) ─┼─▶ alarms:dead + lake dead_letters
ticks (250 ms) ──────────────┘                   └─▶ lake late_records (data too late to count)
```

Why one merged source: a person's ack and the readings that raise or clear the alarm must be
applied in the same order after a crash as before, so the replay decides the same transitions
(same alarm ids, same lake rows). The source never trims these streams (`retention=0`): the
events and check-in flows own them and trim them behind their own offsets; `alarms:commands`
is small (one entry per click).
"""

from __future__ import annotations

import os
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.redis_merged_streams import RedisMergedStreamSource
from connectors.redis_sink import RedisCommandSink
from core import keys
from core.records import dumps
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from core.venue import venue_for
from flows.alarms_inputs import parse_batch
from flows.alarms_logic import AlarmEngine, Tick
from flows.cached_state import cached_state_builder
from flows.lake_output import lake_output as flow_lake_output

FLOW_NAME = "alarms"


def build_flow(s: Settings | None = None) -> Dataflow:
    s = s or get_settings()
    install_stop_handlers()
    url = s.effective_redis_url
    engine = AlarmEngine(venue_for(s.venue_config))
    in_streams = keys.event_streams(s)
    event_streams = frozenset(in_streams)
    # every input shard of the scans (`checkins:in:{k}` with STREAM_SHARDS > 1), as the
    # deciders read them; in a Redis Cluster the source reads each slot's streams apart
    scan_streams = keys.checkin_streams(s.stream_shards)
    checkin_streams = frozenset(scan_streams)
    streams = [keys.ALARMS_COMMANDS, *in_streams, *scan_streams, keys.CHECKINS_VERDICTS]

    flow = Dataflow(FLOW_NAME)
    batches = op.input("in", flow, RedisMergedStreamSource(url, streams, retention=0))
    max_bytes = s.max_event_bytes
    inputs = op.map(
        "parse",
        batches,
        lambda b: ("all", parse_batch(b, event_streams, max_bytes, checkin_streams)),
    )
    beats = op.input("heartbeat", flow, HeartbeatSource())
    ticks = op.input("ticks", flow, HeartbeatSource(timedelta(milliseconds=250)))
    lake_output = flow_lake_output(s, beats, prefix="alarms.")

    steps = op.merge("steps", inputs, op.map("tick_keyed", ticks, lambda t: ("all", Tick(t))))
    outcomes = op.stateful_batch("alarms", steps, cached_state_builder(engine.step))
    outcomes = op.map("unkey", outcomes, lambda kv: kv[1])

    lake_output(
        "alarms_lake", op.filter_map("rows", outcomes, lambda o: ("a", o.rows) if o.rows else None),
        "alarms",
    )  # fmt: skip
    lake_output(
        "late_lake", op.filter_map("late", outcomes, lambda o: ("l", o.late) if o.late else None),
        "late_records",
    )  # fmt: skip
    lake_output(
        "dead_lake",
        op.filter_map(
            "dead_rows", outcomes, lambda o: ("d", [r for _, r in o.dead]) if o.dead else None
        ),
        "dead_letters",
    )
    cmds = op.filter_map(
        "redis_cmds", outcomes, lambda o: (o.redis + [c for c, _ in o.dead]) or None
    )
    beat_cmds = op.map(
        "beat_cmds",
        beats,
        lambda t: [
            ("SET", keys.heartbeat_key(FLOW_NAME), dumps({"at": t, "pid": os.getpid()}), "EX", 5)
        ],
    )
    op.output("redis_out", op.merge("redis_all", cmds, beat_cmds), RedisCommandSink(url))
    return flow


flow = build_flow()

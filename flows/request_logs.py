"""The activity log: `activity:in` + `video:commands` → the lake's `request_logs`, exactly once.

This module owns `request_logs`, the one table where who-did-what lands: dashboard connects,
room joins/leaves, `POST /logs`, capture commands, and the login audit (`auth.login.*`
records the dashboard writes to `activity:in`). It is the only writer of that table.

```
activity:in + video:commands (resumable, polled) ─▶ validate ─┬─▶ request_logs (exactly once)
                                                              └─▶ video:dead + dead_letters
```

Where it runs: as a branch of the video flow's dataflow (`flows/video.py` calls
`add_request_logs`), so it lives in the `flow video` process, with its offsets in that
flow's snapshots. That is a rule, not an accident: `ops.processes.FLOW_SPECS` lists
`request_logs` among the tables the video flow owns, and `run.py up` prints it. Why not a flow
of its own: the capture commands are video's input already, and a flow is one more Bytewax
process on a 2-core host; every caller that runs the video flow for this log (the tests, an
operator's `run.py flow video`) would have to learn to run a second one. The branch's step ids
are those it had inside `flows/video.py`, so existing snapshots resume where they were.

Exactly once: the streams are read as resumable partitions (the entry id in the snapshot) and
the rows go through `flows.lake_output` (`connectors.lake_sink`: numbered flushes, their number
in the same snapshot; a replay replaces the flushes it rewrites), so a restart after `kill -9`
neither loses nor doubles a row. Bad entries become dead letters with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from pydantic_core import to_json

from connectors.redis_streams import StreamBatch
from connectors.video_redis import PolledStreamSource
from core import keys
from core.records import MAX_LOG_BYTES, ActivityIn, CaptureCommand
from flows.dead_letters import DeadLetters, entry_data
from flows.events_logic import entry_time
from flows.lake_output import LakeOutput

TABLE = "request_logs"
#: The streams it reads, in partition order.
INPUTS = [keys.ACTIVITY_IN, keys.VIDEO_COMMANDS]


@dataclass(slots=True)
class ParsedLogs(DeadLetters):
    rows: list[dict[str, Any]] = field(default_factory=list)


def log_row(
    entry_id: str, origin: str, event: str, rec: ActivityIn | CaptureCommand, received: datetime
) -> dict[str, Any]:
    """One `request_logs` row (`core.contract.RequestLog`, metadata as JSON text)."""
    return {
        "id": entry_id,
        "origin": origin,
        "ts": rec.ts or received,
        "event": event,
        "client_id": rec.client_id,
        "ip": rec.ip,
        "user_agent": rec.user_agent,
        "room_id": rec.room_id,
        "camera_id": rec.camera_id,
        "metadata": to_json(rec.metadata).decode(),
        "received_at": received,
    }


def parse_log_batch(batch: StreamBatch, cameras: frozenset[str]) -> ParsedLogs:
    """`activity:in` and `video:commands` entries → `request_logs` rows; anything invalid
    (bad JSON, unknown fields, a command for a camera the venue file does not list) → a dead
    letter with the reason and the original bytes. Never raises for bad input."""
    out = ParsedLogs()
    for entry_id, data in batch.entries:
        received = entry_time(entry_id)
        try:
            data = entry_data(data, MAX_LOG_BYTES)
            if batch.stream == keys.VIDEO_COMMANDS:
                cmd = CaptureCommand.model_validate_json(data)
                if cmd.camera_id is not None and cmd.camera_id not in cameras:
                    known = ", ".join(sorted(cameras)) or "none"
                    raise ValueError(
                        f"unknown camera {cmd.camera_id!r} (the venue file lists: {known})"
                    )
                row = log_row(entry_id, batch.stream, f"capture.{cmd.action}", cmd, received)
            else:
                act = ActivityIn.model_validate_json(data)
                row = log_row(entry_id, batch.stream, act.event, act, received)
        except Exception as exc:  # every reason becomes a dead letter, never a crash
            out.refuse(keys.VIDEO_DEAD, exc, batch.stream, entry_id, data, received)
            continue
        out.rows.append(row)
    return out


def add_request_logs(
    flow: Dataflow,
    url: str,
    retention: float,
    cameras: frozenset[str],
    lake_output: LakeOutput,
) -> op.Stream:
    """Add the activity-log branch to `flow`: rows into `request_logs`, dead letters into
    `dead_letters`. Returns the stream of Redis commands for `video:dead` (the caller merges
    it into its Redis sink)."""
    batches = op.input("activity", flow, PolledStreamSource(url, INPUTS, retention=retention))
    parsed = op.map("parse_logs", batches, lambda b: (b.stream, parse_log_batch(b, cameras)))
    rows = op.filter_map("log_rows", parsed, lambda kp: (kp[0], kp[1].rows) if kp[1].rows else None)
    lake_output("logs_lake", rows, TABLE)
    dead_rows = op.filter_map(
        "dead_rows", parsed, lambda kp: (kp[0], kp[1].dead_rows) if kp[1].dead_rows else None
    )
    lake_output("dead_lake", dead_rows, "dead_letters")
    return op.filter_map("dead_cmds", parsed, lambda kp: kp[1].dead or None)

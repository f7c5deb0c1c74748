"""The video flow: RTSP cameras → one decode and one JPEG encode per frame → `video:<camera_id>`;
capture commands, camera status, per-minute camera statistics and the activity log.

Run it with `uv run run.py flow video` (recovery on) or
`python -m bytewax.run flows.video:flow -r DIR -s 2 -b 0`. Cameras come from the venue file
(`VENUE_CONFIG`), one source partition each.

```
cameras (1 partition each: capture thread + commands from video:commands)
  ├─ frames ─▶ resize + JPEG once ─▶ PUBLISH video:<camera_id> ──▶ dashboard hub ─▶ viewers
  │                               └─▶ frames/bytes out ─┐
  ├─ status ─▶ HSET video:status, PUBLISH live:cameras, │ replies, camera.error/recovered events
  └─ stats deltas (1 s) ────────────────────────────────┴─▶ per-minute windows ─▶ camera_stats
activity:in + video:commands (resumable) ─▶ validate ─┬─▶ request_logs (exactly once)
                                                      └─▶ video:dead + dead_letters
```
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.lake_sink import Compaction, LakeSink
from connectors.redis_sink import RedisCommandSink
from connectors.rtsp_camera import CameraSource, StatsDelta, StatusReport
from connectors.video_capture import CaptureOptions, Frame, configure_opencv
from connectors.video_redis import FramePublishSink, PolledStreamSource
from core import keys
from core.records import dumps
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from core.venue import venue_for
from flows.video_logic import (
    CameraWindows,
    FrameOut,
    encode_frame,
    parse_log_batch,
    status_commands,
)

FLOW_NAME = "video"
#: A statistics window is written this long after it ends (late 1-second deltas still count).
STATS_GRACE = timedelta(seconds=2)


def capture_options(s: Settings) -> CaptureOptions:
    return CaptureOptions(
        open_timeout_s=s.video_open_timeout_s,
        read_timeout_s=s.video_read_timeout_s,
        stall_s=s.video_stall_s,
        backoff_max_s=s.video_backoff_max_s,
        error_after=s.video_error_after,
    )


def build_flow(s: Settings | None = None) -> Dataflow:
    s = s or get_settings()
    install_stop_handlers()
    configure_opencv(s.video_ffmpeg_options)
    url = s.effective_redis_url
    venue = venue_for(s.venue_config)
    cams = {c.id: c for c in venue.cameras}
    camera_ids = frozenset(cams)
    sink_opts = {
        "flush_rows": s.lake_flush_rows,
        "flush_age": s.lake_flush_age_s,
        "compaction": Compaction(
            after_s=s.lake_compact_after_s,
            min_files=s.lake_compact_min_files,
            small_rows=s.lake_flush_rows,
            every_s=min(60.0, s.lake_compact_after_s),
        ),
    }

    flow = Dataflow(FLOW_NAME)
    beats = op.input("heartbeat", flow, HeartbeatSource())

    def lake_output(step: str, items: op.Stream, table: str, prefix: str = "") -> None:
        """Rows into a lake table, plus a tick per clock beat so aged rows get written."""
        sink = LakeSink(s.lake_dir, table, prefix=prefix, **sink_opts)
        ticks = op.flat_map(f"{step}_ticks", beats, lambda _t: sink.tick_items())
        op.output(step, op.merge(f"{step}_in", items, ticks), sink)

    # Cameras: frames out, once per frame whatever the number of viewers.
    items = op.input("cameras", flow, CameraSource(url, venue.cameras, capture_options(s)))

    def encode(f: Frame):
        cam = cams[f.camera_id]
        return encode_frame(f, cam.width, cam.height, cam.jpeg_quality)

    frames = op.filter_map("frames", items, lambda x: x if isinstance(x, Frame) else None)
    encoded = op.filter_map("encode", frames, encode)
    op.output("publish", encoded, FramePublishSink(url))

    # Status → Redis (state, live channel, replies, alarms).
    reports = op.filter_map("reports", items, lambda x: x if isinstance(x, StatusReport) else None)
    status_cmds = op.map("status_cmds", reports, status_commands)

    # Statistics: 1-second deltas and published frames, summed per camera and window.
    deltas = op.filter_map(
        "deltas", items, lambda x: (x.camera_id, x) if isinstance(x, StatsDelta) else None
    )
    outs = op.map(
        "frames_out",
        encoded,
        lambda e: (e.camera_id, FrameOut(e.camera_id, datetime.now(UTC), len(e.message))),
    )
    length = timedelta(seconds=s.video_stats_window_s)
    stats = op.stateful(
        "camera_windows",
        op.merge("stats_in", deltas, outs),
        lambda state: CameraWindows(length, STATS_GRACE, state),
    )
    lake_output(
        "stats_lake", op.map("stats_rows", stats, lambda kr: ("stats", [kr[1]])), "camera_stats"
    )

    # Activity log: activity:in and the capture commands, exactly once into request_logs.
    log_streams = PolledStreamSource(
        url, [keys.ACTIVITY_IN, keys.VIDEO_COMMANDS], retention=s.stream_retention_s
    )
    batches = op.input("activity", flow, log_streams)
    parsed = op.map("parse_logs", batches, lambda b: (b.stream, parse_log_batch(b, camera_ids)))
    rows = op.filter_map("log_rows", parsed, lambda kp: (kp[0], kp[1].rows) if kp[1].rows else None)
    lake_output("logs_lake", rows, "request_logs")
    dead_rows = op.filter_map(
        "dead_rows", parsed, lambda kp: (kp[0], kp[1].dead_rows) if kp[1].dead_rows else None
    )
    lake_output("dead_lake", dead_rows, "dead_letters", prefix="video")
    dead_cmds = op.filter_map("dead_cmds", parsed, lambda kp: kp[1].dead or None)

    beat_cmds = op.map(
        "beat_cmds",
        beats,
        lambda t: [
            ("SET", keys.heartbeat_key(FLOW_NAME), dumps({"at": t, "pid": os.getpid()}), "EX", 5)
        ],
    )
    redis_cmds = op.merge("redis_cmds", status_cmds, dead_cmds, beat_cmds)
    op.output("redis_out", redis_cmds, RedisCommandSink(url))
    return flow


flow = build_flow()

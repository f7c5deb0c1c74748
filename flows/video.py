"""The video flow: RTSP cameras → one decode and one JPEG encode per frame → `video:<camera_id>`;
capture commands, camera status, per-minute camera statistics — and, in the same process, the
activity log `request_logs` (`flows/request_logs.py` owns it; login audit rows go there too).

Run it with `uv run run.py flow video` (recovery on) or
`python -m bytewax.run flows.video:flow -r DIR -s 2 -b 0`. Cameras come from the venue file
(`VENUE_CONFIG`), one source partition each.

```
cameras: 1 partition each, owning the camera's capture and delivery threads
  │   capture thread: decode, fps cap, resize ─▶ delivery thread: JPEG once (`deliver`) ─▶
  │                                                 PUBLISH video:<camera_id> ─▶ dashboard hub
  ├─ commands (video:commands) ─▶ start / stop / status, applied by the camera's partition
  ├─ status ─▶ HSET video:status, PUBLISH live:cameras, replies, camera.error/recovered events
  └─ stats deltas (1 s) ─▶ per-minute windows ─▶ lake camera_stats
flows/request_logs.py, a branch in this process (the table's owner; why: its docstring):
activity:in + video:commands (resumable) ─▶ validate ─┬─▶ request_logs (exactly once)
                                                      └─▶ video:dead + dead_letters
```

The pixels do not pass through the Bytewax worker: its recovery commits (every
`SNAPSHOT_INTERVAL_S`) paused it 136-344 ms under load here, and every frame behind such a pause
would freeze (see `connectors.video_capture`). Bytewax runs the capture (one partition per
camera, commands, watchdog, status, statistics, the activity log, recovery); `deliver` below
is the one place a frame is encoded and published.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.redis_sink import RedisCommandSink
from connectors.rtsp_camera import CameraSource, StatsDelta, StatusReport
from connectors.video_capture import CaptureOptions, Frame, configure_opencv
from connectors.video_redis import FramePublisher
from core import keys
from core.records import dumps
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from core.venue import venue_for
from flows.lake_output import lake_output as flow_lake_output
from flows.request_logs import add_request_logs
from flows.video_logic import CameraWindows, encode_frame, status_commands

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
    if not logging.getLogger().handlers:  # its own process: say what the cameras do
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    configure_opencv(s.video_ffmpeg_options)
    url = s.effective_redis_url
    venue = venue_for(s.venue_config)
    cams = {c.id: c for c in venue.cameras}
    camera_ids = frozenset(cams)

    flow = Dataflow(FLOW_NAME)
    beats = op.input("heartbeat", flow, HeartbeatSource())
    # File names prefixed: `dead_letters` is shared with the other flows.
    lake_output = flow_lake_output(s, beats, prefix="video.")

    # Cameras: each frame encoded and published once, whatever the number of viewers.
    publisher = FramePublisher(url)

    def deliver(f: Frame) -> int | None:
        cam = cams[f.camera_id]
        enc = encode_frame(f, cam.width, cam.height, cam.jpeg_quality)
        if enc is None or not publisher.publish(enc.channel, enc.message):
            return None
        return len(enc.message)

    source = CameraSource(url, venue.cameras, capture_options(s), deliver)
    items = op.input("cameras", flow, source)

    # Status → Redis (state, live channel, replies, alarms).
    reports = op.filter_map("reports", items, lambda x: x if isinstance(x, StatusReport) else None)
    status_cmds = op.map("status_cmds", reports, status_commands)

    # Statistics: 1-second deltas summed per camera and window.
    deltas = op.filter_map(
        "deltas", items, lambda x: (x.camera_id, x) if isinstance(x, StatsDelta) else None
    )
    length = timedelta(seconds=s.video_stats_window_s)
    stats = op.stateful(
        "camera_windows", deltas, lambda state: CameraWindows(length, STATS_GRACE, state)
    )
    lake_output(
        "stats_lake", op.map("stats_rows", stats, lambda kr: ("stats", [kr[1]])), "camera_stats"
    )

    # The activity log (`request_logs`, incl. the login audit) runs in this flow's process as
    # a branch of its own module: `flows/request_logs.py` owns that table and says why here.
    dead_cmds = add_request_logs(flow, url, s.stream_retention_s, camera_ids, lake_output)

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

"""The video flow's logic as plain functions (and one window class), so the flow, the tests and
the benchmark's baseline run the very same code.

- `encode_jpeg`: JPEG encode (resized to fit the camera's target box, never upscaled, aspect
  kept) — once per frame per camera, whatever the number of viewers.
- `status_commands`: a status report → Redis (state hash, live channel, replies, alarms).
- `CameraWindows`: per-camera statistics summed into fixed windows for `camera_stats`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
from bytewax.operators import StatefulLogic
from pydantic_core import to_json

from connectors.rtsp_camera import StatsDelta, StatusReport
from connectors.video_capture import Frame, shrink
from connectors.video_redis import EncodedFrame
from core import keys
from core.records import FrameHeader
from storage.tables import CAMERA_STATS

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- frames ------------------------------------------------------------------------------------


def encode_jpeg(
    image: np.ndarray, max_w: int, max_h: int, quality: int
) -> tuple[bytes, int, int] | None:
    """(JPEG bytes, width, height) of the image resized to fit the box (the capture thread has
    normally done that already), or None if it cannot be encoded."""
    image = shrink(image, max_w, max_h)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return None
    h, w = image.shape[:2]
    return buf.tobytes(), w, h


def encode_frame(frame: Frame, max_w: int, max_h: int, quality: int) -> EncodedFrame | None:
    """A decoded frame → the message published on `video:<camera_id>` (header + JPEG).

    A frame OpenCV cannot encode is skipped and logged, never raised: one bad frame must not
    stop the flow or the other cameras."""
    try:
        out = encode_jpeg(frame.image, max_w, max_h, quality)
    except cv2.error as exc:
        log.warning(
            "camera %s: frame %d not encoded (%s); skipped", frame.camera_id, frame.seq, exc
        )
        return None
    if out is None:
        log.warning("camera %s: frame %d not encoded; skipped", frame.camera_id, frame.seq)
        return None
    jpeg, w, h = out
    header = FrameHeader(
        seq=frame.seq, captured_at=frame.captured_at, encoded_at=time.time(), width=w, height=h
    )
    return EncodedFrame(
        frame.camera_id,
        keys.video_channel(frame.camera_id),
        header.pack() + jpeg,
        frame.captured_at,
    )


# --- status ------------------------------------------------------------------------------------


def _alarm(camera_id: str, type_: str, level: str, payload: dict[str, Any]) -> tuple:
    """An event for `events:in` (the alarms of issue 5 read camera.error / camera.recovered)."""
    doc = {
        "source": camera_id,
        "type": type_,
        "level": level,
        "payload": payload,
        "ts": datetime.now(UTC),
    }
    return ("XADD", keys.EVENTS_IN, "*", "data", to_json(doc))


def status_commands(report: StatusReport) -> list[tuple]:
    """Redis commands for one status report: the state hash, the live channel, any replies a
    `status` command asked for, and an alarm event on entering or leaving `error` (and
    `camera.recovered` when a camera first streams after a start, to clear an alarm that the
    previous run raised)."""
    st = report.status
    doc = st.model_dump_json()
    cmds: list[tuple] = [
        ("HSET", keys.VIDEO_STATUS, st.camera_id, doc),
        ("PUBLISH", keys.LIVE_CAMERAS, doc),
    ]
    for key in report.reply_to:
        cmds.append(("RPUSH", key, doc))
        cmds.append(("EXPIRE", key, keys.VIDEO_REPLY_TTL_S))
    if st.state == "error" and report.previous_state != "error":
        payload = {"state": st.state, "error": st.error_message, "rtsp_url": st.rtsp_url}
        cmds.append(_alarm(st.camera_id, "camera.error", "ERROR", payload))
    elif st.state == "streaming" and (report.previous_state == "error" or report.first_streaming):
        after = "error" if report.previous_state == "error" else "start"
        payload = {"state": st.state, "rtsp_url": st.rtsp_url, "after": after}
        cmds.append(_alarm(st.camera_id, "camera.recovered", "INFO", payload))
    return cmds


# --- per-camera statistics windows -------------------------------------------------------------


#: The counters a window sums, derived from the lake table (its integer and float columns; the
#: `StatsDelta` of each second has an attribute of each name).
SUMS: tuple[str, ...] = tuple(f.name for f in CAMERA_STATS.schema if pa.types.is_integer(f.type))
FLOATS: tuple[str, ...] = tuple(f.name for f in CAMERA_STATS.schema if pa.types.is_floating(f.type))


class CameraWindows(StatefulLogic[StatsDelta, dict[str, Any], dict[datetime, dict[str, Any]]]):
    """Sums one camera's `StatsDelta`s into tumbling windows of `length` (by the time each was
    measured) and emits a `camera_stats` row once a window is `grace` past
    its end. At the end of input (the flow stops) open windows are emitted as parts and
    forgotten: a restart in the same minute adds another part, which the view sums."""

    def __init__(
        self,
        length: timedelta,
        grace: timedelta,
        state: dict[datetime, dict[str, Any]] | None = None,
    ):
        self.length, self.grace = length, grace
        self.windows: dict[datetime, dict[str, Any]] = dict(state or {})

    def _start(self, at: datetime) -> datetime:
        return EPOCH + ((at - EPOCH) // self.length) * self.length

    def _acc(self, camera_id: str, at: datetime) -> dict[str, Any]:
        ws = self._start(at)
        acc = self.windows.get(ws)
        if acc is None:
            acc = {"camera_id": camera_id, **dict.fromkeys(SUMS, 0), **dict.fromkeys(FLOATS, 0.0)}
            self.windows[ws] = acc
        return acc

    def on_item(self, value: StatsDelta) -> tuple[list[dict[str, Any]], bool]:
        acc = self._acc(value.camera_id, value.at)
        for k in SUMS:
            acc[k] += getattr(value, k)
        for k in FLOATS:
            acc[k] += getattr(value, k)
        return self._close(datetime.now(UTC))

    def _row(self, ws: datetime, acc: dict[str, Any]) -> dict[str, Any]:
        return {
            **acc,
            "window_start": ws,
            "window_end": ws + self.length,
            "emitted_at": datetime.now(UTC),
        }

    def _close(self, now: datetime) -> tuple[list[dict[str, Any]], bool]:
        due = [ws for ws in self.windows if ws + self.length + self.grace <= now]
        rows = [self._row(ws, self.windows.pop(ws)) for ws in sorted(due)]
        return rows, not self.windows

    def on_notify(self) -> tuple[list[dict[str, Any]], bool]:
        return self._close(datetime.now(UTC))

    def on_eof(self) -> tuple[list[dict[str, Any]], bool]:
        rows = [self._row(ws, acc) for ws, acc in sorted(self.windows.items())]
        self.windows.clear()
        return rows, StatefulLogic.DISCARD

    def notify_at(self) -> datetime | None:
        if not self.windows:
            return None
        return min(self.windows) + self.length + self.grace

    def snapshot(self) -> dict[datetime, dict[str, Any]]:
        return {ws: dict(acc) for ws, acc in self.windows.items()}

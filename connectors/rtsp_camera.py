"""A Bytewax source with one partition per camera: its capture, commands, status, statistics.

Each partition owns one `CameraCapture` (a capture thread doing the blocking OpenCV reads and a
delivery thread that encodes and publishes each frame once, on `video:<camera_id>`; see
`connectors.video_capture` for why the pixels do not wait for the Bytewax worker). The
partition never blocks while a capture runs: every `poll` (50 ms) it runs the watchdog and
emits what changed. When no camera of the worker captures (all stopped, or never started)
there is nothing to watch, and each partition instead WAITS on the command stream (`XREAD
BLOCK`, at most `idle_block` = 250 ms and never past its next status report) and asks to be
called again at once: a command wakes the waiting partition the moment it is added (the others
then find it without waiting). Measured on the idle video flow, one stopped camera, CPU of the
flow process over 20 s (`uv run python -m bench.video --idle`): polling (50 ms watchdog, 100 ms
command `XREAD`, 50 ms activity polls) 1.07-1.26 s = 5-6 % of a core; polling every 0.5-1 s
still 2.6-3.4 %; blocking but asking to wake 5 ms later 11 % (Bytewax does not call an input
whose epoch is ahead of the others', and keeps waking it meanwhile); blocking and asking to be
called at once (as `RedisStreamSource` does when drained) 0.10 s = 0.5 %.

It also obeys the capture commands addressed to its camera. It reads `video:commands` itself
(a few entries, every `command_poll`, or waiting on it while idle), so a command changes the
capture in the same process without any feedback edge in the dataflow; its snapshot is whether
capture is on and the last command ID it applied, so after a crash or restart a stopped camera
stays stopped and the commands sent meanwhile are applied in order. A fresh partition (no
snapshot) starts after the newest existing command and follows the venue file's `autostart`.

Items: `StatusReport` (on every state change, after each command, and once a second) and
`StatsDelta` (once a second, for the per-minute statistics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from pydantic import ValidationError

from connectors.video_capture import CameraCapture, CaptureOptions, Counters, Deliver
from core import keys
from core.records import CameraStatus, CaptureCommand
from core.redis_conn import connect
from core.shutdown import stop_requested
from core.venue import Camera

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StatusReport:
    status: CameraStatus
    previous_state: str
    reply_to: tuple[str, ...] = ()
    #: The camera streams for the first time since this process started: an alarm raised
    #: before a restart (`camera.error`) would otherwise never see its `camera.recovered`.
    first_streaming: bool = False


@dataclass(slots=True)
class StatsDelta:
    """What happened to one camera since the previous delta (about a second)."""

    camera_id: str
    at: datetime
    frames_in: int
    frames_out: int
    bytes_out: int
    dropped: int
    bad_frames: int
    reconnects: int
    errors: int
    uptime_s: float
    observed_s: float


VideoItem = StatusReport | StatsDelta


@dataclass(frozen=True, slots=True)
class CameraPartState:
    active: bool
    last_command_id: str | None


def waiting_on_commands(capture_active: bool, state: str, reported_state: str) -> bool:
    """True when a camera's partition has nothing to watch but its commands: its capture is off
    and its last state change has been reported. It then waits on the command stream instead
    of waking every `poll` (see the module docstring)."""
    return not capture_active and state == reported_state


def _epoch(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class _CameraPartition(StatefulSourcePartition[VideoItem, CameraPartState]):
    def __init__(
        self,
        url: str,
        camera: Camera,
        opts: CaptureOptions,
        deliver: Deliver,
        state: CameraPartState | None,
        poll: timedelta,
        command_poll: float,
        report_every: float,
        waiting: dict[str, bool],
        idle_block: timedelta = timedelta(milliseconds=250),
    ):
        self._cam = camera
        self._idle_block_ms = max(1, int(idle_block.total_seconds() * 1000))
        #: camera id → nothing to watch but its commands, for the cameras of this source (shared
        #: by its partitions): a partition waits on Redis only when all of them are idle.
        self._all_waiting = waiting
        self._waiting = waiting[camera.id] = False
        self._r = connect(url, socket_timeout=2, socket_connect_timeout=2)
        self._poll, self._command_poll, self._report_every = poll, command_poll, report_every
        self._capture = CameraCapture(
            camera.id, camera.rtsp_url, camera.fps, opts, deliver, (camera.width, camera.height)
        )
        self._active = state.active if state else camera.autostart
        self._last_cmd = state.last_command_id if state else self._newest_command_id()
        self._next_cmd_at = 0.0
        self._redis_down = False
        self._last_state = self._capture.state
        self._streamed = False
        self._next_report = 0.0
        self._prev = (time.monotonic(), Counters())
        self._fps = (0.0, 0.0)
        if self._active:
            self._capture.start()
        elif state is not None:
            self._capture.stop()
            self._capture.state = "stopped"

    def _newest_command_id(self) -> str | None:
        """Start after the newest command (None: Redis is down; resolved at the first read)."""
        try:
            newest = self._r.xrevrange(keys.VIDEO_COMMANDS, count=1)
        except redis.exceptions.RedisError:
            return None
        return newest[0][0].decode() if newest else "0-0"

    # --- commands ------------------------------------------------------------------------------

    def _read_commands(self, block_ms: int | None = None) -> list[tuple[str, CaptureCommand]]:
        """The commands for this camera after the last one applied; with `block_ms`, wait up to
        that long for one to arrive (the partition's idle wait)."""
        try:
            if self._last_cmd is None:
                self._last_cmd = self._newest_command_id()
                if self._last_cmd is None:
                    raise redis.exceptions.ConnectionError("no answer")
            reply = self._r.xread({keys.VIDEO_COMMANDS: self._last_cmd}, count=100, block=block_ms)
        except redis.exceptions.RedisError as exc:
            if not self._redis_down:
                log.warning("camera %s: cannot read commands (%s); retrying", self._cam.id, exc)
                self._redis_down = True
            self._next_cmd_at = time.monotonic() + 1.0
            return []
        self._redis_down = False
        out = []
        for _, entries in reply:
            for eid, fields in entries:
                self._last_cmd = eid.decode()
                try:
                    cmd = CaptureCommand.model_validate_json(fields.get(b"data") or b"")
                except ValidationError:
                    continue  # the flow's log path dead-letters it with the reason
                if cmd.camera_id == self._cam.id or (
                    cmd.camera_id is None and cmd.action == "status"
                ):
                    out.append((self._last_cmd, cmd))
        return out

    def _apply(self, cmd: CaptureCommand) -> None:
        who = cmd.client_id or cmd.ip or "a client"
        if cmd.action == "start":
            self._active = True
            if not self._capture.active:
                log.info("camera %s: capture started by %s", self._cam.id, who)
            self._capture.start()
        elif cmd.action == "stop":
            self._active = False
            if self._capture.active:
                log.info("camera %s: capture stopped by %s", self._cam.id, who)
            self._capture.stop()

    # --- reports -------------------------------------------------------------------------------

    def _status(self, now: float) -> tuple[CameraStatus, StatsDelta | None]:
        state, error, since, last_frame, c = self._capture.snapshot()
        t0, prev = self._prev
        delta = None
        if now - t0 >= self._report_every * 0.9:
            dt = now - t0
            self._fps = (
                round((c.frames_in - prev.frames_in) / dt, 2),
                round((c.frames_out - prev.frames_out) / dt, 2),
            )
            delta = StatsDelta(
                self._cam.id,
                datetime.now(UTC),
                frames_in=c.frames_in - prev.frames_in,
                frames_out=c.frames_out - prev.frames_out,
                bytes_out=c.bytes_out - prev.bytes_out,
                dropped=c.dropped - prev.dropped,
                bad_frames=c.bad_frames - prev.bad_frames,
                reconnects=c.reconnects - prev.reconnects,
                errors=c.errors - prev.errors,
                uptime_s=c.uptime_s - prev.uptime_s,
                observed_s=dt,
            )
            self._prev = (now, c)
        streaming = state == "streaming"
        status = CameraStatus(
            camera_id=self._cam.id,
            name=self._cam.name,
            state=state,  # type: ignore[arg-type]
            is_active=self._capture.active,
            rtsp_url=self._capture.safe_url,
            error_message=error,
            fps_in=self._fps[0] if streaming else 0.0,
            fps_out=self._fps[1] if streaming else 0.0,
            frames_in=c.frames_in,
            frames_out=c.frames_out,
            dropped=c.dropped,
            bad_frames=c.bad_frames,
            reconnects=c.reconnects,
            last_frame_at=_epoch(last_frame),
            state_since=_epoch(since),
            target_fps=self._cam.fps,
            width=self._cam.width,
            height=self._cam.height,
            updated_at=datetime.now(UTC),
        )
        return status, delta

    def next_batch(self) -> list[VideoItem]:
        if stop_requested():
            raise StopIteration
        now = time.monotonic()
        out: list[VideoItem] = []
        replies: list[str] = []
        forced = False
        if now >= self._next_cmd_at:
            self._next_cmd_at = now + self._command_poll
            block = None
            if self._waiting and all(self._all_waiting.values()):  # no longer than to the report
                block = max(1, min(self._idle_block_ms, int((self._next_report - now) * 1000)))
            for _, cmd in self._read_commands(block):
                self._apply(cmd)
                forced = True
                if cmd.reply_to:
                    replies.append(cmd.reply_to)
        self._capture.check()
        state = self._capture.state
        if forced or state != self._last_state or now >= self._next_report:
            status, delta = self._status(now)
            first = status.state == "streaming" and not self._streamed
            self._streamed = self._streamed or first
            out.append(StatusReport(status, self._last_state, tuple(replies), first))
            if delta is not None:
                out.append(delta)
            self._last_state = status.state
            if now >= self._next_report:
                self._next_report = now + self._report_every
        self._all_waiting[self._cam.id] = waiting_on_commands(
            self._capture.active, state, self._last_state
        )
        self._waiting = all(self._all_waiting.values())
        if self._waiting and not self._redis_down:
            self._next_cmd_at = time.monotonic()  # the next call waits in XREAD BLOCK
        return out

    def next_awake(self) -> datetime | None:
        if self._waiting:
            if not self._redis_down:
                return None  # at once: next_batch waits on the command stream
            return datetime.now(UTC) + timedelta(seconds=self._next_cmd_at - time.monotonic())
        return datetime.now(UTC) + self._poll

    def snapshot(self) -> CameraPartState:
        return CameraPartState(self._active, self._last_cmd)

    def close(self) -> None:
        self._capture.close()
        self._r.close()


class CameraSource(FixedPartitionedSource[VideoItem, CameraPartState]):
    """One partition per camera of the venue file (its id is the partition key)."""

    def __init__(
        self,
        url: str,
        cameras: list[Camera],
        opts: CaptureOptions,
        deliver: Deliver,
        poll: timedelta = timedelta(milliseconds=50),
        command_poll: float = 0.1,
        report_every: float = 1.0,
    ):
        """`deliver(frame)` encodes and publishes a frame (called on each camera's delivery
        thread) and returns the bytes published, or None."""
        self.url, self.opts, self.deliver = url, opts, deliver
        self.cameras = {c.id: c for c in cameras}
        self.poll, self.command_poll, self.report_every = poll, command_poll, report_every
        self._waiting: dict[str, bool] = {}

    def list_parts(self) -> list[str]:
        return list(self.cameras)

    def build_part(
        self, step_id: str, for_part: str, resume_state: CameraPartState | None
    ) -> _CameraPartition:
        return _CameraPartition(
            self.url,
            self.cameras[for_part],
            self.opts,
            self.deliver,
            resume_state,
            self.poll,
            self.command_poll,
            self.report_every,
            self._waiting,
        )

"""One camera's capture: OpenCV (FFmpeg backend) in a thread, reconnecting for as long as it takes.

Why threads: `VideoCapture.grab()` blocks until the camera sends a frame, and a Bytewax
partition's `next_batch` must never block. The capture thread decodes, applies the fps cap and
shrinks each frame to the target size (OpenCV releases the GIL), then offers it to the camera's
`FramePump`, whose own thread encodes and publishes it (`deliver`, given by the flow). The pump
holds `PUMP_SLOTS` frames: two absorb the bursts a network delivers; when delivery falls further
behind, the oldest is dropped (counted as `dropped`), so a slow consumer skips frames instead of
queueing them and latency stays bounded.

Why frames do not pass through the Bytewax worker: every `SNAPSHOT_INTERVAL_S` the worker
commits its recovery store, and under load that pause measured 136-344 ms here (every 2 s, no
Python code involved) — every frame behind it froze. The partition owns the capture (starts and
stops it on commands, watches it, reports its status and statistics, keeps its on/off state in
the snapshot); the live pixels go straight from the camera's threads to Redis.

Why generations: a camera that freezes with its connection open makes `grab()` block for
several read timeouts, and that capture never recovers even when the camera resumes (measured
with a frozen test camera, as `tests/test_video_flow.py` freezes one). `release()` from another
thread while `grab()` blocks is unsafe, so the watchdog (`check()`, called by the partition)
*abandons* the stuck thread instead: it starts a new generation with a new connection, and the
old thread releases its capture and exits as soon as its blocking call returns. Every thread
only ever touches its own `VideoCapture`.

States: `idle` (never started) → `connecting` → `streaming`; a lost stream → `reconnecting`;
`error_after` failed attempts in a row → `error` (with the reason; retries go on with backoff
capped at `backoff_max_s`, so frames flow again within that plus an open once the camera is
back); `stop()` → `stopped`.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: Consecutive failed `grab()`s that end a stream (a killed server fails at once, every time).
GRAB_FAILURES_END_STREAM = 3
#: Consecutive undecodable frames that end a stream (reopened like a lost camera).
BAD_FRAMES_END_STREAM = 25
FIRST_BACKOFF_S = 0.25
#: Frames waiting for delivery before the oldest is dropped (bounded latency and memory).
PUMP_SLOTS = 2


#: Encodes and publishes one frame; returns the bytes published, or None if it was not.
Deliver = Callable[["Frame"], int | None]


class FramePump:
    """Delivers one camera's frames on its own thread, oldest first, at most `PUMP_SLOTS`
    waiting: the capture thread never waits for encoding or Redis."""

    def __init__(self, camera_id: str, deliver: Deliver, done: Callable[[int | None], None]):
        self.camera_id, self._deliver, self._done = camera_id, deliver, done
        self._slots: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name=f"pump-{camera_id}", daemon=True)
        self._thread.start()

    def offer(self, frame: Frame) -> int:
        """Queue a frame; return how many older frames were dropped to make room (0 or 1)."""
        with self._cond:
            dropped = 0
            if len(self._slots) >= PUMP_SLOTS:
                self._slots.popleft()
                dropped = 1
            self._slots.append(frame)
            self._cond.notify()
        return dropped

    def clear(self) -> int:
        with self._cond:
            n = len(self._slots)
            self._slots.clear()
        return n

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slots or self._closed)
                if self._closed:
                    return
                frame = self._slots.popleft()
            try:
                n = self._deliver(frame)
            except Exception:  # a bad frame must not end the camera: log (rarely) and go on
                self._failures += 1
                if self._failures == 1 or self._failures % 100 == 0:
                    log.exception("camera %s: frame %d not delivered", self.camera_id, frame.seq)
                n = None
            self._done(n)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(2)


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    stall_s: float = 3.0
    backoff_max_s: float = 2.0
    error_after: int = 3


@dataclass(slots=True)
class Frame:
    """A decoded frame (BGR, camera resolution) and when OpenCV handed it over."""

    camera_id: str
    seq: int
    image: np.ndarray
    captured_at: float  # epoch seconds


@dataclass(slots=True)
class Counters:
    """Running totals since the capture object was made (the partition reports deltas)."""

    frames_in: int = 0  # decoded from the camera (including ones skipped for the fps cap)
    frames_out: int = 0  # encoded and published
    bytes_out: int = 0
    dropped: int = 0  # not published: pushed out of a full pump, or delivery failed
    bad_frames: int = 0
    reconnects: int = 0  # streams lost (ended, stalled) and reopened
    errors: int = 0  # failed connection attempts
    uptime_s: float = 0.0  # time spent streaming

    def copy(self) -> Counters:
        return Counters(
            self.frames_in, self.frames_out, self.bytes_out, self.dropped, self.bad_frames,
            self.reconnects, self.errors, self.uptime_s,
        )  # fmt: skip


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (status, logs and errors show it)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def diagnose(url: str, timeout: float) -> str:
    """Why an open probably failed, in words (OpenCV itself only says "not opened")."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (322 if parts.scheme == "rtsps" else 554)
    except ValueError:
        return "the URL cannot be parsed"
    if not host:
        return "the URL names no host"
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror:
        return f"unknown host {host!r}"
    except ConnectionRefusedError:
        return f"connection refused by {where} (nothing listens there)"
    except TimeoutError:
        return f"no answer from {where} within {timeout:.0f}s"
    except OSError as exc:
        return f"cannot reach {where}: {exc.strerror or exc}"
    return f"{where} accepts connections but the stream did not open (wrong path, credentials?)"


def fit(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """The size that fits (width, height) into (max_w, max_h), keeping the aspect, no upscaling."""
    scale = min(max_w / width, max_h / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(img: np.ndarray, max_w: int, max_h: int) -> np.ndarray:
    """The image resized to fit the box (unchanged if it already fits)."""
    h, w = img.shape[:2]
    tw, th = fit(w, h, max_w, max_h)
    if (tw, th) == (w, h):
        return img
    return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)


def valid_image(img: object) -> bool:
    """A frame worth encoding: a non-empty 8-bit image with 1, 3 or 4 channels."""
    return (
        isinstance(img, np.ndarray)
        and img.dtype == np.uint8
        and img.ndim in (2, 3)
        and img.shape[0] > 0
        and img.shape[1] > 0
        and (img.ndim == 2 or img.shape[2] in (1, 3, 4))
    )


class RateGate:
    """Passes at most `fps` frames a second on average from a faster camera: a token bucket
    holding half a second of frames (at least 2), so a camera at the target rate keeps every
    frame despite arrival jitter and the bursts after a stall, and a camera at twice the rate
    keeps every other one."""

    def __init__(self, fps: float):
        self.fps, self.burst = fps, max(2.0, fps / 2)
        self.tokens, self.last = self.burst, None

    def due(self, t: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (t - self.last) * self.fps)
        self.last = t
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def configure_opencv(ffmpeg_options: str) -> None:
    """Set FFmpeg's capture options and quiet its logging, once, before any capture thread runs
    (OpenCV reads the environment at each open, and setenv is not thread-safe).

    FFmpeg's own messages ("Connection refused" every retry, forever) are silenced unless
    `OPENCV_FFMPEG_LOGLEVEL` is set: the capture logs each failure once, with a diagnosis."""
    if ffmpeg_options:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = ffmpeg_options
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def open_capture(url: str, opts: CaptureOptions) -> cv2.VideoCapture | None:
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(opts.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(opts.read_timeout_s * 1000),
        cv2.CAP_PROP_N_THREADS, 1,  # one frame less decoder buffering (measured 88 vs 155 ms)
    ]  # fmt: skip
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if cap.isOpened():
        return cap
    cap.release()
    return None


@dataclass(eq=False)
class _Run:
    """One generation of the capture thread; `cancelled` orphans it."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class CameraCapture:
    """Capture of one camera; thread-safe. See the module docstring."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        fps: float,
        opts: CaptureOptions,
        deliver: Deliver,
        max_size: tuple[int, int] | None = None,
    ):
        """`deliver` encodes and publishes a frame (on the pump's thread); `max_size`: frames
        are shrunk to fit it in the capture thread, so only small frames wait for delivery."""
        self.camera_id, self.url, self.opts, self.max_size = camera_id, url, opts, max_size
        self.safe_url = redact_url(url)
        self._gate = RateGate(fps)
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._orphans: list[threading.Thread] = []
        self._pump = FramePump(camera_id, deliver, self._delivered)
        self._seq = 0
        self.counters = Counters()
        self.state = "idle"
        self.error_message: str | None = None
        self.state_since = time.time()
        self.last_frame_at: float | None = None  # epoch of the newest decoded frame
        self._last_grab = 0.0  # monotonic time of the newest decoded frame
        #: monotonic time the current open began; None while no open is under way (streaming,
        #: waiting to retry, stopped), so the watchdog's "open hangs" never counts an old one.
        self._opening_since: float | None = None
        self._streaming_since: float | None = None

    # --- control (partition thread) ----------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._run is not None

    def start(self) -> None:
        with self._lock:
            if self._run is not None:
                return
            self._set_state("connecting", None)
            self._spawn()

    def stop(self) -> None:
        with self._lock:
            if self._run is None:
                return
            self._retire()
            self._set_state("stopped", None)
        self._pump.clear()

    def check(self) -> None:
        """Watchdog: reopen a stream that sends nothing, or an open that never returns."""
        now = time.monotonic()
        with self._lock:
            if self._run is None:
                return
            if self.state == "streaming" and now - self._last_grab > self.opts.stall_s:
                reason = f"no frame for {now - self._last_grab:.1f}s; reopening the stream"
                log.warning("camera %s: %s", self.camera_id, reason)
                self.counters.reconnects += 1
            elif (
                self._opening_since is not None
                and now - self._opening_since
                > 2 * self.opts.open_timeout_s + self.opts.backoff_max_s + 5
            ):
                reason = "opening the stream hangs past its timeout; starting over"
                log.warning("camera %s: %s", self.camera_id, reason)
            else:
                return
            self._retire()
            self._set_state("reconnecting", reason)
            self._spawn()

    def _delivered(self, nbytes: int | None) -> None:
        with self._lock:
            if nbytes is None:
                self.counters.dropped += 1
            else:
                self.counters.frames_out += 1
                self.counters.bytes_out += nbytes

    def close(self) -> None:
        """Stop capturing and end the delivery thread (the partition is closing).

        The capture threads are joined: a thread still inside FFmpeg when the interpreter
        exits makes the C++ runtime abort the process ("terminate called without an active
        exception", exit -6 instead of 0). One that stays stuck past the read timeout cannot
        be joined; then the process leaves with `os._exit` once Python's own exit work is done.
        """
        self.stop()
        self._pump.close()
        deadline = time.monotonic() + self.opts.read_timeout_s + 1.0
        for t in list(self._orphans):
            t.join(max(0.0, deadline - time.monotonic()))
        if self.orphans():
            log.warning("camera %s: a capture is still blocked at exit", self.camera_id)
            _exit_without_teardown()

    def snapshot(self) -> tuple[str, str | None, float, float | None, Counters]:
        """(state, error_message, state_since, last_frame_at, counters) at one instant."""
        with self._lock:
            c = self.counters.copy()
            if self._streaming_since is not None:
                c.uptime_s += time.monotonic() - self._streaming_since
            return self.state, self.error_message, self.state_since, self.last_frame_at, c

    def orphans(self) -> int:
        self._orphans = [t for t in self._orphans if t.is_alive()]
        return len(self._orphans)

    # --- internals (callers hold the lock) ---------------------------------------------------

    def _spawn(self) -> None:
        run = _Run()
        run.thread = threading.Thread(
            target=self._loop, args=(run,), name=f"camera-{self.camera_id}", daemon=True
        )
        self._run = run
        run.thread.start()

    def _retire(self) -> None:
        run, self._run = self._run, None
        self._opening_since = None
        if run is not None:
            run.cancelled.set()
            if run.thread is not None:
                self._orphans.append(run.thread)
        self._end_uptime()
        if self.orphans() > 4:
            log.warning("camera %s: %d old captures still blocked", self.camera_id, self.orphans())

    def _set_state(self, state: str, error: str | None) -> None:
        if state != self.state:
            self.state, self.state_since = state, time.time()
        self.error_message = error

    def _end_uptime(self) -> None:
        if self._streaming_since is not None:
            self.counters.uptime_s += time.monotonic() - self._streaming_since
            self._streaming_since = None

    # --- the capture thread ------------------------------------------------------------------

    def _current(self, run: _Run) -> bool:
        return not run.cancelled.is_set()

    def _loop(self, run: _Run) -> None:
        failures, delay = 0, FIRST_BACKOFF_S
        while self._current(run):
            with self._lock:
                if not self._current(run):
                    return
                self._opening_since = time.monotonic()
            cap = open_capture(self.url, self.opts)
            if cap is None:
                reason = diagnose(self.url, min(2.0, self.opts.open_timeout_s))
                failures += 1
                with self._lock:
                    if not self._current(run):
                        return
                    self._opening_since = None
                    self.counters.errors += 1
                    message = f"cannot open {self.safe_url}: {reason}"
                    if failures >= self.opts.error_after:
                        if self.state != "error":
                            log.error("camera %s: %s (still retrying)", self.camera_id, message)
                        self._set_state("error", message)
                    else:
                        log.warning(
                            "camera %s: %s; retrying in %.2fs", self.camera_id, message, delay
                        )
                        nxt = "connecting" if self.state == "connecting" else "reconnecting"
                        self._set_state(nxt, message)
                if run.cancelled.wait(delay):
                    return
                delay = min(delay * 2, self.opts.backoff_max_s)
                continue
            try:
                got, reason = self._stream(run, cap)
            finally:
                cap.release()
            if not self._current(run):
                return
            with self._lock:
                if not self._current(run):
                    return
                self._end_uptime()
                if got:
                    failures, delay = 0, FIRST_BACKOFF_S
                    self.counters.reconnects += 1
                else:
                    failures += 1
                    self.counters.errors += 1
                message = f"stream of {self.safe_url} ended: {reason}"
                log.warning("camera %s: %s; reconnecting", self.camera_id, message)
                self._set_state(
                    "error" if failures >= self.opts.error_after else "reconnecting", message
                )
            if run.cancelled.wait(delay if not got else FIRST_BACKOFF_S):
                return

    def _stream(self, run: _Run, cap: cv2.VideoCapture) -> tuple[bool, str]:
        """Read until the stream ends; return (whether any frame came, why it ended)."""
        got, grab_fails, bad_run = False, 0, 0
        with self._lock:
            if not self._current(run):
                return got, "stopped"
            self._opening_since = None
            self._last_grab = time.monotonic()  # the watchdog counts from the open
        while self._current(run):
            ok = cap.grab()
            now, mono = time.time(), time.monotonic()
            if not self._current(run):
                break
            if not ok:
                grab_fails += 1
                if grab_fails >= GRAB_FAILURES_END_STREAM:
                    return got, "the camera stopped sending (read failed)"
                continue
            grab_fails = 0
            with self._lock:
                if not self._current(run):
                    break
                self.counters.frames_in += 1
                self._last_grab = mono
                self.last_frame_at = now
            if not self._gate.due(mono):
                continue
            ok, img = cap.retrieve()
            if not ok or not valid_image(img):
                bad_run += 1
                with self._lock:
                    self.counters.bad_frames += 1
                    n = self.counters.bad_frames
                if n == 1 or n % 100 == 0:
                    log.warning("camera %s: bad frame skipped (%d so far)", self.camera_id, n)
                if bad_run >= BAD_FRAMES_END_STREAM:
                    return got, f"{bad_run} undecodable frames in a row"
                continue
            bad_run = 0
            if self.max_size is not None:
                img = shrink(img, *self.max_size)
            with self._lock:
                if not self._current(run):
                    break
                self._seq += 1
                self.counters.dropped += self._pump.offer(
                    Frame(self.camera_id, self._seq, img, now)
                )
                if not got:
                    got = True
                    self._streaming_since = mono
                    if self.state != "streaming":
                        log.info("camera %s: streaming %s", self.camera_id, self.safe_url)
                    self._set_state("streaming", None)
        return got, "stopped"


_EXIT_HOOKED = False


def _exit_without_teardown() -> None:
    """At interpreter exit, skip the C++ teardown a blocked FFmpeg thread would abort in."""
    global _EXIT_HOOKED
    if _EXIT_HOOKED:
        return
    _EXIT_HOOKED = True

    def _leave() -> None:
        logging.shutdown()
        os._exit(0)

    atexit.register(_leave)

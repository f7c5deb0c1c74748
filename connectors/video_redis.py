"""Redis connectors of the video flow: a frame publisher and a stream source that never blocks.

`FramePublisher` PUBLISHes encoded frames on `video:<camera_id>` from the cameras' delivery
threads (one thread-safe client for all of them). A live frame is worthless a second later, so
while Redis is unreachable frames are dropped (and the outage logged once) instead of retried —
unlike `RedisCommandSink`, which must not lose its commands and waits. During an outage it tries
again at most once a second, so no camera thread waits on a dead connection.

`PolledStreamSource` is `RedisStreamSource` (resumable, offsets in snapshots, trimming) without
`XREAD BLOCK`: the video flow's worker also watches the cameras and must not sit in a blocked
read of the activity streams; a drained stream is polled every `poll` (1 s) instead. Its rows
go to the lake in batches anyway, so a second of delay costs nothing; polling every 50 ms cost
the idle flow about 2 % of a core (issue 10, item 13).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from connectors.redis_streams import RedisStreamSource, StreamBatch, StreamPartition
from core.redis_conn import connect

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EncodedFrame:
    """One published frame: its channel and the message (FrameHeader + JPEG)."""

    camera_id: str
    channel: str
    message: bytes
    captured_at: float


class FramePublisher:
    """Thread-safe PUBLISH of frames; drops them (returns False) while Redis is unreachable."""

    def __init__(self, url: str):
        self._r = connect(url, socket_timeout=2, socket_connect_timeout=1)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lost = 0

    def publish(self, channel: str, message: bytes) -> bool:
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            with self._lock:
                self._lost += 1
            return False
        try:
            self._r.publish(channel, message)
        except redis.exceptions.RedisError as exc:
            with self._lock:
                self._lost += 1
                if self._down_since is None:
                    self._down_since = now
                    log.warning(
                        "Redis unavailable (%s); dropping live frames until it is back", exc
                    )
                self._retry_at = now + 1.0
            return False
        if self._down_since is not None:
            with self._lock:
                if self._down_since is not None:
                    log.warning(
                        "Redis back after %.1fs; %d live frames were dropped meanwhile",
                        now - self._down_since,
                        self._lost,
                    )
                    self._down_since, self._lost = None, 0
        return True

    def close(self) -> None:
        self._r.close()


class _PolledPartition(StreamPartition):
    def __init__(self, *args: object, poll: timedelta):
        super().__init__(*args)  # type: ignore[arg-type]
        self._poll = poll

    def next_batch(self) -> list[StreamBatch]:
        self._drained = False  # never XREAD BLOCK (see the module docstring)
        batch = super().next_batch()
        if not batch and self._awake is None:
            self._awake = datetime.now(UTC) + self._poll
        return batch


class PolledStreamSource(RedisStreamSource):
    def __init__(
        self,
        url: str,
        keys: list[str],
        poll: timedelta = timedelta(seconds=1),
        retention: float = 3600.0,
    ):
        super().__init__(url, keys, count=1000, retention=retention)
        self.poll = poll

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> _PolledPartition:
        last = resume_state if resume_state is not None else self.start_id
        return _PolledPartition(
            self.url, for_part, last, self.count, self.idle, self.retention, poll=self.poll
        )

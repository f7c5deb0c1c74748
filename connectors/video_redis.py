"""Redis connectors of the video flow: a frame publisher and a stream source that never blocks.

`FramePublishSink` publishes encoded frames (`video:<camera_id>`), one pipeline per batch. A
live frame is worthless a second later, so when Redis is unreachable frames are dropped (and
the outage logged once) instead of retried — unlike `RedisCommandSink`, which must not lose
its commands and waits. The sink never holds the worker for more than one failed attempt per
second.

`PolledStreamSource` is `RedisStreamSource` (resumable, offsets in snapshots, trimming) without
`XREAD BLOCK`: the video flow's worker also carries live frames, which must not wait behind a
blocked read of the activity streams; a drained stream is polled every `poll` instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.redis_streams import RedisStreamSource, StreamBatch, _StreamPartition

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EncodedFrame:
    """One published frame: its channel and the message (FrameHeader + JPEG)."""

    camera_id: str
    channel: str
    message: bytes
    captured_at: float


class _PublishPartition(StatelessSinkPartition[EncodedFrame]):
    def __init__(self, url: str):
        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lost = 0

    def write_batch(self, items: list[EncodedFrame]) -> None:
        if not items:
            return
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            self._lost += len(items)
            return
        try:
            pipe = self._r.pipeline(transaction=False)
            for f in items:
                pipe.publish(f.channel, f.message)
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            self._lost += len(items)
            if self._down_since is None:
                self._down_since = now
                log.warning("Redis unavailable (%s); dropping live frames until it is back", exc)
            self._retry_at = now + 1.0
            return
        if self._down_since is not None:
            log.warning(
                "Redis back after %.1fs; %d live frames were dropped meanwhile",
                now - self._down_since,
                self._lost,
            )
            self._down_since, self._lost = None, 0

    def close(self) -> None:
        self._r.close()


class FramePublishSink(DynamicSink[EncodedFrame]):
    def __init__(self, url: str):
        self.url = url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PublishPartition:
        return _PublishPartition(self.url)


class _PolledPartition(_StreamPartition):
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
        poll: timedelta = timedelta(milliseconds=50),
        retention: float = 3600.0,
    ):
        super().__init__(url, keys, count=1000, retention=retention)
        self.poll = poll

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> _PolledPartition:
        last = resume_state if resume_state is not None else self.start_id
        return _PolledPartition(
            self.url, for_part, last, self.count, self.idle, self.retention, poll=self.poll
        )

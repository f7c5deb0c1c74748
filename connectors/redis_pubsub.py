"""A Bytewax source over a Redis pub/sub channel — AT-MOST-ONCE by nature — and the bridge
that turns its messages into stream entries.

Pub/sub keeps nothing: a message published while the events flow is down is gone. Use it only
for publishers that cannot `XADD` (design card: channel `events:publish`). Only worker 0
subscribes, so `-w N` does not multiply messages. Messages get IDs `ps-<ms>-<n>` and are
emitted as `StreamBatch`es.

The events flow does not process them itself: `bridge_commands` XADDs each message, bytes
unchanged, to the event stream its source shards to (`events:in` by default), so there is ONE
door into the flows. Every other flow that reads events (the alarm rules) then sees a
published event exactly as an `XADD` one: the same validation, dead letters, lake row
(`stream` = the stream it was bridged to) and alarms. The source is stateless (nothing to
replay after a crash), so the bridge adds no duplicates; once XADDed an event is stored
exactly once like any other.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import redis
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from connectors.redis_streams import StreamBatch
from core.records import event_stream_for
from core.redis_conn import connect
from core.shutdown import stop_requested

log = logging.getLogger(__name__)


def _source_of(data: bytes | None) -> str | None:
    """The `source` of a published event, if readable (else None: the first stream, where the
    events flow dead-letters the message with the reason, as for any bad XADD)."""
    if not data:
        return None
    try:
        ev = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    src = ev.get("source") if isinstance(ev, dict) else None
    return src if isinstance(src, str) else None


def bridge_commands(batch: StreamBatch, streams: list[str]) -> list[tuple[str | bytes, ...]]:
    """Redis commands XADDing each published message to its event stream, bytes unchanged."""
    return [
        ("XADD", event_stream_for(_source_of(data), streams), "*", "data", data or b"")
        for _, data in batch.entries
    ]


class _PubSubPartition(StatelessSourcePartition[StreamBatch]):
    def __init__(self, url: str, channel: str, max_batch: int, idle: timedelta):
        self._url, self._channel, self._max, self._idle = url, channel, max_batch, idle
        self._r: redis.Redis | None = None
        self._ps: redis.client.PubSub | None = None
        self._awake: datetime | None = None
        self._seq = itertools.count()
        self._connect()

    def _connect(self) -> None:
        try:
            self._r = connect(self._url, socket_timeout=5, socket_connect_timeout=5)
            self._ps = self._r.pubsub(ignore_subscribe_messages=True)
            self._ps.subscribe(self._channel)
        except redis.exceptions.RedisError as exc:
            log.warning("pubsub %s: cannot subscribe (%s); retrying", self._channel, exc)
            self._ps = None

    def next_batch(self) -> list[StreamBatch]:
        if stop_requested():
            raise StopIteration
        if self._ps is None:
            self._connect()
            if self._ps is None:
                self._awake = datetime.now(UTC) + timedelta(seconds=1)
                return []
        entries: list[tuple[str, bytes | None]] = []
        try:
            while len(entries) < self._max:
                msg = self._ps.get_message(timeout=0.0)
                if msg is None:
                    break
                if msg.get("type") != "message":
                    continue
                ms = int(time.time() * 1000)
                entries.append((f"ps-{ms}-{next(self._seq)}", msg["data"]))
        except redis.exceptions.RedisError as exc:
            log.warning("pubsub %s: connection lost (%s); resubscribing", self._channel, exc)
            self._ps = None
        self._awake = None if entries else datetime.now(UTC) + self._idle
        return [StreamBatch(f"pubsub:{self._channel}", entries)] if entries else []

    def next_awake(self) -> datetime | None:
        return self._awake

    def close(self) -> None:
        if self._ps is not None:
            self._ps.close()
        if self._r is not None:
            self._r.close()


class _NothingPartition(StatelessSourcePartition[StreamBatch]):
    """Workers other than 0 read nothing from pub/sub (it would duplicate every message)."""

    def next_batch(self) -> list[StreamBatch]:
        if stop_requested():
            raise StopIteration
        return []

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(seconds=1)


class RedisPubSubSource(DynamicSource[StreamBatch]):
    def __init__(
        self,
        url: str,
        channel: str,
        max_batch: int = 1000,
        idle: timedelta = timedelta(milliseconds=20),
    ):
        self.url, self.channel, self.max_batch, self.idle = url, channel, max_batch, idle

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSourcePartition:
        if worker_index != 0:
            return _NothingPartition()
        return _PubSubPartition(self.url, self.channel, self.max_batch, self.idle)

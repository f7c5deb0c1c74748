"""A resumable Bytewax source over Redis Streams whose reading and first processing run ahead
of the dataflow, in a thread, so that what must not wait for an epoch boundary does not.

Why: at each epoch boundary Bytewax reads no new input until every operator has snapshotted
and the recovery store has committed (see `flows/checkins_decider.py` for the measured pause).
The events flow broadcast `events:new` from inside the dataflow, so at 1k ev/s its p99
XADD → broadcast was that pause (54-77 ms) while a plain loop answered in 1-3 ms.

Here one thread per partition (stream key) reads the stream (on a Redis Cluster from the
master serving the stream's slot: `redis_streams.node_for`) from the partition's resume point
(`XREAD`, `BLOCK` only once drained), runs `prepare(batch)` on each batch — the events flow
validates and broadcasts there — and queues the result; `next_batch` hands queued results to
the dataflow. The snapshot is the last entry ID *handed to the dataflow*, exactly as for
`redis_streams.RedisStreamSource`, so exactly-once downstream (the lake) is unchanged: after a
crash the thread re-reads from the snapshot and `prepare` runs again for entries it had
already seen, i.e. what `prepare` sends is at-least-once (as the sinks' live outputs were).
The thread runs at most `ahead` entries ahead of the dataflow (then it waits), so memory stays
bounded — a bound in entries, not batches: at 1k ev/s a batch is an event or two, so a bound
of a few batches stops the reader within milliseconds of an epoch pause and the broadcasts
wait for it again (a first version bounded at 4 batches, together with one Arrow table per
batch in the lake sink, measured p95 977 ms at 1k ev/s on the loaded 2-core machine; with both
fixed, p95 4-8 ms). Trimming follows `redis_streams` (only behind snapshots older than
`retention`).

A thread, not a process like the check-in deciders: the prepared batches are handed over in
memory (no second serialisation through Redis), and the work is the dataflow's own, moved
earlier. If `prepare` raises, `next_batch` raises it: the flow crashes and its supervisor
restarts it, and the batch is prepared again after the resume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Generic, TypeVar

import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.redis_streams import Retention, StreamBatch, node_for, relearn
from core.redis_conn import connect
from core.shutdown import stop_requested

log = logging.getLogger(__name__)

T = TypeVar("T")
Prepare = Callable[[StreamBatch], T]


class _Reader(threading.Thread, Generic[T]):
    def __init__(
        self, url: str, key: str, last_id: str, count: int, block_ms: int, prepare, ahead: int
    ):
        super().__init__(name=f"readahead:{key}", daemon=True)
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)
        self._key, self._last, self._count, self._block_ms = key, last_id, count, block_ms
        self._prepare = prepare
        self._ahead = ahead
        self._queued: deque[tuple[str, int, T]] = deque()  # (last entry id, entries, item)
        self._entries = 0  # entries in `_queued`
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def take(self, timeout: float) -> tuple[str, list[T]] | None:
        """Everything prepared so far: (its last entry id, items); None after `timeout`."""
        with self._cond:
            if not self._queued and not self._cond.wait_for(lambda: self._queued, timeout):
                return None
            items = [item for _, _, item in self._queued]
            last = self._queued[-1][0]
            self._queued.clear()
            self._entries = 0
            self._cond.notify_all()
        return last, items

    def stop(self) -> None:
        self._halt.set()

    def halted(self) -> bool:
        return self._halt.is_set() or stop_requested()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to the dataflow: the flow crashes and restarts
            self.error = exc
        finally:
            self._r.close()

    def _xread(self, block: bool) -> list[tuple[str, bytes | None]]:
        """Up to `count` entries after `_last`, as (entry id, `data` field or None).

        The raw reply, not `Redis.xread`: its reply callbacks build a dict per entry, 10 % of
        the flow's CPU in a py-spy profile at full rate. On a Redis Cluster it goes to the
        master of the stream's slot (each partition reads one stream, so one node)."""
        pool = node_for(self._r, self._key).connection_pool
        conn = pool.get_connection()
        try:
            args: tuple = ("XREAD", "COUNT", self._count)
            if block:
                args += ("BLOCK", self._block_ms)
            conn.send_command(*args, "STREAMS", self._key, self._last)
            reply = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        if not reply:
            return []
        # RESP3 (redis-py's default here) answers a map {key: entries}, RESP2 [[key, entries]].
        raw = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return [
            (eid.decode(), f[1] if f[:1] == [b"data"] else _field(f, b"data")) for eid, f in raw
        ]

    def _loop(self) -> None:
        drained, down_since = False, None
        while not self.halted():
            try:
                entries = self._xread(block=drained)
            except redis.exceptions.RedisError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("stream %s: Redis unavailable (%s); retrying", self._key, exc)
                relearn(self._r)
                self._halt.wait(0.5)
                continue
            if down_since is not None:
                log.warning(
                    "stream %s: Redis back after %.1f s", self._key, time.monotonic() - down_since
                )
                down_since = None
            drained = not entries
            if not entries:
                continue
            self._last = entries[-1][0]
            item = self._prepare(StreamBatch(self._key, entries))
            with self._cond:
                self._queued.append((self._last, len(entries), item))
                self._entries += len(entries)
                self._cond.notify_all()
                while self._entries >= self._ahead and not self.halted():
                    self._cond.wait(0.1)


def _field(fields: list[bytes], name: bytes) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


class _ReadAheadPartition(StatefulSourcePartition[T, str]):
    def __init__(
        self,
        url: str,
        key: str,
        last_id: str,
        count: int,
        idle: timedelta,
        retention: float,
        prepare,
        ahead: int,
    ):
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)
        self._key, self._last_id = key, last_id
        self._retention = Retention(self._r, retention)
        self._idle_s = idle.total_seconds()
        block_ms = max(1, int(self._idle_s * 1000))
        self._reader: _Reader[T] = _Reader(url, key, last_id, count, block_ms, prepare, ahead)
        self._reader.start()

    def next_batch(self) -> list[T]:
        if stop_requested():
            raise StopIteration
        rd = self._reader
        if rd.error is not None:
            raise RuntimeError(f"stream {self._key}: reader failed: {rd.error!r}") from rd.error
        # Waits (GIL released) for at most `idle`, so the worker is never held longer.
        got = rd.take(self._idle_s)
        if got is None:
            return []
        self._last_id, items = got
        return items

    def snapshot(self) -> str:
        self._retention.snapshot({self._key: self._last_id})
        return self._last_id

    def close(self) -> None:
        self._reader.stop()
        self._reader.join(10)
        self._r.close()


class ReadAheadStreamSource(FixedPartitionedSource[T, str]):
    """Read `keys` from the start (or the snapshot) on, one partition per key; each emitted
    item is `prepare(batch)` of one XREAD reply (up to `count` entries)."""

    def __init__(
        self,
        url: str,
        keys: list[str],
        prepare: Prepare,
        count: int = 1000,
        idle: timedelta = timedelta(milliseconds=10),
        start_id: str = "0-0",
        retention: float = 3600.0,
        ahead: int = 50_000,
    ):
        if not keys:
            raise ValueError("ReadAheadStreamSource needs at least one stream key")
        self.url, self.keys, self.prepare, self.count, self.idle = url, keys, prepare, count, idle
        self.start_id, self.retention, self.ahead = start_id, retention, ahead

    def list_parts(self) -> list[str]:
        return list(self.keys)

    def build_part(
        self, step_id: str, for_part: str, resume_state: str | None
    ) -> _ReadAheadPartition[T]:
        last = resume_state if resume_state is not None else self.start_id
        return _ReadAheadPartition(
            self.url,
            for_part,
            last,
            self.count,
            self.idle,
            self.retention,
            self.prepare,
            self.ahead,
        )

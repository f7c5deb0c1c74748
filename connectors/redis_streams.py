"""A resumable Bytewax source over Redis Streams: one partition per stream key.

The partition's snapshot is the last entry ID it emitted, so after a crash the flow resumes
exactly after the last committed epoch and replays the rest (the lake sink makes the replay
idempotent). Entries are trimmed from the stream only once they lie behind a snapshot taken
more than `retention` ago — long committed — so Redis memory stays bounded and nothing that a
resume could still need is ever removed.

`next_batch` never blocks long: while entries are there it reads without BLOCK; once the stream
is drained it waits inside Redis for at most `idle` (`XREAD BLOCK`, default 10 ms), so a new
entry is picked up the moment it arrives (p50 XADD→broadcast ≈ 1 ms instead of half a polling
interval) and the worker is never held longer than that. Each item is a whole XREAD
reply (up to `count` entries) because one Bytewax item per event runs at half the speed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from redis.cluster import RedisCluster

from core.redis_conn import Sync, connect
from core.shutdown import stop_requested

log = logging.getLogger(__name__)


def node_for(r: Sync, key: str) -> redis.Redis:
    """The one-server client to send a raw command on `key` to: `r` itself, or on a Redis
    Cluster the client of the master serving `key`'s slot (elsewhere it answers MOVED). The
    raw senders (`redis_readahead`, `flows.events_live`) talk to a connection of its pool."""
    if isinstance(r, RedisCluster):
        return r.get_node_from_key(key).redis_connection
    return r


def relearn(r: Sync) -> None:
    """After a failed raw command on a cluster (a node down, a slot moved: MOVED/ASK), learn
    the slot map again, so that `node_for` names the serving node; best effort (a cluster
    that cannot answer now is asked again at the next failure)."""
    if isinstance(r, RedisCluster):
        try:
            r.nodes_manager.initialize()
        except redis.exceptions.RedisError as exc:
            log.warning("Redis Cluster: cannot learn the slot map (%s)", exc)


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Entries read from one stream: (entry ID, `data` field or None if missing)."""

    stream: str
    entries: list[tuple[str, bytes | None]]


def trim_before(r: Sync, key: str, minid: str) -> int:
    """Drop the entries of stream `key` before `minid`, whole radix-tree nodes at a time.

    `LIMIT 0` matters: an approximate XTRIM without it removes at most 100 x
    `stream-node-max-entries` (10,000 by default) entries per call, so a stream fed faster than
    that per trim never shrinks (measured: bench.soak at 20,000 ev/s, trimmed every 2 s,
    `events:in` grew by 15k entries a second for the whole run while the flow kept up; one
    call with `LIMIT 0` took 300,000 → 100,100 entries in 1.4 ms on redis-server 7.0)."""
    return int(r.xtrim(key, minid=minid, approximate=True, limit=0))


class Retention:
    """Trims streams only behind a position snapshotted more than `seconds` ago (long
    committed: nothing a resume could still need). Shared by every stream source here."""

    def __init__(self, r: redis.Redis, seconds: float):
        self._r, self._seconds = r, seconds
        self._held: deque[tuple[float, dict[str, str]]] = deque()

    def snapshot(self, last: dict[str, str]) -> None:
        """Note the position `last` (stream key → last emitted id); trim what is old enough."""
        now = time.monotonic()
        if not self._held or self._held[-1][1] != last:
            self._held.append((now, dict(last)))
        trim_to: dict[str, str] | None = None
        while self._held and now - self._held[0][0] > self._seconds:
            trim_to = self._held.popleft()[1]
        if trim_to is None or self._seconds <= 0:
            return
        try:
            for key, minid in trim_to.items():
                trim_before(self._r, key, minid)
        except redis.exceptions.RedisError as exc:
            log.warning("streams %s: trim failed (%s); will retry", list(trim_to), exc)


class Outage:
    """Logs once when Redis goes away and once when it is back; says when to try again."""

    def __init__(self, what: str):
        self._what = what
        self._since: datetime | None = None

    def failed(self, exc: Exception) -> datetime:
        """Redis did not answer: the time to try again (the partition's `next_awake`)."""
        now = datetime.now(UTC)
        if self._since is None:
            self._since = now
            log.warning("%s: Redis unavailable (%s); retrying", self._what, exc)
        return now + timedelta(seconds=0.5)

    def answered(self) -> None:
        if self._since is not None:
            log.warning("%s: Redis back after %s", self._what, datetime.now(UTC) - self._since)
            self._since = None


class StreamPartition(StatefulSourcePartition[StreamBatch, str]):
    def __init__(
        self, url: str, key: str, last_id: str, count: int, idle: timedelta, retention: float
    ):
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)
        self._retention = Retention(self._r, retention)
        self._key = key
        self._last_id = last_id
        self._count = count
        self._block_ms = max(1, int(idle.total_seconds() * 1000))
        self._drained = False
        self._awake: datetime | None = None
        self._outage = Outage(f"stream {key}")

    def next_batch(self) -> list[StreamBatch]:
        if stop_requested():
            raise StopIteration
        try:
            reply = self._r.xread(
                {self._key: self._last_id},
                count=self._count,
                block=self._block_ms if self._drained else None,
            )
        except redis.exceptions.RedisError as exc:
            self._awake = self._outage.failed(exc)
            return []
        self._outage.answered()
        self._awake = None
        self._drained = not reply
        if not reply:
            return []
        _, raw_entries = reply[0]
        entries = [(eid.decode(), fields.get(b"data")) for eid, fields in raw_entries]
        self._last_id = entries[-1][0]
        return [StreamBatch(self._key, entries)]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> str:
        self._retention.snapshot({self._key: self._last_id})
        return self._last_id

    def close(self) -> None:
        self._r.close()


class RedisStreamSource(FixedPartitionedSource[StreamBatch, str]):
    """Read `keys` from the start (or the snapshot) on; each key is one partition."""

    def __init__(
        self,
        url: str,
        keys: list[str],
        count: int = 1000,
        idle: timedelta = timedelta(milliseconds=10),
        start_id: str = "0-0",
        retention: float = 3600.0,
    ):
        if not keys:
            raise ValueError("RedisStreamSource needs at least one stream key")
        self.url, self.keys, self.count, self.idle = url, keys, count, idle
        self.start_id, self.retention = start_id, retention

    def list_parts(self) -> list[str]:
        return list(self.keys)

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> StreamPartition:
        last = resume_state if resume_state is not None else self.start_id
        return StreamPartition(self.url, for_part, last, self.count, self.idle, self.retention)

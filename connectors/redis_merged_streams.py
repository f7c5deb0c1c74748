"""A resumable Bytewax source reading several Redis streams as ONE deterministic sequence.

Why: the check-in flow decides scans against participant changes that arrive on another
stream. With one partition per stream (`redis_streams.RedisStreamSource`), a replay after a
crash interleaves the two streams differently from the first run — a scan replayed before the
replay of the participant it names would get a different verdict than its gate was told.

Here every entry is emitted in the order of (entry-id milliseconds, stream, sequence), and only
once that order is final:
- entries of the current server millisecond are held back (more may still arrive in it; the
  read and the server's `TIME` run in one MULTI so they see the same instant), and
- when a stream's read hit `count`, nothing is emitted past its last entry read (its next
  entries, unread yet, come after it).
So what is emitted is always a prefix of one total order, and resuming from the snapshot (the
last emitted id per stream) re-emits exactly the rest of it, in the same order.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from redis.cluster import RedisCluster

from connectors.redis_streams import Outage, Retention, StreamBatch
from core.redis_conn import connect
from core.shutdown import stop_requested

log = logging.getLogger(__name__)

Ids = dict[str, str]


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def slot_groups(r: redis.Redis | RedisCluster, keys: list[str]) -> list[list[str]]:
    """`keys` cut by Redis Cluster hash slot (in order of first appearance); one server: one
    group."""
    if not isinstance(r, RedisCluster):
        return [list(keys)]
    groups: dict[int, list[str]] = {}
    for k in keys:
        groups.setdefault(r.keyslot(k), []).append(k)
    return list(groups.values())


class _Merged(StatefulSourcePartition[StreamBatch, Ids]):
    def __init__(self, url: str, keys: list[str], last: Ids, count: int, retention: float):
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)
        self._keys, self._last, self._count = keys, dict(last), count
        self._groups = slot_groups(self._r, keys)
        self._retention = Retention(self._r, retention)
        self._awake: datetime | None = None
        self._outage = Outage(f"streams {keys}")

    def _read(self) -> tuple[list, int]:
        """Every stream's next entries and the server's `now` (ms). In a Redis Cluster, one
        read per hash slot the streams lie in (a multi-key XREAD stays in one slot), each after
        the TIME of its node (redis-py sends no keyless TIME in a cluster MULTI; asked first,
        it is as safe: what the node adds later has an id at or after it), and `now` is the
        earliest of those TIMEs, so nothing can still arrive before it."""
        reply, now_ms = [], None
        for group in self._groups:
            if isinstance(self._r, RedisCluster):
                node = self._r.get_node_from_key(group[0])
                sec, usec = self._r.time(target_nodes=node)
                part = self._r.xread({k: self._last[k] for k in group}, count=self._count)
            else:
                pipe = self._r.pipeline(transaction=True)
                pipe.xread({k: self._last[k] for k in group}, count=self._count)
                pipe.time()
                part, (sec, usec) = pipe.execute()
            reply += part or []
            ms = sec * 1000 + usec // 1000
            now_ms = ms if now_ms is None else min(now_ms, ms)
        return reply, now_ms

    def next_batch(self) -> list[StreamBatch]:
        if stop_requested():
            raise StopIteration
        try:
            reply, now_ms = self._read()
            if not reply:  # drained: wait inside Redis for up to 10 ms (never longer)
                self._r.xread({k: self._last[k] for k in self._groups[0]}, count=1, block=10)
                return []
        except redis.exceptions.RedisError as exc:
            self._awake = self._outage.failed(exc)
            return []
        self._outage.answered()
        self._awake = None
        order = {k: i for i, k in enumerate(self._keys)}
        limit = (now_ms, -1, -1)  # nothing of the current millisecond
        entries = []
        for key_b, items in reply:
            key = key_b.decode()
            for eid_b, fields in items:
                eid = eid_b.decode()
                ms, seq = _id(eid)
                entries.append(((ms, order[key], seq), key, eid, fields.get(b"data")))
            if len(items) >= self._count:  # more unread: they sort after the last one read
                ms, seq = _id(items[-1][0].decode())
                limit = min(limit, (ms, order[key], seq))
        entries.sort(key=lambda e: e[0])
        out: list[StreamBatch] = []
        for sort_key, key, eid, data in entries:
            if sort_key > limit:
                break
            if out and out[-1].stream == key:
                out[-1].entries.append((eid, data))
            else:
                out.append(StreamBatch(key, [(eid, data)]))
            self._last[key] = eid
        if not out:
            self._awake = datetime.now(UTC) + timedelta(milliseconds=1)
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def position(self) -> Ids:
        """The last emitted id per stream (what `snapshot` returns, without trimming)."""
        return dict(self._last)

    def snapshot(self) -> Ids:
        self._retention.snapshot(self._last)
        return dict(self._last)

    def close(self) -> None:
        self._r.close()


class RedisMergedStreamSource(FixedPartitionedSource[StreamBatch, Ids]):
    """Read `keys` from the start (or the snapshot) on, as one partition in one order."""

    def __init__(self, url: str, keys: list[str], count: int = 1000, retention: float = 3600.0):
        if not keys:
            raise ValueError("RedisMergedStreamSource needs at least one stream key")
        self.url, self.keys, self.count, self.retention = url, keys, count, retention

    def list_parts(self) -> list[str]:
        return ["+".join(self.keys)]

    def build_part(self, step_id: str, for_part: str, resume_state: Ids | None) -> _Merged:
        last = {k: "0-0" for k in self.keys}
        last.update(resume_state or {})
        return _Merged(self.url, self.keys, last, self.count, self.retention)

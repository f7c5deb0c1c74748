"""A Bytewax sink that runs batches of Redis commands in one pipeline each.

Used for live outputs (pub/sub broadcasts, the recent-events list, dead letters). Items are
lists of commands, e.g. `[("PUBLISH", "events:new", "{...}"), ("LTRIM", ...)]`, so the flow
decides what to send and the sink only sends it. Delivery is at-least-once: after a crash the
replayed epoch is sent again (the lake, not Redis, is the record). If Redis is unreachable the
sink retries with backoff instead of crashing the flow (by default for as long as it takes: the
inputs come from Redis too, so nothing else could proceed meanwhile) — unless the flow is
asked to stop, which must work while Redis is down (what is not sent then is in the lake).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from core.redis_conn import connect
from core.shutdown import stop_requested

log = logging.getLogger(__name__)

Command = tuple[str | bytes | int | float, ...]


class _Partition(StatelessSinkPartition[Sequence[Command]]):
    def __init__(self, url: str, max_wait: float | None):
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)
        self._max_wait = max_wait

    def write_batch(self, items: list[Sequence[Command]]) -> None:
        cmds = [c for batch in items for c in batch]
        if not cmds:
            return
        delay, waited = 0.1, 0.0
        while True:
            try:
                pipe = self._r.pipeline(transaction=False)
                for c in cmds:
                    pipe.execute_command(*c)
                results = pipe.execute(raise_on_error=False)
                errors = [
                    (c[:2], r)
                    for c, r in zip(cmds, results, strict=True)
                    if isinstance(r, Exception)
                ]
                if errors:
                    log.error("%d Redis command(s) failed, first: %s", len(errors), errors[0])
                return
            except redis.exceptions.ConnectionError as exc:
                if stop_requested() or (self._max_wait is not None and waited >= self._max_wait):
                    log.error(
                        "Redis down for %.0fs; %d live command(s) not sent: %s",
                        waited,
                        len(cmds),
                        exc,
                    )
                    return
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._r.close()


class RedisCommandSink(DynamicSink[Sequence[Command]]):
    def __init__(self, url: str, max_wait: float | None = None):
        """`max_wait`: seconds to retry while Redis is down; None waits as long as it takes."""
        self.url, self.max_wait = url, max_wait

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.url, self.max_wait)

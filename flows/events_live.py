"""Sending a validated batch's live outputs to Redis in one round trip, cheaply.

Per batch: every stored event on `events:new` (one message each: the seed's contract), the
newest in `events:recent`, one `live:events` message, and the dead letters on `events:dead`.
The `events:new` messages go as ONE `EVAL` whose script PUBLISHes each argument, and all
commands are packed into RESP here and sent together: redis-py's pipeline built and parsed one
command per event, which cost more CPU than validating the event (measured: 4.6 µs per event
for packing the pipeline alone, see `flows.events_fast`).

Delivery is at-least-once, as before: if Redis goes away mid-send the whole batch is sent
again once it is back (retrying until it is, or until the flow is asked to stop).
"""

from __future__ import annotations

import logging
import time

import redis

from core import keys
from core.redis_conn import connect
from core.shutdown import stop_requested
from flows.events_fast import Batch, live_messages

log = logging.getLogger(__name__)

_PUBLISH_EACH = b"for i = 1, #ARGV do redis.call('PUBLISH', KEYS[1], ARGV[i]) end return #ARGV"


def _bulk(arg: bytes | str | int) -> bytes:
    if isinstance(arg, str):
        arg = arg.encode()
    elif isinstance(arg, int):
        arg = b"%d" % arg
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n%s" % (len(args), b"".join(map(_bulk, args)))


def pack_live(b: Batch) -> tuple[list[bytes], int]:
    """The RESP chunks of a batch's live commands and how many replies they get."""
    chunks: list[bytes] = []
    n = 0
    live = live_messages(b)
    if live is not None:
        newest, msg = live
        docs = b.docs
        head = pack(b"EVAL", _PUBLISH_EACH, 1, keys.EVENTS_NEW)
        # `*<n>` of the command covers the head's 4 arguments and every document.
        chunks.append(b"*%d\r\n" % (4 + len(docs)) + head[head.index(b"\r\n") + 2 :])
        chunks.append(b"".join([b"$%d\r\n%s\r\n" % (len(d), d) for d in docs]))
        chunks.append(pack(b"LPUSH", keys.EVENTS_RECENT, *reversed(newest)))
        chunks.append(pack(b"LTRIM", keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1))
        chunks.append(pack(b"PUBLISH", keys.LIVE_EVENTS, msg))
        n += 4
    for cmd in b.dead:
        chunks.append(pack(*cmd))
        n += 1
    return chunks, n


class LiveSender:
    """Sends batches' live outputs over one connection of its own (one thread uses it)."""

    def __init__(self, url: str):
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)

    def send(self, b: Batch) -> None:
        chunks, n = pack_live(b)
        if not n:
            return
        delay = 0.1
        while True:
            try:
                self._send(chunks, n)
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if stop_requested():
                    log.error("stopping with Redis down; live outputs of a batch not sent: %s", exc)
                    return
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _send(self, chunks: list[bytes], n: int) -> None:
        pool = self._r.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(chunks)], check_health=False)
            errors = []
            for _ in range(n):
                try:
                    conn.read_response()
                except redis.exceptions.ResponseError as exc:
                    errors.append(exc)
            if errors:
                log.error("%d live command(s) failed, first: %s", len(errors), errors[0])
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def close(self) -> None:
        self._r.close()

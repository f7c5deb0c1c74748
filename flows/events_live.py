"""Sending a validated batch's live outputs to Redis in one round trip, cheaply.

Per batch: every stored event on `events:new` (one message each: the seed's contract), the
newest in `events:recent`, one `live:events` message, and the dead letters on `events:dead`.
The `events:new` messages go as ONE `EVAL` whose script PUBLISHes each argument, and all
commands are packed into RESP here and sent together: redis-py's pipeline built and parsed one
command per event, which cost more CPU than validating the event (measured: 4.6 µs per event
for packing the pipeline alone, see `flows.events_fast`).

On a Redis Cluster the keys lie on different masters (`events:new`, `events:recent` and
`events:dead` hash to three slots): each command goes to the master of its key's slot, one
connection per master, all written before any reply is read, so a batch still costs one round
trip (tests/test_redis_cluster.py::test_events_end_to_end_on_a_cluster).

Delivery is at-least-once, as before: if Redis goes away mid-send the whole batch is sent
again once it is back (retrying until it is, or until the flow is asked to stop).
"""

from __future__ import annotations

import logging
import time

import redis

from connectors.redis_streams import node_for, relearn
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


def pack_live(b: Batch) -> list[tuple[str, bytes]]:
    """A batch's live commands in RESP, each with the key that places it on a Redis Cluster
    (one reply each). PUBLISH has no key (it reaches every node's subscribers): `live:events`
    goes with `events:recent`."""
    cmds: list[tuple[str, bytes]] = []
    live = live_messages(b)
    if live is not None:
        newest, msg = live
        docs = b.docs
        head = pack(b"EVAL", _PUBLISH_EACH, 1, keys.EVENTS_NEW)
        # `*<n>` of the command covers the head's 4 arguments and every document.
        publish_each = b"".join(
            [b"*%d\r\n" % (4 + len(docs)), head[head.index(b"\r\n") + 2 :]]
            + [b"$%d\r\n%s\r\n" % (len(d), d) for d in docs]
        )
        cmds.append((keys.EVENTS_NEW, publish_each))
        cmds.append((keys.EVENTS_RECENT, pack(b"LPUSH", keys.EVENTS_RECENT, *reversed(newest))))
        trim = pack(b"LTRIM", keys.EVENTS_RECENT, 0, keys.RECENT_SIZE - 1)
        cmds.append((keys.EVENTS_RECENT, trim))
        cmds.append((keys.EVENTS_RECENT, pack(b"PUBLISH", keys.LIVE_EVENTS, msg)))
    for cmd in b.dead:
        cmds.append((cmd[1], pack(*cmd)))
    return cmds


class LiveSender:
    """Sends batches' live outputs over one connection of its own (one thread uses it); on a
    Redis Cluster over one connection per master, each getting the commands of its slots (all
    sent before any reply is read: still one round trip per batch)."""

    def __init__(self, url: str):
        self._r = connect(url, socket_timeout=5, socket_connect_timeout=5)

    def send(self, b: Batch) -> None:
        cmds = pack_live(b)
        if not cmds:
            return
        delay = 0.1
        while True:
            try:
                self._send(cmds)
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if stop_requested():
                    log.error("stopping with Redis down; live outputs of a batch not sent: %s", exc)
                    return
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                relearn(self._r)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _send(self, cmds: list[tuple[str, bytes]]) -> None:
        by_node: dict[int, tuple[redis.Redis, list[bytes]]] = {}
        for key, wire in cmds:
            node = node_for(self._r, key)
            by_node.setdefault(id(node), (node, []))[1].append(wire)
        sent: list[tuple[redis.Redis, object, int]] = []
        errors: list[redis.exceptions.ResponseError] = []
        try:
            for node, wires in by_node.values():
                conn = node.connection_pool.get_connection()
                sent.append((node, conn, len(wires)))
                conn.send_packed_command([b"".join(wires)], check_health=False)
            for _, conn, n in sent:
                for _ in range(n):
                    try:
                        conn.read_response()
                    except redis.exceptions.ResponseError as exc:
                        errors.append(exc)
        except BaseException:
            for _, conn, _ in sent:
                conn.disconnect()
            raise
        finally:
            for node, conn, _ in sent:
                node.connection_pool.release(conn)
        if errors:
            log.error("%d live command(s) failed, first: %s", len(errors), errors[0])
            if any(isinstance(e, redis.exceptions.AskError) for e in errors):
                relearn(self._r)  # a slot moved: the next batch goes to its new node

    def close(self) -> None:
        self._r.close()

"""The one place that turns `REDIS_URL` into a client: one Redis server, or a Redis Cluster.

- `redis://host:port/db` (or `rediss://`, `unix://`): one server, a `redis.Redis` as before.
- `redis+cluster://[user:password@]host:port[,host:port…][?option=value…]` (or
  `rediss+cluster://` for TLS): a Redis Cluster, a `redis.cluster.RedisCluster` (asyncio:
  `redis.asyncio.cluster.RedisCluster`). The hosts are seed nodes: any one that answers is
  enough, the client learns the rest (and every slot move) from the cluster itself. A cluster
  has only database 0, so `/0` is accepted and any other database is refused (ValueError).

Why a scheme rather than a separate setting: the URL is the one thing every process is handed
(`run.py` passes its environment on), so it alone must say how to connect; a plain `redis://`
client pointed at a cluster node would answer `MOVED` to most keys instead of failing clearly.

In a cluster every command's keys must lie in one hash slot (one MULTI/EXEC, one EVAL, one
multi-key XREAD/MGET); `core.keys` gives keys used together a common hash tag `{…}`. Classic
pub/sub is cluster-wide (a PUBLISH reaches subscribers on every node), so a subscriber needs
one node only: `RedisCluster.pubsub()` picks the node serving the first channel's slot
(measured: tests/test_redis_cluster.py subscribes with PSUBSCRIBE on one node and receives
what the flows PUBLISH through other nodes).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url

#: The scheme of a cluster URL (`rediss+cluster` with TLS).
CLUSTER_SCHEME = "redis+cluster"
_CLUSTER_SCHEMES = {CLUSTER_SCHEME: "redis", "rediss+cluster": "rediss"}

Sync = redis.Redis | RedisCluster
Async = aioredis.Redis | AsyncRedisCluster


def is_cluster(url: str) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://…`)."""
    return urlsplit(url).scheme in _CLUSTER_SCHEMES


def cluster_params(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """(seed nodes, client options) of a cluster URL; ValueError when it is not a usable one."""
    parts = urlsplit(url)
    plain = _CLUSTER_SCHEMES.get(parts.scheme)
    if plain is None:
        raise ValueError(f"not a Redis Cluster URL (want {CLUSTER_SCHEME}://host:port,…)")
    auth, _, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for hp in hosts.split(","):
        host, sep, port = hp.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"Redis Cluster URL: seed {hp!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    # The options (user, password, ?query) as redis-py reads them from a one-node URL.
    one = f"{plain}://{auth + '@' if auth else ''}{hosts.split(',')[0]}{parts.path}"
    opts = parse_url(one + (f"?{parts.query}" if parts.query else ""))
    if int(opts.pop("db", 0) or 0) != 0:
        raise ValueError("Redis Cluster URL: a cluster has only database 0 (drop the /<db>)")
    opts.pop("host", None), opts.pop("port", None)
    if opts.pop("connection_class", None) is not None and plain == "rediss":
        opts["ssl"] = True
    return seeds, opts


def connect(url: str, **kwargs: Any) -> Sync:
    """A sync client for `url`: `redis.Redis.from_url`, or a RedisCluster for a cluster URL.
    `kwargs` are the usual connection options (socket_timeout, …)."""
    if not is_cluster(url):
        return redis.Redis.from_url(url, **kwargs)
    seeds, opts = cluster_params(url)
    kwargs.pop("health_check_interval", None)  # the sync cluster client takes none
    kwargs.pop("retry", None)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in seeds], **opts, **kwargs)


def connect_async(url: str, **kwargs: Any) -> Async:
    """The asyncio client for `url` (made in the running event loop)."""
    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **kwargs)
    seeds, opts = cluster_params(url)
    return AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(h, p) for h, p in seeds], **opts, **kwargs
    )


async def transaction(r: Async) -> Any:
    """A MULTI/EXEC pipeline of `r` (every key in it in one slot, on a cluster).

    On a cluster the client learns the slot map first: redis-py 8.1's asyncio cluster
    transaction queues each command through `asyncio.run` on a new thread, and a client that
    (re)learned its slots there keeps connections of that dead event loop ("RuntimeError:
    Event loop is closed" at the next use or close; measured, tests/test_redis_cluster.py)."""
    if isinstance(r, AsyncRedisCluster):
        await r.initialize()  # a no-op once initialized; again after a connection error
    return r.pipeline(transaction=True)

"""The one place a strictgate process opens its Redis client: a plain client on a server, or
a cluster client when ``STRICTGATE_REDIS_CLUSTER`` is set (``REDIS_URL`` then names any node
of the cluster; the client reads the slot map from it and follows MOVED/ASK).

Every key strictgate writes carries a hash tag (:mod:`quota.keys`), and every Lua script and
MULTI touches the keys of one tag, so the same code runs on both. The few calls that differ on
a cluster (reading several streams at once, server-wide commands such as ``CONFIG GET``) ask
:func:`is_cluster`.

Type note: the cluster client is returned as ``redis.asyncio.Redis``. The commands strictgate
sends exist with the same signatures on both classes, and annotating every module with a
union would only move the checks to ``isinstance`` calls; the cluster test pass
(``SG_TEST_REDIS_CLUSTER=1``, see the Makefile) runs the service's flows on a real 3-master
cluster, which is what catches a call that does not work there.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

CLUSTER_CONNECTIONS_PER_NODE = 64
"""Connections the cluster client may open to each node (redis-py's default is 100 for the
whole client, which on a cluster is per node too): enough for the worker's blocking reads
and the API's concurrent requests, bounded so N processes do not exhaust a node's maxclients."""


def connect(url: str, *, cluster: bool, socket_timeout: float | None,
            socket_connect_timeout: float | None, **options: Any) -> aioredis.Redis:
    """A client on ``url``: a :class:`RedisCluster` when ``cluster`` (the slot map is read on
    the first command), else a plain client. ``socket_timeout`` None: no per-command timeout
    (the caller bounds its calls itself). Never log ``url``: it may hold a password."""
    if not cluster:
        return aioredis.Redis.from_url(url, socket_timeout=socket_timeout,
                                       socket_connect_timeout=socket_connect_timeout, **options)
    client = RedisCluster.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout,
        max_connections=CLUSTER_CONNECTIONS_PER_NODE, **options,
    )
    return cast(aioredis.Redis, client)


SLOT_MAP_REFRESH_S = 1.0
"""How often a process re-reads the cluster's slot map whatever happens. redis-py re-reads it
after connection errors and MOVED, but not after READONLY: a master that dies and comes back
as its successor's replica accepts connections and refuses writes, and without this every
write to its slots would fail until the next connection error. One CLUSTER SHARDS a second."""


async def keep_slot_map_fresh(clients: list[aioredis.Redis], stop: asyncio.Event,
                              interval_s: float = SLOT_MAP_REFRESH_S) -> None:
    """Until ``stop``, re-read the slot map of every cluster client of ``clients`` every
    ``interval_s`` (plain clients are left alone; with none, return at once)."""
    clusters = [cast(RedisCluster, c) for c in clients if isinstance(c, RedisCluster)]
    while clusters and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        for cluster in clusters:
            if stop.is_set():
                return
            # a refresh that fails (no node answers) is tried again next interval; the
            # commands meanwhile fail on their own and are answered 503
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(cluster.nodes_manager.initialize(), interval_s * 5)


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a cluster client (see :func:`connect`)."""
    return isinstance(client, RedisCluster)

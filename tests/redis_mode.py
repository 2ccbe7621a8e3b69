"""Which Redis the tests run on: the standalone server (default), or, with
``SG_TEST_REDIS_CLUSTER=1``, a 3-master Redis Cluster started from the embedded binary, with
the service told so (``STRICTGATE_REDIS_CLUSTER=1``). ``make test`` runs the API-flow modules
a second time in that mode (see the Makefile): a key, script or MULTI that would cross slots
fails there as the cluster refuses it (CROSSSLOT), not in production."""

from __future__ import annotations

import os
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

CLUSTER = os.environ.get("SG_TEST_REDIS_CLUSTER") == "1"
"""Whether this test run is the cluster pass."""


def service_env() -> dict[str, str]:
    """Settings a service under test needs on this run's Redis (besides ``REDIS_URL``)."""
    return {"STRICTGATE_REDIS_CLUSTER": "1"} if CLUSTER else {}


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A synchronous client on this run's Redis (a cluster client in the cluster pass; typed
    as the plain client, whose commands the tests use)."""
    if CLUSTER:
        return redis.RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio client on this run's Redis (see :func:`sync_client`)."""
    if CLUSTER:
        return AsyncRedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(url, **options)


def flush(client: redis.Redis) -> None:
    """Empty the database: every master of a cluster."""
    if CLUSTER:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    else:
        client.flushdb()

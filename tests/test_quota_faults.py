"""Redis stopped, paused (SIGSTOP) or pausing clients (CLIENT PAUSE): admission answers
Unavailable within the deadline, and nothing is counted twice once Redis is back.

Each test starts its own server in a tmp dir; the shared one is never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from quota.admission import Admitted, Duplicate, QuotaService, QuotaUnavailableError, Unavailable
from strictgate.embedded import EmbeddedServer
from tests.test_quota_admission import DATASETS, FIXED, admit, entries_of, this_month

DEADLINE_S = 0.5
SLACK_S = 0.25  # event loop and process scheduling on a busy CI machine

TOTAL = keys.usage_total_key("u1", this_month())
DELTA = keys.usage_delta_key("u1", this_month())
QUEUE = "queue:datasets:{u1}:p1:d1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A private server this test may stop, kill or freeze."""
    own = EmbeddedServer(tmp_path / "redis", persist=False).start()
    try:
        yield own
    finally:
        own.resume()
        own.stop()


@pytest.fixture(params=["socket-timeouts", "no-socket-timeouts"])
async def client(request: pytest.FixtureRequest, server: EmbeddedServer
                 ) -> AsyncIterator[aioredis.Redis]:
    """As app.py builds it (socket timeouts = deadline), and with no socket timeouts at all
    (then only the service's own deadline bounds the call)."""
    options: dict[str, float] = {}
    if request.param == "socket-timeouts":
        options = {"socket_timeout": DEADLINE_S, "socket_connect_timeout": DEADLINE_S}
    conn = aioredis.Redis.from_url(server.url, **options)
    try:
        yield conn
    finally:
        await conn.aclose()


def quota(client: aioredis.Redis) -> QuotaService:
    """A service with a short deadline."""
    return QuotaService(client, default_limit=1000, deadline_s=DEADLINE_S, clock=lambda: FIXED)


async def timed(coro: object) -> tuple[object, float]:
    """The result of ``coro`` and how long it took."""
    started = time.monotonic()
    result = await coro  # type: ignore[misc]
    return result, time.monotonic() - started


def counts(server: EmbeddedServer) -> tuple[int, int, int]:
    """usage_total, usage_delta, records queued (each entry carries ``count`` records)."""
    with redis.Redis(port=server.port) as sync:
        total = int(sync.get(TOTAL) or 0)
        delta = int(sync.get(DELTA) or 0)
        entries = sync.xlen(QUEUE)
    return total, delta, entries


async def test_stopped_redis_is_unavailable_within_the_deadline(
    server: EmbeddedServer, client: aioredis.Redis,
) -> None:
    svc = quota(client)
    assert isinstance(await admit(svc, 5), Admitted)  # a pooled connection exists now
    server.kill()
    for key in (None, "k-stopped"):
        result, took = await timed(admit(svc, 5, key=key, digest="x"))
        assert isinstance(result, Unavailable), result
        assert took < DEADLINE_S + SLACK_S
        assert result.retry_after_s >= 1
    with pytest.raises(QuotaUnavailableError):
        await svc.get_limit("u1")

    # back on the same port (empty: persist=False); the next admission works at once
    server.start()
    assert isinstance(await admit(svc, 5, key="k-stopped", digest="x"), Admitted)
    assert counts(server) == (5, 5, 1)


async def test_frozen_redis_is_unavailable_and_a_retry_counts_once(
    server: EmbeddedServer, client: aioredis.Redis,
) -> None:
    svc = quota(client)
    assert isinstance(await admit(svc, 10), Admitted)
    server.pause()  # SIGSTOP: the kernel still accepts bytes, nothing answers
    try:
        with_key, took = await timed(admit(svc, 4, key="k-frozen", digest="x"))
        assert isinstance(with_key, Unavailable), with_key
        assert took < DEADLINE_S + SLACK_S
        without_key, took = await timed(admit(svc, 3))
        assert isinstance(without_key, Unavailable), without_key
        assert took < DEADLINE_S + SLACK_S
    finally:
        server.resume()
    # The frozen server may still run the scripts it had received: counted iff queued.
    await asyncio.sleep(0.2)
    # The client retries with its key: the first outcome if it ran, else admitted now.
    retry = await admit(svc, 4, key="k-frozen", digest="x")
    assert isinstance(retry, Admitted | Duplicate), retry
    again = await admit(svc, 4, key="k-frozen", digest="x")
    assert isinstance(again, Duplicate)
    total, delta, entries = counts(server)
    assert total == delta
    # 10 + 4 exactly once + (3 if the keyless script ran after the thaw, else 0)
    assert total in (14, 17)
    assert entries == {14: 2, 17: 3}[total]


async def test_client_pause_is_unavailable_and_nothing_is_counted_twice(
    server: EmbeddedServer, client: aioredis.Redis,
) -> None:
    svc = quota(client)
    with redis.Redis(port=server.port) as admin:
        admin.execute_command("CLIENT", "PAUSE", int(DEADLINE_S * 3 * 1000), "WRITE")
        result, took = await timed(admit(svc, 6, key="k-paused", digest="x"))
        assert isinstance(result, Unavailable), result
        assert took < DEADLINE_S + SLACK_S
        admin.execute_command("CLIENT", "UNPAUSE")
    await asyncio.sleep(0.2)
    retry = await admit(svc, 6, key="k-paused", digest="x")
    assert isinstance(retry, Admitted | Duplicate), retry
    assert counts(server) == (6, 6, 1)


async def test_admission_under_load_while_frozen_then_thawed_stays_exact(
    server: EmbeddedServer, client: aioredis.Redis,
) -> None:
    """Many keyed requests in flight when the server freezes; every client retries until it
    gets an answer: each request is counted and queued exactly once."""
    svc = quota(client)

    async def one(index: int) -> None:
        while True:
            result = await admit(svc, 2, key=f"req-{index}", digest="x")
            if isinstance(result, Admitted | Duplicate):
                return
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(one(i)) for i in range(40)]
    await asyncio.sleep(0.01)
    server.pause()
    await asyncio.sleep(DEADLINE_S * 1.5)
    server.resume()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert counts(server) == (80, 80, 40)


async def test_frozen_redis_and_a_multi_dataset_admission_counts_once_on_retry(
    server: EmbeddedServer, client: aioredis.Redis,
) -> None:
    """admit_many keeps admit's retry rules: with a key it is retried (and a retry after
    the thaw answers the first outcome), without one it is Unavailable at once; the
    datasets' entries are queued together exactly once."""
    svc = quota(client)
    entries = entries_of(*DATASETS)
    assert isinstance(await admit(svc, 1), Admitted)  # a pooled connection exists now
    server.pause()
    try:
        for key in ("k-multi", None):
            result, took = await timed(svc.admit_many(
                entries, counts=(2, 3, 4), idempotency_key=key, request_digest="x"))
            assert isinstance(result, Unavailable), result
            assert took < DEADLINE_S + SLACK_S
    finally:
        server.resume()
    await asyncio.sleep(0.2)
    retry = await svc.admit_many(entries, counts=(2, 3, 4), idempotency_key="k-multi",
                                 request_digest="x")
    assert isinstance(retry, Admitted | Duplicate), retry
    again = await svc.admit_many(entries, counts=(2, 3, 4), idempotency_key="k-multi",
                                 request_digest="x")
    assert isinstance(again, Duplicate) and again.count == 9
    assert again.entry_ids == retry.entry_ids
    with redis.Redis(port=server.port) as sync:
        total = int(sync.get(TOTAL) or 0)
        lengths = [sync.xlen(keys.queue_key("u1", "p1", d)) for d in DATASETS]
    # 1 + 9 exactly once + (9 if the keyless script ran after the thaw, else 0)
    assert (total, lengths) in ((10, [1, 1, 1]), (19, [2, 2, 2]))

"""Admission against a real Redis: exact keys, exact counts under concurrency, idempotency,
the month taken from Redis's clock whatever the caller's — on a standalone server and on a
3-master Redis Cluster started here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from quota import keys
from quota.admission import (
    IDEMPOTENCY_TTL_S,
    Admitted,
    Duplicate,
    IdempotencyConflict,
    QuotaExceeded,
    QuotaService,
)
from quota.periods import expire_at, parse_period, period_end
from quota.script import AnyRedis
from strictgate.embedded import EmbeddedServer, EmbeddedServerError, free_port, server_binary
from strictgate.queue_entry import QueueEntry

# A caller's clock far from Redis's: the month is Redis's (TIME in admit.lua), so admissions
# under this clock still count into this month's keys (the first one after a retry).
FIXED = datetime(2031, 6, 15, 12, 0, tzinfo=UTC)
RECORD = b'[{"timestamp":"2031-06-15T12:00:00Z","context":{}}]'


def this_month() -> str:
    """The month Redis counts in (the test server runs on this machine, on its clock)."""
    return keys.period_of(datetime.now(UTC))


def total_key(user_id: str = "u1") -> str:
    """``usage_total`` of this month."""
    return keys.usage_total_key(user_id, this_month())


def entry(user_id: str = "u1", dataset_id: str = "d1", project_id: str = "p1") -> QueueEntry:
    """A queue entry as the ingest handler builds it."""
    return QueueEntry(
        records=RECORD, trace_id="t-1", dataset_version=1,
        received_at="2031-06-15T12:00:00.000Z", project_id=project_id,
        dataset_id=dataset_id, user_id=user_id,
    )


def service(
    client: AnyRedis, *, default_limit: int = -1, clock: Callable[[], datetime] = lambda: FIXED,
) -> QuotaService:
    """A service on ``client`` with a fixed clock."""
    return QuotaService(client, default_limit=default_limit, deadline_s=2.0, clock=clock)


async def admit(
    svc: QuotaService, count: int, *, user_id: str = "u1", key: str | None = None,
    digest: str = "", dataset_id: str = "d1",
) -> object:
    """One admission of ``count`` records."""
    return await svc.admit(
        entry(user_id, dataset_id), count=count, idempotency_key=key, request_digest=digest,
    )


# --- a 3-master cluster from the embedded binary ------------------------------------------

CLUSTER_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


def start_cluster(base: Path) -> list[EmbeddedServer]:
    """Start 3 cluster-enabled servers, give each a third of the slots, join them, and wait
    until every node reports ``cluster_state:ok``."""
    servers: list[EmbeddedServer] = []
    buses: list[int] = []
    try:
        for index in range(3):
            bus = free_port()
            server = EmbeddedServer(
                base / f"node{index}", persist=False,
                extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-port", str(bus), "--cluster-node-timeout", "2000"],
            ).start()
            servers.append(server)
            buses.append(bus)
        clients = [redis.Redis(port=s.port) for s in servers]
        for client, (first, last) in zip(clients, CLUSTER_RANGES, strict=True):
            client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        for server, bus in zip(servers[1:], buses[1:], strict=True):
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", server.port, bus)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            infos = [c.cluster("info") for c in clients]
            if all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == 3
                   for i in infos):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("cluster did not become ok within 15 s")
        for client in clients:
            client.close()
        return servers
    except BaseException:
        for server in servers:
            server.stop()
        raise


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Ports of a 3-master cluster shared by this module's tests."""
    try:
        server_binary()
    except EmbeddedServerError as exc:
        pytest.skip(f"no valkey-server binary for the cluster tests: {exc}")
    servers = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield [s.port for s in servers]
    finally:
        for server in servers:
            server.stop()


def flush_cluster(ports: list[int]) -> None:
    """Empty every master."""
    for port in ports:
        with redis.Redis(port=port) as client:
            client.flushall()


@pytest.fixture(params=["standalone", "cluster"])
async def client(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[AnyRedis]:
    """An empty Redis: the shared standalone server, then the 3-master cluster."""
    if request.param == "standalone":
        sync = redis.Redis.from_url(redis_url)
        sync.flushdb()
        sync.close()
        plain = aioredis.Redis.from_url(redis_url)
        try:
            yield plain
        finally:
            await plain.aclose()
        return
    ports: list[int] = request.getfixturevalue("cluster_ports")
    flush_cluster(ports)
    cluster = RedisCluster(host="127.0.0.1", port=ports[0])
    await cluster.initialize()
    try:
        yield cluster
    finally:
        await cluster.aclose()


# --- tests ----------------------------------------------------------------------------------

async def test_exact_keys_values_and_expiry_with_a_fixed_clock(client: AnyRedis) -> None:
    svc = service(client, default_limit=100, clock=lambda: datetime.now(UTC))
    result = await admit(svc, 3, key="idem-1", digest="d" * 64)
    assert isinstance(result, Admitted)
    assert (result.used, result.limit, result.remaining) == (3, 100, 97)
    month = this_month()
    assert result.resets_at == period_end(month)

    total = f"usage_total:datasets:{{u1}}:{month}"
    delta = f"usage_delta:datasets:{{u1}}:{month}"
    queue = "queue:datasets:{u1}:p1:d1"
    idem = keys.idempotency_key("u1", "p1", _digest("idem-1"))
    assert await client.get(total) == b"3"
    assert await client.get(delta) == b"3"
    assert await client.exists("quota_limit:datasets:{u1}") == 0  # default not written
    # absolute expiry: 3 months after the month ends, whatever the time of the write
    year, number = parse_period(month)
    index = year * 12 + number - 1 + 4
    month_end_plus_3 = int(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp())
    assert await client.expiretime(total) == month_end_plus_3
    assert await client.expiretime(delta) == month_end_plus_3
    assert IDEMPOTENCY_TTL_S - 5 <= await client.ttl(idem) <= IDEMPOTENCY_TTL_S
    [(entry_id, fields)] = await client.xrange(queue)
    assert entry_id.decode() == result.entry_id
    assert fields == {k.encode(): v if isinstance(v, bytes) else v.encode()
                      for k, v in entry().to_fields().items()}
    assert await client.smembers(keys.queues_index_key()) == {queue.encode()}


def _digest(key: str) -> str:
    from quota.admission import idempotency_digest

    return idempotency_digest(key)


async def test_limit_1000_and_60_concurrent_batches_of_30_admit_exactly_33(
    client: AnyRedis,
) -> None:
    svc = service(client)
    await svc.set_limit("u1", 1000)
    results = await asyncio.gather(*(admit(svc, 30) for _ in range(60)))
    admitted = [r for r in results if isinstance(r, Admitted)]
    rejected = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(admitted), len(rejected)) == (33, 27)
    assert sorted(r.used for r in admitted) == list(range(30, 991, 30))
    assert all(r.requested == 30 and r.used == 990 and r.remaining == 10 for r in rejected)
    assert await client.get(total_key()) == b"990"
    assert await client.get(keys.usage_delta_key("u1", this_month())) == b"990"
    queued = await client.xrange("queue:datasets:{u1}:p1:d1")
    assert len(queued) == 33
    assert sum(30 for _ in queued) == 990  # every entry carries one batch of 30


async def test_same_idempotency_key_20_times_concurrently_is_admitted_once(
    client: AnyRedis,
) -> None:
    svc = service(client, default_limit=1000)
    results = await asyncio.gather(
        *(admit(svc, 7, key="same", digest="x") for _ in range(20))
    )
    admitted = [r for r in results if isinstance(r, Admitted)]
    duplicates = [r for r in results if isinstance(r, Duplicate)]
    assert (len(admitted), len(duplicates)) == (1, 19)
    assert {d.entry_id for d in duplicates} == {admitted[0].entry_id}
    assert all(d.count == 7 and d.used == 7 and d.remaining == 993 for d in duplicates)
    assert await client.get(total_key()) == b"7"
    assert await client.xlen("queue:datasets:{u1}:p1:d1") == 1


async def test_idempotency_conflict_changes_nothing(client: AnyRedis) -> None:
    svc = service(client)
    assert isinstance(await admit(svc, 2, key="k", digest="first"), Admitted)
    assert isinstance(await admit(svc, 5, key="k", digest="second"), IdempotencyConflict)
    assert await client.get(total_key()) == b"2"
    assert await client.xlen("queue:datasets:{u1}:p1:d1") == 1
    # the key is scoped per project: the same key in another project is a new request
    other = await svc.admit(entry(project_id="p2"), count=1, idempotency_key="k",
                            request_digest="second")
    assert isinstance(other, Admitted)


async def test_rejected_batch_changes_nothing_and_is_all_or_nothing(client: AnyRedis) -> None:
    svc = service(client, default_limit=10)
    assert isinstance(await admit(svc, 8), Admitted)
    before = datetime.now(UTC).replace(microsecond=0)
    rejected = await admit(svc, 3, key="k", digest="x")
    after = datetime.now(UTC)
    assert isinstance(rejected, QuotaExceeded)
    assert before <= rejected.server_time <= after  # Redis's clock (what Retry-After uses)
    assert rejected == QuotaExceeded(
        limit=10, used=8, requested=3, remaining=2, period=this_month(),
        resets_at=period_end(this_month()), server_time=rejected.server_time,
    )
    assert await client.get(total_key()) == b"8"
    assert await client.xlen("queue:datasets:{u1}:p1:d1") == 1
    # a rejected key is not remembered: the same key may be admitted once it fits
    assert isinstance(await admit(svc, 2, key="k", digest="x"), Admitted)
    assert isinstance(await admit(svc, 1), QuotaExceeded)


async def test_unlimited_default_and_explicit_limits(client: AnyRedis) -> None:
    unlimited = service(client)  # STRICTGATE_DEFAULT_MONTHLY_QUOTA default: -1
    result = await admit(unlimited, 10**6)
    assert isinstance(result, Admitted)
    assert (result.limit, result.remaining, result.used) == (-1, -1, 10**6)

    limited = service(client, default_limit=5)
    assert await limited.get_limit("u2") == 5
    assert isinstance(await admit(limited, 6, user_id="u2"), QuotaExceeded)
    await limited.set_limit("u2", -1)  # explicit unlimited beats the default
    assert await limited.get_limit("u2") == -1
    assert isinstance(await admit(limited, 6, user_id="u2"), Admitted)
    await limited.set_limit("u2", 0)
    assert isinstance(await admit(limited, 1, user_id="u2"), QuotaExceeded)
    for bad in (-2, True, 1.5, 2**53):
        with pytest.raises(ValueError):
            await limited.set_limit("u2", bad)  # type: ignore[arg-type]


def _days(n: int) -> timedelta:
    return timedelta(days=n)


async def _evalsha_calls(client: AnyRedis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_skewed_clocks_count_into_the_same_month(client: AnyRedis) -> None:
    """Three instances, one on time and two 40 days off: one key, one count, Redis's month in
    the headers' reset and the absolute expiry; a wrong guess is retried once, then not."""
    on_time = service(client, default_limit=100, clock=lambda: datetime.now(UTC))
    ahead = service(client, default_limit=100, clock=lambda: datetime.now(UTC) + _days(40))
    behind = service(client, default_limit=100, clock=lambda: datetime.now(UTC) - _days(40))
    month = this_month()
    standalone = isinstance(client, aioredis.Redis)
    await on_time.preload()  # so EVALSHA never meets NOSCRIPT (an EVAL) below
    if standalone:
        await client.config_resetstat()
    results = []
    for svc in (on_time, ahead, behind, ahead, behind):
        results.append(await admit(svc, 2))
        # the retry carried the expiry of Redis's month, not of the guess
        assert await client.expiretime(keys.usage_total_key("u1", month)) == expire_at(month)
    assert all(isinstance(r, Admitted) for r in results)
    assert [r.used for r in results] == [2, 4, 6, 8, 10]  # type: ignore[attr-defined]
    assert {r.resets_at for r in results} == {period_end(month)}  # type: ignore[attr-defined]
    assert await client.get(keys.usage_total_key("u1", month)) == b"10"
    assert await client.get(keys.usage_delta_key("u1", month)) == b"10"
    assert await client.xlen("queue:datasets:{u1}:p1:d1") == 5
    # nothing at all under the skewed instances' own months
    for skew in (40, -40):
        other = keys.period_of(datetime.now(UTC) + _days(skew))
        assert await client.exists(keys.usage_total_key("u1", other),
                                   keys.usage_delta_key("u1", other)) == 0
    assert await client.expiretime(keys.usage_total_key("u1", month)) == expire_at(month)
    if standalone:
        # 1 + 2 + 2 for the first admission of each, then 1 each: the month Redis gave is
        # the next guess (one round trip in the normal case)
        assert await _evalsha_calls(client) == 7

    # a replay and a refusal from a skewed instance describe Redis's month too
    assert isinstance(await admit(on_time, 1, key="k", digest="x"), Admitted)
    replay = await admit(service(client, default_limit=100,
                                 clock=lambda: datetime.now(UTC) + _days(40)),
                         1, key="k", digest="x")
    assert isinstance(replay, Duplicate) and (replay.used, replay.remaining) == (11, 89)
    refused = await admit(service(client, default_limit=100,
                                  clock=lambda: datetime.now(UTC) - _days(40)), 90)
    assert isinstance(refused, QuotaExceeded)
    assert (refused.period, refused.used, refused.resets_at) == (month, 11, period_end(month))
    report = await behind.usage("u1")  # the default month is Redis's as well
    assert (report.period, report.used) == (month, 11)


async def test_script_missing_from_the_server_is_reloaded(client: AnyRedis) -> None:
    svc = service(client)
    await svc.preload()
    assert isinstance(await admit(svc, 1), Admitted)
    await client.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    assert isinstance(await admit(svc, 1), Admitted)
    assert await client.get(total_key()) == b"2"


async def test_usage_report_counts_flushed_and_unflushed(client: AnyRedis) -> None:
    svc = service(client, default_limit=50)
    await admit(svc, 20)
    # as if a flush had taken 15 and written them, and another had taken 5 and crashed
    month = this_month()
    await client.set(keys.usage_delta_key("u1", month), 0)
    await client.set(keys.usage_pending_key("u1", month, "f1"), 5)
    report = await svc.usage("u1")
    assert (report.limit, report.used, report.remaining) == (50, 20, 30)
    assert (report.flushed, report.unflushed) == (15, 5)
    assert (report.period, report.resets_at) == (month, period_end(month))


async def test_bad_arguments_are_refused_before_redis(client: AnyRedis) -> None:
    svc = service(client)
    for bad in (0, -1, True):
        with pytest.raises(ValueError):
            await admit(svc, bad)
    with pytest.raises(keys.InvalidIdError):
        await admit(svc, 1, user_id="a:b")
    assert await client.dbsize() == 0


async def test_more_callers_than_pooled_connections_all_get_an_answer(
    client: AnyRedis,
) -> None:
    """300 concurrent admissions on a pool of 100: the overflow waits for a connection
    (nothing was sent, so waiting is safe) instead of failing."""
    svc = service(client, default_limit=600)
    results = await asyncio.gather(*(admit(svc, 2) for _ in range(300)))
    assert all(isinstance(r, Admitted) for r in results)
    assert await client.get(total_key()) == b"600"
    assert isinstance(await admit(svc, 1), QuotaExceeded)

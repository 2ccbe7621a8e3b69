"""Admission against a real Redis: exact keys, exact counts under concurrency, idempotency,
the month taken from Redis's clock whatever the caller's, and requests for several datasets
admitted all or nothing — on a standalone server and on a 3-master Redis Cluster started
here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from quota import keys
from quota.admission import (
    IDEMPOTENCY_TTL_S,
    MAX_ENTRIES,
    Admitted,
    Duplicate,
    EventsSeen,
    IdempotencyConflict,
    QueueFull,
    QuotaExceeded,
    QuotaService,
    Unavailable,
)
from quota.periods import expire_at, parse_period, period_end
from quota.script import AnyRedis
from strictgate.queue_entry import QueueEntry
from tests.cluster_support import skip_without_binary, start_cluster

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

@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Ports of a 3-master cluster shared by this module's tests."""
    skip_without_binary()
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.ports
    finally:
        cluster.stop()


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
    # 0 is allowed: an entry carrying quarantined records only (tests/test_quarantine_ingest.py)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError):
            await admit(svc, bad)  # type: ignore[arg-type]
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


# --- several datasets in one admission (admit_many) -------------------------------------------

DATASETS = ("orders", "users", "returns")


def queue_of(dataset_id: str, user_id: str = "u1") -> str:
    """The stream of ``dataset_id`` in project p1."""
    return keys.queue_key(user_id, "p1", dataset_id)


def entries_of(*datasets: str, user_id: str = "u1") -> list[QueueEntry]:
    """One entry per dataset, as the OrcaSheets dialect builds them (with its job name)."""
    return [msgspec.structs.replace(entry(user_id, dataset), event_type="ecommerce_sync")
            for dataset in datasets]


async def admit_many(
    svc: QuotaService, counts: tuple[int, ...], *, datasets: tuple[str, ...] = DATASETS,
    key: str | None = None, digest: str = "",
) -> object:
    """One admission of ``counts[i]`` records for ``datasets[i]``."""
    return await svc.admit_many(entries_of(*datasets), counts=counts, idempotency_key=key,
                                request_digest=digest)


async def queue_state(client: AnyRedis, datasets: tuple[str, ...] = DATASETS
                      ) -> list[tuple[int, int]]:
    """(entries in the stream, its queued-records counter) of each dataset."""
    return [(await client.xlen(queue_of(d)),
             int(await client.get(keys.queued_records_key(queue_of(d))) or 0))
            for d in datasets]


async def test_several_datasets_are_queued_and_counted_in_one_admission(
    client: AnyRedis,
) -> None:
    svc = service(client, default_limit=100)
    result = await admit_many(svc, (2, 3, 4), key="job-1", digest="d")
    assert isinstance(result, Admitted)
    assert (result.used, result.limit, result.remaining) == (9, 100, 91)
    assert len(result.entry_ids) == 3 and result.entry_id == result.entry_ids[0]
    assert await client.get(total_key()) == b"9"
    assert await client.get(keys.usage_delta_key("u1", this_month())) == b"9"
    assert await queue_state(client) == [(1, 2), (1, 3), (1, 4)]
    for dataset, entry_id, sent in zip(DATASETS, result.entry_ids, entries_of(*DATASETS),
                                       strict=True):
        [(stored_id, fields)] = await client.xrange(queue_of(dataset))
        assert stored_id.decode() == entry_id
        assert QueueEntry.from_fields(fields) == sent  # the event type included
    # every stream indexed for the worker, in one SADD
    assert await client.smembers(keys.queues_index_key()) == {
        queue_of(d).encode() for d in DATASETS}


def test_every_key_of_a_multi_dataset_admission_is_in_one_cluster_slot() -> None:
    month = this_month()
    names = [keys.quota_limit_key("u1"), keys.usage_total_key("u1", month),
             keys.usage_delta_key("u1", month),
             keys.idempotency_key("u1", "p1", _digest("job-1"))]
    for dataset in (*DATASETS, "shipment-tracking", "a" * 128):
        queue = queue_of(dataset)
        names += [queue, keys.queued_records_key(queue)]
    slots = {key_slot(name.encode()) for name in names}
    assert slots == {key_slot(b"u1")}


async def test_over_quota_queues_nothing_in_any_dataset(client: AnyRedis) -> None:
    svc = service(client, default_limit=10)
    refused = await admit_many(svc, (4, 4, 4), key="k", digest="x")
    assert isinstance(refused, QuotaExceeded)
    assert (refused.requested, refused.used, refused.remaining) == (12, 0, 10)
    assert await queue_state(client) == [(0, 0), (0, 0), (0, 0)]
    assert await client.exists(total_key(), keys.queues_index_key()) == 0
    # the refused key is not remembered; a request that fits is admitted whole
    assert isinstance(await admit_many(svc, (3, 3, 4), key="k", digest="x"), Admitted)
    assert await queue_state(client) == [(1, 3), (1, 3), (1, 4)]
    assert isinstance(await admit_many(svc, (1, 1, 1)), QuotaExceeded)


async def test_one_queue_over_its_bound_queues_nothing_anywhere(client: AnyRedis) -> None:
    svc = QuotaService(client, default_limit=-1, deadline_s=2.0, clock=lambda: FIXED,
                       max_queue_records=10)
    assert isinstance(await admit(svc, 8, dataset_id="users"), Admitted)
    full = await admit_many(svc, (1, 5, 1), key="k", digest="x")
    assert isinstance(full, QueueFull)
    assert (full.queued, full.dataset_id) == (8, "users")
    assert await queue_state(client) == [(0, 0), (1, 8), (0, 0)]
    assert await client.get(total_key()) == b"8"
    # an empty queue takes an entry bigger than the bound, as a single admission does
    admitted = await admit_many(svc, (50, 2, 1), key="k", digest="x")
    assert isinstance(admitted, Admitted) and admitted.used == 61
    assert await queue_state(client) == [(1, 50), (2, 10), (1, 1)]


async def test_a_replay_answers_the_request_s_total_and_changes_nothing(
    client: AnyRedis,
) -> None:
    svc = service(client, default_limit=100)
    first = await admit_many(svc, (2, 3, 4), key="job-1", digest="d")
    assert isinstance(first, Admitted)
    replays = await asyncio.gather(*(admit_many(svc, (2, 3, 4), key="job-1", digest="d")
                                     for _ in range(5)))
    for replay in replays:
        assert isinstance(replay, Duplicate)
        assert (replay.count, replay.used, replay.remaining) == (9, 9, 91)
        assert replay.entry_ids == first.entry_ids and replay.entry_id == first.entry_id
    assert isinstance(await admit_many(svc, (2, 3, 4), key="job-1", digest="other"),
                      IdempotencyConflict)
    assert await client.get(total_key()) == b"9"
    assert await queue_state(client) == [(1, 2), (1, 3), (1, 4)]


async def test_twenty_concurrent_multi_dataset_admissions_race_a_quota_exactly(
    client: AnyRedis,
) -> None:
    svc = service(client)
    await svc.set_limit("u1", 100)
    results = await asyncio.gather(*(admit_many(svc, (3, 5, 7)) for _ in range(20)))
    admitted = [r for r in results if isinstance(r, Admitted)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(admitted), len(refused)) == (6, 14)  # 6 * 15 = 90 <= 100 < 105
    assert sorted(r.used for r in admitted) == list(range(15, 91, 15))
    assert all(r.requested == 15 and r.used == 90 for r in refused)
    assert await client.get(total_key()) == b"90"
    assert await client.get(keys.usage_delta_key("u1", this_month())) == b"90"
    assert await queue_state(client) == [(6, 18), (6, 30), (6, 42)]
    # each admission's entries, one per stream, are those it was answered with
    stored = [{i.decode() for i, _ in await client.xrange(queue_of(d))} for d in DATASETS]
    for position, ids in enumerate(stored):
        assert ids == {r.entry_ids[position] for r in admitted}


async def test_one_entry_is_the_single_admission(client: AnyRedis) -> None:
    svc = service(client)
    result = await admit_many(svc, (4,), datasets=("orders",), key="k", digest="x")
    assert isinstance(result, Admitted) and result.entry_ids == (result.entry_id,)
    # the same stored record as admit's: a replay through either answers the same
    replay = await svc.admit(entries_of("orders")[0], count=4, idempotency_key="k",
                             request_digest="x")
    assert isinstance(replay, Duplicate) and replay.entry_ids == result.entry_ids
    assert await queue_state(client, ("orders",)) == [(1, 4)]


async def test_a_queue_key_of_another_type_fails_before_anything_is_written(
    client: AnyRedis,
) -> None:
    svc = service(client)
    await client.set(queue_of("returns"), "not a stream")
    result = await admit_many(svc, (1, 1, 1), key="k", digest="x")
    assert isinstance(result, Unavailable) and result.reason == "redis_error"
    assert await queue_state(client, DATASETS[:2]) == [(0, 0), (0, 0)]
    assert await client.exists(total_key(), keys.idempotency_key("u1", "p1", _digest("k"))) == 0


async def test_bad_multi_dataset_arguments_are_refused_before_redis(client: AnyRedis) -> None:
    svc = service(client)
    two = entries_of("orders", "users")
    mixed_users = [two[0], entries_of("users", user_id="u2")[0]]
    mixed_projects = [two[0], entry(project_id="p2", dataset_id="users")]
    bad_event = [two[0], msgspec.structs.replace(two[1], event_type="tab\there")]
    for entries, counts in [
        ([], []), (two, [1]), (two, [1, -1]), (two, [1, True]), (two, [1, 1.0]),
        (mixed_users, [1, 1]), (mixed_projects, [1, 1]), (entries_of("orders", "orders"),
                                                           [1, 1]),
        (bad_event, [1, 1]),
        ([entry(dataset_id=f"d{i}") for i in range(MAX_ENTRIES + 1)], [1] * (MAX_ENTRIES + 1)),
    ]:
        with pytest.raises(ValueError):
            await svc.admit_many(entries, counts=counts,  # type: ignore[arg-type]
                                 idempotency_key=None, request_digest="")
    assert await client.dbsize() == 0


async def test_event_ids_are_decided_in_the_admission_s_slot(client: AnyRedis) -> None:
    """One admission with client event ids, its resend and the request left with none (see
    tests/test_quota_event_ids.py for the rest), on both servers."""
    svc = service(client, default_limit=100)
    seen = [keys.event_id_key("u1", "p1", event_id) for event_id in ("a", "b")]
    admitted = await svc.admit_many(entries_of("orders"), counts=[2], idempotency_key=None,
                                    request_digest="", event_keys=seen)
    assert isinstance(admitted, Admitted) and admitted.used == 2
    new = keys.event_id_key("u1", "p1", "c")
    resend = await svc.admit_many(entries_of("orders", "users"), counts=[1, 2],
                                  idempotency_key="k", request_digest="x",
                                  event_keys=[seen[1], new, seen[0]])
    assert resend == EventsSeen(positions=(0, 2))
    assert await client.exists(new, keys.idempotency_key("u1", "p1", _digest("k"))) == 0
    empty = await svc.admit_many([], counts=[], idempotency_key="k", request_digest="x",
                                 user_id="u1", project_id="p1")
    assert isinstance(empty, Admitted) and (empty.used, empty.entry_ids) == (2, ())
    assert await client.get(seen[0]) == b"1"
    assert await queue_state(client, ("orders", "users")) == [(1, 2), (0, 0)]
    # the server's own hashing puts the ids in the slot of the user's quota keys
    if isinstance(client, RedisCluster):
        slots = {await client.cluster_keyslot(name)
                 for name in (*seen, new, keys.quota_limit_key("u1"))}
        assert slots == {key_slot(b"u1")}

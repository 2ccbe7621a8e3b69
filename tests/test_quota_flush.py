"""The usage flush: crash at every step, then check ledger == admitted usage exactly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from quota import keys
from quota.admission import Admitted, QuotaService
from quota.flush import flush_usage
from quota.ledger import Ledger
from quota.periods import expire_at
from quota.script import AnyRedis
from tests.cluster_support import skip_without_binary, start_cluster
from tests.test_quota_admission import FIXED, admit, flush_cluster, this_month

STEPS = ["replay_written", "replay_deleted", "taken", "written", "deleted"]
USERS = ["u1", "u2", "u3"]
# Admissions count into Redis's month only; the month before holds what admissions of that
# month left unflushed, written as admit.lua writes it.
PREVIOUS = "2031-05"  # any month whose keys are not yet expired
PERIODS = [PREVIOUS, this_month()]


class Crash(Exception):
    """Stands for the process dying at a step."""


def crash_at(step: str):  # type: ignore[no-untyped-def]
    """A hook that dies when the flush reaches ``step``."""

    def hook(name: str) -> None:
        if name == step:
            raise Crash(step)

    return hook


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A 3-master cluster for the cluster flush test."""
    skip_without_binary()
    cluster = start_cluster(tmp_path_factory.mktemp("flush-cluster"))
    try:
        yield cluster.ports
    finally:
        cluster.stop()


@pytest.fixture
async def cluster(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    """An empty cluster client."""
    flush_cluster(cluster_ports)
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


async def admit_some(client: AnyRedis, rng: random.Random, rounds: int = 12) -> int:
    """Admit random batches for several users over two months; returns records admitted."""
    admitted = 0
    svc = QuotaService(client, default_limit=-1, deadline_s=2.0, clock=lambda: FIXED)
    for _ in range(rounds):
        count, user = rng.randint(1, 50), rng.choice(USERS)
        for key in (keys.usage_total_key(user, PREVIOUS), keys.usage_delta_key(user, PREVIOUS)):
            await client.incrby(key, count)
            await client.expireat(key, expire_at(PREVIOUS))
        admitted += count
        count = rng.randint(1, 50)
        result = await admit(svc, count, user_id=rng.choice(USERS))
        assert isinstance(result, Admitted)
        admitted += count
    return admitted


async def usage_totals(client: AnyRedis) -> dict[tuple[str, str], int]:
    """usage_total per (user, period), read straight from Redis."""
    totals = {}
    for user in USERS:
        for period in PERIODS:
            value = await client.get(f"usage_total:datasets:{{{user}}}:{period}")
            if value is not None:
                totals[(user, period)] = int(value)
    return totals


async def leftovers(client: AnyRedis) -> list[bytes]:
    """Delta and pending keys still in Redis."""
    found = [k async for k in client.scan_iter(match="usage_delta:*")]
    return found + [k async for k in client.scan_iter(match="usage_pending:*")]


@pytest.mark.parametrize("second_crash", STEPS)
async def test_crash_at_each_step_loses_nothing_and_counts_nothing_twice(
    aredis: AnyRedis, tmp_path: Path, second_crash: str,
) -> None:
    ledger_path = tmp_path / "usage-ledger.jsonl"
    rng = random.Random(second_crash)
    await admit_some(aredis, rng)
    # a first flush dies after taking the deltas: pending keys are left for replay
    with pytest.raises(Crash):
        await flush_usage(aredis, ledger_path, lambda: FIXED, hook=crash_at("taken"))
    await admit_some(aredis, rng)
    # a second flush dies at another step, with replays and fresh deltas in play
    with pytest.raises(Crash):
        await flush_usage(aredis, ledger_path, lambda: FIXED, hook=crash_at(second_crash))
    await admit_some(aredis, rng)
    await flush_usage(aredis, ledger_path, lambda: FIXED)

    assert Ledger(ledger_path).totals() == await usage_totals(aredis)
    assert await leftovers(aredis) == []
    # a flush with nothing to do writes nothing
    report = await flush_usage(aredis, ledger_path, lambda: FIXED)
    assert (report.rows, report.replayed_rows) == (0, 0)
    assert Ledger(ledger_path).totals() == await usage_totals(aredis)


async def test_torn_last_line_is_cut_and_rewritten(aredis: AnyRedis, tmp_path: Path) -> None:
    ledger_path = tmp_path / "usage-ledger.jsonl"
    await admit_some(aredis, random.Random(1))
    with pytest.raises(Crash):
        await flush_usage(aredis, ledger_path, lambda: FIXED, hook=crash_at("taken"))
    # the process died in the middle of writing a row
    ledger_path.write_bytes(b'{"flush_id":"x","user_id":"u1","peri')
    report = await flush_usage(aredis, ledger_path, lambda: FIXED)
    assert report.replayed_rows > 0
    assert Ledger(ledger_path).totals() == await usage_totals(aredis)


async def test_rows_are_one_per_user_month_and_flush(aredis: AnyRedis, tmp_path: Path) -> None:
    ledger_path = tmp_path / "usage-ledger.jsonl"
    await admit_some(aredis, random.Random(2))
    first = await flush_usage(aredis, ledger_path, lambda: FIXED)
    await admit_some(aredis, random.Random(3))
    second = await flush_usage(aredis, ledger_path, lambda: FIXED)
    rows = list(Ledger(ledger_path).rows())
    ids = [row.row_id for row in rows]
    assert len(ids) == len(set(ids)) == first.rows + second.rows
    assert {row.flush_id for row in rows} == {first.flush_id, second.flush_id}
    assert all(row.records > 0 and row.flushed_at.startswith("2031-06-15T12:00")
               for row in rows)


async def test_flushes_racing_admissions_and_each_other_stay_exact(
    aredis: AnyRedis, tmp_path: Path,
) -> None:
    ledger_path = tmp_path / "usage-ledger.jsonl"
    svc = QuotaService(aredis, default_limit=-1, deadline_s=2.0, clock=lambda: FIXED)
    stop = asyncio.Event()

    async def flusher() -> None:
        while not stop.is_set():
            await flush_usage(aredis, ledger_path, lambda: FIXED)

    flushers = [asyncio.create_task(flusher()) for _ in range(2)]
    results = []
    for wave in range(6):  # waves of 50: the default pool holds 100 connections
        results += await asyncio.gather(
            *(admit(svc, 3, user_id=USERS[i % 3]) for i in range(wave * 50, wave * 50 + 50))
        )
    stop.set()
    await asyncio.gather(*flushers)
    await flush_usage(aredis, ledger_path, lambda: FIXED)
    assert all(isinstance(r, Admitted) for r in results)
    assert Ledger(ledger_path).totals() == await usage_totals(aredis)
    assert sum(Ledger(ledger_path).totals().values()) == 900


@pytest.mark.parametrize("crash", ["taken", "written"])
async def test_flush_on_a_cluster_scans_every_master(
    cluster: RedisCluster, tmp_path: Path, crash: str,
) -> None:
    ledger_path = tmp_path / "usage-ledger.jsonl"
    rng = random.Random(crash)
    await admit_some(cluster, rng)
    with pytest.raises(Crash):
        await flush_usage(cluster, ledger_path, lambda: FIXED, hook=crash_at(crash))
    await admit_some(cluster, rng)
    await flush_usage(cluster, ledger_path, lambda: FIXED)
    totals = await usage_totals(cluster)
    # the users' keys really are spread over several masters
    slots = {cluster.keyslot(f"{{{user}}}") for user in USERS}
    owners = {cluster.get_node_from_key(f"{{{user}}}").name for user in USERS}  # type: ignore[union-attr]
    assert len(slots) == 3 and len(owners) >= 2
    assert Ledger(ledger_path).totals() == totals
    assert await leftovers(cluster) == []


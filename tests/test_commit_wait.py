"""The commit notification of ``wait: true`` (:mod:`strictgate.ingest.commit_wait` and the
lake worker's side in :mod:`strictgate.worker.lake_sink`), against a real Redis and a real
DuckLake: the snapshot a waiter learns holds the entry's rows and the one before does not,
redelivered entries get the snapshot of their first commit, queues nobody watches get no
markers, and the wait is bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from strictgate.embedded import free_port
from strictgate.ingest.commit_wait import unwatch_commits, wait_for_commit, watch_commits
from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.tables import table_name
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.unavailable import REDIS_FAILURES
from strictgate.worker.lake_sink import COMMITTED_TTL_S, LakeWorker, current_snapshot
from tests.worker_lake_support import (
    enqueue,
    entry_fields,
    register_seed,
    running,
    seed_records,
)


@pytest.fixture
def lake(tmp_path: Path) -> LakeConfig:
    """An empty lake under the test's directory."""
    return LakeConfig.local(tmp_path)


def _add(r: redis.Redis, tag: str, n: int = 3) -> str:
    """Queue one entry of ``n`` seed records traced ``tag``; its stream id."""
    stream = enqueue(r, entry_fields(seed_records(n, tag), tag))
    last: Any = r.xrevrange(stream, count=1)
    return str(last[0][0].decode())


def _traces_at(lake: LakeConfig, snapshot: int) -> list[str]:
    """The trace ids of table p1/13's rows as of ``snapshot`` (time travel)."""
    con = connect(lake)
    try:
        rows = con.execute(f'SELECT DISTINCT "__traceId" FROM {table_name("p1", "13")} '
                           f"AT (VERSION => {int(snapshot)}) ORDER BY 1").fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def _ledger_snapshot(lake: LakeConfig, stream_id: str) -> int:
    con = connect(lake)
    try:
        row = con.execute("SELECT snapshot_id FROM lake.__strictgate.ledger WHERE entry_id = ?",
                          [f"u1/{stream_id}"]).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


async def _drain(aredis: aioredis.Redis, lake: LakeConfig) -> LakeWorker:
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        await worker.drain()
    finally:
        worker.close()
    return worker


async def test_a_waiter_learns_the_snapshot_that_holds_its_rows(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    await watch_commits(aredis, "u1", "p1", "13", 5)
    # the first commit creates the table (snapshots read from the ledger), the second is
    # the lake's next snapshot (read after the commit)
    first = [_add(sync_redis, "a0"), _add(sync_redis, "a1")]
    await _drain(aredis, lake)
    second = _add(sync_redis, "b0")
    await _drain(aredis, lake)

    snap_a = await wait_for_commit(aredis, "u1", "p1", "13", first, 1)
    snap_b = await wait_for_commit(aredis, "u1", "p1", "13", [second], 1)
    assert snap_a is not None and snap_b is not None and snap_b > snap_a
    assert snap_a == _ledger_snapshot(lake, first[0]) == _ledger_snapshot(lake, first[1])
    assert snap_b == _ledger_snapshot(lake, second)
    assert _traces_at(lake, snap_a) == ["a0", "a1"]
    assert _traces_at(lake, snap_b) == ["a0", "a1", "b0"]
    assert _traces_at(lake, snap_b - 1) == ["a0", "a1"]
    assert await wait_for_commit(aredis, "u1", "p1", "13", [*first, second], 1) == snap_b
    marker = keys.committed_key("u1", "p1", "13", second)
    assert 0 < sync_redis.ttl(marker) <= COMMITTED_TTL_S


async def test_redelivered_entries_get_the_snapshot_of_their_first_commit(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    # a worker that died between its commit and XACK: the worker that takes the entries
    # over skips them as written, and still tells the waiter where their rows are
    await register_seed(aredis)
    ids = [_add(sync_redis, f"r{i}") for i in range(2)]
    stream = keys.queue_key("u1", "p1", "13")
    sync_redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0")
    reply: Any = sync_redis.xreadgroup(keys.QUEUE_GROUP, "dead", {stream: ">"})
    delivered = reply[0][1]
    cache = LakeWorker(aredis, lake).definitions
    await cache.prefetch({("p1", "13", 1)})
    writer = LakeWriter(lake, cache)
    writer.write([LakeEntry.from_fields(i, f) for i, f in delivered], first_delivery=True)
    first_commit = current_snapshot(writer.con)
    writer.close()
    await watch_commits(aredis, "u1", "p1", "13", 5)
    later = _add(sync_redis, "later")
    await _drain(aredis, lake)  # commits ``later``, then takes over the dead one's entries

    assert await wait_for_commit(aredis, "u1", "p1", "13", ids, 1) == first_commit
    later_snapshot = await wait_for_commit(aredis, "u1", "p1", "13", [later], 1)
    assert later_snapshot is not None and later_snapshot > first_commit
    assert _traces_at(lake, first_commit) == ["r0", "r1"]


async def test_a_queue_nobody_watches_gets_no_markers(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    await watch_commits(aredis, "u1", "p1", "13", 5)
    await unwatch_commits(aredis, "u1", "p1", "13")
    _add(sync_redis, "x")
    worker = await _drain(aredis, lake)
    assert worker.stats.entries_written == 1
    assert list(sync_redis.scan_iter("committed:*")) == []
    assert list(sync_redis.scan_iter("commit-waiters:*")) == []


async def test_watches_count_waiters_and_expire(aredis: aioredis.Redis,
                                                sync_redis: redis.Redis) -> None:
    key = keys.commit_waiters_key("u1", "p1", "13")
    await watch_commits(aredis, "u1", "p1", "13", 20)
    await watch_commits(aredis, "u1", "p1", "13", 1)
    assert sync_redis.get(key) == b"2"
    # a shorter wait never cuts a longer one's watch short
    assert 20 < sync_redis.ttl(key) <= 30
    await unwatch_commits(aredis, "u1", "p1", "13")
    assert sync_redis.get(key) == b"1"
    await unwatch_commits(aredis, "u1", "p1", "13")
    assert not sync_redis.exists(key)
    # an expired watch undone: no counter left behind, below zero and without a TTL
    await unwatch_commits(aredis, "u1", "p1", "13")
    assert not sync_redis.exists(key)


async def test_the_wait_is_bounded(aredis: aioredis.Redis) -> None:
    await watch_commits(aredis, "u1", "p1", "13", 1)
    started = time.monotonic()
    assert await wait_for_commit(aredis, "u1", "p1", "13", ["1-0"], 0.4) is None
    assert 0.4 <= time.monotonic() - started < 1.5
    assert await wait_for_commit(aredis, "u1", "p1", "13", [], 5) is None


async def test_a_marker_set_during_the_wait_ends_it(aredis: aioredis.Redis) -> None:
    async def commit_later() -> None:
        await asyncio.sleep(0.3)
        await aredis.set(keys.committed_key("u1", "p1", "13", "5-0"), 41)
        await aredis.set(keys.committed_key("u1", "p1", "13", "6-0"), 42)

    task = asyncio.create_task(commit_later())
    started = time.monotonic()
    assert await wait_for_commit(aredis, "u1", "p1", "13", ["5-0", "6-0"], 10) == 42
    # polled at most POLL_MAX_S apart
    assert time.monotonic() - started < 0.3 + 0.5
    await task


async def test_redis_down_raises_a_redis_failure() -> None:
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    try:
        with pytest.raises(REDIS_FAILURES):
            await watch_commits(client, "u1", "p1", "13", 1)
        with pytest.raises(REDIS_FAILURES):
            await wait_for_commit(client, "u1", "p1", "13", ["1-0"], 1)
    finally:
        await client.aclose()


async def test_a_client_waiting_request_after_request_is_not_held_by_the_commit_interval(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    """A producer sending ``wait: true`` requests one after another: each commit somebody
    waited for makes the worker poll again at once, so the next request is committed
    within the poll, not after the commit interval (4 s here); without a waiter the
    interval holds."""
    await register_seed(aredis)
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0, commit_interval_s=4.0)
    _add(sync_redis, "warm")  # the queue exists before the worker looks for queues
    async with running(worker):
        waits = []
        for i in range(3):
            await watch_commits(aredis, "u1", "p1", "13", 10)
            started = time.monotonic()
            entry = _add(sync_redis, f"w{i}")
            assert await wait_for_commit(aredis, "u1", "p1", "13", [entry], 10) is not None
            waits.append(time.monotonic() - started)
            await unwatch_commits(aredis, "u1", "p1", "13")
        assert max(waits[1:]) < 2.0, waits
        # nobody waits any more: once the hurry is over, the interval holds again
        await asyncio.sleep(2.5)
        _add(sync_redis, "a")  # found by the next poll and committed...
        await asyncio.sleep(1.0)
        commits = worker.commits
        _add(sync_redis, "b")  # ...then the interval passes before this one's commit
        await asyncio.sleep(1.5)
        assert worker.commits == commits

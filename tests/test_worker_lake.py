"""The lake worker against a real Redis and a real DuckLake (SQLite catalog, Parquet files):
many entries per commit, exactly once across redelivery, poison entries set aside."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from strictgate.context import utc_now
from strictgate.lake.engine import LakeConfig
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.settings import load_settings
from strictgate.worker import lake_sink
from strictgate.worker.consumer import Worker
from strictgate.worker.lake_sink import LakeWorker
from strictgate.worker.service import build_worker
from tests.worker_lake_support import (
    enqueue,
    entry_fields,
    lake_rows,
    register_seed,
    running,
    seed_records,
)


@pytest.fixture
def lake(tmp_path: Path) -> LakeConfig:
    """An empty lake under the test's directory."""
    return LakeConfig.local(tmp_path)


async def test_entries_of_two_datasets_land_in_one_commit_exactly_once(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis, "p1", "13")
    await register_seed(aredis, "p1", "14")
    for i in range(30):
        enqueue(sync_redis, entry_fields(seed_records(10, f"a{i}"), f"ta{i}"))
        enqueue(sync_redis, entry_fields(seed_records(5, f"b{i}"), f"tb{i}", dataset="14"),
                dataset="14")
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        assert await worker.drain() == 60
    finally:
        worker.close()
    # one commit held both datasets' entries
    assert worker.commits == 1 and worker.records_per_commit == [450]
    rows = lake_rows(lake)
    assert len(rows) == 300 and len(set(rows)) == 300
    assert {r[0] for r in rows} == {f"ta{i}" for i in range(30)}
    assert len(lake_rows(lake, "p1", "14")) == 150
    for dataset in ("13", "14"):
        stream = keys.queue_key("u1", "p1", dataset)
        assert sync_redis.xlen(stream) == 0
        assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0
        assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0


async def test_redelivered_entries_already_committed_are_only_acknowledged(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    # a worker that died between its commit and XACK: the rows and the ledger are in the
    # lake, the entries still pending in Redis
    await register_seed(aredis)
    stream = ""
    for i in range(4):
        stream = enqueue(sync_redis, entry_fields(seed_records(3, f"r{i}"), f"t{i}"))
    sync_redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0")
    reply = sync_redis.xreadgroup(keys.QUEUE_GROUP, "dead", {stream: ">"}, count=3)
    delivered = reply[0][1]
    cache = LakeWorker(aredis, lake).definitions
    await cache.prefetch({("p1", "13", 1)})
    writer = LakeWriter(lake, cache)
    writer.write([LakeEntry.from_fields(i, f) for i, f in delivered], first_delivery=True)
    writer.close()
    before = lake_rows(lake)
    assert len(before) == 9

    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        assert await worker.drain() == 4
    finally:
        worker.close()
    rows = lake_rows(lake)
    assert len(rows) == 12 and len(set(rows)) == 12
    assert worker.stats.entries_finished_from_marks == 3  # skipped: in the ledger
    assert sync_redis.xlen(stream) == 0
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0


def _workers(aredis: aioredis.Redis, tmp_path: Path, lake: LakeConfig) -> dict[str, Worker]:
    return {"lake": LakeWorker(aredis, lake, reclaim_idle_ms=0),
            "jsonl": Worker(aredis, tmp_path / "output", reclaim_idle_ms=0)}


@pytest.mark.parametrize("sink", ["lake", "jsonl"])
@pytest.mark.parametrize(("poison", "detail"), [
    ({"records": b'[{"timestamp": "2026-06-10T10:00:00Z"}, 5]'}, "not a non-empty JSON object"),
    ({"records": b"not json"}, "DecodeError"),
    ({"dataset_version": b"x"}, "queue entry field dataset_version: not a version number"),
    ({"user_id": None}, "queue entry field user_id: missing"),
    ({"received_at": b"2026-06-10 10:00"}, "queue entry field received_at: not an RFC 3339"),
])
async def test_poison_entry_is_dead_lettered_and_the_worker_goes_on(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig, tmp_path: Path,
    sink: str, poison: dict[str, bytes | None], detail: str,
) -> None:
    await register_seed(aredis)
    stream = enqueue(sync_redis, entry_fields(seed_records(2, "good1"), "g1"))
    bad = {name: value for name, value in
           {**entry_fields(seed_records(1, "bad"), "bad"), **poison}.items()
           if value is not None}  # None: the field is left out
    stream = keys.queue_key("u1", "p1", "13")
    bad_id = sync_redis.xadd(stream, bad)  # type: ignore[arg-type]
    enqueue(sync_redis, entry_fields(seed_records(3, "good2"), "g2"))
    worker = _workers(aredis, tmp_path, lake)[sink]
    dead: list[str] = []
    worker.on_dead_letter = dead.append
    try:
        await worker.drain()
    finally:
        if isinstance(worker, LakeWorker):
            worker.close()
    if sink == "lake":
        traces = [r[0] for r in lake_rows(lake)]
    else:
        traces = [orjson.loads(line)["__traceId"] for p in (tmp_path / "output").rglob("*.jsonl")
                  for line in p.read_bytes().splitlines()]
    assert sorted(traces) == ["g1", "g1", "g2", "g2", "g2"]
    assert dead == [dead[0]] and dead[0].startswith("malformed")
    assert worker.stats.dead_letters == 1
    [(_, fields)] = sync_redis.xrange(keys.dead_letter_key(stream))
    assert fields[b"dead_entry_id"] == bad_id
    assert fields[b"trace_id"] == b"bad"
    assert detail in fields[b"dead_detail"].decode()
    assert sync_redis.xlen(stream) == 0
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0


async def test_entry_whose_definition_is_gone_is_dead_lettered(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    stream = enqueue(sync_redis, entry_fields(seed_records(2, "v1"), "ok"))
    enqueue(sync_redis, entry_fields(seed_records(2, "v9"), "nov", version=9))
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        await worker.drain()
    finally:
        worker.close()
    assert [r[0] for r in lake_rows(lake)] == ["ok", "ok"]
    [(_, fields)] = sync_redis.xrange(keys.dead_letter_key(stream))
    assert fields[b"dead_reason"] == b"definition_missing"
    # the counter of queued records went back to zero (both entries are out of the queue)
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0


@pytest.mark.parametrize("bad_value", [b'"\xff\xfe"', b'"a\\ud800"'])
async def test_an_entry_duckdb_cannot_read_is_found_by_splitting_and_dead_lettered(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig, bad_value: bytes,
) -> None:
    # bytes no validator would queue (invalid UTF-8, a lone surrogate escape) make DuckDB's
    # JSON reader fail the whole commit: the batch is split until only that entry is left
    await register_seed(aredis)
    for i in range(5):
        enqueue(sync_redis, entry_fields(seed_records(2, f"k{i}"), f"t{i}"))
    bad = entry_fields(seed_records(1, "bad"), "bad")
    bad["records"] = bad["records"].replace(b'"RO"', bad_value)
    stream = keys.queue_key("u1", "p1", "13")
    sync_redis.xadd(stream, bad)  # type: ignore[arg-type]
    for i in range(5, 8):
        enqueue(sync_redis, entry_fields(seed_records(2, f"k{i}"), f"t{i}"))
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        await worker.drain()
    finally:
        worker.close()
    rows = lake_rows(lake)
    assert sorted({r[0] for r in rows}) == [f"t{i}" for i in range(8)]
    assert len(rows) == 16 and len(set(rows)) == 16
    [(_, fields)] = sync_redis.xrange(keys.dead_letter_key(stream))
    assert fields[b"trace_id"] == b"bad" and fields[b"dead_reason"].startswith(b"malformed")
    assert worker.health.ok
    assert sync_redis.xlen(stream) == 0


async def test_the_next_batch_is_read_while_a_commit_runs_and_acked_only_after_it(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    stream = ""
    for i in range(10):
        stream = enqueue(sync_redis, entry_fields(seed_records(4, f"p{i}"), f"t{i}"))
    # 5 entries per read; reclaim not due after the first pass
    worker = LakeWorker(aredis, lake, batch_size=5, max_batch_entries=5, batch_records=20,
                        writer_threads=2)
    seen: list[int] = []

    def first_commit_waits_for_the_next_read() -> None:
        # in the writer's thread, inside the first commit's transaction
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            pending = sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"]
            if pending == 10:  # the second batch read; nothing acknowledged yet
                seen.append(pending)
            time.sleep(0.01)

    writer = worker._open_writer()
    assert writer.threads == 2
    writer.before_commit = first_commit_waits_for_the_next_read
    try:
        assert await worker.drain() == 10
    finally:
        worker.close()
    assert seen == [10]
    assert worker.commits == 2
    rows = lake_rows(lake)
    assert len(rows) == 40 and len(set(rows)) == 40
    assert sync_redis.xlen(stream) == 0
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0


async def test_a_reclaim_waits_for_the_running_commit(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    # the running commit's entries are pending to this worker too: a reclaim must not take
    # them as a dead consumer's (acknowledged twice: the backlog counter would go negative)
    await register_seed(aredis)
    stream = ""
    for i in range(4):
        stream = enqueue(sync_redis, entry_fields(seed_records(4, f"c{i}"), f"t{i}"))
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    worker._open_writer().before_commit = lambda: time.sleep(0.3)
    try:
        assert await worker.run_once() == 4  # its commit still runs
        await asyncio.sleep(0.05)
        await worker.reclaim()
        await worker.drain()
    finally:
        worker.close()
    assert worker.stats.entries_finished_from_marks == 0
    assert len(lake_rows(lake)) == 16
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0


def test_a_worker_process_of_its_own_writes_with_every_core(
    aredis: aioredis.Redis, tmp_path: Path,
) -> None:
    settings = load_settings({"STRICTGATE_DATA_DIR": str(tmp_path), "STRICTGATE_SINK": "lake"})
    alone = build_worker(aredis, settings, utc_now, None, alone=True)
    beside_api = build_worker(aredis, settings, utc_now, None)
    assert isinstance(alone, LakeWorker) and isinstance(beside_api, LakeWorker)
    assert alone.config.threads == min(os.cpu_count() or 1, 4)
    assert beside_api.config.threads == 1


async def _commits_under_a_trickle(aredis: aioredis.Redis, sync_redis: redis.Redis,
                                   tmp_path: Path, interval: str) -> tuple[int, int, float]:
    """(commits, rows, seconds it ran) of a worker built by ``build_worker`` with
    ``STRICTGATE_COMMIT_INTERVAL_S=interval`` while one-record entries arrive every 10 ms
    for 1.5 s."""
    settings = load_settings({"STRICTGATE_DATA_DIR": str(tmp_path / interval),
                              "STRICTGATE_SINK": "lake",
                              "STRICTGATE_COMMIT_INTERVAL_S": interval})
    worker = build_worker(aredis, settings, utc_now, None)
    assert isinstance(worker, LakeWorker)
    # the stream exists before the worker's first look for streams
    enqueue(sync_redis, entry_fields(seed_records(1, f"{interval}-0"), "t0"))
    started = time.monotonic()
    async with running(worker):
        for i in range(1, 150):
            await asyncio.sleep(0.01)
            enqueue(sync_redis, entry_fields(seed_records(1, f"{interval}-{i}"), f"t{i}"))
        await asyncio.sleep(float(interval) + 0.5)
    return worker.commits, len(lake_rows(worker.config)), time.monotonic() - started


async def test_a_trickle_of_small_requests_is_committed_once_per_commit_interval(
    aredis: aioredis.Redis, sync_redis: redis.Redis, tmp_path: Path,
) -> None:
    """STRICTGATE_COMMIT_INTERVAL_S sets how often a worker commits under a trickle of
    small requests: fewer, larger commits for a longer interval, every record written."""
    await register_seed(aredis)
    short_commits, short_rows, _ = await _commits_under_a_trickle(
        aredis, sync_redis, tmp_path, "0.02")
    long_commits, long_rows, ran_s = await _commits_under_a_trickle(
        aredis, sync_redis, tmp_path, "0.5")
    assert short_rows == long_rows == 150
    assert long_commits <= ran_s / 0.5 + 1
    assert short_commits >= 3 * long_commits, (short_commits, long_commits)


async def test_a_lone_request_is_committed_at_once_and_the_interval_follows_a_commit(
    aredis: aioredis.Redis, sync_redis: redis.Redis, tmp_path: Path,
) -> None:
    """An idle worker polls quickly whatever STRICTGATE_COMMIT_INTERVAL_S says (a lone
    record after a quiet spell is written at once); the interval is waited after a pass that
    wrote something."""
    await register_seed(aredis)
    settings = load_settings({"STRICTGATE_DATA_DIR": str(tmp_path), "STRICTGATE_SINK": "lake",
                              "STRICTGATE_COMMIT_INTERVAL_S": "4"})
    worker = build_worker(aredis, settings, utc_now, None)
    assert isinstance(worker, LakeWorker)

    async def commits_within(n: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if worker.commits >= n:
                return True
            await asyncio.sleep(0.02)
        return worker.commits >= n

    enqueue(sync_redis, entry_fields(seed_records(1, "warm"), "t-warm"))
    async with running(worker):
        assert await commits_within(1, 10)
        await asyncio.sleep(4.5)  # the interval after that commit passes; the worker idles
        enqueue(sync_redis, entry_fields(seed_records(1, "lone"), "t-lone"))
        assert await commits_within(2, 2.0)  # polled at once, not after 4 s
        enqueue(sync_redis, entry_fields(seed_records(1, "next"), "t-next"))
        assert not await commits_within(3, 2.0)  # a pass just wrote: the interval holds
        assert await commits_within(3, 5.0)
    assert len(lake_rows(worker.config)) == 3


async def test_a_long_running_worker_bounds_its_memory_and_writes_each_record_once(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer replaces its connection when DuckDB's cache of per-commit statistics
    passes the worker's limit (here: at once), with no record lost or doubled across the
    new connections; the per-commit record counts keep only the last commits."""
    monkeypatch.setattr(lake_sink, "RECENT_COMMITS", 3)
    await register_seed(aredis)
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0, writer_cache_limit=1)
    worker._open_writer().cache_check_every = 2
    stream = ""
    try:
        for i in range(9):
            stream = enqueue(sync_redis, entry_fields(seed_records(2, f"m{i}"), f"t{i}"))
            assert await worker.drain() == 1
        assert worker.writer_reconnects == 4  # before commits 3, 5, 7 and 9
    finally:
        worker.close()
    assert worker.writer_reconnects == 4  # counted after the writer is closed too
    assert worker.commits == 9 and len(worker.records_per_commit) <= 6
    assert worker.records_per_commit[-1] == 2
    rows = lake_rows(lake)
    assert len(rows) == 18 and len(set(rows)) == 18
    assert sync_redis.xlen(stream) == 0

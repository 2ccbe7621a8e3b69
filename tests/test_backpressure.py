"""Backpressure over HTTP: past STRICTGATE_MAX_QUEUE_RECORDS unwritten records a dataset
queue refuses with 503 + Retry-After (code queue_full), counts nothing, loses nothing; once a
worker drained it, 202 again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from quota import keys
from tests.ingest_fixtures import SEED_BATCH, SEED_DEFINITION, Service, start_service

BOUND = 7


@pytest.fixture
def bounded(data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> Iterator[Service]:
    """The app with a bound of BOUND queued records per dataset queue."""
    yield from start_service(data_dir, redis_url, STRICTGATE_MAX_QUEUE_RECORDS=str(BOUND))


def test_full_queue_answers_503_then_202_after_the_worker_drained(
    bounded: Service, sync_redis: redis.Redis,
) -> None:
    bounded.put_dataset("p1", "13", SEED_DEFINITION)
    key = bounded.create_key("p1", "u1")
    stream = keys.queue_key("u1", "p1", "13")
    statuses = [bounded.post("/datasets/13/batch", key, SEED_BATCH).status_code
                for _ in range(3)]
    assert statuses == [202, 202, 202]  # 6 records queued
    # 6 + 2 > 7: refused, nothing queued or counted
    full = bounded.post("/datasets/13/batch", key, SEED_BATCH)
    assert full.status_code == 503, full.text
    assert full.json()["errors"][0]["code"] == "queue_full", full.text
    assert int(full.headers["Retry-After"]) >= 1
    # one more record still fits (6 + 1 <= 7); then the single one is refused too
    single = SEED_BATCH[0]
    assert bounded.post("/datasets/13", key, single).status_code == 202
    assert bounded.post("/datasets/13", key, single).status_code == 503
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 7
    assert sync_redis.xlen(stream) == 4
    period = keys.period_of(datetime.now(UTC))
    assert int(sync_redis.get(keys.usage_total_key("u1", period)) or 0) == 7
    # another dataset's queue is not affected: the bound is per dataset queue
    bounded.put_dataset("p1", "14", SEED_DEFINITION)
    assert bounded.post("/datasets/14", key, single).status_code == 202

    lines = bounded.drain()  # the JSON Lines worker: every admitted record, once
    assert len(lines) == 8
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0
    assert bounded.post("/datasets/13/batch", key, SEED_BATCH).status_code == 202
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 2


def test_a_batch_bigger_than_the_bound_is_taken_by_an_empty_queue(
    bounded: Service, sync_redis: redis.Redis,
) -> None:
    bounded.put_dataset("p1", "13", SEED_DEFINITION)
    key = bounded.create_key("p1", "u1")
    big = SEED_BATCH * 5  # 10 records > BOUND
    assert bounded.post("/datasets/13/batch", key, big).status_code == 202
    assert bounded.post("/datasets/13", key, SEED_BATCH[0]).status_code == 503


def test_counter_of_an_emptied_queue_is_reset_by_the_worker(
    bounded: Service, sync_redis: redis.Redis,
) -> None:
    # an entry deleted by hand would leave its records on the counter for good
    bounded.put_dataset("p1", "13", SEED_DEFINITION)
    key = bounded.create_key("p1", "u1")
    stream = keys.queue_key("u1", "p1", "13")
    for _ in range(3):
        assert bounded.post("/datasets/13/batch", key, SEED_BATCH).status_code == 202
    for entry_id, _ in sync_redis.xrange(stream):
        sync_redis.xdel(stream, entry_id)
    assert bounded.post("/datasets/13/batch", key, SEED_BATCH).status_code == 503
    bounded.drain()
    assert sync_redis.get(keys.queued_records_key(stream)) is None
    assert bounded.post("/datasets/13/batch", key, SEED_BATCH).status_code == 202

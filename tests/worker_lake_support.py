"""Helpers for the lake worker tests: queue entries as ingest queues them, and what the
lake holds (count and digest of rows), read with a real DuckDB connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from quota import keys
from strictgate.context import utc_now
from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.tables import table_name
from strictgate.queue_entry import QueueEntry
from strictgate.registry.store import Registry
from strictgate.worker.lake_sink import LakeWorker
from tests.ingest_fixtures import SEED_DEFINITION

SEED_FIELDS = SEED_DEFINITION


def entry_fields(records: list[dict[str, Any]], trace: str, *, project: str = "p1",
                 dataset: str = "13", user: str = "u1", version: int = 1,
                 received_at: str = "2026-06-10T10:00:00.000Z") -> dict[str, bytes | str]:
    """A queue entry's stream fields, as admission stores them."""
    return QueueEntry(
        records=orjson.dumps(records), trace_id=trace, dataset_version=version,
        received_at=received_at, project_id=project, dataset_id=dataset, user_id=user,
    ).to_fields()


def seed_records(n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` distinct seed records (``context.k`` = ``<tag>-<i>``)."""
    return [{"timestamp": "2026-06-10T10:00:00Z", "context": {"k": f"{tag}-{i}"},
             "country": "RO", "plan": "pro", "amount": i * 0.5, "active": i % 2 == 0,
             "signup_at": "2026-06-01T08:00:00Z"} for i in range(n)]


async def register_seed(r: aioredis.Redis, project: str = "p1", dataset: str = "13") -> None:
    """Store the seed definition as version 1 through the registry."""
    await Registry(r, clock=utc_now).put(project, dataset, SEED_DEFINITION)


def enqueue(r: redis.Redis, fields: dict[str, bytes | str], *, user: str = "u1",
            project: str = "p1", dataset: str = "13") -> str:
    """XADD an entry as admission does (stream, index, backpressure counter)."""
    stream = keys.queue_key(user, project, dataset)
    r.xadd(stream, fields)  # type: ignore[arg-type]
    r.incrby(keys.queued_records_key(stream), len(orjson.loads(fields["records"])))
    r.sadd(keys.queues_index_key(), stream)
    return stream


def lake_rows(config: LakeConfig, project: str = "p1",
              dataset: str = "13") -> list[tuple[Any, ...]]:
    """(trace id, context, amount) of every row of a dataset's table, sorted."""
    con = connect(config)
    try:
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake'"
            " AND schema_name = ? AND table_name = ?", [project, dataset]).fetchone()
        if not exists or not exists[0]:
            return []
        return sorted(con.execute(
            f'SELECT "__traceId", context::VARCHAR, amount FROM {table_name(project, dataset)}'
        ).fetchall())
    finally:
        con.close()


def digest(rows: list[tuple[Any, ...]]) -> str:
    """A digest of rows (order-independent: they are sorted first)."""
    return hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()


@contextlib.asynccontextmanager
async def running(worker: LakeWorker) -> AsyncIterator[LakeWorker]:
    """``worker``'s loop (:meth:`LakeWorker.run`) in the background for the block; then
    stopped, its last commit waited for and its lake connection closed."""
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await loop
        await worker.settle()
        worker.close()

"""Running the worker inside a process: the consumer loop, queue gauges and usage flushes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from quota.flush import flush_usage
from strictgate.metrics import Metrics
from strictgate.settings import Settings
from worker.consumer import Worker

log = logging.getLogger("strictgate.worker")

GAUGE_INTERVAL_S = 5.0
FLUSH_INTERVAL_S = 60.0


def build_worker(
    redis: aioredis.Redis, settings: Settings, clock: Callable[[], datetime],
    metrics: Metrics | None,
) -> Worker:
    """A worker writing under ``<data dir>/output`` and reporting to ``metrics``."""

    def on_batch(stream: str, records: int, lag_s: float) -> None:
        if metrics is not None:
            metrics.records_written.inc(records)
            metrics.worker_lag.set(lag_s)

    return Worker(redis, settings.data_dir / "output", clock=clock, on_batch=on_batch)


async def _gauges(worker: Worker, metrics: Metrics, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(RedisError, OSError):
            for stream, length in (await worker.queue_lengths()).items():
                metrics.queue_length.labels(stream).set(length)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), GAUGE_INTERVAL_S)


async def _flusher(
    redis: aioredis.Redis, settings: Settings, clock: Callable[[], datetime],
    stop: asyncio.Event,
) -> None:
    ledger = settings.data_dir / "usage-ledger.jsonl"
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL_S)
        try:
            await flush_usage(redis, ledger, clock)
        except (RedisError, OSError) as exc:
            log.warning("usage flush failed, will retry: %s", type(exc).__name__)


def run_worker_tasks(
    redis: aioredis.Redis,
    settings: Settings,
    clock: Callable[[], datetime],
    metrics: Metrics | None,
    stop: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """Start the worker loop, the gauges and the periodic usage flush; they end on ``stop``."""
    worker = build_worker(redis, settings, clock, metrics)
    tasks = [
        asyncio.create_task(worker.run(stop), name="strictgate-worker"),
        asyncio.create_task(_flusher(redis, settings, clock, stop), name="strictgate-usage-flush"),
    ]
    if metrics is not None:
        tasks.append(asyncio.create_task(_gauges(worker, metrics, stop), name="strictgate-gauges"))
    return tasks

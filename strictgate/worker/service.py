"""Running the worker inside a process: the consumer loop, queue gauges and usage flushes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis

from quota.flush import flush_usage
from strictgate.metrics import Metrics
from strictgate.redis_health import health_of, is_connection_problem
from strictgate.settings import Settings
from strictgate.unavailable import REDIS_FAILURES
from strictgate.worker import sink
from strictgate.worker.consumer import Worker
from strictgate.worker.health import SinkHealth
from strictgate.worker.queues import queue_snapshot

log = logging.getLogger("strictgate.worker")

# the queue gauges are read from Redis this often (one pipelined round trip)
GAUGE_INTERVAL_S = 1.0
FLUSH_INTERVAL_S = 60.0


@dataclass
class Background:
    """The tasks started for a process, and the state of its sink (None without a worker)."""

    tasks: list[asyncio.Task[None]]
    sink_health: SinkHealth | None


def build_worker(
    redis: aioredis.Redis, settings: Settings, clock: Callable[[], datetime],
    metrics: Metrics | None, *, alone: bool = False,
) -> Worker:
    """The worker of ``settings.sink``: the lake (``strictgate.lake.config.lake_config``),
    compacted on
    a schedule, or JSON Lines files under ``<data dir>/output``; reporting to ``metrics``.
    ``alone``: no API in this process, so the lake writer uses every core (up to 4)."""

    def on_batch(stream: str, records: int, lag_s: float) -> None:
        if metrics is not None:
            metrics.records_written.inc(records)
            if settings.sink == "lake":
                metrics.lake_commits.inc()

    def on_dead_letter(reason: str) -> None:
        if metrics is not None:
            metrics.dead_letters.labels(reason).inc()

    if settings.sink == "lake":
        # imported here: a jsonl-only process never loads duckdb
        from strictgate.lake.config import lake_config
        from strictgate.worker.compaction import CompactionSchedule
        from strictgate.worker.lake_sink import SINK_NAME, LakeWorker

        config = lake_config(settings)
        schedule = CompactionSchedule(
            redis, config, keep_snapshots_s=settings.lake_snapshot_retention_s)
        return LakeWorker(redis, config, compaction=schedule, clock=clock, on_batch=on_batch,
                          writer_threads=min(os.cpu_count() or 1, 4) if alone else None,
                          health=SinkHealth(SINK_NAME, metrics),
                          on_dead_letter=on_dead_letter,
                          commit_interval_s=settings.commit_interval_s)
    return Worker(redis, settings.data_dir / "output", clock=clock, on_batch=on_batch,
                  health=SinkHealth(sink.SINK_NAME, metrics), on_dead_letter=on_dead_letter,
                  commit_interval_s=settings.commit_interval_s)


async def update_queue_gauges(
    redis: aioredis.Redis, metrics: Metrics, known: set[str], extra: frozenset[str] = frozenset(),
) -> None:
    """Set the queue length and lag gauges from Redis; ``known`` (the queues labelled so far)
    is updated, and the labels of queues that are gone are removed."""
    snapshot = await queue_snapshot(redis, extra)
    for stream, length in snapshot.lengths.items():
        metrics.queue_length.labels(stream).set(length)
    for stream in known - set(snapshot.lengths):
        with contextlib.suppress(KeyError):
            metrics.queue_length.remove(stream)
    known.clear()
    known.update(snapshot.lengths)
    metrics.worker_lag.set(snapshot.oldest_age_s)


async def _gauges(
    redis: aioredis.Redis, metrics: Metrics, worker: Worker | None, stop: asyncio.Event,
) -> None:
    known: set[str] = set()
    while not stop.is_set():
        with contextlib.suppress(*REDIS_FAILURES):
            await update_queue_gauges(
                redis, metrics, known, worker.streams if worker is not None else frozenset())
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
        except REDIS_FAILURES as exc:
            if is_connection_problem(exc):  # one line per outage, naming host:port
                health_of(redis).failed(exc)
            else:
                log.warning("usage flush failed, will retry: %s", type(exc).__name__)


def start_background_tasks(
    redis: aioredis.Redis,
    settings: Settings,
    clock: Callable[[], datetime],
    metrics: Metrics | None,
    stop: asyncio.Event,
    *,
    worker: bool,
    alone: bool = False,
) -> Background:
    """Start what runs beside the API or alone, ending on ``stop``: with ``worker``, the
    worker loop and the periodic usage flush; with ``metrics``, the queue gauges (read from
    Redis, so a process without a worker exports them too)."""
    tasks: list[asyncio.Task[None]] = []
    consumer: Worker | None = None
    if worker:
        consumer = build_worker(redis, settings, clock, metrics, alone=alone)
        tasks += [
            asyncio.create_task(consumer.run(stop), name="strictgate-worker"),
            asyncio.create_task(_flusher(redis, settings, clock, stop),
                                name="strictgate-usage-flush"),
        ]
    if metrics is not None:
        tasks.append(asyncio.create_task(_gauges(redis, metrics, consumer, stop),
                                         name="strictgate-gauges"))
    return Background(tasks, consumer.health if consumer is not None else None)

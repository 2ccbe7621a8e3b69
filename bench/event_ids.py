"""What remembering client event ids costs: Redis memory per id, and the time of a request of
1,000 events whose ids are all new against one whose ids were all seen.

Starts an embedded server. Memory: ``INFO memory`` ``used_memory`` before and after
remembering ``--ids`` ids through the real admission (``QuotaService.admit_many`` with
``event_keys``, ``--batch`` ids per call and no entry, so that nothing but the ids is
written), divided by the ids, and ``MEMORY USAGE`` of one key. Time: the median of
``--runs`` admissions of one request of 1,000 one-record events (one entry) without ids
(``admit``, the baseline), with 1,000 new ids, and with the same 1,000 ids again: the
script's ``EventsSeen`` alone, and the whole request as the dialect runs it (that answer,
then the admission of no entry). Building the 1,000 keys on the caller's side is timed
apart.

    .venv/bin/python bench/event_ids.py [--ids 200000] [--batch 1000] [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

# Run as a script, this file's directory (bench/) comes first on sys.path: put the
# repository root there instead (see bench/quota.py).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from quota import keys  # noqa: E402
from quota.admission import Admitted, EventsSeen, QuotaService  # noqa: E402
from strictgate.embedded import EmbeddedServer  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402
from strictgate.timestamps import utc_z  # noqa: E402

USER, PROJECT = "bench-user", "p1"
EVENTS = 1000
RECORD = b'{"customer_id":"cust_123","zone":"produce_section","position":{"x":12.5,"y":8.3}}'


def event_keys(serial: Iterator[int], n: int) -> list[str]:
    """Keys of ``n`` new ids shaped like a client's (``loc_<date>_<serial>``)."""
    return keys.event_id_keys(USER, PROJECT,
                              [f"loc_20260412_{next(serial):09d}" for _ in range(n)])


async def used_memory(client: aioredis.Redis) -> int:
    """``used_memory`` of ``INFO memory``, in bytes."""
    info = await client.info("memory")
    return int(info["used_memory"])


async def median_ms(call: Callable[[], Awaitable[None]], runs: int) -> float:
    """Median wall time of ``runs`` sequential calls, in milliseconds."""
    took: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


async def memory(client: aioredis.Redis, svc: QuotaService, ids: int, batch: int) -> None:
    """Print the memory the remembered ids take."""
    serial = itertools.count()
    await client.set("bench:warm", 1)  # first-write allocations out of the figure
    before = await used_memory(client)
    for _ in range(ids // batch):
        result = await svc.admit_many([], counts=[], idempotency_key=None, request_digest="",
                                      event_keys=event_keys(serial, batch), user_id=USER,
                                      project_id=PROJECT)
        if not isinstance(result, Admitted):
            raise RuntimeError(f"admission failed: {result}")
    after = await used_memory(client)
    remembered = ids // batch * batch
    one = keys.event_id_key(USER, PROJECT, "loc_20260412_000000000")
    print(f"ids remembered           {remembered:,}  (batches of {batch}, no entry)")
    print(f"used_memory              {before:,} -> {after:,} B")
    print(f"per id (used_memory)     {(after - before) / remembered:.1f} B")
    print(f"MEMORY USAGE of one key  {await client.memory_usage(one, samples=0)} B  "
          f"(key name {len(one)} chars: {one})")


async def timing(client: aioredis.Redis, svc: QuotaService, runs: int) -> None:
    """Print the admission times of a 1,000-event request."""
    entry = QueueEntry(records=b"[" + b",".join([RECORD] * EVENTS) + b"]", trace_id="bench",
                       dataset_version=1, received_at=utc_z(datetime.now(UTC)),
                       project_id=PROJECT, dataset_id="d1", user_id=USER)
    serial = itertools.count(10**8)
    seen = event_keys(serial, EVENTS)
    queue = keys.queue_key(USER, PROJECT, "d1")

    async def expect(result: object, kind: type) -> None:
        if not isinstance(result, kind):
            raise RuntimeError(f"unexpected outcome {result}")
        await client.delete(queue)  # keep memory flat

    async def without_ids() -> None:
        await expect(await svc.admit(entry, count=EVENTS, idempotency_key=None,
                                     request_digest=""), Admitted)

    fresh = iter([event_keys(serial, EVENTS) for _ in range(runs + 1)])

    async def new_ids() -> None:
        await expect(await svc.admit_many([entry], counts=[EVENTS], idempotency_key=None,
                                          request_digest="", event_keys=next(fresh)),
                     Admitted)

    async def seen_ids() -> None:
        await expect(await svc.admit_many([entry], counts=[EVENTS], idempotency_key=None,
                                          request_digest="", event_keys=seen), EventsSeen)

    async def seen_request() -> None:
        await seen_ids()
        await expect(await svc.admit_many([], counts=[], idempotency_key=None,
                                          request_digest="", user_id=USER,
                                          project_id=PROJECT), Admitted)

    await svc.admit_many([entry], counts=[EVENTS], idempotency_key=None, request_digest="",
                         event_keys=seen)
    for call in (without_ids, new_ids, seen_ids):  # warm up
        await call()
    key_serial = itertools.count(10**9)
    started = time.perf_counter()
    for _ in range(runs):
        event_keys(key_serial, EVENTS)
    build_ms = (time.perf_counter() - started) * 1000 / runs
    print(f"1,000-event request (one entry of {len(entry.records):,} B), median of {runs}:")
    print(f"  no ids (admit.lua)       {await median_ms(without_ids, runs):.2f} ms")
    print(f"  1,000 new ids            {await median_ms(new_ids, runs):.2f} ms")
    print(f"  1,000 seen: EventsSeen   {await median_ms(seen_ids, runs):.2f} ms")
    print(f"  1,000 seen: whole request {await median_ms(seen_request, runs):.2f} ms  "
          "(EventsSeen, then no entry)")
    print(f"  building 1,000 keys      {build_ms:.2f} ms (caller side, not included above)")


async def bench(ids: int, batch: int, runs: int) -> None:
    """Run both measurements on a fresh server."""
    with tempfile.TemporaryDirectory() as tmp, \
            EmbeddedServer(Path(tmp), persist=False) as server:
        client = aioredis.Redis.from_url(server.url)
        svc = QuotaService(client, default_limit=-1, deadline_s=5.0,
                           clock=lambda: datetime.now(UTC))
        await svc.preload()
        version = (await client.info("server"))["valkey_version"]
        print(f"valkey {version}")
        await memory(client, svc, ids, batch)
        await timing(client, svc, runs)
        await client.aclose()


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(bench(args.ids, args.batch, args.runs))


if __name__ == "__main__":
    main()

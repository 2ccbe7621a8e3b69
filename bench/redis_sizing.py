"""Redis memory per queued record: what a backlog costs while the workers are stopped or
behind (sizing Redis, and ``STRICTGATE_MAX_QUEUE_RECORDS``, for a given outage).

Starts an embedded valkey-server (no persistence: the AOF is on disk, not in memory) and
``strictgate serve`` on it with no worker (``STRICTGATE_RUN_WORKER=0``), so every admitted
record stays queued. For each batch size (default 1, 100 and 1000 seed records per request,
each size its own user and so its own queue stream): one warm-up request (it creates the
stream and the user's counters), then ``--records`` records (``--single-records`` for batches
of 1) through ``POST /datasets/13/batch`` (``/datasets/13`` for 1), ``--concurrency`` requests
at a time. Printed: ``INFO memory`` ``used_memory`` before and after, divided by the records;
``MEMORY USAGE`` of the stream over its records; and the record's JSON for comparison.

    .venv/bin/python bench/redis_sizing.py [--records 100000] [--single-records 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
import redis

# Run as a script, bench/ comes first on sys.path (bench/quota.py would shadow the package)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import scale_topology  # noqa: E402
from bench.load import DEFINITION, RECORD  # noqa: E402
from bench.scale_topology import DATASET, PROJECT, Topology  # noqa: E402
from quota import keys  # noqa: E402
from strictgate.embedded import EmbeddedServer  # noqa: E402

BATCH_SIZES = (1, 100, 1000)


async def send(topology: Topology, api_key: str, batch: int, requests: int,
               concurrency: int) -> None:
    """``requests`` requests of ``batch`` records each, every one answered 202."""
    path = f"/datasets/{DATASET}" if batch == 1 else f"/datasets/{DATASET}/batch"
    body = orjson.dumps(RECORD if batch == 1 else [RECORD] * batch)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    todo = iter(range(requests))

    async def one_connection(client: httpx.AsyncClient) -> None:
        for _ in todo:
            answer = await client.post(path, content=body, headers=headers)
            if answer.status_code != 202:
                raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=topology.base, timeout=60, limits=limits) as client:
        await asyncio.gather(*(one_connection(client) for _ in range(concurrency)))


def used_memory(client: redis.Redis) -> int:
    """``used_memory`` of ``INFO memory``, in bytes."""
    return int(client.info("memory")["used_memory"])


def main() -> None:
    """Measure each batch size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000,
                        help="records queued per batch size above 1 (default 100,000)")
    parser.add_argument("--single-records", type=int, default=20_000,
                        help="records queued one per request (default 20,000)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sg-redis-sizing-"))
    record_json = len(orjson.dumps(RECORD))
    rows = []
    try:
        with EmbeddedServer(work / "redis", persist=False) as server:
            topology = scale_topology.start(
                work, {"REDIS_URL": server.url, "STRICTGATE_LOG_LEVEL": "warning"}, 1, 0)
            client = redis.Redis.from_url(server.url)
            try:
                users = [f"sizing-{size}" for size in args.sizes]
                api_keys = scale_topology.provision(topology, DEFINITION, users)
                version = client.info("server")["valkey_version"]
                for size, user in zip(args.sizes, users, strict=True):
                    records = args.single_records if size == 1 else args.records
                    requests = max(1, records // size)
                    asyncio.run(send(topology, api_keys[user], size, 1, 1))  # warm-up
                    before = used_memory(client)
                    asyncio.run(send(topology, api_keys[user], size, requests,
                                     args.concurrency))
                    after = used_memory(client)
                    stream = keys.queue_key(user, PROJECT, DATASET)
                    entries = int(client.xlen(stream))
                    usage = int(client.memory_usage(stream, samples=0) or 0)
                    queued = requests * size
                    rows.append((size, queued, entries, before, after,
                                 usage / ((requests + 1) * size)))
            finally:
                client.close()
                topology.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"valkey {version}, embedded, no persistence; seed record {record_json} B of JSON; "
          "no worker (records stay queued)")
    print(f"{'batch':>6s} {'records':>9s} {'entries':>8s} {'used_memory delta':>18s} "
          f"{'B/record':>9s} {'MEMORY USAGE B/record':>22s}")
    for size, queued, entries, before, after, per_record in rows:
        print(f"{size:6d} {queued:9,d} {entries:8,d} {after - before:18,d} "
              f"{(after - before) / queued:9.1f} {per_record:22.1f}")


if __name__ == "__main__":
    main()

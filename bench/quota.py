"""Admissions/s against plain INCRBY/s, driven the same way on the same server in one run.

Starts an embedded server, then runs interleaved rounds (INCRBY, admission, INCRBY, ...) of a
fixed duration each, with 50 concurrent asyncio callers sharing one client, and prints the
median of each plus their ratio. An admission is the real thing: the Lua script checks the
idempotency key (when given) and the quota, increments two counters and XADDs a 1-record
entry shaped like the ingest handler's. With ``--datasets N`` (N > 1) each admission is one
request for N datasets (``QuotaService.admit_many``, as OrcaSheets requests are admitted):
N entries of one record, all or nothing.

    .venv/bin/python bench/quota.py [--seconds 2] [--rounds 5] [--callers 50] [--idempotency]
                                    [--datasets 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

# Run as a script, this file's directory (bench/) comes first on sys.path and this very
# module would shadow the ``quota`` package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from quota.admission import Admitted, Duplicate, QuotaService  # noqa: E402
from strictgate.embedded import EmbeddedServer  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402
from strictgate.timestamps import utc_z  # noqa: E402

RECORD = b'[{"timestamp":"2026-06-10T10:58:00Z","context":{"source":"bench"},"amount":1}]'


async def drive(call: Callable[[], Awaitable[None]], callers: int, seconds: float) -> float:
    """Calls per second of ``callers`` tasks each awaiting ``call`` in a loop."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - started)


async def bench(seconds: float, rounds: int, callers: int, idempotency: bool,
                datasets: int = 1) -> None:
    """Run the rounds and print the medians."""
    with tempfile.TemporaryDirectory() as tmp, \
            EmbeddedServer(Path(tmp), persist=False) as server:
        client = aioredis.Redis.from_url(server.url)
        svc = QuotaService(client, default_limit=-1, deadline_s=1.0,
                           clock=lambda: datetime.now(UTC))
        await svc.preload()
        entries = [QueueEntry(
            records=RECORD, trace_id="bench", dataset_version=1,
            received_at=utc_z(datetime.now(UTC)), project_id="p1", dataset_id=f"d{n + 1}",
            user_id="bench-user") for n in range(datasets)]
        entry = entries[0]
        counts = [1] * datasets
        serial = itertools.count()

        async def incrby() -> None:
            await client.incrby("bench:counter", 1)

        async def admit() -> None:
            key = f"k{next(serial)}" if idempotency else None
            if datasets == 1:
                result = await svc.admit(entry, count=1, idempotency_key=key,
                                         request_digest="d")
            else:
                result = await svc.admit_many(entries, counts=counts, idempotency_key=key,
                                              request_digest="d")
            if not isinstance(result, Admitted | Duplicate):
                raise RuntimeError(f"admission failed: {result}")

        await drive(incrby, callers, 0.3)  # warm up connections and the script cache
        await drive(admit, callers, 0.3)
        incr_rates: list[float] = []
        admit_rates: list[float] = []
        for round_no in range(rounds):
            incr_rates.append(await drive(incrby, callers, seconds))
            admit_rates.append(await drive(admit, callers, seconds))
            for n in range(datasets):  # keep memory flat
                await client.delete(f"queue:datasets:{{bench-user}}:p1:d{n + 1}")
            print(f"round {round_no + 1}: INCRBY {incr_rates[-1]:,.0f}/s  "
                  f"admission {admit_rates[-1]:,.0f}/s", flush=True)
        await client.aclose()
    incr = statistics.median(incr_rates)
    adm = statistics.median(admit_rates)
    print(f"callers={callers} seconds/round={seconds} rounds={rounds} "
          f"idempotency_key={'yes' if idempotency else 'no'} datasets={datasets}")
    print(f"INCRBY     median {incr:,.0f}/s")
    print(f"admission  median {adm:,.0f}/s")
    print(f"ratio      {adm / incr:.2f} (target >= 0.50)")


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--idempotency", action="store_true",
                        help="send a fresh Idempotency-Key with every admission")
    parser.add_argument("--datasets", type=int, default=1,
                        help="datasets per admission (more than 1: admit_many)")
    args = parser.parse_args()
    asyncio.run(bench(args.seconds, args.rounds, args.callers, args.idempotency,
                      args.datasets))


if __name__ == "__main__":
    main()

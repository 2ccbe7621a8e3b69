"""Drain rate of one `strictgate worker` process: lake sink vs JSON Lines sink, one run.

Each round pre-fills a queue (embedded valkey, flushed per round) with ``--entries``
entries of 1000 seed records, queued exactly as ingest queues them (the validator's payload,
the same stream fields, the backpressure counter), registers the seed definition, starts
one worker process with ``STRICTGATE_SINK`` set and polls the queue length: the rate is
measured from the first acknowledged batch to the empty queue (process start-up and the
first commit's table creation excluded). Rounds alternate lake / jsonl; medians are printed,
with the ratio, the lake's records per commit and its Parquet files per million records
before and after one compaction pass.

    .venv/bin/python bench/drain.py [--entries 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import orjson
import redis

# Run as a script, bench/ comes first on sys.path (bench/quota.py would shadow the package)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from quota import keys  # noqa: E402
from strictgate.embedded import EmbeddedServer  # noqa: E402
from strictgate.lake.engine import LakeConfig, connect  # noqa: E402
from strictgate.lake.maintenance import compact_lake  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402
from validator.compiled import compile_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
PER_ENTRY = 1000


def payload(e: int) -> bytes:
    """The queued payload of entry ``e`` (1000 distinct seed records, after the validator)."""
    records = [{
        "timestamp": f"2026-06-10T11:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "context": {"source": "billing-service", "request_id": f"req_{e}_{i}"},
        "country": "RO", "plan": "pro", "amount": i * 0.5, "active": i % 2 == 0,
        "signup_at": "2026-06-01T08:00:00Z"} for i in range(PER_ENTRY)]
    result = compile_dataset(SEED).validate_batch(orjson.dumps(records))
    assert result.ok
    return bytes(result.payload)


def prefill(r: redis.Redis, url: str, n: int, payloads: list[bytes]) -> str:
    """Queue ``n`` entries and register the seed dataset; returns the stream key."""
    from redis import asyncio as aioredis

    from strictgate.context import utc_now
    from strictgate.registry.store import Registry

    async def register() -> None:
        client = aioredis.Redis.from_url(url)
        await Registry(client, clock=utc_now).put("bench", "billing", SEED)
        await client.aclose()

    asyncio.run(register())
    stream = keys.queue_key("u1", "bench", "billing")
    pipe = r.pipeline(transaction=False)
    for e in range(n):
        pipe.xadd(stream, QueueEntry(  # type: ignore[arg-type]
            records=payloads[e % len(payloads)], trace_id=f"t{e}", dataset_version=1,
            received_at="2026-06-10T11:00:00.123Z", project_id="bench", dataset_id="billing",
            user_id="u1").to_fields())
    pipe.incrby(keys.queued_records_key(stream), n * PER_ENTRY)
    pipe.sadd(keys.queues_index_key(), stream)
    pipe.execute()
    return stream


def drain_round(url: str, r: redis.Redis, sink: str, n: int, payloads: list[bytes],
                data_dir: Path) -> float:
    """Records/s of one worker process draining ``n`` entries with ``sink``."""
    r.flushdb()
    stream = prefill(r, url, n, payloads)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
    env.update(REDIS_URL=url, STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_SINK=sink)
    proc = subprocess.Popen([sys.executable, "-m", "strictgate.cli", "worker"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL)
    try:
        first_len = n
        t1 = None
        while True:
            length = int(r.xlen(stream))
            now = time.perf_counter()
            if t1 is None and length < n:
                t1, first_len = now, length
            if length == 0:
                t_end = now
                break
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}")
            time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(30)
    assert t1 is not None
    return first_len * PER_ENTRY / max(t_end - t1, 1e-9)


def lake_figures(data_dir: Path) -> tuple[float, float, float]:
    """(records per commit, Parquet data files per million records before compaction,
    after one pass)."""
    config = LakeConfig.local(data_dir.resolve())
    con = connect(config)
    rows = con.execute('SELECT count(*) FROM lake."bench"."billing"').fetchone()
    # committed_at is now() of its transaction: one distinct value per commit
    snapshots = con.execute(
        "SELECT count(DISTINCT committed_at) FROM lake.__strictgate.ledger").fetchone()
    con.close()
    records = int(rows[0]) if rows else 0
    commits = max(1, int(snapshots[0]) if snapshots else 1)

    def files() -> int:
        return sum(1 for p in Path(config.data_path).rglob("*.parquet") if "billing" in str(p))

    before = files()
    compact_lake(config, keep_snapshots=timedelta(0), orphan_grace=timedelta(0))
    after = files()
    per_million = 1e6 / max(records, 1)
    return records / commits, before * per_million, after * per_million


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sg-drain-"))
    server = EmbeddedServer(tmp / "redis", persist=False).start()
    r = redis.Redis.from_url(server.url)
    payloads = [payload(e) for e in range(20)]
    rates: dict[str, list[float]] = {"lake": [], "jsonl": []}
    lake_stats: list[tuple[float, float, float]] = []
    try:
        for rnd in range(args.rounds):
            for sink in ("lake", "jsonl") if rnd % 2 == 0 else ("jsonl", "lake"):
                data_dir = tmp / f"{sink}-{rnd}"
                rate = drain_round(server.url, r, sink, args.entries, payloads, data_dir)
                rates[sink].append(rate)
                print(f"round {rnd} {sink:5s}: {rate:,.0f} records/s", flush=True)
                if sink == "lake":
                    lake_stats.append(lake_figures(data_dir))
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        r.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    lake = statistics.median(rates["lake"])
    jsonl = statistics.median(rates["jsonl"])
    per_commit = statistics.median(s[0] for s in lake_stats)
    before = statistics.median(s[1] for s in lake_stats)
    after = statistics.median(s[2] for s in lake_stats)
    print(f"\n{args.entries} entries x {PER_ENTRY} records, one worker process, "
          f"medians of {args.rounds} rounds")
    print(f"lake : {lake:,.0f} records/s")
    print(f"jsonl: {jsonl:,.0f} records/s")
    print(f"ratio lake/jsonl: {lake / jsonl:.2f} (target >= 0.8; lake target >= 300,000/s)")
    print(f"lake records per commit: {per_commit:,.0f}")
    print(f"lake Parquet files per million records: {before:.1f} before compaction, "
          f"{after:.1f} after")


if __name__ == "__main__":
    main()

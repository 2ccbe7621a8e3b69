"""Issue 6, faults: the stand-alone worker process (`python -m strictgate.cli worker`) killed
with SIGKILL while it writes a big backlog, several times, then restarted: every admitted
record is in the output exactly once and Redis holds nothing for it afterwards.

A restarted worker has a new consumer name, so it takes over the dead one's pending entries
only once they have been idle for the reclaim time (30 s). Instead of waiting, the test ages
them with ``XCLAIM ... IDLE`` (to the same dead consumer, so nothing else changes): the
restarted process then runs exactly the path it runs in production after 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from quota import keys
from quota.admission import Admitted, QuotaService
from strictgate.queue_entry import QueueEntry
from strictgate.timestamps import utc_z
from tests.ingest_fixtures import SEED_BATCH, output_lines

REPO = Path(__file__).resolve().parents[1]
ENTRIES = 4000
PER_ENTRY = 5
TOTAL = ENTRIES * PER_ENTRY
KILLS = 3
MAX_ATTEMPTS = 12


async def enqueue_backlog(redis_url: str) -> None:
    """Admit ENTRIES requests of PER_ENTRY records, shaped as the ingest handler queues them
    (canonical JSON payload), each record unique by (trace id, context.j)."""
    client = aioredis.Redis.from_url(redis_url, max_connections=64)
    quota = QuotaService(client, default_limit=-1, deadline_s=5.0,
                         clock=lambda: datetime.now(UTC))
    now = utc_z(datetime.now(UTC))

    async def one(i: int) -> None:
        records = [{**SEED_BATCH[0], "context": {"i": i, "j": j}} for j in range(PER_ENTRY)]
        entry = QueueEntry(records=orjson.dumps(records), trace_id=f"t{i}", dataset_version=1,
                           received_at=now, project_id="p1", dataset_id="13", user_id="u1")
        result = await quota.admit(entry, count=PER_ENTRY, idempotency_key=None,
                                   request_digest="")
        assert isinstance(result, Admitted)

    try:
        for start in range(0, ENTRIES, 50):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 50, ENTRIES))))
    finally:
        await client.aclose()


def written_lines(root: Path) -> int:
    """Newlines in published output files (cheap enough to poll)."""
    total = 0
    for path in root.rglob("*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # renamed under us: counted next time
            total += path.read_bytes().count(b"\n")
    return total


def start_worker(redis_url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
    env.update(REDIS_URL=redis_url, STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_SINK="jsonl")
    return subprocess.Popen(
        [sys.executable, "-m", "strictgate.cli", "worker"], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def consumer_names(r: redis.Redis, stream: str) -> set[str]:
    """Names of the consumers the queue group knows (dead ones included)."""
    return {str(c["name"]) for c in r.xinfo_consumers(stream, keys.QUEUE_GROUP)}


def pending_of_others(r: redis.Redis, stream: str, earlier: set[str]) -> int:
    """Entries held unacknowledged by consumers not in ``earlier`` (the live worker)."""
    return sum(int(c["pending"]) for c in r.xinfo_consumers(stream, keys.QUEUE_GROUP)
               if str(c["name"]) not in earlier)


def stderr_tail(proc: subprocess.Popen[bytes]) -> str:
    """The last part of what an exited process printed on stderr."""
    assert proc.stderr is not None
    return proc.stderr.read().decode(errors="replace")[-2000:]


def age_pending(r: redis.Redis, stream: str) -> int:
    """Make every pending entry look idle for an hour (same owner); returns how many."""
    aged = 0
    for consumer in r.xinfo_consumers(stream, keys.QUEUE_GROUP):
        name = consumer["name"]
        while True:
            pending = r.xpending_range(stream, keys.QUEUE_GROUP, min="-", max="+", count=1000,
                                       consumername=name, idle=None)
            ids: list[Any] = [p["message_id"] for p in pending
                              if int(p["time_since_delivered"]) < 3_600_000]
            if not ids:
                break
            r.xclaim(stream, keys.QUEUE_GROUP, name, 0, ids, idle=3_600_000, justid=True)
            aged += len(ids)
    return aged


def test_worker_sigkilled_mid_write_then_restarted_writes_each_record_once(
    redis_url: str, sync_redis: redis.Redis, data_dir: Path,
) -> None:
    asyncio.run(enqueue_backlog(redis_url))
    stream = keys.queue_key("u1", "p1", "13")
    assert sync_redis.xlen(stream) == ENTRIES
    sync_redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0")  # as the worker makes it
    output = data_dir / "output"
    rng = random.Random(6)
    progress = [0]
    killed_mid_batch = 0
    attempts = 0
    # A kill that lands between an XACK and the next read leaves nothing pending: rare while
    # a worker reads new entries, common while it reclaims a dead one's entries 100 at a
    # time (pending drops to 0 between chunks). So kill again (the backlog is far bigger
    # than what a worker writes before it is killed) until KILLS kills interrupted a batch.
    while killed_mid_batch < KILLS and attempts < MAX_ATTEMPTS:
        attempts += 1
        earlier = consumer_names(sync_redis, stream)
        proc = start_worker(redis_url, data_dir)
        try:
            # wait for the first sign of writing (a new line or a staged file) while entries
            # are delivered and not yet acked, then kill it a few milliseconds later:
            # somewhere between read, stage, mark, publish and ack
            stale = set(output.rglob("*.tmp"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                if (written_lines(output) > progress[-1]
                        or set(output.rglob("*.tmp")) - stale) and pending_of_others(
                            sync_redis, stream, earlier):
                    break
                time.sleep(0.002)
            assert proc.poll() is None, "worker exited by itself: " + stderr_tail(proc)
            time.sleep(rng.uniform(0, 0.01))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()
        progress.append(written_lines(output))
        killed_mid_batch += bool(pending_of_others(sync_redis, stream, earlier))
        age_pending(sync_redis, stream)
    assert progress[-1] < TOTAL, "every kill came too late to interrupt anything"
    assert killed_mid_batch >= KILLS, (
        f"only {killed_mid_batch} of {attempts} kills left entries pending")

    proc = start_worker(redis_url, data_dir)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if sync_redis.xlen(stream) == 0 and written_lines(output) >= TOTAL:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]

    lines = output_lines(output)
    seen = Counter((line["__traceId"], line["context"]["j"]) for line in lines)
    assert [k for k, v in seen.items() if v > 1] == []
    assert len(seen) == TOTAL
    assert {t for t, _ in seen} == {f"t{i}" for i in range(ENTRIES)}
    assert all(line["__traceId"] == f"t{line['context']['i']}" for line in lines)
    # nothing left behind in Redis for the written entries
    assert sync_redis.xlen(stream) == 0
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0
    assert sync_redis.hlen(keys.written_marks_key(stream)) == 0
    usage = sync_redis.get(keys.usage_total_key("u1", keys.period_of(datetime.now(UTC))))
    assert int(usage or 0) == TOTAL
    print(f"lines written before each of {attempts} kills: {progress[1:]}; stale temp files: "
          f"{len(list(output.rglob('*.tmp')))}")

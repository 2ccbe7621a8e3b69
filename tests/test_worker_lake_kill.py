"""The lake worker process (`strictgate worker`, sink lake) SIGKILLed before its commit,
between commit and XACK, and during compaction, then restarted: every admitted record is in
the table exactly once (count and digest) and Redis holds nothing for it afterwards.

The kill is a real SIGKILL the process sends itself at the named point (``SGTEST_KILL_AT``,
see :mod:`strictgate.worker.faults`). The restarted worker takes over the dead one's pending entries
once idle for the reclaim time; the test ages them with XCLAIM IDLE (as
tests/test_faults_worker_kill.py does) instead of waiting 30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from quota import keys
from strictgate.lake.engine import LakeConfig
from tests.redis_mode import async_client, service_env
from tests.test_faults_worker_kill import age_pending
from tests.worker_lake_support import (
    digest,
    enqueue,
    entry_fields,
    lake_rows,
    register_seed,
    seed_records,
)

REPO = Path(__file__).resolve().parents[1]
ENTRIES = 120
PER_ENTRY = 50


def _start(redis_url: str, data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("STRICTGATE_", "SGTEST_"))}
    clean.update(REDIS_URL=redis_url, STRICTGATE_DATA_DIR=str(data_dir), **service_env(),
                 **env)
    return subprocess.Popen([sys.executable, "-m", "strictgate.cli", "worker"], cwd=REPO,
                            env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _expected() -> list[tuple[str, str, float]]:
    rows = []
    for i in range(ENTRIES):
        for j, rec in enumerate(seed_records(PER_ENTRY, f"e{i}")):
            rows.append((f"t{i}", '{"k":"' + f"e{i}-{j}" + '"}', float(rec["amount"])))
    return rows


@pytest.mark.parametrize("point", ["before_commit", "after_commit", "compaction"])
def test_lake_worker_killed_then_restarted_writes_each_record_once(
    redis_url: str, sync_redis: redis.Redis, data_dir: Path, point: str,
) -> None:
    async def setup() -> None:
        client = async_client(redis_url)
        try:
            await register_seed(client)
        finally:
            await client.aclose()

    asyncio.run(setup())
    stream = ""
    for i in range(ENTRIES):
        stream = enqueue(sync_redis, entry_fields(seed_records(PER_ENTRY, f"e{i}"), f"t{i}"))
    lake = LakeConfig.local(data_dir.resolve())
    env = {"SGTEST_KILL_AT": point}
    if point == "compaction":
        # compact after every commit, die 20 ms into the pass
        env.update(SGTEST_COMPACT_EVERY_COMMITS="1", SGTEST_KILL_DELAY_S="0.02")
    proc = _start(redis_url, data_dir, **env)
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL, err
    before = lake_rows(lake)
    if point == "before_commit":
        assert before == []
    else:
        assert before, "the kill came before the first commit"
    assert sync_redis.xlen(stream) > 0
    age_pending(sync_redis, stream)

    proc = _start(redis_url, data_dir)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sync_redis.xlen(stream):
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err_b = proc.communicate(timeout=30)
    assert proc.returncode == 0, err_b.decode(errors="replace")[-2000:]
    rows = lake_rows(lake)
    expected = _expected()
    assert len(rows) == len(expected) == ENTRIES * PER_ENTRY
    assert digest(rows) == digest(expected)
    assert sync_redis.xlen(stream) == 0
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0

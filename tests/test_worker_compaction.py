"""The worker's compaction schedule (worker/compaction.py) on a real lake and a real Redis.

A pass starts after the configured number of commits, or after the interval even when the
worker has gone idle; two workers never compact at once (the Redis lock: the second one's
attempt does nothing and says nothing alarming); only the holder releases the lock; a
failing pass is logged once, retried later and never stops ingest; and commits complete
while a pass runs (it runs in a thread). The compactor the schedule calls is a parameter:
these tests give it the real pass (:func:`strictgate.worker.compaction.compact_pass`) wrapped to
count how many run at once or to keep a pass going while the test watches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from strictgate.lake import maintenance, tables
from strictgate.lake.engine import LakeConfig
from strictgate.lake.maintenance import CompactionFailed, CompactionReport, compact_in_child
from strictgate.lake.writer import LakeWriter
from strictgate.worker.compaction import LOCK_TTL_MS, CompactionSchedule, Compactor, compact_pass
from strictgate.worker.lake_sink import LakeWorker
from tests.lake_support import ROOT, seed_definitions, seed_entries
from tests.worker_lake_support import enqueue, entry_fields, lake_rows, register_seed, seed_records

LOCK = keys.lake_compaction_lock_key()


@pytest.fixture
def lake(tmp_path: Path) -> LakeConfig:
    """An empty lake under the test's directory."""
    return LakeConfig.local(tmp_path)


def schedule(aredis: aioredis.Redis, lake: LakeConfig, *, every_commits: int = 1_000_000,
             every_s: float = 1e9, compactor: Compactor = compact_pass) -> CompactionSchedule:
    """A schedule of the test's choosing (no time travel window: expire at once)."""
    return CompactionSchedule(aredis, lake, keep_snapshots_s=0, every_commits=every_commits,
                              every_s=every_s, compactor=compactor)


async def write_entries(aredis: aioredis.Redis, sync_redis: redis.Redis, worker: LakeWorker,
                        tag: str, n: int = 1) -> None:
    """Queue ``n`` entries and let ``worker`` commit them (one commit per entry)."""
    for i in range(n):
        enqueue(sync_redis, entry_fields(seed_records(3, f"{tag}{i}"), f"{tag}{i}"))
        await worker.drain()


class Gate:
    """Wraps the real pass: counts passes running at once and holds each one open until
    :meth:`release` (so a test can act while a pass is in progress)."""

    def __init__(self, on_enter: Callable[[], None] | None = None) -> None:
        self.running = 0
        self.most = 0
        self.entered = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.on_enter = on_enter

    def __call__(self, config: LakeConfig, keep: timedelta) -> CompactionReport:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            report = compact_pass(config, keep)
            if self.on_enter is not None:
                self.on_enter()
            self.entered.set()
            self._release.wait(20)
            return report
        finally:
            with self._lock:
                self.running -= 1

    def release(self) -> None:
        """Let the held pass end."""
        self._release.set()


async def wait_until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``check`` on the event loop until it holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_pass_runs_after_the_configured_number_of_commits(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    compaction = schedule(aredis, lake, every_commits=3)
    worker = LakeWorker(aredis, lake, compaction=compaction, reclaim_idle_ms=0)
    try:
        await write_entries(aredis, sync_redis, worker, "a", 2)
        assert worker.commits == 2 and compaction.task is None  # not due yet
        await write_entries(aredis, sync_redis, worker, "b", 1)
        assert compaction.task is not None
        report = await compaction.task
    finally:
        worker.close()
    assert report is not None and compaction.passes == 1 and compaction.commits == 0
    assert report.files_merged >= 1  # three commits' small files became one
    assert len(lake_rows(lake)) == 9
    assert sync_redis.get(LOCK) is None  # released


async def test_a_pass_runs_after_the_interval_even_when_the_worker_is_idle(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    now = [0.0]
    compaction = CompactionSchedule(aredis, lake, keep_snapshots_s=0, every_s=600,
                                    clock=lambda: now[0])
    worker = LakeWorker(aredis, lake, compaction=compaction, reclaim_idle_ms=0)
    await write_entries(aredis, sync_redis, worker, "a", 1)
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    try:
        now[0] = 599.0
        await asyncio.sleep(0.3)  # the loop runs: committed, but the interval is not up
        assert worker.commits == 1 and compaction.task is None
        now[0] = 600.0
        # no further commit: the idle worker's loop starts the pass once the interval is up
        await wait_until(lambda: compaction.passes == 1, timeout_s=10)
        now[0] = 1300.0
        await asyncio.sleep(0.3)  # nothing committed since: no new pass
        assert compaction.passes == 1 and worker.commits == 1
    finally:
        stop.set()
        await loop


async def test_two_workers_never_compact_at_the_same_time(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="strictgate.worker")
    await register_seed(aredis)
    writer = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        await write_entries(aredis, sync_redis, writer, "a", 3)
    finally:
        writer.close()
    gate = Gate()
    first, second = (schedule(aredis, lake, every_commits=1, compactor=gate) for _ in "ab")
    first.committed()  # worker 1: due, starts its pass (held open by the gate)
    await wait_until(gate.entered.is_set)
    caplog.clear()
    second.committed()  # worker 2, same lake, while worker 1 compacts
    assert second.task is not None
    assert await second.task is None  # found the lock taken: did nothing
    assert second.skipped == 1 and second.passes == 0 and gate.most == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    gate.release()
    assert first.task is not None and await first.task is not None
    assert gate.most == 1 and first.passes == 1
    assert sync_redis.get(LOCK) is None
    # the lock is free again: worker 2's next pass runs
    second.committed()
    assert second.task is not None and await second.task is not None


async def test_only_the_holder_releases_the_lock(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    writer = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        await write_entries(aredis, sync_redis, writer, "a", 1)
    finally:
        writer.close()
    # another worker holds it: this pass does nothing, and leaves that worker's lock alone
    sync_redis.set(LOCK, "other-worker", px=LOCK_TTL_MS)
    held = schedule(aredis, lake, every_commits=1)
    assert await held.run_pass() is None
    assert sync_redis.get(LOCK) == b"other-worker" and sync_redis.pttl(LOCK) > 0
    sync_redis.delete(LOCK)

    # this worker's lock expired during its pass and another worker took it: ending the
    # pass must not release the other worker's lock
    def taken_over() -> None:
        sync_redis.set(LOCK, "next-worker", px=LOCK_TTL_MS)

    gate = Gate(on_enter=taken_over)
    gate.release()
    slow = schedule(aredis, lake, every_commits=1, compactor=gate)
    assert await slow.run_pass() is not None
    assert sync_redis.get(LOCK) == b"next-worker"


async def test_a_failing_pass_is_logged_once_retried_later_and_ingest_goes_on(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="strictgate.worker")
    await register_seed(aredis)
    compaction = schedule(aredis, lake, every_commits=1)
    # a real failure of every pass: the catalog refuses another DATA_PATH than its own
    compaction.config = LakeConfig(catalog=lake.catalog, data_path=f"{tmp_path / 'elsewhere'}/")
    worker = LakeWorker(aredis, lake, compaction=compaction, reclaim_idle_ms=0)
    try:
        for i in range(4):
            await write_entries(aredis, sync_redis, worker, f"f{i}-", 1)
            assert compaction.task is not None
            assert await compaction.task is None
        assert compaction.failures == 4 and compaction.passes == 0
        failed = [r for r in caplog.records if "compaction failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.WARNING
        assert "DATA_PATH" in failed[0].getMessage()
        # ingest never stopped: every commit landed, the sink is healthy
        assert worker.commits == 4 and worker.health.ok and len(lake_rows(lake)) == 12
        assert sync_redis.get(LOCK) is None  # a failed pass released the lock too

        compaction.config = lake  # the cause is gone: the next due pass works
        await write_entries(aredis, sync_redis, worker, "ok", 1)
        assert compaction.task is not None and await compaction.task is not None
    finally:
        worker.close()
    assert compaction.passes == 1
    again = [r for r in caplog.records if "compaction works again" in r.getMessage()]
    assert len(again) == 1
    assert len([r for r in caplog.records if "compaction failed" in r.getMessage()]) == 1
    assert len(lake_rows(lake)) == 15


async def test_commits_complete_while_a_compaction_runs(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    windows: list[tuple[float, float]] = []
    done = threading.Event()

    def busy(config: LakeConfig, keep: timedelta) -> CompactionReport:
        # real passes, one after another, until the test has seen commits meanwhile
        started = time.monotonic()
        report = compact_pass(config, keep)
        while not done.is_set() and time.monotonic() - started < 8:
            report = compact_pass(config, keep)
        windows.append((started, time.monotonic()))
        return report

    commit_times: list[float] = []
    compaction = schedule(aredis, lake, every_commits=1, compactor=busy)
    worker = LakeWorker(aredis, lake, compaction=compaction, reclaim_idle_ms=0,
                        on_batch=lambda _s, _r, _l: commit_times.append(time.monotonic()))
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    try:
        enqueue(sync_redis, entry_fields(seed_records(3, "first"), "first"))
        await wait_until(lambda: compaction.task is not None)  # the first commit started it
        sent = 1
        deadline = time.monotonic() + 10
        while len(commit_times) < 4 and time.monotonic() < deadline:
            enqueue(sync_redis, entry_fields(seed_records(3, f"n{sent}"), f"n{sent}"))
            sent += 1
            await asyncio.sleep(0.1)
        done.set()
        assert compaction.task is not None
        await compaction.task
        await wait_until(lambda: sync_redis.xlen(keys.queue_key("u1", "p1", "13")) == 0)
    finally:
        stop.set()
        await loop
    # the first pass is the long one; a commit after it may start another (every_commits=1)
    began, ended = windows[0]
    during = [t for t in commit_times if began < t < ended]
    assert len(during) >= 3, (began, ended, commit_times)
    assert len(lake_rows(lake)) == 3 * sent


def _hold_catalog_lock(lake: LakeConfig) -> subprocess.Popen[str]:
    """Another process holding the SQLite catalog's write lock until its stdin closes:
    every compaction step then fails with "database is locked" and is retried (about 15 s
    in all), a pass that runs long."""
    path = lake.catalog.removeprefix("sqlite:")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         f"db = sqlite3.connect({path!r}, isolation_level=None, timeout=10)\n"
         "db.execute('BEGIN IMMEDIATE')\nprint('held', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)


def _children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_a_pass_runs_in_a_child_process_and_reports_back(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    """What DuckDB keeps of a pass (it leaks the memory of every merge whose commit fails)
    ends with the child, not in the worker."""
    await register_seed(aredis)
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0)
    try:
        await write_entries(aredis, sync_redis, worker, "c", 3)
    finally:
        worker.close()
    report = compact_pass(lake, timedelta(0))
    assert report.pid not in (0, os.getpid())
    assert report.files_merged >= 1 and report.snapshots_expired >= 1
    assert set(report.steps) >= {"merge", "expire", "cleanup", "orphans"}
    assert len(lake_rows(lake)) == 9


def test_the_compaction_child_loads_no_validator() -> None:
    """It starts in about 0.35 s and 50 MB; the validator (numba) would make that 1.4 s and
    180 MB per pass. The ledger's schema name it keeps apart is the tables' one."""
    assert maintenance.META == tables.META
    done = subprocess.run(
        [sys.executable, "-c", "import sys, strictgate.lake.maintenance as m\n"
         "assert not [n for n in sys.modules if n.split('.')[0] == 'validator'], m"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-1000:]


async def test_a_failing_child_pass_names_its_error_without_the_catalog_password(
    aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="strictgate.worker")
    catalog = ("postgres:host=127.0.0.1 port=1 dbname=lake user=sg password=hunter2"
               " connect_timeout=2")
    compaction = CompactionSchedule(
        aredis, LakeConfig(catalog=catalog, data_path=f"{tmp_path}/"), keep_snapshots_s=0)
    assert await compaction.run_pass() is None
    assert compaction.failures == 1 and compaction.failing not in (None, "CompactionFailed")
    (warning,) = [r for r in caplog.records if "compaction failed" in r.getMessage()]
    text = warning.getMessage()
    assert f"{compaction.failing}:" in text and "hunter2" not in text
    assert "Traceback" not in text


def _lake_to_compact(lake: LakeConfig) -> None:
    """Three commits: files to merge, snapshots to expire."""
    writer = LakeWriter(lake, seed_definitions)
    try:
        for i in range(3):
            writer.write(seed_entries(1, 3, start=i))
    finally:
        writer.close()


def test_a_pass_that_outlasts_its_time_is_stopped(lake: LakeConfig) -> None:
    _lake_to_compact(lake)
    holder = _hold_catalog_lock(lake)
    try:
        others = set(_children_of(os.getpid()))  # the lock holder, the test's valkey...
        started = time.monotonic()
        with pytest.raises(CompactionFailed) as failed:
            compact_in_child(lake, keep_snapshots=timedelta(0), timeout_s=3)
        assert failed.value.kind == "timeout" and time.monotonic() - started < 10
        assert set(_children_of(os.getpid())) == others  # the child was killed
    finally:
        _release(holder)


def test_a_pass_dies_with_the_worker_that_started_it(lake: LakeConfig, tmp_path: Path) -> None:
    """A worker SIGKILLed mid-pass leaves no pass running behind it (as when passes ran in
    its threads): the previous state stays, the next worker's pass does the work."""
    _lake_to_compact(lake)
    holder = _hold_catalog_lock(lake)
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "from strictgate.lake.engine import LakeConfig\n"
         "from strictgate.lake.maintenance import compact_in_child\n"
         f"compact_in_child(LakeConfig({lake.catalog!r}, {lake.data_path!r}))\n"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (children := _children_of(parent.pid)):
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        (child,) = children
        time.sleep(1.0)  # past its start: compacting (retrying the locked catalog)
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the compaction child outlived its worker"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
        _release(holder)

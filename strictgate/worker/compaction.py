"""When the worker compacts the lake, and that only one worker does at a time.

A pass (:func:`strictgate.lake.maintenance.compact_lake`: merge adjacent files, expire snapshots
older than ``STRICTGATE_LAKE_SNAPSHOT_RETENTION_S``, clean up old and orphaned files) is due after
``every_commits`` commits of this worker or ``every_s`` seconds after the last pass if this
worker committed anything since, whichever comes first; the worker asks after each commit
and once per loop pass (so an idle worker still compacts what it wrote). It runs apart from
the writer (a thread waits for it) on its own connection, so the worker keeps committing
meanwhile (each compaction step is its
own short commit; a writer that meets it retries). Across workers, a Redis lock (``SET NX
PX``, key :func:`quota.keys.lake_compaction_lock_key`, released only by its holder) lets one
pass run at a time; a worker that finds the lock taken counts its pass as done and waits for
the next. A failed pass is logged once (a warning; the same failure again only at debug
level), retried when the next one is due, and never stops ingest. A worker killed mid-pass
leaves the previous state (see :mod:`strictgate.lake.maintenance`) and the lock expires after
``LOCK_TTL_MS``.

The pass itself runs in a child process (:func:`strictgate.lake.maintenance.compact_in_child`,
stopped if it outlasts ``PASS_TIMEOUT_S``, i.e. before its lock expires): DuckDB leaks the
memory of a merge whose commit fails, and under a steady stream of commits most merge
attempts fail, which grew a worker by 25-40 MB per pass; in a child it ends with the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from quota import keys
from strictgate.errors import clip
from strictgate.lake.engine import LakeConfig
from strictgate.lake.maintenance import CompactionReport, compact_in_child
from strictgate.worker import faults

log = logging.getLogger("strictgate.worker")

COMPACT_EVERY_COMMITS = 500
COMPACT_EVERY_S = 600.0
# longer than any pass should take; a holder that dies frees it at the latest then
LOCK_TTL_MS = 15 * 60 * 1000
# a pass still running then is stopped, so it never outlives its lock
PASS_TIMEOUT_S = LOCK_TTL_MS / 1000 - 60

# (lake, time-travel window) -> what the pass did; runs in a worker thread
Compactor = Callable[[LakeConfig, timedelta], CompactionReport]

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def compact_pass(config: LakeConfig, keep_snapshots: timedelta) -> CompactionReport:
    """The production pass: :func:`strictgate.lake.maintenance.compact_lake` in a child
    process (:func:`strictgate.lake.maintenance.compact_in_child`)."""
    return compact_in_child(config, keep_snapshots=keep_snapshots, timeout_s=PASS_TIMEOUT_S)


class CompactionSchedule:
    """Counts commits and starts a compaction pass in a thread when one is due.

    ``every_commits``, ``every_s``, ``clock`` (monotonic seconds) and ``compactor`` are
    parameters so tests can drive the schedule without waiting minutes."""

    def __init__(self, redis: aioredis.Redis, config: LakeConfig, *,
                 keep_snapshots_s: float, every_commits: int = COMPACT_EVERY_COMMITS,
                 every_s: float = COMPACT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic,
                 compactor: Compactor = compact_pass) -> None:
        # one thread of its own for every pass (passes never overlap in one worker)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-compact")
        self.redis = redis
        self.config = config
        self.keep_snapshots = timedelta(seconds=keep_snapshots_s)
        self.every_commits = faults.compact_every_commits(every_commits)
        self.every_s = every_s
        self.clock = clock
        self.compactor = compactor
        self.commits = 0
        self._last = clock()
        self.task: asyncio.Task[CompactionReport | None] | None = None
        self.passes = 0
        self.skipped = 0
        self.failures = 0
        self.failing: str | None = None
        self.last_report: CompactionReport | None = None

    def committed(self) -> None:
        """Count one commit; start a pass if one is due and none is running."""
        self.commits += 1
        self.poll()

    def due(self) -> bool:
        """Whether a pass should start now."""
        if self.commits == 0:
            return False
        return (self.commits >= self.every_commits
                or self.clock() - self._last >= self.every_s)

    def poll(self) -> None:
        """Start a pass (a task) if due and none runs; never waits for it."""
        if self.task is not None and not self.task.done():
            return
        if self.due():
            self.commits = 0
            self._last = self.clock()
            self.task = asyncio.create_task(self.run_pass(), name="strictgate-lake-compaction")

    async def run_pass(self) -> CompactionReport | None:
        """One pass under the cross-worker lock; None if another worker holds it (or the
        lock cannot be taken: Redis trouble is logged by the worker loop) or the pass
        failed."""
        token = uuid.uuid4().hex
        lock = keys.lake_compaction_lock_key()
        try:
            taken = await self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS)
        except (RedisError, OSError):
            taken = None
        if not taken:
            # another worker compacts the same lake right now: nothing to do, nothing wrong
            self.skipped += 1
            log.debug("worker: lake compaction skipped, another worker holds the lock")
            return None
        try:
            faults.maybe_die_later("compaction")
            report = await asyncio.get_running_loop().run_in_executor(
                self._thread, self.compactor, self.config, self.keep_snapshots)
        except Exception as exc:
            self._failed(exc)
            return None
        finally:
            # a lock that cannot be released expires by itself
            with contextlib.suppress(RedisError, OSError):
                await self.redis.eval(_RELEASE_LUA, 1, lock, token)
        self.passes += 1
        self.last_report = report
        if self.failing is not None:
            log.info("worker: lake compaction works again (was: %s)", self.failing)
            self.failing = None
        log.info("worker: lake compacted in %.2f s (%d files merged, %d snapshots expired, "
                 "%d files deleted)", report.seconds, report.files_merged,
                 report.snapshots_expired, report.files_deleted + report.orphans_deleted)
        return report

    def _failed(self, exc: Exception) -> None:
        """Count a failed pass; a warning only when passes were working before or the kind
        of failure changed (a persistent failure must not log once per pass)."""
        self.failures += 1
        # a child's failure carries the type of the error it met (CompactionFailed.kind)
        kind = str(getattr(exc, "kind", "")) or type(exc).__name__
        text = " ".join(str(exc).split())
        if kind == self.failing:
            log.debug("worker: lake compaction failed again: %s: %s", kind, clip(text, 200))
            return
        self.failing = kind
        log.warning("worker: lake compaction failed, will retry later (ingest goes on): "
                    "%s: %s", kind, clip(text, 200))

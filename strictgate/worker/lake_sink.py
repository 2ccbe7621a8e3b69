"""The lake worker: queue entries -> DuckLake tables, exactly once, many entries per commit.

One pass reads new entries from every queue stream until about ``batch_records`` records are
gathered, then commits them all with one :meth:`strictgate.lake.writer.LakeWriter.write` (a commit
costs 10-20 ms whatever its size, so a commit holds many entries across streams and datasets), and
only then acknowledges and deletes them (XACK+XDEL+DECRBY of the backpressure counter, one
transaction per stream). The lake's ledger, committed with the rows, replaces the JSON Lines
sink's Redis marks: an entry delivered again (its worker died between commit and XACK, or
before the commit) is given to the writer, which skips ledger entries, and is acknowledged
either way. So every acknowledged record is in the lake exactly once.

The writer is synchronous: it runs on a thread of its own, so an API sharing
the event loop keeps answering. It needs each entry's definition version; versions never
change once written, so they are read from the registry before the thread call (async) and
cached for good.

Failures: an entry that can never be written (malformed, or its definition is gone) is
dead-lettered (:meth:`Worker.dead_letter`); a batch that fails for a reason in its data
is split in halves until the one entry is found, so the others are written. Any other
failure (disk full, catalog unreachable, permission denied) is a :class:`SinkError`: the
entries stay pending, the writer's connection is dropped (the next attempt reconnects) and
the worker retries with backoff (see :meth:`Worker.run`). Its reason (``/readyz``, the log)
is one line, keeps both ends of DuckDB's message and never a catalog password.

Quarantine: an entry's quarantined records and the quarantine rows a replayed entry names
(``replay_of``, which must name one row per record, checked with the records' count) are
written in the entry's commit (:class:`strictgate.lake.writer.LakeWriter`). Retention: every
``purge_every_s`` (:data:`QUARANTINE_PURGE_EVERY_S`; the first pass
:data:`QUARANTINE_PURGE_FIRST_S` after the start, so a worker restarted often still purges)
the worker deletes the quarantined records older than their dataset's
``quarantine_retention_days`` (:meth:`LakeWorker.purge_quarantine`), on its writer's
connection between two commits. A purge that fails is logged and tried again at the next
interval; ingest never waits for it. Several workers may purge the same rows: a delete of
what is gone deletes nothing.

Commit notification (Definite ``wait: true``, :mod:`strictgate.ingest.commit_wait`): before
a commit the worker reads which of its entries' queues a request is waiting on
(:func:`watched_queues`, one round trip); for those only, it learns the snapshot id holding
each entry's rows (:func:`commit_snapshots`) and sets the entry's marker
(:func:`mark_committed`) before acknowledging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from quota import keys
from strictgate.context import utc_now
from strictgate.lake.engine import ALIAS, LakeConfig, is_retryable
from strictgate.lake.maintenance import purge_quarantine, quarantined_datasets
from strictgate.lake.tables import META
from strictgate.lake.writer import CACHE_LIMIT_BYTES, CommitResult, LakeEntry, LakeWriter
from strictgate.queue_entry import QueueEntry, check_event_count, check_replay_count
from strictgate.redact import redacted
from strictgate.registry.settings import DatasetSettingsStore
from strictgate.registry.store import Registry
from strictgate.worker import faults
from strictgate.worker.compaction import CompactionSchedule
from strictgate.worker.consumer import (
    POISON_ERRORS,
    Entry,
    Worker,
    _entries_of,
    checked_record_count,
    entry_records,
    oldest_receipt,
)
from strictgate.worker.health import SinkError
from validator.definition import normalize

log = logging.getLogger("strictgate.worker")

SINK_NAME = "lake"
RECENT_COMMITS = 1000
QUARANTINE_PURGE_EVERY_S = 3600.0
"""Seconds between two purges of expired quarantined records by one worker."""
QUARANTINE_PURGE_FIRST_S = 60.0
"""Seconds after a worker starts before its first purge (at most ``purge_every_s``)."""
HURRY_S = 2.0
"""For this long after a commit somebody waited for (``wait: true``), the worker polls the
queues instead of waiting out its commit interval between passes."""

# DuckDB errors that come from an entry's data (a value its column cannot take), not from
# the storage: the batch is split to find the entry.
DATA_ERRORS: tuple[type[Exception], ...] = (
    *POISON_ERRORS, duckdb.ConversionException, duckdb.InvalidInputException,
    duckdb.TypeMismatchException, duckdb.BinderException, duckdb.OutOfRangeException,
    RecursionError)

# Message fragments -> the stable cause a storage failure is reported under (first match).
_CAUSES = (
    ("no space left", "ENOSPC"), ("disk full", "ENOSPC"), ("permission denied", "EACCES"),
    ("read-only file system", "EROFS"), ("database is locked", "catalog_locked"),
    ("unable to open database", "catalog_unreachable"),
    ("cannot use the lake's data path", "object_store_refused"),
    ("unable to connect", "catalog_unreachable"), ("could not connect", "catalog_unreachable"),
    ("connection", "catalog_unreachable"), ("does not exist", "catalog_unreachable"),
    ("no such file or directory", "ENOENT"),
)

# A catalog's connection string may carry a password (``password=...`` in libpq's key/value
# form, ``user:secret@`` in a URI), and DuckDB quotes the string in its connection errors:
# the reason is shown in /readyz and the log, so the secret is cut out first.
def sink_error_of(exc: BaseException, config: LakeConfig) -> SinkError:
    """Describe a storage failure of the lake as a :class:`SinkError` (stable cause, one
    line, no password)."""
    if isinstance(exc, OSError):
        return SinkError.from_os_error(exc, "writing", config.data_path)
    message = redacted(str(exc) or type(exc).__name__)
    lowered = message.lower()
    cause = next((c for fragment, c in _CAUSES if fragment in lowered), None)
    if cause is None and is_retryable(exc):
        cause = "catalog_busy"
    if cause is None:
        cause = errno.errorcode.get(getattr(exc, "errno", 0) or 0, type(exc).__name__)
    return SinkError(cause, f"{cause} ({clip_middle(message, 200)}) writing the lake")


def clip_middle(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters in the middle: DuckDB puts the long part
    (a file path, a connection string) in the middle and the reason (``No space left on
    device``, ``database ... does not exist``) at the end, so both ends are kept."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    return text[:head] + "…" + text[len(text) - (limit - head):]


class DefinitionCache:
    """Definition versions read from the registry once and kept (they never change)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._known: dict[tuple[str, str, int], Mapping[str, Any] | None] = {}

    async def prefetch(self, wanted: set[tuple[str, str, int]]) -> None:
        """Read the versions of ``wanted`` not cached yet (a missing one is cached as None
        only for this batch: it may be a registry still being written)."""
        for project, dataset, version in wanted - self._known.keys():
            found = await self.registry.get_version(project, dataset, version)
            if found is not None:
                self._known[(project, dataset, version)] = normalize(found.definition)

    def has(self, project: str, dataset: str, version: int) -> bool:
        """Whether the version is known."""
        return self._known.get((project, dataset, version)) is not None

    def __call__(self, project: str, dataset: str, version: int) -> Mapping[str, Any]:
        """The definition (for :class:`LakeWriter`); KeyError if it was not prefetched."""
        found = self._known.get((project, dataset, version))
        if found is None:
            raise KeyError(f"definition {project}/{dataset} v{version} not loaded")
        return found


class LakeWorker(Worker):
    """The worker with the lake as its sink (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, config: LakeConfig, *,
                 compaction: CompactionSchedule | None = None,
                 writer_threads: int | None = None,
                 writer_cache_limit: int | None = CACHE_LIMIT_BYTES,
                 purge_every_s: float = QUARANTINE_PURGE_EVERY_S, **options: Any) -> None:
        # 200k records: about 40 MB read and staged per commit (two batches in memory with
        # the pipelining); the fixed cost of a commit (~20 ms) is then under 10%
        options.setdefault("batch_records", 200_000)
        super().__init__(redis, config.data_path, **options)  # type: ignore[arg-type]
        # DuckDB threads of the writer (``config.threads`` when None): a worker process of
        # its own takes every core (the writer splits a commit into one stage file per
        # thread); one beside the API leaves it a core
        self.config = (dataclasses.replace(config, threads=writer_threads)
                       if writer_threads else config)
        self.definitions = DefinitionCache(Registry(redis, clock=utc_now))
        self.compaction = compaction
        # the writer replaces its connection when DuckDB's caches pass this (LakeWriter)
        self.writer_cache_limit = writer_cache_limit
        self._closed_reconnects = 0
        self._writer: LakeWriter | None = None
        # the writer's connection on one thread of its own, never on asyncio's shared pool
        # (whose threads also validate large bodies): DuckDB work never waits for a free
        # thread, and its allocations stay on one thread (see strictgate/malloc.py)
        self._lake_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-write")
        self.commits = 0
        self._turn = 0
        # the records of the last commits (at most 2 * RECENT_COMMITS: a list that grew by
        # one item per commit was part of a long-running worker's growth)
        self.records_per_commit: list[int] = []
        # the commit of the last batch read, still running while the next batch is read
        self._in_flight: asyncio.Task[int] | None = None
        # one commit at a time: the writer's connection is not for concurrent threads
        self._writing = asyncio.Lock()
        self.dataset_settings = DatasetSettingsStore(redis)
        self.purge_every_s = purge_every_s
        # monotonic time of the last purge, set so the first comes QUARANTINE_PURGE_FIRST_S
        # (or one interval, if shorter) after the start
        self._last_purge = time.monotonic() - purge_every_s + min(QUARANTINE_PURGE_FIRST_S,
                                                                  purge_every_s)
        self.purged = 0
        """Quarantined records this worker's purges deleted."""
        # monotonic time of the last commit a request waited for (Definite ``wait: true``)
        self._watched_at = -HURRY_S
        self._purge_failing: str | None = None

    def _open_writer(self) -> LakeWriter:
        if self._writer is None:
            before = (faults.die if faults.kill_point() == "before_commit" else None)
            self._writer = LakeWriter(self.config, self.definitions, before_commit=before,
                                      cache_limit_bytes=self.writer_cache_limit)
        return self._writer

    @property
    def writer_reconnects(self) -> int:
        """Connections this worker's writers replaced to bound DuckDB's caches."""
        current = self._writer.reconnects if self._writer is not None else 0
        return self._closed_reconnects + current

    def close(self) -> None:
        """Close the lake connection (a new one opens on the next write)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self._closed_reconnects += writer.reconnects
            # a broken connection: nothing left to close
            with contextlib.suppress(duckdb.Error):
                writer.close()

    def in_a_hurry(self) -> bool:
        """A request waited for one of the last :data:`HURRY_S` seconds' commits: the next
        one is not held back by the commit interval (a client sending ``wait: true``
        requests one after another would wait the interval for each)."""
        return time.monotonic() - self._watched_at < HURRY_S

    # --- reading ---------------------------------------------------------------------

    async def _read_all(self) -> int:
        """Read new entries of every stream, up to about ``batch_records`` records in all,
        and commit them together."""
        batch: dict[str, list[Entry]] = {}
        records = 0
        streams = sorted(self._streams)
        # start each pass one stream further: a busy stream that fills a batch alone must
        # not starve the streams after it
        self._turn = (self._turn + 1) % max(1, len(streams))
        for stream in streams[self._turn:] + streams[:self._turn]:
            count = self._read_counts.get(stream, self.batch_size)
            try:
                reply = await self.redis.xreadgroup(
                    keys.QUEUE_GROUP, self.consumer, {stream: ">"}, count=count)
            except ResponseError as exc:
                await self._regroup(stream, exc)
                continue
            entries = _entries_of(reply)
            if not entries:
                continue
            batch[stream] = entries
            per_entry = max(1, sum(entry_records(f) for _, f in entries[:8])
                            // min(len(entries), 8))
            self._read_counts[stream] = max(self.batch_size, min(
                self.max_batch_entries, self.batch_records // per_entry))
            records += per_entry * len(entries)
            self._filled = self._filled or len(entries) >= count
            if records >= self.batch_records:
                self._filled = True  # the next pass comes at once
                break
        # Pipelining: this batch was read while the previous one committed (in its thread);
        # that commit ends (and acknowledges its entries) before this one starts. A failed
        # commit raises here: this batch stays pending and is retried with it.
        await self.settle()
        if batch:
            self._in_flight = asyncio.create_task(self._commit(batch, first_delivery=True))
        return sum(len(v) for v in batch.values())

    async def settle(self) -> None:
        """Wait for the commit still running (its failure is raised here)."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def reclaim(self) -> int:
        """:meth:`Worker.reclaim`, once the running commit has ended: its entries are pending
        too and must not be claimed as a dead consumer's (they would be acknowledged twice)."""
        await self.settle()
        return await super().reclaim()

    async def retry_own_pending(self) -> int:
        """:meth:`Worker.retry_own_pending`, once the running commit has ended."""
        await self.settle()
        return await super().retry_own_pending()

    async def run_once(self) -> int:
        """One pass of the worker loop (:meth:`Worker.run_once`), then start a compaction
        pass if one is due: asked here too, not only after a commit, so the interval also
        holds for a worker that went idle after writing."""
        handled = await super().run_once()
        if self.compaction is not None:
            self.compaction.poll()
        if time.monotonic() - self._last_purge >= self.purge_every_s:
            await self._purge_logged()
        return handled

    # --- quarantine retention --------------------------------------------------------

    async def purge_quarantine(self) -> int:
        """Delete the quarantined records older than their dataset's
        ``quarantine_retention_days`` now; returns how many. Raises what fails (Redis,
        DuckDB): :meth:`run_once` logs it."""
        self._last_purge = time.monotonic()
        loop = asyncio.get_running_loop()
        async with self._writing:
            datasets = await loop.run_in_executor(
                self._lake_thread, lambda: quarantined_datasets(self._open_writer().con))
        retention = {(p, d): (await self.dataset_settings.get(p, d)).quarantine_retention_days
                     for p, d in datasets}
        async with self._writing:
            deleted = await loop.run_in_executor(
                self._lake_thread,
                lambda: purge_quarantine(self._open_writer().con, retention,
                                         now=self.clock()))
        self.purged += deleted
        if deleted:
            log.info("worker: %d expired quarantined records deleted", deleted)
        return deleted

    async def _purge_logged(self) -> None:
        """:meth:`purge_quarantine`, its failure logged once per kind (and the writer's
        connection dropped after a DuckDB error: the next commit reconnects)."""
        try:
            await self.purge_quarantine()
        except Exception as exc:  # a purge never stops ingest
            if isinstance(exc, duckdb.Error):
                async with self._writing:
                    await asyncio.get_running_loop().run_in_executor(self._lake_thread,
                                                                     self.close)
            kind = type(exc).__name__
            if kind != self._purge_failing:
                log.warning("worker: quarantine purge failed, will retry in %.0f s: %s: %s",
                            self.purge_every_s, kind,
                            clip_middle(redacted(str(exc) or kind), 200))
            self._purge_failing = kind
            return
        self._purge_failing = None

    async def _write(self, stream: str, entries: Sequence[Entry]) -> int:
        return await self._commit({stream: list(entries)}, first_delivery=True)

    async def _handle_redelivered(self, stream: str, entries: Sequence[Entry]) -> None:
        if entries:
            await self._commit({stream: list(entries)}, first_delivery=False)

    # --- committing --------------------------------------------------------------------

    async def _commit(self, batch: dict[str, list[Entry]], *, first_delivery: bool) -> int:
        """Commit the entries of ``batch`` (stream -> entries), then acknowledge them;
        returns the records committed."""
        parsed: list[tuple[str, Entry, LakeEntry, int]] = []
        for stream, entries in batch.items():
            for entry in entries:
                try:
                    queued = QueueEntry.from_fields(entry[1])
                    count = checked_record_count(queued.records)
                    if queued.events is not None:
                        check_event_count(queued.events, count)
                    if queued.replay_of is not None:
                        check_replay_count(queued.replay_of, count)
                except POISON_ERRORS as exc:
                    await self.dead_letter(stream, entry, "malformed_entry", exc)
                    continue
                parsed.append((stream, entry, LakeEntry.of(entry[0], queued, count), count))
        await self.definitions.prefetch({_version_of(i[2].queued) for i in parsed})
        ready = []
        for item in parsed:
            if self.definitions.has(*_version_of(item[2].queued)):
                ready.append(item)
            else:
                await self.dead_letter(item[0], item[1], "definition_missing")
        return await self._commit_parsed(ready, first_delivery)

    async def _commit_parsed(self, items: list[tuple[str, Entry, LakeEntry, int]],
                             first_delivery: bool) -> int:
        if not items:
            return 0
        watched = await watched_queues(self.redis, [i[2].queued for i in items])
        if watched:
            self._watched_at = time.monotonic()
        try:
            async with self._writing:
                result, snapshots = await asyncio.get_running_loop().run_in_executor(
                    self._lake_thread, self._write_sync, [i[2] for i in items], first_delivery,
                    bool(watched))
        except DATA_ERRORS as exc:
            if len(items) == 1:
                await self.dead_letter(items[0][0], items[0][1], "malformed_record", exc)
                return 0
            # split: the entries of the good half are written, the bad one is found
            half = len(items) // 2
            return (await self._commit_parsed(items[:half], first_delivery)
                    + await self._commit_parsed(items[half:], first_delivery))
        faults.maybe_die("after_commit")
        self.health.succeeded()
        if watched:
            await mark_committed(self.redis, [i[2] for i in items], snapshots, watched)
        by_stream: dict[str, tuple[list[bytes], int]] = {}
        for stream, (entry_id, _), _, count in items:
            ids, records = by_stream.get(stream, ([], 0))
            ids.append(entry_id)
            by_stream[stream] = (ids, records + count)
        for stream, (ids, records) in by_stream.items():
            await self._finish(stream, ids, records)
        self.commits += 1
        self.records_per_commit.append(result.records)
        if len(self.records_per_commit) > 2 * RECENT_COMMITS:
            del self.records_per_commit[:-RECENT_COMMITS]
        if self.compaction is not None and result.written:
            self.compaction.committed()
        self.stats.entries_written += len(result.written)
        self.stats.entries_finished_from_marks += len(result.skipped)
        self.stats.records_written += result.records
        oldest = oldest_receipt([i[2].queued for i in items])
        self.stats.last_lag_s = max(0.0, (self.clock() - oldest).total_seconds())
        if self.on_batch is not None:
            self.on_batch(items[0][0], result.records, self.stats.last_lag_s)
        return result.records

    def _write_sync(self, entries: list[LakeEntry], first_delivery: bool,
                    snapshots: bool = False) -> tuple[CommitResult, dict[str, int]]:
        """In the worker's thread: one commit; storage failures become SinkError. With
        ``snapshots``, also the snapshot id holding each entry's rows, by ledger id
        (:func:`commit_snapshots`), else ``{}``."""
        try:
            writer = self._open_writer()
            if not snapshots:
                return writer.write(entries, first_delivery=first_delivery), {}
            before = current_snapshot(writer.con)
            result = writer.write(entries, first_delivery=first_delivery)
            # writer.con again: the write may have replaced the connection
            return result, commit_snapshots(writer.con, entries, result, before)
        except DATA_ERRORS:
            raise
        except (duckdb.Error, OSError) as exc:
            # the connection may be unusable (catalog gone): reconnect on the next attempt
            self.close()
            raise sink_error_of(exc, self.config) from exc

    async def run(self, stop: asyncio.Event) -> None:
        """The worker loop (:meth:`Worker.run`), then close the lake connection."""
        started = time.monotonic()
        try:
            await super().run(stop)
        finally:
            with contextlib.suppress(Exception):
                # a failed last commit leaves its entries pending: they are retried
                await self.settle()
            if self.compaction is not None and self.compaction.task is not None:
                await asyncio.gather(self.compaction.task, return_exceptions=True)
            await asyncio.get_running_loop().run_in_executor(self._lake_thread, self.close)
            self._lake_thread.shutdown(wait=False)
            log.debug("worker: lake sink ran %.1f s, %d commits",
                      time.monotonic() - started, self.commits)


def _version_of(entry: QueueEntry) -> tuple[str, str, int]:
    """The definition version an entry's records were validated against."""
    return entry.project_id, entry.dataset_id, entry.dataset_version


# --- commit notification (strictgate.ingest.commit_wait) ------------------------------------

COMMITTED_TTL_S = 300
"""Seconds a :func:`quota.keys.committed_key` marker lives: far longer than a waiter's
pause between two looks, so a retry with the same Idempotency-Key soon after still finds
its snapshot."""
_LEDGER_SNAPSHOTS = (f"SELECT entry_id, snapshot_id FROM {ALIAS}.{META}.ledger WHERE project = ?"
                     " AND dataset = ? AND list_contains(from_json(?, '[\"VARCHAR\"]'), entry_id)")


def _queue_of(entry: QueueEntry) -> tuple[str, str, str]:
    return entry.user_id, entry.project_id, entry.dataset_id


async def watched_queues(redis: aioredis.Redis, entries: Sequence[QueueEntry]
                         ) -> set[tuple[str, str, str]]:
    """The queues (user, project, dataset) of ``entries`` that a request waits on
    (:func:`strictgate.ingest.commit_wait.watch_commits`); one round trip. Read after the
    entries were read from their streams, hence after their admission, so it sees every
    watch taken before that admission."""
    queues = sorted({_queue_of(entry) for entry in entries})
    async with redis.pipeline(transaction=False) as pipe:
        for user, project, dataset in queues:
            pipe.get(keys.commit_waiters_key(user, project, dataset))
        counts = await pipe.execute()
    return {queue for queue, count in zip(queues, counts, strict=True)
            if count is not None and int(count) > 0}


async def mark_committed(redis: aioredis.Redis, entries: Sequence[LakeEntry],
                         snapshots: Mapping[str, int],
                         watched: set[tuple[str, str, str]]) -> None:
    """Set the :func:`quota.keys.committed_key` marker (the snapshot id, for
    :data:`COMMITTED_TTL_S`) of every entry of a ``watched`` queue; one round trip. Runs
    before the entries are acknowledged: a worker dying in between leaves them pending, and
    their redelivery (skipped as ledgered) marks them again."""
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            queued = entry.queued
            snapshot = snapshots.get(entry.entry_id)
            if snapshot is None or _queue_of(queued) not in watched:
                continue
            stream_id = entry.entry_id.partition("/")[2]
            pipe.set(keys.committed_key(queued.user_id, queued.project_id, queued.dataset_id,
                                        stream_id), snapshot, ex=COMMITTED_TTL_S)
        await pipe.execute()


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's latest snapshot id."""
    row = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()
    return int(row[0]) if row else 0


def commit_snapshots(con: duckdb.DuckDBPyConnection, entries: Sequence[LakeEntry],
                     result: CommitResult, before: int) -> dict[str, int]:
    """The snapshot id holding each entry's rows, by ledger id, after the commit of
    ``result``; ``before`` is :func:`current_snapshot` read just before it.

    When the lake moved by exactly one snapshot and the call wrote every entry, that
    snapshot is this commit's (about 1 ms). Otherwise (entries skipped as written before, a
    table created, another writer, a compaction or a purge committed in between) each
    entry's snapshot is read from the ledger: its rows' ``snapshot_id`` is the commit that
    added them, exact for entries written by an earlier delivery too, and kept by
    compaction; but it reads the ledger files not compacted yet (tens of ms)."""
    after = current_snapshot(con)
    if after == before + 1 and result.written and not result.skipped:
        return dict.fromkeys(result.written, after)
    by_dataset: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        by_dataset.setdefault((entry.queued.project_id, entry.queued.dataset_id),
                              []).append(entry.entry_id)
    found: dict[str, int] = {}
    for (project, dataset), ids in by_dataset.items():
        rows = con.execute(_LEDGER_SNAPSHOTS, [project, dataset,
                                               orjson.dumps(ids).decode()]).fetchall()
        found.update((str(entry_id), int(snapshot)) for entry_id, snapshot in rows)
    return found

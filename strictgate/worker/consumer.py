"""The queue worker: Redis Streams (consumer group) -> JSON Lines files, exactly once.

For each batch read from a stream the worker (1) stages the output files and fsyncs them,
(2) records in Redis which final file holds each entry, (3) renames the files into place,
(4) acknowledges and deletes the entries and their marks in one transaction. An entry
delivered again (its worker died before step 4) is checked against the marks: marked entries
are only finished (rename, ack), unmarked ones are written. So a record is never written twice
and never lost, and acknowledged entries leave Redis at once (memory stays flat).

A sink that cannot write (disk full, read-only, ...) raises :class:`SinkError`: the batch's
staged files are removed, its entries stay pending, :class:`SinkHealth` records the state
(``/readyz``, metrics, one log line per change) and the worker retries its own pending entries
before reading new ones, so it catches up by itself once the cause is gone.

Each entry is read as a :class:`strictgate.queue_entry.QueueEntry`. One that can never be
written (a missing or malformed field, a malformed record) is a poison entry:
it is moved to the queue's dead-letter stream (:func:`quota.keys.dead_letter_key`, same hash
tag) with the reason, acknowledged and deleted in one transaction, logged once with its id
and counted, so it never stops the worker. Every acknowledging transaction also takes the
entry's records off the queue's backpressure counter (:func:`quota.keys.queued_records_key`).

Quarantined records (an entry's ``quarantine``, under a dataset's ``on_invalid:
quarantine`` policy) go to a file of their own beside the records', under
``<output>/quarantine/<project>/<dataset>/<YYYY-MM-DD>/`` (:func:`quarantine_lines`: one
line per record, with its errors), staged, marked and published with the batch: an entry's
mark names every file holding its lines (one per line of the mark), and a redelivered
entry counts as written once each of them is published. A replayed entry's ``replay_of``
is ignored here: listing and replaying the quarantine need the lake sink (this sink's
files are not queried), and its ``replayed_at`` is spliced in as ``__replayedAt``.

This module is the JSON Lines worker; :mod:`strictgate.worker.lake_sink` subclasses it for the lake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from quota import keys
from strictgate.errors import clip
from strictgate.queue_entry import (
    QueuedEvent,
    QueueEntry,
    check_event_count,
    decode_events,
    decode_quarantine,
)
from strictgate.redis_health import health_of, is_connection_problem
from strictgate.timestamps import parse_utc
from strictgate.unavailable import REDIS_FAILURES
from strictgate.worker import sink
from strictgate.worker.health import SinkError, SinkHealth

log = logging.getLogger("strictgate.worker")

Entry = tuple[bytes, dict[bytes, bytes]]


def default_consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerStats:
    """Counters a caller (tests, metrics) can read."""

    entries_written: int = 0
    records_written: int = 0
    entries_finished_from_marks: int = 0
    dead_letters: int = 0
    # age of the oldest entry of the last batch written (the lag metric is read from the
    # queues themselves: worker.queues)
    last_lag_s: float = 0.0


_RAW_RECORDS = msgspec.json.Decoder(list[msgspec.Raw])
_JSON_WHITESPACE = (b" ", b"\n", b"\t", b"\r")


def compact_json(payload: bytes) -> bytes:
    """``payload`` (valid JSON) without whitespace outside strings; every token's text is
    kept as it is (numbers are not re-read as floats, escapes stay escapes)."""
    # most payloads come compact from the client or the validator: one scan per byte value
    if not any(ws in payload for ws in _JSON_WHITESPACE):
        return payload
    return msgspec.json.format(payload, indent=-1)


def output_lines(entry: QueueEntry) -> list[bytes]:
    """The JSON lines of one queue entry: each record plus ``__traceId``,
    ``__datasetVersion``, when the entry has one, ``__eventType``, when it was replayed
    from the quarantine, ``__replayedAt`` and, when it has ``events``, its event's
    ``__eventId``, ``__source`` (null when none) and ``__eventTime`` (its text as sent).

    The queued payload is the client's JSON of each record (a non-empty object) with line
    breaks removed; it is made compact (whitespace outside strings dropped) and the system
    keys are spliced in before each record's closing brace, instead of parsing and
    re-serializing every record. Events that are not one per record raise
    :class:`~strictgate.queue_entry.MalformedEntryError` (a ValueError: a poison entry).
    """
    suffix = (
        b',"__traceId":' + orjson.dumps(entry.trace_id)
        + b',"__datasetVersion":' + str(entry.dataset_version).encode()
    )
    if entry.event_type is not None:
        suffix += b',"__eventType":' + orjson.dumps(entry.event_type)
    if entry.replayed_at is not None:
        suffix += b',"__replayedAt":' + orjson.dumps(entry.replayed_at)
    records = _RAW_RECORDS.decode(compact_json(entry.records))
    if entry.events is not None:
        return _event_lines(records, suffix, decode_events(entry.events))
    suffix += b"}"
    lines = []
    for raw in records:
        # inline, not _open_record: this loop runs once per record of every entry
        record = bytes(raw).rstrip()
        if not record.endswith(b"}") or record == b"{}":
            raise ValueError("queued record is not a non-empty JSON object")
        lines.append(record[:-1] + suffix)
    return lines


def quarantine_lines(entry: QueueEntry) -> list[bytes]:
    """The JSON lines of an entry's quarantined records, one per record: ``{"record": <its
    JSON text as sent>, "index": <its place in the request>, "errors": [...],
    "trace_id", "dataset_version", "received_at"}`` plus ``"event_type"`` and ``"event"``
    when it has them. The record stays text: exactly what was sent, whatever it holds."""
    if entry.quarantine is None:
        return []
    common: dict[str, object] = {"trace_id": entry.trace_id,
                                 "dataset_version": entry.dataset_version,
                                 "received_at": entry.received_at}
    if entry.event_type is not None:
        common["event_type"] = entry.event_type
    lines = []
    for item in decode_quarantine(entry.quarantine):
        line: dict[str, object] = {"record": item.record, "index": item.index,
                                   "errors": item.errors, **common}
        if item.event is not None:
            line["event"] = item.event
        lines.append(_ENCODE(line))
    return lines


_ENCODE = msgspec.json.Encoder().encode
MARK_SEPARATOR = "\n"
"""Between the files of an entry's mark (a path holds no line break)."""


def _open_record(raw: msgspec.Raw) -> bytes:
    """A queued record without its closing brace (ValueError unless a non-empty object)."""
    record = bytes(raw).rstrip()
    if not record.endswith(b"}") or record == b"{}":
        raise ValueError("queued record is not a non-empty JSON object")
    return record[:-1]


def _event_lines(records: list[msgspec.Raw], suffix: bytes,
                 events: list[QueuedEvent]) -> list[bytes]:
    """The lines of an entry with events: its system keys, then each record's event."""
    check_event_count(events, len(records))
    return [_open_record(raw) + suffix + b',"__eventId":' + orjson.dumps(event.id)
            + b',"__source":' + orjson.dumps(event.source) + b',"__eventTime":'
            + orjson.dumps(event.time) + b"}" for raw, event in zip(records, events, strict=True)]


def entry_records(fields: dict[bytes, bytes]) -> int:
    """Records in a stream item's fields, read without :meth:`QueueEntry.from_fields` (it
    may be malformed): the length of its ``records`` array, 0 if it has none."""
    try:
        return len(_RAW_RECORDS.decode(fields[b"records"]))
    except (KeyError, msgspec.DecodeError):
        return 0


def checked_record_count(payload: bytes) -> int:
    """Records in a queued payload, which must be a JSON array of non-empty objects
    (ValueError or ``msgspec.DecodeError`` otherwise: a poison entry)."""
    count = 0
    for raw in _RAW_RECORDS.decode(payload):
        view = memoryview(raw)
        # Raw items start at their first token: "{" opens an object, "{}" is empty
        if len(view) < 3 or view[0] != 0x7B:
            raise ValueError("queued record is not a non-empty JSON object")
        count += 1
    return count


# Errors that say an entry itself is malformed (not the sink): the entry is dead-lettered.
# (MalformedEntryError, of QueueEntry.from_fields, is a ValueError.)
POISON_ERRORS: tuple[type[Exception], ...] = (
    ValueError, KeyError, UnicodeDecodeError, msgspec.DecodeError)

# Zero the backpressure counter of a queue that holds no entry at all (an entry deleted by
# hand, or dead-lettered without a readable count, would otherwise keep it up for good).
# One script: no admission can slip between the XLEN and the DEL.
_RECONCILE_LUA = """
if redis.call('XLEN', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


def oldest_receipt(entries: Sequence[QueueEntry]) -> datetime:
    """When the oldest of ``entries`` was received (``received_at`` is fixed-width RFC 3339
    in UTC, so the smallest text is the oldest time)."""
    return parse_utc(min(entry.received_at for entry in entries))


def receipt_day(entry: QueueEntry) -> str:
    """UTC date of receipt ``YYYY-MM-DD`` (from the entry's ``received_at``)."""
    return entry.received_at[:10]


# An entry of at least this many records is followed by a turn of the event loop.
YIELD_EVERY_RECORDS = 200


class Worker:
    """Consumes every dataset queue and writes its records to ``output_root``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        output_root: Path,
        *,
        consumer: str | None = None,
        batch_size: int = 100,
        max_batch_entries: int = 1000,
        batch_records: int = 100_000,
        reclaim_idle_ms: int = 30_000,
        poll_interval_s: float = 0.05,
        commit_interval_s: float | None = None,
        discover_interval_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_batch: Callable[[str, int, float], None] | None = None,
        health: SinkHealth | None = None,
        on_dead_letter: Callable[[str], None] | None = None,
    ) -> None:
        self.redis = redis
        self.output_root = Path(output_root)
        self.consumer = consumer or default_consumer_name()
        # Entries per read: ``batch_size`` at first, then as many as hold about
        # ``batch_records`` records given the stream's last entries (at most
        # ``max_batch_entries``): a file, two fsyncs and three Redis calls per batch cost
        # about as much as writing a hundred one-record entries, so small entries are
        # read many at a time, while big ones keep a batch's memory bounded.
        self.batch_size = batch_size
        self.max_batch_entries = max(batch_size, max_batch_entries)
        self.batch_records = batch_records
        self._read_counts: dict[str, int] = {}
        self._filled = False
        self.reclaim_idle_ms = reclaim_idle_ms
        # The wait after a pass that found nothing: a lone request waits at most this
        # before its commit starts.
        self.poll_interval_s = poll_interval_s
        # The wait after a pass that wrote entries but found no full batch (the service
        # passes STRICTGATE_COMMIT_INTERVAL_S): under a trickle of requests, the records
        # of this long go into one commit instead of one commit per poll.
        self.commit_interval_s = (poll_interval_s if commit_interval_s is None
                                  else commit_interval_s)
        self.discover_interval_s = discover_interval_s
        self.clock = clock
        self.on_batch = on_batch
        self.on_dead_letter = on_dead_letter
        self.stats = WorkerStats()
        self.health = health or SinkHealth(sink.SINK_NAME)
        self._redis_problem: str | None = None
        self._streams: set[str] = set()
        self._grouped: set[str] = set()
        self._last_discover = -1e9
        self._last_reclaim = -1e9

    # --- discovery ---------------------------------------------------------------------

    async def discover(self) -> set[str]:
        """Refresh the set of queue streams (index set, plus a SCAN for any it missed)."""
        found = {_str(m) for m in await self.redis.smembers(keys.queues_index_key())}
        async for key in self.redis.scan_iter(
            match=keys.QUEUE_SCAN_PATTERN, count=1000, _type="stream"
        ):
            found.add(_str(key))
        for stream in found - self._grouped:
            await self._ensure_group(stream)
        for stream in found:
            await self.redis.eval(
                _RECONCILE_LUA, 2, stream, keys.queued_records_key(stream))
        self._streams = found
        self._last_discover = time.monotonic()
        return found

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(stream)

    # --- processing --------------------------------------------------------------------

    def _final_path(self, entry: QueueEntry, first_id: bytes, *,
                    quarantine: bool = False) -> Path:
        root = self.output_root / "quarantine" if quarantine else self.output_root
        directory = sink.output_dir(root, entry.project_id, entry.dataset_id,
                                    receipt_day(entry))
        # Entry ids are unique per stream and a stream is per (user, project, dataset), so
        # first-id + user names a file uniquely and the same way on every retry.
        return directory / f"{_str(first_id)}.{entry.user_id}.jsonl"

    async def _write(self, stream: str, entries: Sequence[Entry]) -> int:
        """Steps 1-4 for entries known not to be written yet; returns the records written."""
        groups: dict[Path, list[bytes]] = {}
        marks: dict[bytes, str] = {}
        by_day: dict[str, list[tuple[Entry, QueueEntry]]] = {}
        poison: list[tuple[Entry, str, Exception]] = []
        written: list[QueueEntry] = []
        for entry in entries:
            try:
                queued = QueueEntry.from_fields(entry[1])
            except POISON_ERRORS as exc:
                poison.append((entry, "malformed_entry", exc))
                continue
            by_day.setdefault(receipt_day(queued), []).append((entry, queued))
        records = 0
        for day_entries in by_day.values():
            (first_id, _), first = day_entries[0]
            final = self._final_path(first, first_id)
            kept = self._final_path(first, first_id, quarantine=True)
            lines: list[bytes] = []
            kept_lines: list[bytes] = []
            for entry, queued in day_entries:
                try:
                    entry_lines = output_lines(queued)
                    entry_kept = quarantine_lines(queued)
                except POISON_ERRORS as exc:
                    poison.append((entry, "malformed_record", exc))
                    continue
                records += len(entry_lines)
                lines.extend(entry_lines)
                kept_lines.extend(entry_kept)
                # the files holding its lines (the records' file when it has none: as
                # before, a mark whose file never appears is written again, as nothing)
                files = [str(final)] if entry_lines or not entry_kept else []
                marks[entry[0]] = MARK_SEPARATOR.join(
                    files + ([str(kept)] if entry_kept else []))
                written.append(queued)
                if len(entry_lines) >= YIELD_EVERY_RECORDS:
                    # the worker shares the event loop with the API in `make run`: let
                    # requests through between big entries (p99 of batch ingest)
                    await asyncio.sleep(0)
            if lines:
                groups[final] = lines
            if kept_lines:
                groups[kept] = kept_lines
        for entry, reason, error in poison:
            await self.dead_letter(stream, entry, reason, error)
        if not written:
            return 0
        await asyncio.to_thread(sink.stage_batch, groups)
        await self.redis.hset(keys.written_marks_key(stream), mapping=marks)  # type: ignore[arg-type]
        await asyncio.to_thread(_publish_all, list(groups))
        self.health.succeeded()
        await self._finish(stream, list(marks), records)
        self.stats.entries_written += len(written)
        self.stats.records_written += records
        oldest = oldest_receipt(written)
        self.stats.last_lag_s = max(0.0, (self.clock() - oldest).total_seconds())
        if self.on_batch is not None:
            self.on_batch(stream, records, self.stats.last_lag_s)
        return records

    async def _finish(self, stream: str, ids: Sequence[bytes], records: int = 0) -> None:
        """Acknowledge and delete ``ids`` (written), drop their marks and take their
        ``records`` off the backpressure counter: one transaction, one slot."""
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, keys.QUEUE_GROUP, *ids)
            pipe.xdel(stream, *ids)
            pipe.hdel(keys.written_marks_key(stream), *ids)
            if records:
                pipe.decrby(keys.queued_records_key(stream), records)
            await pipe.execute()

    async def dead_letter(self, stream: str, entry: Entry, reason: str,
                          error: BaseException | None = None) -> None:
        """Move a poison entry aside: copy it to the queue's dead-letter stream with
        ``reason``, acknowledge and delete it and take its records off the counter, in one
        transaction; log it once (with its id) and count it."""
        entry_id, fields = entry
        detail = clip(f"{type(error).__name__}: {error}" if error is not None else reason, 300)
        log.error("worker: entry %s of %s cannot be written (%s: %s); moved to %s",
                  _str(entry_id), stream, reason, detail, keys.dead_letter_key(stream))
        records = entry_records(fields)
        async with self.redis.pipeline(transaction=True) as pipe:
            dead: dict[Any, Any] = {
                **fields, b"dead_entry_id": entry_id, b"dead_reason": reason.encode(),
                b"dead_detail": detail.encode()}
            pipe.xadd(keys.dead_letter_key(stream), dead)
            pipe.xack(stream, keys.QUEUE_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            pipe.hdel(keys.written_marks_key(stream), entry_id)
            if records:
                pipe.decrby(keys.queued_records_key(stream), records)
            await pipe.execute()
        self.stats.dead_letters += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter(reason)

    async def _handle_redelivered(self, stream: str, entries: Sequence[Entry]) -> None:
        """Entries that may have been written by a worker that died before acking."""
        if not entries:
            return
        ids = [entry_id for entry_id, _ in entries]
        marked = await self.redis.hmget(keys.written_marks_key(stream), ids)
        done: list[bytes] = []
        done_records = 0
        todo: list[Entry] = []
        for entry, mark in zip(entries, marked, strict=True):
            if mark is not None and await asyncio.to_thread(_publish_mark, _str(mark)):
                done.append(entry[0])
                done_records += entry_records(entry[1])
            else:
                todo.append(entry)
        if done:
            self.health.succeeded()
        await self._finish(stream, done, done_records)
        self.stats.entries_finished_from_marks += len(done)
        if todo:
            await self._write(stream, todo)

    async def _read_new(self, stream: str) -> int:
        count = self._read_counts.get(stream, self.batch_size)
        reply = await self.redis.xreadgroup(
            keys.QUEUE_GROUP, self.consumer, {stream: ">"}, count=count
        )
        entries = _entries_of(reply)
        if entries:
            records = await self._write(stream, entries)
            per_entry = max(1, records // len(entries))
            self._read_counts[stream] = max(self.batch_size, min(
                self.max_batch_entries, self.batch_records // per_entry))
            self._filled = self._filled or len(entries) >= count
        return len(entries)

    async def _read_own_pending(self, stream: str) -> int:
        """Entries delivered to this consumer name and never acked (a restart with the same
        name)."""
        reply = await self.redis.xreadgroup(
            keys.QUEUE_GROUP, self.consumer, {stream: "0"}, count=self.batch_size
        )
        entries = _entries_of(reply)
        # pending ids whose entry is gone would head every such read: drop them
        await self._finish(stream, _deleted_of(reply))
        await self._handle_redelivered(stream, entries)
        return len(entries)

    async def retry_own_pending(self) -> int:
        """Write every entry delivered to this consumer and not yet acknowledged (what a
        failed batch left); returns how many."""
        total = 0
        for stream in sorted(self._streams):
            while handled := await self._read_own_pending(stream):
                total += handled
        return total

    async def reclaim(self) -> int:
        """Take over entries left pending by a dead consumer for ``reclaim_idle_ms``."""
        total = 0
        for stream in sorted(self._streams):
            start = "0-0"
            while True:
                reply: Any = await self.redis.xautoclaim(
                    stream, keys.QUEUE_GROUP, self.consumer,
                    min_idle_time=self.reclaim_idle_ms, start_id=start, count=self.batch_size,
                )
                start = reply[0]
                entries = [(i, f) for i, f in reply[1] if f is not None]
                deleted = list(reply[2]) if len(reply) > 2 else []
                if deleted:
                    await self._finish(stream, deleted)
                await self._handle_redelivered(stream, entries)
                total += len(entries)
                if start in (b"0-0", "0-0"):
                    break
        self._last_reclaim = time.monotonic()
        return total

    async def run_once(self) -> int:
        """Discover streams if due, reclaim if due, then read each stream once.
        Returns how many entries were handled."""
        now = time.monotonic()
        if now - self._last_discover >= self.discover_interval_s:
            first = not self._streams and self._last_discover < 0
            await self.discover()
            if first:
                for stream in sorted(self._streams):
                    await self._read_own_pending(stream)
        handled = 0
        if now - self._last_reclaim >= max(self.reclaim_idle_ms / 2000.0, 0.05):
            handled += await self.reclaim()
        return handled + await self._read_all()

    async def _read_all(self) -> int:
        """Read new entries of every stream once and write them (a batch per stream)."""
        handled = 0
        for stream in sorted(self._streams):
            try:
                handled += await self._read_new(stream)
            except ResponseError as exc:
                await self._regroup(stream, exc)
        return handled

    async def _regroup(self, stream: str, exc: ResponseError) -> None:
        """After NOGROUP (the stream was deleted and recreated) make the group again;
        re-raise any other error reply."""
        if "NOGROUP" not in str(exc):
            raise exc
        self._grouped.discard(stream)
        await self._ensure_group(stream)

    async def drain(self, timeout_s: float = 10.0) -> int:
        """Run until a pass finds nothing to do (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        total = 0
        self._last_discover = -1e9
        while time.monotonic() < deadline:
            handled = await self.run_once()
            total += handled
            if handled == 0:
                return total
        return total

    @property
    def streams(self) -> frozenset[str]:
        """The queue streams found by the last discovery."""
        return frozenset(self._streams)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; Redis outages and sink failures are logged once per
        change of state and retried, never fatal."""
        backoff = self.poll_interval_s
        while not stop.is_set():
            self._filled = False
            failed = True
            try:
                if not self.health.ok:
                    # what failed is pending to this consumer and ">" will never return it
                    # again: retry it first (reading more while the sink fails is no use)
                    await self.retry_own_pending()
                handled = await self.run_once()
                self._redis_ok()
                backoff = self.commit_interval_s if handled else self.poll_interval_s
                failed = False
            except SinkError as exc:
                self.health.failed(exc)
                backoff = min(max(backoff, 0.25) * 2, 2.0)
            except REDIS_FAILURES as exc:
                self._redis_failed(exc)
                backoff = min(backoff * 2, 2.0)
            except Exception as exc:  # a bug must not end the worker unseen
                self._unexpected(exc)
                backoff = min(max(backoff, 0.25) * 2, 2.0)
            # A pass where no read came back full means the queues are (nearly) empty: wait,
            # so the next pass writes many entries at once instead of one commit per
            # request, which under a trickle costs more CPU than the API itself. Only a
            # short poll after a pass that found nothing: a lone request is written at once.
            if not self._filled:
                # a failure's backoff is waited out whoever waits for commits
                await self._pause(backoff, stop, hurry=not failed)

    def in_a_hurry(self) -> bool:
        """Whether somebody waits for this worker's commits (a sink that can tell says so):
        then it polls instead of waiting out the commit interval."""
        return False

    async def _pause(self, seconds: float, stop: asyncio.Event, *, hurry: bool) -> None:
        """Wait ``seconds``, in slices of the poll interval, until ``stop`` or (with
        ``hurry``) until :meth:`in_a_hurry`."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(left, self.poll_interval_s))
            if hurry and self.in_a_hurry():
                return

    def _unexpected(self, exc: Exception) -> None:
        """An error no handler expects (a bug): the entries stay pending; the trace goes to
        the log once per kind of error, and the sink counts as failing (``/readyz`` 503, the
        metrics) so that a worker that cannot make progress is seen, not silently dead."""
        error = SinkError("internal_error", f"internal error: {type(exc).__name__}")
        if self.health.cause != error.cause:
            log.exception("worker: unexpected error, retrying (records stay queued)")
        self.health.failed(error)

    def _redis_failed(self, exc: Exception) -> None:
        if is_connection_problem(exc):
            # the process-wide state of this server logs it (once, with host:port)
            health_of(self.redis).failed(exc)
            return
        # an error reply (OOM, READONLY, ...): once per kind, not once per retry
        problem = type(exc).__name__
        if problem != self._redis_problem:
            log.warning("worker: redis error, retrying: %s: %s", problem,
                        clip(str(exc) or problem))
        self._redis_problem = problem

    def _redis_ok(self) -> None:
        health_of(self.redis).succeeded()
        if self._redis_problem is not None:
            log.info("worker: redis commands succeed again (was: %s)", self._redis_problem)
            self._redis_problem = None


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _items_of(reply: Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """The (id, fields) items of an XREADGROUP reply for one stream (RESP2 list or RESP3
    dict); fields are None for a pending id whose entry was deleted."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams = list(reply.values())
        return list(streams[0][0]) if streams and streams[0] else []
    return list(reply[0][1])


def _entries_of(reply: Any) -> list[Entry]:
    """Entries of an XREADGROUP reply for one stream."""
    return [(entry_id, fields) for entry_id, fields in _items_of(reply) if fields is not None]


def _deleted_of(reply: Any) -> list[bytes]:
    """Ids of an XREADGROUP reply whose entry was deleted (pending history only)."""
    return [entry_id for entry_id, fields in _items_of(reply) if fields is None]


def _publish_mark(mark: str) -> bool:
    """Publish every file of an entry's mark; whether they all exist now (every one is
    tried: a worker may have died between two renames)."""
    published = [sink.publish(Path(path)) for path in mark.split(MARK_SEPARATOR)]
    return all(published)


def _publish_all(paths: list[Path]) -> None:
    for final in paths:
        sink.publish(final)

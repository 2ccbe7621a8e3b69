"""Replay of a dataset's quarantine: records kept for their errors are checked again against
the dataset's current definition, and those now valid are admitted, each exactly once.

The quarantine is the lake table ``lake."__strictgate".quarantine`` (one row per invalid
record, keyed by ``(project, dataset, entry_id, seq)``; written and cleaned by the lake
worker). A replay reads a dataset's rows in receipt order (``received_at``, ``entry_id``,
``seq``), :data:`BATCH_ROWS` at a time, and for each batch:

- validates every record's text as sent against the current definition (all errors);
- admits the valid ones through the normal admission, one queue entry per original entry
  (its ``trace_id``, ``received_at``, ``user_id``, ``event_type`` and, for OneSight rows,
  its events), counted against the quota of the user whose key sent them, with
  ``replayed_at`` (now) and ``replay_of`` (their quarantine keys): the worker stores them
  and deletes those quarantine rows in one commit;
- writes the new errors, version and check time of the still invalid ones into their rows.

Exactly once, even for two replays at the same time or one run again before the worker
committed the first: every admission carries one client-event key per record
(``quarantine:<entry_id>:<seq>``, :func:`quota.keys.event_id_keys`), decided inside the
admission script; a record whose key is remembered already is dropped from its entry
(counted as ``skipped_already_replayed``) and the rest admitted again. The keys live
``STRICTGATE_EVENT_ID_WINDOW_S``, far longer than a queued entry waits for the worker.

A replay stops early, keeping what it admitted, when the quota of a record's user is
exceeded (nothing of that entry admitted), a queue is full, or Redis or the lake does not
answer: :attr:`ReplayReport.stopped` says why, and running it again later goes on from
there (what was admitted is skipped).

Run by ``POST /admin/projects/{p}/datasets/{d}/quarantine/replay``
(:mod:`strictgate.admin.quarantine_replay`) and by ``strictgate quarantine replay``
(:func:`add_replay_command`), which print the same progress lines and summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import msgspec
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from quota.admission import MAX_EVENT_KEYS, QuotaService
from quota.keys import InvalidIdError, check_id, event_id_keys
from quota.results import Admitted, EventsSeen, QueueFull, QuotaExceeded, Unavailable
from strictgate.cli_redis import fail, run_with_redis
from strictgate.context import utc_now
from strictgate.errors import clip
from strictgate.ingest.event_records import complete_events
from strictgate.lake.config import lake_config
from strictgate.lake.engine import LakeConfig, connect, retry
from strictgate.lake.reader import ReadError, parse_bound
from strictgate.lake.tables import QUARANTINE_TABLE as TABLE
from strictgate.queue_entry import QueuedEvent, QueueEntry, encode_events
from strictgate.redact import redacted
from strictgate.registry.store import Registry, ResolvedDataset
from strictgate.settings import Settings
from strictgate.timestamps import utc_z
from strictgate.unavailable import REDIS_FAILURES
from validator import BodyError, CompiledDataset, FieldError

BATCH_ROWS = min(1000, MAX_EVENT_KEYS)
"""Quarantine rows read, checked and admitted per step (a progress line each); never more
than one admission's event keys, so one original entry's part of a batch fits in one."""

KEY_PREFIX = "quarantine:"
"""What a quarantined record's event key is made of: ``quarantine:<entry_id>:<seq>``."""

# the ids of replayed records of an `event` dataset: derived from their quarantine key, so
# an entry rebuilt after some of its records were dropped gives the others the same ids
_EVENT_ID_NAMESPACE = uuid.UUID("6f1d3b52-5c4e-4a7e-9a51-3f0c8e2d9b17")
_RAW_RECORDS = msgspec.json.Decoder(list[msgspec.Raw])
_EVENT = msgspec.json.Decoder(QueuedEvent)
_COLUMNS = ("entry_id", "seq", "record", "received_at", "trace_id", "user_id", "event_type",
            "event")
_ORDER = "received_at, entry_id, seq"


class LakeUnavailableError(Exception):
    """The quarantine table could not be read or updated (the message is redacted)."""


@dataclass(frozen=True)
class ReplayFilter:
    """Which quarantined records a replay takes: all of them by default."""

    code: str | None = None
    """Only records with an error of this code (as they last failed)."""
    since: datetime | None = None
    """Only records received at or after this moment."""
    until: datetime | None = None
    """Only records received before this moment."""
    limit: int | None = None
    """At most this many records, the first in receipt order (None: every one)."""


FILTER_FIELDS = ("code", "from", "to", "limit")
"""The members of a replay filter (see :func:`filter_of`)."""

MAX_LIMIT = 2**53 - 1
"""The largest ``limit`` (any larger is every record anyway)."""

CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
"""What an error code looks like (the validator's codes are short snake_case)."""


class FilterError(ValueError):
    """A bad replay filter: ``field`` names the member, ``code`` is ``invalid_<field>`` or
    ``unknown_field``; the message quotes at most 64 characters of the input."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message


def _bad(name: str, message: str) -> FilterError:
    return FilterError(name, f"invalid_{name}", message)


def filter_of(document: Mapping[str, Any]) -> ReplayFilter:
    """The filter ``{"code", "from", "to", "limit"}`` (each optional; ``from``/``to`` as on
    the records API: RFC 3339 or ``YYYY-MM-DD``, ``from`` inclusive, ``to`` exclusive, a
    date as ``to`` meaning its whole day), checked: :class:`FilterError` for the first bad
    member."""
    for name in document:
        if name not in FILTER_FIELDS:
            shown = clip(str(name), 64)
            raise FilterError(shown, "unknown_field", f"Unknown field: {shown}")
    code = document.get("code")
    if code is not None and (not isinstance(code, str) or not CODE_PATTERN.match(code)):
        raise _bad("code", "code must be an error code (snake_case, at most 64 characters)")
    bounds = []
    for name in ("from", "to"):
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise _bad(name, f"{name} must be an RFC 3339 date-time or a YYYY-MM-DD date")
        try:
            bounds.append(parse_bound(name, value, end=name == "to"))
        except ReadError as exc:
            raise _bad(exc.param, str(exc)) from None
    since, until = bounds
    if since is not None and until is not None and until <= since:
        raise _bad("to", "to must be later than from")
    limit = document.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= MAX_LIMIT):
        raise _bad("limit", f"limit must be an integer between 1 and {MAX_LIMIT}")
    return ReplayFilter(code=code, since=since, until=until, limit=limit)


@dataclass(frozen=True)
class Stop:
    """Why a replay ended before the last record: ``code`` is ``quota_exceeded``,
    ``queue_full``, ``unavailable`` (Redis), ``lake_unavailable`` or ``dataset_not_found``
    (deleted during the replay)."""

    code: str
    message: str
    retry_after_s: float | None = None

    def to_json(self) -> dict[str, str]:
        """The answer's ``stopped`` object."""
        return {"code": self.code, "message": self.message}


@dataclass
class ReplayReport:
    """What a replay did so far."""

    replayed: int = 0
    """Records admitted by this replay."""
    still_invalid: int = 0
    """Records checked and still invalid (their rows now hold the new errors)."""
    skipped_already_replayed: int = 0
    """Valid records another replay (earlier, or running at the same time) admitted."""
    duplicates: int = 0
    """Valid OneSight events whose ``event_id`` the project accepted meanwhile (the client
    resent the fixed event): not admitted, and removed from the quarantine."""
    remaining: int = 0
    """Records of the filter left in the quarantine: still invalid, or not reached (the
    replay stopped, or its ``limit`` ended it)."""
    scanned: int = 0
    """Quarantine rows read."""
    stopped: Stop | None = None

    def progress(self) -> dict[str, int]:
        """One progress line (after each batch)."""
        return {"replayed": self.replayed, "still_invalid": self.still_invalid,
                "scanned": self.scanned}

    def summary(self) -> dict[str, Any]:
        """The final answer."""
        return {"success": True, "replayed": self.replayed, "still_invalid": self.still_invalid,
                "skipped_already_replayed": self.skipped_already_replayed,
                "duplicates": self.duplicates,
                "remaining": self.remaining,
                "stopped": None if self.stopped is None else self.stopped.to_json()}


class QuarantineRow(NamedTuple):
    """One quarantined record, the columns a replay needs."""

    entry_id: str
    seq: int
    record: str
    received_at: datetime
    trace_id: str
    user_id: str
    event_type: str | None
    event: str | None
    """The JSON text of its event (``{"id", "source", "time"}``), or None."""

    @property
    def key(self) -> tuple[datetime, str, int]:
        """Its place in receipt order."""
        return self.received_at, self.entry_id, self.seq


class QuarantineTable:
    """The quarantine table of one lake, for one replay: reads on a read-only connection,
    error updates on a read-write one (each opened when first needed). Synchronous: call it
    from a worker thread. Calls hold a lock, so :meth:`close` waits for a read that an
    abandoned replay left running in its thread."""

    def __init__(self, config: LakeConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._writer: duckdb.DuckDBPyConnection | None = None

    def _read_connection(self) -> duckdb.DuckDBPyConnection | None:
        """The read-only connection; None while no writer has created the lake."""
        if self._reader is None:
            if self.config.is_sqlite and not Path(self.config.catalog[7:]).exists():
                return None
            try:
                self._reader = connect(self.config, read_only=True)
            except duckdb.InvalidInputException as exc:
                if "does not exist" in str(exc):
                    return None
                raise LakeUnavailableError(redacted(str(exc))[:300]) from None
            except duckdb.Error as exc:
                raise LakeUnavailableError(redacted(str(exc))[:300]) from None
        return self._reader

    def _select(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Rows of a read; none when there is no lake or no quarantine table yet."""
        with self._lock:
            con = self._read_connection()
            if con is None:
                return []
            try:
                return con.execute(sql, params).fetchall()
            except duckdb.CatalogException:
                return []  # nothing was ever quarantined: the worker creates the table
            except duckdb.Error as exc:
                raise LakeUnavailableError(redacted(str(exc))[:300]) from None

    def rows(self, project: str, dataset: str, flt: ReplayFilter,
             after: tuple[datetime, str, int] | None, limit: int) -> list[QuarantineRow]:
        """Up to ``limit`` rows of the dataset matching ``flt``, after ``after``, in receipt
        order."""
        where, params = _where(project, dataset, flt, after)
        rows = self._select(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE {where}"
                            f" ORDER BY {_ORDER} LIMIT {int(limit)}", params)
        return [QuarantineRow(*row) for row in rows]

    def count(self, project: str, dataset: str, flt: ReplayFilter,
              after: tuple[datetime, str, int] | None) -> int:
        """How many rows of the dataset match ``flt`` after ``after``."""
        where, params = _where(project, dataset, flt, after)
        rows = self._select(f"SELECT count(*) FROM {TABLE} WHERE {where}", params)
        return int(rows[0][0]) if rows else 0

    def record_errors(self, project: str, dataset: str, version: int, checked_at: datetime,
                      failed: Sequence[tuple[QuarantineRow, list[FieldError]]]) -> None:
        """Store each row's new errors (and the version it failed now, and when): one
        transaction, retried on a commit conflict (the worker deletes replayed rows from
        the same table). A row gone meanwhile (replayed elsewhere) is left gone."""
        self._staged(
            "replay_errors (entry_id VARCHAR, seq INTEGER, errors VARCHAR, error_codes"
            " VARCHAR[])",
            [[row.entry_id, row.seq, _errors_json(errors), sorted({e.code for e in errors})]
             for row, errors in failed],
            f"UPDATE {TABLE} AS q SET errors = s.errors::JSON, error_codes = s.error_codes,"
            " dataset_version = ?, checked_at = ? FROM temp.main.replay_errors AS s"
            " WHERE q.project = ? AND q.dataset = ? AND q.entry_id = s.entry_id"
            " AND q.seq = s.seq", [version, checked_at, project, dataset])

    def forget(self, project: str, dataset: str, rows: Sequence[QuarantineRow]) -> None:
        """Delete ``rows`` from the quarantine (duplicates of accepted events): one
        transaction, retried on a commit conflict."""
        self._staged(
            "replay_forget (entry_id VARCHAR, seq INTEGER)",
            [[row.entry_id, row.seq] for row in rows],
            f"DELETE FROM {TABLE} AS q USING temp.main.replay_forget AS s"
            " WHERE q.project = ? AND q.dataset = ? AND q.entry_id = s.entry_id"
            " AND q.seq = s.seq", [project, dataset])

    def _staged(self, table: str, values: list[list[Any]], statement: str,
                params: list[Any]) -> None:
        """Stage ``values`` in the temporary ``table`` (its name and columns), then run
        ``statement`` against the lake in one transaction, retried on a commit conflict.
        A transaction may write to one database only: the values are staged first, outside
        the lake's transaction."""
        if not values:
            return
        name = table.split(" ", 1)[0]
        with self._lock:
            try:
                if self._writer is None:
                    self._writer = connect(self.config)
                con = self._writer
                con.execute(f"CREATE OR REPLACE TEMP TABLE {table}")
                marks = ", ".join("?" for _ in values[0])
                con.executemany(f"INSERT INTO temp.main.{name} VALUES ({marks})", values)
                retry(lambda: _transaction(con, statement, params))
            except duckdb.Error as exc:
                raise LakeUnavailableError(redacted(str(exc))[:300]) from None

    def close(self) -> None:
        """Close both connections."""
        with self._lock:
            for con in (self._reader, self._writer):
                if con is not None:
                    con.close()
            self._reader = self._writer = None


def _where(project: str, dataset: str, flt: ReplayFilter,
           after: tuple[datetime, str, int] | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a dataset's rows matching ``flt``."""
    where = ["project = ?", "dataset = ?"]
    params: list[Any] = [project, dataset]
    if flt.code is not None:
        where.append("list_contains(error_codes, ?)")
        params.append(flt.code)
    if flt.since is not None:
        where.append("received_at >= ?")
        params.append(flt.since)
    if flt.until is not None:
        where.append("received_at < ?")
        params.append(flt.until)
    if after is not None:
        where.append(f"({_ORDER}) > (?, ?, ?)")
        params.extend(after)
    return " AND ".join(where), params


def _transaction(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> None:
    """One attempt of one statement in its own transaction (rolled back on failure)."""
    con.execute("BEGIN")
    try:
        con.execute(sql, params)
        con.execute("COMMIT")
    except BaseException:
        # a failed COMMIT has already ended the transaction
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def _errors_json(errors: list[FieldError]) -> str:
    return orjson.dumps([{"code": e.code, "field": e.field, "message": e.message}
                         for e in errors]).decode()


@dataclass
class Group:
    """The checked rows of one original entry (those of one batch): its valid records, ready
    to admit, and its invalid ones with their new errors."""

    valid: list[tuple[QuarantineRow, bytes]] = field(default_factory=list)
    """Each valid row with its record as one compact JSON line."""
    invalid: list[tuple[QuarantineRow, list[FieldError]]] = field(default_factory=list)


def check_rows(validator: CompiledDataset, rows: Sequence[QuarantineRow]) -> list[Group]:
    """The rows' records checked against ``validator`` (every error of each), one group per
    run of rows of one entry (with or without events alike), in order."""
    groups = []
    for _, run in itertools.groupby(rows, key=lambda r: (r.entry_id, r.event is None)):
        members = list(run)
        body = b"[" + b",".join(r.record.encode() for r in members) + b"]"
        try:
            result = validator.validate_batch(body, max_records=len(members), all_errors=True)
        except BodyError:
            groups.append(_check_one_by_one(validator, members))
            continue
        group = Group()
        failed = {f.index: f.errors for f in result.failures()}
        count, payload = result.valid_payload()
        kept = [bytes(raw) for raw in _RAW_RECORDS.decode(payload)] if count else []
        valid_rows = [row for k, row in enumerate(members) if k not in failed]
        group.valid = list(zip(valid_rows, kept, strict=True))
        group.invalid = [(members[k], errors) for k, errors in failed.items()]
        groups.append(group)
    return groups


def _check_one_by_one(validator: CompiledDataset, members: list[QuarantineRow]) -> Group:
    """A group some record of which is not JSON at all (never from the ingest path, which
    stores records of a parsed body): each record checked alone."""
    group = Group()
    for row in members:
        try:
            result = validator.validate_batch(b"[" + row.record.encode() + b"]",
                                              max_records=1, all_errors=True)
        except BodyError as exc:
            group.invalid.append((row, [FieldError(exc.code, "", exc.message)]))
            continue
        if result.ok:
            group.valid.append((row, bytes(_RAW_RECORDS.decode(result.payload)[0])))
        else:
            group.invalid.append((row, result.failures()[0].errors))
    return group


def quarantine_key(row: QuarantineRow) -> str:
    """The client-event id that admits ``row``'s record at most once."""
    return f"{KEY_PREFIX}{row.entry_id}:{row.seq}"


def replay_entry(project: str, dataset: str, resolved: ResolvedDataset,
                 valid: Sequence[tuple[QuarantineRow, bytes]], replayed_at: str) -> QueueEntry:
    """The queue entry of some valid records of one original entry (``valid``, in order):
    its trace id, receipt time, user, job name and events; the current version; the replay
    time and the quarantine rows they come from."""
    first = valid[0][0]
    received_at = utc_z(first.received_at)
    payload = b"[" + b",".join(record for _, record in valid) + b"]"
    if resolved.envelope == "event":
        ids = [str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{project}\x00{dataset}\x00"
                              f"{quarantine_key(row)}")) for row, _ in valid]
        payload, _ = complete_events(payload, received_at, ids)
    events = None
    if first.event is not None:
        # a group's rows all have an event or none has (see check_rows)
        events = encode_events([_EVENT.decode(row.event) for row, _ in valid
                                if row.event is not None])
    return QueueEntry(
        records=payload, trace_id=first.trace_id, dataset_version=resolved.version,
        received_at=received_at, project_id=project, dataset_id=dataset,
        user_id=first.user_id, event_type=first.event_type, events=events,
        replayed_at=replayed_at,
        replay_of=orjson.dumps([[row.entry_id, row.seq] for row, _ in valid]))


class Replay:
    """One replay of a dataset's quarantine (see the module docstring): iterate
    :meth:`batches` to run it; :attr:`report` holds the counts so far and, once the
    iteration ended, the final answer."""

    def __init__(self, *, registry: Registry, quota: QuotaService, lake: LakeConfig,
                 project: str, dataset: str, flt: ReplayFilter, event_window_s: int,
                 clock: Callable[[], datetime]) -> None:
        self.registry = registry
        self.clock = clock
        self.quota = quota
        self.table = QuarantineTable(lake)
        self.project = project
        self.dataset = dataset
        self.flt = flt
        self.event_window_s = event_window_s
        self.report = ReplayReport()

    async def batches(self) -> AsyncIterator[ReplayReport]:
        """Replay batch after batch, yielding the report after each one; the table's
        connections are closed at the end (or when the iteration is abandoned)."""
        try:
            async for report in self._run():
                yield report
        finally:
            await asyncio.to_thread(self.table.close)

    async def run(self) -> ReplayReport:
        """Replay every batch; the final report."""
        async for _ in self.batches():
            pass
        return self.report

    async def _run(self) -> AsyncIterator[ReplayReport]:
        report, flt = self.report, self.flt
        after: tuple[datetime, str, int] | None = None
        reached_end = False
        try:
            while report.stopped is None:
                want = BATCH_ROWS if flt.limit is None else min(
                    BATCH_ROWS, flt.limit - report.scanned)
                if want <= 0:
                    break
                rows = await asyncio.to_thread(self.table.rows, self.project, self.dataset,
                                               flt, after, want)
                if not rows:
                    reached_end = True
                    break
                report.scanned += len(rows)
                after = rows[-1].key
                await self._batch(rows)
                yield report
                if len(rows) < want:
                    reached_end = True
            if not reached_end and after is not None:
                report.remaining += await asyncio.to_thread(
                    self.table.count, self.project, self.dataset, flt, after)
        except LakeUnavailableError as exc:
            report.stopped = Stop("lake_unavailable", f"The lake cannot be read: {exc}", 5)
        report.remaining += report.still_invalid

    async def _batch(self, rows: list[QuarantineRow]) -> None:
        """Check, admit and update one batch of rows."""
        report = self.report
        try:
            # the current definition: a version put during the replay counts from the next
            # batch on
            resolved = await self.registry.resolve(self.project, self.dataset)
        except REDIS_FAILURES:
            report.stopped = _unavailable()
            resolved = None
        if resolved is None:
            report.stopped = report.stopped or Stop(
                "dataset_not_found", "The dataset was deleted during the replay")
            report.remaining += len(rows)
            return
        groups = await asyncio.to_thread(check_rows, resolved.validator, rows)
        now = self.clock()
        replayed_at = utc_z(now)
        for group in groups:
            if report.stopped is None and group.valid:
                await self._admit(resolved, group.valid, replayed_at)
            elif group.valid:
                report.remaining += len(group.valid)
        failed = [item for group in groups for item in group.invalid]
        # counted first: if the lake refuses the update, they stay, with their old errors
        report.still_invalid += len(failed)
        await asyncio.to_thread(self.table.record_errors, self.project, self.dataset,
                                resolved.version, now, failed)

    async def _admit(self, resolved: ResolvedDataset,
                     valid: list[tuple[QuarantineRow, bytes]], replayed_at: str) -> None:
        """Admit one group's valid records, those another replay admitted first left out;
        on a refusal, set :attr:`ReplayReport.stopped` (nothing of the group admitted)."""
        report = self.report
        duplicates: list[QuarantineRow] = []
        while valid:
            user_id = valid[0][0].user_id
            valid, repeated = _first_of_each_event(valid)
            duplicates += repeated
            entry = replay_entry(self.project, self.dataset, resolved, valid, replayed_at)
            own = event_id_keys(user_id, self.project, [quarantine_key(row) for row, _ in valid])
            # a OneSight event's own id too: one the project accepted meanwhile (the client
            # resent the fixed event) makes this record a duplicate, as at the door
            events = [(k, _EVENT.decode(row.event).id) for k, (row, _) in enumerate(valid)
                      if row.event is not None]
            keys = own + event_id_keys(user_id, self.project, [i for _, i in events])
            try:
                outcome = await self.quota.admit_many(
                    [entry], counts=[len(valid)], idempotency_key=None, request_digest="",
                    event_keys=keys, event_window_s=self.event_window_s)
            except REDIS_FAILURES:
                outcome = Unavailable("error", 1.0)
            if isinstance(outcome, Admitted):
                report.replayed += len(valid)
                break
            if isinstance(outcome, EventsSeen):
                # this replay's own key seen: replayed already (its commit removes the row);
                # else only the event's id: a duplicate, removed here
                replayed = {p for p in outcome.positions if p < len(own)}
                resent = {events[p - len(own)][0] for p in outcome.positions
                          if p >= len(own)} - replayed
                report.skipped_already_replayed += len(replayed)
                duplicates += [valid[k][0] for k in sorted(resent)]
                valid = [item for k, item in enumerate(valid)
                         if k not in replayed and k not in resent]
                continue
            report.remaining += len(valid)
            report.stopped = _stop_of(outcome, user_id)
            break
        if duplicates:
            report.duplicates += len(duplicates)
            await asyncio.to_thread(self.table.forget, self.project, self.dataset, duplicates)


def _first_of_each_event(valid: list[tuple[QuarantineRow, bytes]]
                         ) -> tuple[list[tuple[QuarantineRow, bytes]], list[QuarantineRow]]:
    """``valid`` without the records whose event id an earlier record of it has (the
    first copy is the one replayed), and those later copies."""
    kept: list[tuple[QuarantineRow, bytes]] = []
    repeated: list[QuarantineRow] = []
    ids: set[str] = set()
    for row, record in valid:
        event_id = None if row.event is None else _EVENT.decode(row.event).id
        if event_id is not None and event_id in ids:
            repeated.append(row)
            continue
        if event_id is not None:
            ids.add(event_id)
        kept.append((row, record))
    return kept, repeated


def _unavailable(retry_after_s: float = 1.0) -> Stop:
    return Stop("unavailable", "Redis did not answer in time; run the replay again later",
                retry_after_s)


def _stop_of(outcome: object, user_id: str) -> Stop:
    """The stop of an admission that refused a group."""
    if isinstance(outcome, QuotaExceeded):
        return Stop("quota_exceeded",
                    f"The monthly quota of user {user_id} is exceeded ({outcome.remaining} of"
                    f" {outcome.limit} records left, {outcome.requested} needed)")
    if isinstance(outcome, QueueFull):
        return Stop("queue_full", "The dataset's queue is full; run the replay again later",
                    outcome.retry_after_s)
    if isinstance(outcome, Unavailable):
        return _unavailable(outcome.retry_after_s)
    # Duplicate and IdempotencyConflict need an idempotency key, which a replay never sends
    raise RuntimeError(f"unexpected admission outcome {type(outcome).__name__}")


def add_replay_command(quarantine: argparse._SubParsersAction[argparse.ArgumentParser]
                       ) -> None:
    """Add ``replay`` to the subcommands of ``strictgate quarantine``."""
    command = quarantine.add_parser(
        "replay", help="re-check a dataset's quarantined records; admit those now valid",
        description=(
            "Check the dataset's quarantined records against its current definition and admit "
            "those now valid, each exactly once (counted against the quota of the user whose "
            "key sent them; stored with their original trace id and receipt time). Prints one "
            "JSON progress line per batch, then the summary; exit status 1 when the replay "
            "stopped early (quota, full queue, Redis or lake unavailable): run it again to go "
            "on. Safe to run twice or beside a replay through the API."),
    )
    command.add_argument("project_id", type=_cli_id("project"), help="the project")
    command.add_argument("dataset_id", type=_cli_id("dataset"), help="the dataset")
    command.add_argument("--code", help="only records with an error of this code")
    command.add_argument("--from", dest="since", metavar="TIME",
                         help="only records received at or after TIME (RFC 3339 or YYYY-MM-DD)")
    command.add_argument("--to", dest="until", metavar="TIME",
                         help="only records received before TIME (a date: up to its end)")
    command.add_argument("--limit", type=int, metavar="N",
                         help="at most N records, the first received")
    command.set_defaults(func=_cmd_replay)


def _cli_id(kind: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            return check_id(value)
        except InvalidIdError:
            raise argparse.ArgumentTypeError(f"invalid {kind} id {value[:130]!r}") from None

    parse.__name__ = f"{kind} id"
    return parse


def _cmd_replay(args: argparse.Namespace) -> int:
    given = {"code": args.code, "from": args.since, "to": args.until, "limit": args.limit}
    try:
        flt = filter_of({name: value for name, value in given.items() if value is not None})
    except FilterError as exc:
        return fail(f"--{exc.field}: {exc.message}")

    async def body(settings: Settings, client: aioredis.Redis) -> int:
        if settings.sink != "lake":
            return fail("the quarantine needs the lake sink (STRICTGATE_SINK=lake)")
        registry = Registry(client, clock=utc_now)
        if await registry.resolve(args.project_id, args.dataset_id) is None:
            return fail("Dataset not found")
        quota = QuotaService(client, default_limit=settings.default_monthly_quota,
                             deadline_s=settings.redis_deadline_s, clock=utc_now,
                             max_queue_records=settings.max_queue_records)
        replay = Replay(registry=registry, quota=quota, lake=lake_config(settings),
                        project=args.project_id, dataset=args.dataset_id, flt=flt,
                        event_window_s=settings.event_id_window_s, clock=utc_now)
        async for report in replay.batches():
            print(orjson.dumps(report.progress()).decode(), flush=True)
        print(orjson.dumps(replay.report.summary()).decode(), flush=True)
        stopped = replay.report.stopped
        return 0 if stopped is None else fail(f"stopped: {stopped.code}: {stopped.message}")

    return run_with_redis(body, (RedisError,))

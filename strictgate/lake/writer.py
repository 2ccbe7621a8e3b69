"""Exactly-once commits of queue entries into the lake.

One :meth:`LakeWriter.write` call is one DuckLake transaction: it skips the entries whose id
is already in the ledger, inserts the records of the others (one INSERT per dataset
version, all the entries' records at once), inserts their quarantined records into the
quarantine table (one INSERT for all; :func:`strictgate.lake.tables.quarantine_insert_sql`),
deletes the quarantine rows that replayed entries name (``replay_of``), adds their ids to
the ledger and UPDATEs each touched dataset's fence row, then commits. So an entry's
records, its quarantined records and the quarantine rows it replays change together,
exactly once; an entry holding only quarantined records (``records`` = ``[]``) is
committed and ledgered like any other. If two writers commit the same entry at the same
time, both UPDATE the same fence table, so the later commit conflicts (with a SQLite
catalog it fails earlier, as "database is locked"); the loser's retry runs in a new
transaction, finds the ledger rows and writes nothing. A writer killed before COMMIT leaves
nothing behind (its staged Parquet files are not in the catalog: ``ducklake_delete_orphaned_
files`` removes them); killed after it, the ledger says the entries are written.

Merges. An entry with a ``merge_key`` (Definite ``mode: "merge"``) is written in the same
transaction and ledger as any other, by a DELETE and an INSERT
(:func:`strictgate.lake.tables.merge_sql`) instead of a plain INSERT: per key, the last
admitted of its records replaces the stored rows admitted before it and is dropped when
a row admitted after it is stored already. Admission order is the order of the stream ids
in the entry ids (:func:`strictgate.lake.tables.admission_position`), compared in SQL with
the ``__entryId`` of stored rows, so no extra column is kept. Several writers may commit a
dataset's entries in any order: the fence UPDATE makes two overlapping commits conflict,
the loser retries on top of the winner's rows, and the comparison keeps the last admitted
row. Mixed with appends in one commit, the entries are applied in admission order, in runs
(:func:`runs`). Across writers, appends and merges of one key do not commute: an append
committed before an older merge loses nothing, but that merge then stores nothing for the
key (the newer appended row is kept).

Entry ids are the ledger's key within a dataset, so a caller reading several streams of one
dataset (one per user) qualifies them: :meth:`LakeEntry.from_fields` uses
``<user_id>/<stream entry id>``.

Memory: DuckLake 1.5.5 caches each table's statistics in DuckDB's object cache under the
key ``(next_file_id, table)``. Every commit adds files, so every commit adds one entry per
table it reads or writes (data tables, ledger, fences), and nothing evicts them until the
buffer pool reaches ``memory_limit`` (80% of the machine's memory): a long-running writer
grew about 15 KB per commit of one dataset, without bound (``bench/lake_memory.py``). The
cache belongs to the connection's DuckDB instance and dies with it, so the writer replaces
its connection once DuckDB's own estimate of the cache passes ``cache_limit_bytes`` (looked
at every ``CACHE_CHECK_EVERY`` commits, between commits, never inside a transaction).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import orjson

from strictgate.lake import engine
from strictgate.lake.engine import ALIAS, LakeConfig, retry
from strictgate.lake.tables import (
    META,
    QUARANTINE_TABLE,
    Layout,
    admission_key,
    ensure_layout,
    fence_table,
    insert_sql,
    merge_sql,
    quarantine_insert_sql,
)
from strictgate.queue_entry import (
    MalformedEntryError,
    QueueEntry,
    check_event_count,
    check_replay_count,
    decode_replay_of,
)

log = logging.getLogger("strictgate.lake")

# (project, dataset, version) -> the normalized definition of that version
DefinitionLookup = Callable[[str, str, int], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class LakeEntry:
    """A queue entry given to the writer: the entry and its id in the ledger."""

    entry_id: str
    """``<user_id>/<stream entry id>`` (see :meth:`of`)."""
    queued: QueueEntry
    record_count: int | None = None
    """How many records ``queued.records`` holds, when the caller has counted them already."""

    @classmethod
    def of(cls, stream_id: bytes | str, queued: QueueEntry,
           record_count: int | None = None) -> LakeEntry:
        """The entry read from a queue stream under ``stream_id``."""
        raw_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        return cls(f"{queued.user_id}/{raw_id}", queued, record_count)

    @classmethod
    def from_fields(cls, stream_id: bytes | str, fields: Mapping[bytes, bytes]) -> LakeEntry:
        """From a stream item as redis-py returns it
        (:class:`~strictgate.queue_entry.MalformedEntryError` if it is not a queue entry)."""
        return cls.of(stream_id, QueueEntry.from_fields(fields))


@dataclass
class CommitResult:
    """What one :meth:`LakeWriter.write` did."""

    written: list[str] = field(default_factory=list)
    """Entry ids whose records this call committed."""
    skipped: list[str] = field(default_factory=list)
    """Entry ids already in the ledger (written before): only to be acknowledged."""
    records: int = 0
    quarantined: int = 0
    """Quarantined records this call committed."""
    attempts: int = 0
    commit_s: float = 0.0


def _one_line(value: bytes) -> bytes:
    """A JSON value as it goes into a stage line: whitespace between tokens dropped when it
    has line breaks (none can be inside a JSON string)."""
    if b"\n" in value or b"\r" in value:
        return msgspec.json.format(value, indent=-1)
    return value


def _stage_head(entry: LakeEntry) -> bytes:
    """A stage line up to its records; the records and ``}\\n`` complete it."""
    queued = entry.queued
    # the event type and the events only when set: their columns read NULL without them
    event = b"" if queued.event_type is None else b',"y":' + orjson.dumps(queued.event_type)
    if queued.events is not None:
        event += b',"k":' + _one_line(queued.events)
    if queued.replayed_at is not None:
        event += b',"x":' + orjson.dumps(queued.replayed_at)
    return (b'{"e":' + orjson.dumps(entry.entry_id) + b',"t":' + orjson.dumps(queued.trace_id)
            + b',"v":' + str(queued.dataset_version).encode() + b',"a":'
            + orjson.dumps(queued.received_at) + event + b',"r":')


def write_stage(path: Path, entries: Sequence[LakeEntry]) -> int:
    """The stage file of ``entries`` (see :func:`strictgate.lake.tables.insert_sql`); returns its
    longest line's length. The records go to the file as they are, unjoined: no copy of a
    commit's worth of bytes in memory."""
    longest = 0
    with path.open("wb", buffering=0) as out:
        for entry in entries:
            head = _stage_head(entry)
            records = entry.queued.records
            out.write(head)
            out.write(records)
            out.write(b"}\n")
            longest = max(longest, len(head) + len(records) + 2)
    return longest


def write_quarantine_stage(path: Path, entries: Sequence[LakeEntry]) -> int:
    """The quarantine stage file of ``entries`` (those with a ``quarantine``; see
    :func:`strictgate.lake.tables.quarantine_insert_sql`); returns its longest line's
    length."""
    longest = 0
    with path.open("wb", buffering=0) as out:
        for entry in entries:
            queued = entry.queued
            if queued.quarantine is None:
                continue
            head = {"p": queued.project_id, "d": queued.dataset_id, "e": entry.entry_id,
                    "t": queued.trace_id, "v": queued.dataset_version,
                    "a": queued.received_at, "u": queued.user_id}
            if queued.event_type is not None:
                head["y"] = queued.event_type
            line = (orjson.dumps(head)[:-1] + b',"q":' + _one_line(queued.quarantine)
                    + b"}\n")
            out.write(line)
            longest = max(longest, len(line))
    return longest


_RAW_RECORDS = msgspec.json.Decoder(list[msgspec.Raw])
# Lists go to DuckDB as one JSON text parameter: a Python list parameter is converted value
# by value (measured: 55 ms for the ledger rows of 200 entries, 3 ms as JSON).
_JSON_IDS = "from_json(?, '[\"VARCHAR\"]')"
_JSON_LEDGER = ("from_json(?, '[{\"p\": \"VARCHAR\", \"d\": \"VARCHAR\", \"e\": \"VARCHAR\","
                " \"n\": \"BIGINT\"}]')")


def _count_records(entry: LakeEntry) -> int:
    if entry.record_count is not None:
        return entry.record_count
    # Raw items: validates and slices the array without building the records
    return len(_RAW_RECORDS.decode(entry.queued.records))


def check_events(entry: LakeEntry) -> None:
    """:class:`~strictgate.queue_entry.MalformedEntryError` (a ValueError) when the entry
    has ``events`` or ``replay_of`` but not one per record: its records are never stored
    misaligned, and a replay never deletes another record's quarantine row."""
    if entry.queued.events is not None:
        check_event_count(entry.queued.events, _count_records(entry))
    if entry.queued.replay_of is not None:
        check_replay_count(entry.queued.replay_of, _count_records(entry))


# the quarantine rows replayed entries name: (project, dataset, entry id, seq) as JSON
_JSON_REPLAYED = ("from_json(?, '[{\"p\": \"VARCHAR\", \"d\": \"VARCHAR\", \"e\": \"VARCHAR\","
                  " \"s\": \"INTEGER\"}]')")


def _replayed_keys(entries: Sequence[LakeEntry]) -> list[dict[str, str | int]]:
    """The quarantine keys the ``replay_of`` of ``entries`` name."""
    keys: list[dict[str, str | int]] = []
    for entry in entries:
        queued = entry.queued
        if queued.replay_of is not None:
            keys.extend({"p": queued.project_id, "d": queued.dataset_id, "e": entry_id,
                         "s": seq} for entry_id, seq in decode_replay_of(queued.replay_of))
    return keys


def _split(entries: Sequence[LakeEntry], parts: int) -> list[list[LakeEntry]]:
    """``entries`` in at most ``parts`` consecutive runs of about equal size (in bytes):
    one stage file per DuckDB thread, which reads the files in parallel."""
    if parts <= 1 or len(entries) <= 1:
        return [list(entries)]
    total = sum(len(e.queued.records) for e in entries)
    runs: list[list[LakeEntry]] = [[]]
    filled = 0
    for entry in entries:
        if filled >= total * len(runs) / parts and len(runs) < parts:
            runs.append([])
        runs[-1].append(entry)
        filled += len(entry.queued.records)
    return runs


@dataclass(frozen=True, slots=True)
class Run:
    """Entries of one table stored by one statement (append) or one DELETE and INSERT
    (merge): one dataset version, one mode."""

    version: int
    merge_key: str | None
    entries: list[LakeEntry]


def runs(entries: Sequence[LakeEntry]) -> list[Run]:
    """How one commit stores the entries of one table.

    Appends only: one run per dataset version, in any order (appends commute). With a
    merge among them, the entries in admission order (:func:`~strictgate.lake.tables.
    admission_key`, the order of their stream ids), cut into runs of consecutive entries
    of one version and one mode (and key): each run then sees the table as the runs
    before it left it, as if the entries were committed one by one in admission order."""
    if all(entry.queued.merge_key is None for entry in entries):
        by_version: dict[int, list[LakeEntry]] = {}
        for entry in entries:
            by_version.setdefault(entry.queued.dataset_version, []).append(entry)
        return [Run(version, None, group) for version, group in by_version.items()]
    out: list[Run] = []
    for entry in sorted(entries, key=lambda e: admission_key(e.entry_id)):
        queued = entry.queued
        last = out[-1] if out else None
        if last is not None and (last.version, last.merge_key) == (
                queued.dataset_version, queued.merge_key):
            last.entries.append(entry)
        else:
            out.append(Run(queued.dataset_version, queued.merge_key, [entry]))
    return out


def merge_column(layout: Layout, merge_key: str) -> str:
    """The column a merge keyed on field ``merge_key`` compares (its typed column);
    :class:`~strictgate.queue_entry.MalformedEntryError` when the layout's version has no
    such field (nothing to key on: the entry cannot be written)."""
    for fc in layout.fields:
        if fc.field == merge_key:
            return fc.column
    raise MalformedEntryError("merge_key", f"names no field of version {layout.version} "
                              "of the dataset")


def default_stage_dir() -> Path:
    """Where stage files go: RAM (/dev/shm) when there is one; they live for one commit."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


STAGE_PREFIX = ".lake-stage-"


def sweep_stale_stages(stage_dir: Path) -> int:
    """Remove the stage directories of writer processes that are gone (killed mid-commit:
    a stage can hold a whole commit's records, in RAM when under /dev/shm). Returns how
    many were removed."""
    removed = 0
    for path in stage_dir.glob(STAGE_PREFIX + "*"):
        pid_text = path.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


# DuckDB's estimate of its object cache (see the module docstring) past which the writer
# opens a new connection. Measured: the estimate is about 5.6 KB per commit of one dataset
# and the process grows about 2.5 times that, so 4 MB is about 700 such commits and 10 MB of
# memory; a new connection costs 0.1-0.3 s (LOAD, ATTACH), i.e. well under 1% of those
# commits' time.
CACHE_LIMIT_BYTES = 4 * 2**20
# Commits between two looks at the estimate (a look costs about 1.5 ms, a commit 20-50).
CACHE_CHECK_EVERY = 25
_OBJECT_CACHE_SQL = ("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
                     " WHERE tag = 'OBJECT_CACHE'")


class LakeWriter:
    """Writes queue entries exactly once. One connection; not for concurrent use by threads.

    ``cache_limit_bytes``: replace the connection when DuckDB's object cache grows past it
    (None: never), looked at every ``cache_check_every`` commits; a connection given as
    ``con`` is the caller's and never replaced."""

    def __init__(self, config: LakeConfig, definitions: DefinitionLookup, *,
                 stage_dir: Path | None = None,
                 before_commit: Callable[[], None] | None = None,
                 con: duckdb.DuckDBPyConnection | None = None,
                 retry_attempts: int = 20,
                 cache_limit_bytes: int | None = CACHE_LIMIT_BYTES,
                 cache_check_every: int = CACHE_CHECK_EVERY) -> None:
        self.config = config
        self.definitions = definitions
        self.stage_dir = stage_dir or default_stage_dir()
        # a hook for the kill tests: runs inside the transaction, right before COMMIT
        self.before_commit = before_commit
        # ``con``: an already attached connection (e.g. a cursor of another writer's)
        self._owns_con = con is None
        self.con: duckdb.DuckDBPyConnection = con or engine.connect(config)
        sweep_stale_stages(self.stage_dir)
        row = self.con.execute("SELECT current_setting('threads')").fetchone()
        self.threads = max(1, int(row[0])) if row else 1
        self._layouts: dict[tuple[str, str, int], Layout] = {}
        # attempts per write: a lock or conflict that outlasts them is the caller's to retry
        self.retry_attempts = retry_attempts
        self.cache_limit_bytes = cache_limit_bytes if self._owns_con else None
        self.cache_check_every = max(1, cache_check_every)
        self._unchecked_commits = 0
        self.reconnects = 0
        """How many times the connection was replaced to drop DuckDB's caches."""

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def cache_bytes(self) -> int:
        """DuckDB's estimate of the bytes its object cache holds in this connection."""
        row = self.con.execute(_OBJECT_CACHE_SQL).fetchone()
        return int(row[0]) if row else 0

    def _bound_caches(self) -> None:
        """Between commits: replace the connection if its object cache passed the limit.
        The lake's state is all in the catalog and the files, so the new connection sees
        the same lake, and the layouts cached here stay valid (a version's column map is
        stored in the catalog and never changes once written)."""
        if (self.cache_limit_bytes is None
                or self._unchecked_commits < self.cache_check_every):
            return
        self._unchecked_commits = 0
        held = self.cache_bytes()
        if held < self.cache_limit_bytes:
            return
        fresh = engine.connect(self.config)
        old, self.con = self.con, fresh
        old.close()
        self.reconnects += 1
        log.debug("lake writer: new connection (DuckDB's object cache held %.1f MB)",
                  held / 2**20)

    def layout(self, project: str, dataset: str, version: int) -> Layout:
        """The (cached) column map of a dataset version, creating table/columns if needed."""
        key = (project, dataset, version)
        if key not in self._layouts:
            self._layouts[key] = ensure_layout(self.con, project, dataset, version,
                                               self.definitions(project, dataset, version))
        return self._layouts[key]

    def write(self, entries: Sequence[LakeEntry], *,
              first_delivery: bool = False) -> CommitResult:
        """Commit every entry of ``entries`` not already in the ledger, in one transaction.

        ``first_delivery``: the caller read every entry as new (``XREADGROUP >``), so none
        can be in the ledger and the first attempt skips the lookup (it reads every ledger
        file not yet compacted). A retry always looks: a conflict may mean another writer
        committed them (one that claimed them as pending).

        An entry with ``events`` or ``replay_of`` that are not one per record, or with a
        ``merge_key`` that names no field of its version, raises
        :class:`~strictgate.queue_entry.MalformedEntryError` before anything is written
        (the lake worker dead-letters it, as any entry whose data cannot be written).

        Entries with a ``merge_key`` are merged (see :func:`runs`)."""
        result = CommitResult()
        if not entries:
            return result
        # before anything of this call: a failure here leaves nothing half done
        self._bound_caches()
        by_key: dict[tuple[str, str], dict[str, LakeEntry]] = {}
        for entry in entries:
            check_events(entry)
            queued = entry.queued
            by_key.setdefault((queued.project_id, queued.dataset_id), {})[entry.entry_id] = entry
            layout = self.layout(queued.project_id, queued.dataset_id, queued.dataset_version)
            if queued.merge_key is not None:
                merge_column(layout, queued.merge_key)
        stage = self.stage_dir / f"{STAGE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        stage.mkdir(parents=True)
        try:
            done = retry(lambda: self._attempt(by_key, stage, result, first_delivery),
                         attempts=self.retry_attempts)
            self._unchecked_commits += 1
            return done
        finally:
            for path in stage.iterdir():
                path.unlink()
            stage.rmdir()

    def _attempt(self, by_key: dict[tuple[str, str], dict[str, LakeEntry]], stage: Path,
                 result: CommitResult, first_delivery: bool) -> CommitResult:
        result.attempts += 1
        look_up = result.attempts > 1 or not first_delivery
        result.written, result.skipped, result.records = [], [], 0
        con = self.con
        started = time.perf_counter()
        con.execute("BEGIN")
        try:
            ledger_rows: list[tuple[str, str, str, int]] = []
            written: list[LakeEntry] = []
            for (project, dataset), group in by_key.items():
                done = {r[0] for r in con.execute(
                    f"SELECT entry_id FROM {ALIAS}.{META}.ledger WHERE project = ?"
                    f" AND dataset = ? AND list_contains({_JSON_IDS}, entry_id)",
                    [project, dataset, orjson.dumps(list(group)).decode()]).fetchall()
                        } if look_up else set()
                todo = [e for eid, e in group.items() if eid not in done]
                result.skipped.extend(eid for eid in group if eid in done)
                if not todo:
                    continue
                for run in runs(todo):
                    result.records += self._apply(con, project, dataset, run, stage)
                for entry in todo:
                    ledger_rows.append((project, dataset, entry.entry_id,
                                        _count_records(entry)))
                    result.written.append(entry.entry_id)
                written.extend(todo)
                con.execute(f"UPDATE {fence_table(project, dataset)} SET n = n + 1")
            result.quarantined = self._quarantine(con, written, stage)
            if ledger_rows:
                con.execute(
                    f"INSERT INTO {ALIAS}.{META}.ledger SELECT r.p, r.d, r.e, r.n, now()"
                    f" FROM (SELECT unnest({_JSON_LEDGER}) AS r)",
                    [orjson.dumps([{"p": p, "d": d, "e": e, "n": n}
                                   for p, d, e, n in ledger_rows]).decode()])
            if self.before_commit is not None:
                self.before_commit()
            con.execute("COMMIT")
        except BaseException:
            # a failed COMMIT has already ended the transaction
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        result.commit_s = time.perf_counter() - started
        return result

    def _apply(self, con: duckdb.DuckDBPyConnection, project: str, dataset: str,
               run: Run, stage: Path) -> int:
        """Inside the commit: store the records of one run; returns how many it took (a
        merge counts every record it merged, stored or not)."""
        paths = []
        longest = 0
        for part in _split(run.entries, self.threads):
            path = stage / f"{len(list(stage.iterdir()))}.ndjson"
            longest = max(longest, write_stage(path, part))
            paths.append(str(path))
        layout = self.layout(project, dataset, run.version)
        if run.merge_key is None:
            inserted = con.execute(insert_sql(layout, paths, longest)).fetchone()
            return int(inserted[0]) if inserted else 0
        delete, insert = merge_sql(layout, paths, longest, merge_column(layout, run.merge_key))
        con.execute(delete)
        con.execute(insert)
        return sum(_count_records(entry) for entry in run.entries)

    @staticmethod
    def _quarantine(con: duckdb.DuckDBPyConnection, written: Sequence[LakeEntry],
                    stage: Path) -> int:
        """Inside the commit of ``written``: delete the quarantine rows their ``replay_of``
        name, insert their quarantined records; returns how many were inserted."""
        replayed = _replayed_keys(written)
        if replayed:
            con.execute(
                f"DELETE FROM {QUARANTINE_TABLE} WHERE EXISTS (SELECT 1 FROM"
                f" (SELECT unnest({_JSON_REPLAYED}) AS r) WHERE r.p = project"
                " AND r.d = dataset AND r.e = entry_id AND r.s = seq)",
                [orjson.dumps(replayed).decode()])
        quarantined = [e for e in written if e.queued.quarantine is not None]
        if not quarantined:
            return 0
        path = stage / f"quarantine-{len(list(stage.iterdir()))}.ndjson"
        longest = write_quarantine_stage(path, quarantined)
        inserted = con.execute(quarantine_insert_sql([str(path)], longest)).fetchone()
        return int(inserted[0]) if inserted else 0

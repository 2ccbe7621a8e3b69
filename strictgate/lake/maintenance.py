"""Compaction of the lake, callable on its own (``strictgate lake compact``, the worker's
schedule).

One pass: merge adjacent small data files (``ducklake_merge_adjacent_files``), expire
snapshots older than the time-travel window (``ducklake_expire_snapshots``), delete the
files no snapshot needs any more (``ducklake_cleanup_old_files``) and files the catalog
never knew, e.g. written by a writer killed before its commit
(``ducklake_delete_orphaned_files``, only those older than ``orphan_grace`` so a commit in
flight keeps its files). Data inlining is off (see :mod:`strictgate.lake.engine`), so there is
nothing to flush.

Verified with DuckLake 1.5.5 here: merging rewrites the small files of each partition into
one bigger file in a new snapshot, and the merged file keeps each row's snapshot, so time
travel (``AT (VERSION => n)``) to a snapshot still in the window reads the same rows from
it: the replaced small files are scheduled for deletion at once and ``cleanup_old_files``
removes them after ``orphan_grace`` (queries running at that moment may still read them);
expiring snapshots drops the ability to travel back past the window; every step is its own
commit, so a writer committing meanwhile either goes first or retries ("database is locked"
with the SQLite catalog); a process killed during a step leaves the previous state (files it
wrote are orphans, removed by a later pass). The table functions are only found under their
``ducklake_`` names when the extension is LOADed from a file (``lake.ducklake_...`` fails).

``older_than`` is not a time in a SQLite catalog (read in DuckLake 1.5.5's source, then
verified): it stores ``snapshot_time`` and ``schedule_start`` as VARCHAR
(``2026-06-10 12:00:00.123+00``) and compares them as text with the literal it formats
(``2026-06-10T11:00:00+00``); ``' ' < 'T'``, so every snapshot and every scheduled file of the
threshold's *day* passes, whatever its time. ``expire_snapshots(older_than => now - 1 h)``
expired snapshots seconds old, and ``cleanup_old_files(older_than => now - 1 h)`` deleted the
files a merge had replaced a moment before, while a query that had started before the merge
was still reading them: "IO Error: Cannot open file ... No such file or directory". Hence:
snapshots are expired by id (``versions =>``, chosen here from ``ducklake_snapshots``, whose
times are typed), and old files are cleaned with the threshold moved back to the end of the
day before (text and time comparisons agree across days), so a replaced file stays at least
``orphan_grace`` (up to a day more). ``delete_orphaned_files`` compares the files' real
modification times and needs no such care.

A long-running process (the worker) runs each pass in a child process of its own
(:func:`compact_in_child`, ``python -m strictgate.lake.maintenance``). Measured with DuckDB and
DuckLake 1.5.5 here: a merge whose commit fails ("database is locked": with a SQLite catalog
any commit of the writer during the merge makes it stale, and the worker commits every few
tens of milliseconds) leaks about 0.5 MB per attempt and 3 MB per connection that had one,
memory that neither closing the connection nor ``malloc_trim`` gives back; retried 20 times,
a pass left 25-40 MB behind in the worker (the soak's RSS growth, ``bench/lake_memory.py``).
Successful passes leak nothing, but a merge can allocate a lot for a while. In a child, all
of it ends with the pass. The child imports nothing of the validator (hence :data:`META`
here), so it starts in about 0.35 s and 50 MB.

Quarantine retention (:func:`purge_quarantine`): quarantined records received longer ago
than their dataset's ``quarantine_retention_days`` are deleted. The retention is a dataset
setting kept in Redis, so the caller reads it (the lake worker every
``QUARANTINE_PURGE_EVERY_S``, :mod:`strictgate.worker.lake_sink`; ``strictgate quarantine
purge``) for the datasets :func:`quarantined_datasets` lists, and hands it here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from strictgate.lake.engine import ALIAS, LakeConfig, S3Options, connect, retry
from strictgate.redact import redacted

META = "__strictgate"
"""The schema of the ledger: :data:`strictgate.lake.tables.META` (a test holds them equal),
not imported from there because that module loads the validator, which a compaction child
does not need (1.4 s and 180 MB to start instead of 0.35 s and 50 MB)."""


QUARANTINE = f"{ALIAS}.{META}.quarantine"
"""The quarantine table: :data:`strictgate.lake.tables.QUARANTINE_TABLE` (a test holds
them equal)."""
_JSON_CUTOFFS = ("from_json(?, '[{\"p\": \"VARCHAR\", \"d\": \"VARCHAR\","
                 " \"c\": \"VARCHAR\"}]')")


@dataclass
class CompactionReport:
    """What one pass did (counts of rows the DuckLake functions returned)."""

    files_merged: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0
    orphans_deleted: int = 0
    ledger_pruned: int = 0
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    pid: int = 0
    """The process that ran the pass."""


def expirable_snapshots(con: duckdb.DuckDBPyConnection, before: datetime) -> list[int]:
    """Ids of the snapshots taken before ``before``, never the newest one."""
    rows = con.execute(
        f"SELECT snapshot_id FROM ducklake_snapshots('{ALIAS}') WHERE snapshot_time < ?"
        f" AND snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots('{ALIAS}'))"
        " ORDER BY snapshot_id", [before]).fetchall()
    return [int(r[0]) for r in rows]


def text_safe_threshold(before: datetime) -> datetime:
    """The last microsecond of the day before ``before`` (UTC): a threshold that a text
    comparison of DuckLake's SQLite timestamps applies the same as a time comparison, and
    that is never later than ``before``."""
    day = before.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(microseconds=1)


def compact(con: duckdb.DuckDBPyConnection, *, keep_snapshots: timedelta = timedelta(days=7),
            orphan_grace: timedelta = timedelta(hours=1),
            ledger_retention: timedelta | None = timedelta(days=7),
            now: datetime | None = None) -> CompactionReport:
    """One compaction pass over the attached lake; ``keep_snapshots`` is the time-travel
    window (snapshots younger than it stay, with their files). Ledger rows older than
    ``ledger_retention`` are dropped first: an entry is redelivered only while it is
    pending in the queue, which is far shorter, and every commit reads the ledger."""
    report = CompactionReport(pid=os.getpid())
    started = time.perf_counter()
    moment = now or datetime.now(UTC)

    def step(name: str, sql: str, params: list[object] | None = None) -> list[Any]:
        begun = time.perf_counter()
        rows = retry(lambda: con.execute(sql, params or []).fetchall())
        report.steps[name] = time.perf_counter() - begun
        return rows

    lake = f"'{ALIAS}'"
    if ledger_retention is not None and _has_ledger(con):
        # DELETE answers one row: the count
        report.ledger_pruned = int(step(
            "prune_ledger", f"DELETE FROM {ALIAS}.{META}.ledger WHERE committed_at < ?",
            [moment - ledger_retention])[0][0])
    report.files_merged = len(step("merge", f"CALL ducklake_merge_adjacent_files({lake})"))
    expired = expirable_snapshots(con, moment - keep_snapshots)
    if expired:
        report.snapshots_expired = len(step(
            "expire", f"CALL ducklake_expire_snapshots({lake}, versions => ?)", [expired]))
    # files of expired snapshots and files a merge replaced: kept ``orphan_grace`` more for
    # queries still reading them
    if orphan_grace > timedelta(0):
        report.files_deleted = len(step(
            "cleanup", f"CALL ducklake_cleanup_old_files({lake}, older_than => ?)",
            [text_safe_threshold(moment - orphan_grace)]))
    else:  # no grace asked for (tests, an operator's explicit choice): every file now
        report.files_deleted = len(step(
            "cleanup", f"CALL ducklake_cleanup_old_files({lake}, cleanup_all => true)"))
    report.orphans_deleted = len(step(
        "orphans", f"CALL ducklake_delete_orphaned_files({lake}, older_than => ?)",
        [moment - orphan_grace]))
    report.seconds = time.perf_counter() - started
    return report


def _has_ledger(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the lake has its ledger yet (a lake no writer committed to has none)."""
    return _has_meta_table(con, "ledger")


def _has_meta_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the bookkeeping schema holds table ``name`` (a writer creates them)."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?"
        " AND table_name = ?", [ALIAS, META, name]).fetchone()
    return bool(found and found[0])


def quarantined_datasets(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """The (project, dataset) pairs with quarantined records, sorted (none before a writer
    of this release created the quarantine table)."""
    if not _has_meta_table(con, "quarantine"):
        return []
    rows = retry(lambda: con.execute(
        f"SELECT DISTINCT project, dataset FROM {QUARANTINE} ORDER BY ALL").fetchall())
    return [(str(p), str(d)) for p, d in rows]


def purge_quarantine(con: duckdb.DuckDBPyConnection,
                     retention_days: Mapping[tuple[str, str], int], *,
                     now: datetime | None = None) -> int:
    """Delete the quarantined records of each dataset of ``retention_days`` ((project,
    dataset) -> days) received more than that many days before ``now``, in one statement
    (one commit); returns how many were deleted. Datasets not named are left alone."""
    if not retention_days or not _has_meta_table(con, "quarantine"):
        return 0
    moment = now or datetime.now(UTC)
    cutoffs = [{"p": p, "d": d, "c": (moment - timedelta(days=days)).isoformat()}
               for (p, d), days in retention_days.items()]
    rows = retry(lambda: con.execute(
        f"DELETE FROM {QUARANTINE} WHERE EXISTS (SELECT 1 FROM (SELECT unnest({_JSON_CUTOFFS})"
        " AS r) WHERE r.p = project AND r.d = dataset AND received_at < r.c::TIMESTAMPTZ)",
        [orjson.dumps(cutoffs).decode()]).fetchall())
    return int(rows[0][0]) if rows else 0


def compact_lake(config: LakeConfig, *, keep_snapshots: timedelta = timedelta(days=7),
                 orphan_grace: timedelta = timedelta(hours=1),
                 ledger_retention: timedelta | None = timedelta(days=7)) -> CompactionReport:
    """Open the lake, run :func:`compact`, close."""
    con = connect(config)
    try:
        return compact(con, keep_snapshots=keep_snapshots, orphan_grace=orphan_grace,
                       ledger_retention=ledger_retention)
    finally:
        con.close()


class CompactionFailed(Exception):
    """A pass in a child process failed (or was stopped); ``kind`` names the error there
    (its exception type, ``timeout`` or ``child_died``), the message is redacted."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_MESSAGE_LIMIT = 500


def compact_in_child(config: LakeConfig, *, keep_snapshots: timedelta = timedelta(days=7),
                     timeout_s: float = 600.0) -> CompactionReport:
    """:func:`compact_lake` in a new process (``python -m strictgate.lake.maintenance``), so
    whatever DuckDB keeps of the pass ends with it (see the module docstring). The lake is
    given on stdin (a catalog string may hold a password, the S3 options a secret: not in
    argv or the environment).
    A pass still running after ``timeout_s`` is killed; the child also dies with the thread
    that started it (Linux). Raises :class:`CompactionFailed`."""
    request = orjson.dumps({
        "catalog": config.catalog, "data_path": config.data_path, "threads": config.threads,
        "s3": dataclasses.asdict(config.s3) if config.s3 else None,
        "keep_snapshots_s": keep_snapshots.total_seconds(), "parent": os.getpid()})
    # the package's root first: the child imports this module by name whatever its cwd
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-m", "strictgate.lake.maintenance"],
                              input=request, capture_output=True, timeout=timeout_s,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        raise CompactionFailed(
            "timeout", f"the compaction pass ran longer than {timeout_s:.0f} s and was stopped"
        ) from None
    answer: dict[str, Any] = {}
    lines = done.stdout.strip().splitlines()
    if lines:
        try:
            answer = orjson.loads(lines[-1])
        except orjson.JSONDecodeError:
            answer = {}
    if done.returncode == 0 and "report" in answer:
        return CompactionReport(**answer["report"])
    if "error" in answer:
        raise CompactionFailed(str(answer["error"]), str(answer.get("message", "")))
    tail = redacted(done.stderr.decode(errors="replace")[-_MESSAGE_LIMIT:])
    raise CompactionFailed("child_died", f"exit status {done.returncode}: {tail}")


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that started it ends (Linux; elsewhere a no-op):
    a worker killed mid-pass leaves no pass running behind it, as when passes were threads."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(name).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def main() -> int:
    """The child of :func:`compact_in_child`: the request on stdin, one JSON line out
    (``{"report": ...}`` or ``{"error": <type>, "message": <redacted>}``)."""
    request = orjson.loads(sys.stdin.buffer.read())
    _die_with_parent(int(request["parent"]))
    s3 = request.get("s3")
    config = LakeConfig(catalog=request["catalog"], data_path=request["data_path"],
                        threads=int(request["threads"]),
                        s3=S3Options(**s3) if s3 else None)
    try:
        report = compact_lake(
            config, keep_snapshots=timedelta(seconds=float(request["keep_snapshots_s"])))
    except Exception as exc:  # every failure is reported to the parent, never a traceback
        message = redacted(str(exc) or type(exc).__name__)[:_MESSAGE_LIMIT]
        sys.stdout.write(orjson.dumps({"error": type(exc).__name__,
                                       "message": message}).decode() + "\n")
        return 1
    sys.stdout.write(orjson.dumps({"report": dataclasses.asdict(report)}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

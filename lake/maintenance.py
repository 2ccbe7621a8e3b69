"""Compaction of the lake, callable on its own (``strictgate lake compact``, the worker's
schedule).

One pass: merge adjacent small data files (``ducklake_merge_adjacent_files``), expire
snapshots older than the time-travel window (``ducklake_expire_snapshots``), delete the
files no snapshot needs any more (``ducklake_cleanup_old_files``) and files the catalog
never knew, e.g. written by a writer killed before its commit
(``ducklake_delete_orphaned_files``, only those older than ``orphan_grace`` so a commit in
flight keeps its files). Data inlining is off (see :mod:`lake.engine`), so there is nothing
to flush.

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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from lake.engine import ALIAS, LakeConfig, connect, retry
from lake.tables import META


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


def compact(con: duckdb.DuckDBPyConnection, *, keep_snapshots: timedelta = timedelta(days=7),
            orphan_grace: timedelta = timedelta(hours=1),
            ledger_retention: timedelta | None = timedelta(days=7),
            now: datetime | None = None) -> CompactionReport:
    """One compaction pass over the attached lake; ``keep_snapshots`` is the time-travel
    window (snapshots younger than it stay, with their files). Ledger rows older than
    ``ledger_retention`` are dropped first: an entry is redelivered only while it is
    pending in the queue, which is far shorter, and every commit reads the ledger."""
    report = CompactionReport()
    started = time.perf_counter()
    moment = now or datetime.now(UTC)

    def step(name: str, sql: str, params: list[object] | None = None) -> list[Any]:
        begun = time.perf_counter()
        rows = retry(lambda: con.execute(sql, params or []).fetchall())
        report.steps[name] = time.perf_counter() - begun
        return rows

    lake = f"'{ALIAS}'"
    if ledger_retention is not None:
        # DELETE answers one row: the count
        report.ledger_pruned = int(step(
            "prune_ledger", f"DELETE FROM {ALIAS}.{META}.ledger WHERE committed_at < ?",
            [moment - ledger_retention])[0][0])
    report.files_merged = len(step("merge", f"CALL ducklake_merge_adjacent_files({lake})"))
    report.snapshots_expired = len(step(
        "expire", f"CALL ducklake_expire_snapshots({lake}, older_than => ?)",
        [moment - keep_snapshots]))
    # files of expired snapshots: kept ``orphan_grace`` more for queries still reading them
    report.files_deleted = len(step(
        "cleanup", f"CALL ducklake_cleanup_old_files({lake}, older_than => ?)",
        [moment - orphan_grace]))
    report.orphans_deleted = len(step(
        "orphans", f"CALL ducklake_delete_orphaned_files({lake}, older_than => ?)",
        [moment - orphan_grace]))
    report.seconds = time.perf_counter() - started
    return report


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

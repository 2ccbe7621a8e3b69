"""Compaction of a real lake: fewer files, the same rows, time travel kept for the window,
orphans removed after their grace, and a SIGKILL during compaction loses and doubles
nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.maintenance import compact, compact_lake
from strictgate.lake.writer import LakeWriter
from tests.lake_support import ROOT, seed_definitions, seed_entries

ZERO = timedelta(0)


def _files(lake_dir: Path) -> list[Path]:
    return sorted((lake_dir / "lake" / "data" / "p1" / "billing").rglob("*.parquet"))


def _digest(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    rows = con.execute('SELECT * EXCLUDE ("__absent") FROM lake.p1.billing'
                       ' ORDER BY "__entryId", "__seq"').fetchall()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


def _filled(lake_dir: Path, commits: int, per_commit: int = 2) -> LakeWriter:
    writer = LakeWriter(LakeConfig.local(lake_dir), seed_definitions)
    for n in range(commits):
        writer.write(seed_entries(per_commit, 100, start=n * per_commit))
    return writer


def test_compaction_merges_files_and_keeps_every_row(tmp_path: Path) -> None:
    writer = _filled(tmp_path, 20)
    before = _digest(writer.con)
    assert len(_files(tmp_path)) == 20
    report = compact(writer.con, keep_snapshots=ZERO, orphan_grace=ZERO)
    assert report.files_merged > 0 and report.snapshots_expired > 0
    assert len(_files(tmp_path)) == 1
    assert _digest(writer.con) == before == (4000, before[1])
    # the ledger still knows every entry: a redelivery writes nothing
    again = writer.write(seed_entries(40, 100))
    assert again.written == [] and len(again.skipped) == 40
    writer.close()


def test_snapshots_in_the_window_stay_readable(tmp_path: Path) -> None:
    writer = _filled(tmp_path, 1)
    first = writer.con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()
    assert first is not None
    for n in range(1, 5):
        writer.write(seed_entries(2, 100, start=n * 2))
    before = writer.con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
    # a window shorter than a day: DuckLake's own older_than (a text comparison in a SQLite
    # catalog) expired every snapshot of the day
    report = compact(writer.con, keep_snapshots=timedelta(hours=1), orphan_grace=ZERO)
    assert report.snapshots_expired == 0
    after = writer.con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
    assert before is not None and after == (before[0] + 1,)  # + the merge's snapshot
    old = writer.con.execute(f"SELECT count(*) FROM lake.p1.billing AT (VERSION => {first[0]})"
                             ).fetchone()
    assert old == (200,)
    # the merged file keeps each row's snapshot: time travel needs none of the small files
    assert len(_files(tmp_path)) == 1
    writer.close()


def test_snapshots_past_the_window_are_expired(tmp_path: Path) -> None:
    writer = _filled(tmp_path, 3)
    later = datetime.now(UTC) + timedelta(hours=2)
    report = compact(writer.con, keep_snapshots=timedelta(hours=1), now=later)
    newest = writer.con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
    assert report.snapshots_expired > 0 and newest == (1,)
    assert _digest(writer.con)[0] == 600
    writer.close()


def test_a_read_in_flight_survives_a_compaction(tmp_path: Path) -> None:
    """A query that started before a merge keeps reading the files the merge replaced: they
    are deleted only after ``orphan_grace``. DuckLake's own ``older_than`` (a text comparison
    in a SQLite catalog) deleted them at once: "Cannot open file ... No such file"."""
    writer = _filled(tmp_path, 5)
    reader = connect(LakeConfig.local(tmp_path))
    reader.execute("BEGIN")  # pins the snapshot: the small files
    assert reader.execute("SELECT count(*) FROM lake.p1.billing").fetchone() == (1000,)
    report = compact(writer.con, keep_snapshots=timedelta(hours=1),
                     orphan_grace=timedelta(hours=1))
    assert report.files_merged > 0 and report.files_deleted == 0
    assert _digest(reader)[0] == 1000
    reader.execute("COMMIT")
    reader.close()
    # after the grace they go
    later = compact(writer.con, keep_snapshots=timedelta(hours=1),
                    orphan_grace=timedelta(hours=1), now=datetime.now(UTC) + timedelta(days=2))
    assert later.files_deleted > 0 and len(_files(tmp_path)) == 1
    assert _digest(writer.con)[0] == 1000
    writer.close()


def test_orphaned_files_go_after_their_grace(tmp_path: Path) -> None:
    writer = _filled(tmp_path, 2)
    orphan = _files(tmp_path)[0].with_name("ducklake-orphan-of-a-killed-writer.parquet")
    orphan.write_bytes(_files(tmp_path)[0].read_bytes())
    compact(writer.con, keep_snapshots=timedelta(days=1))  # grace 1 h: kept
    assert orphan.exists()
    compact(writer.con, keep_snapshots=timedelta(days=1), orphan_grace=ZERO)
    assert not orphan.exists()
    assert _digest(writer.con)[0] == 400
    writer.close()


COMPACT_LOOP = """
import sys
from datetime import UTC, datetime, timedelta
from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.maintenance import compact_lake
while True:
    # a grace of 0 would delete the files of a commit in flight as orphans (that is what
    # the grace is for): the writer below commits while this runs
    compact_lake(LakeConfig.local(sys.argv[1]), keep_snapshots=timedelta(0),
                 orphan_grace=timedelta(seconds=60))
"""


def test_sigkill_during_compaction_loses_and_doubles_nothing(tmp_path: Path) -> None:
    writer = _filled(tmp_path, 30, per_commit=3)
    rows, _ = _digest(writer.con)
    writer.close()
    # a reader in one transaction all along (as an API page or a user's query running while
    # the worker compacts): it must keep reading its snapshot's files
    reader = connect(LakeConfig.local(tmp_path))
    reader.execute("BEGIN")
    pinned = _digest(reader)
    for delay in (0.6, 0.9, 1.2, 1.5):
        proc = subprocess.Popen([sys.executable, "-c", COMPACT_LOOP, str(tmp_path)], cwd=ROOT,
                                stderr=subprocess.PIPE)
        time.sleep(delay)
        # a writer commits while the compaction runs: both go through (retries)
        writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
        extra = writer.write(seed_entries(1, 100, start=1000 + int(delay * 10)))
        rows += extra.records
        writer.close()
        proc.kill()
        proc.wait()
        assert proc.returncode == -9, proc.stderr.read() if proc.stderr else ""
        writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
        count, _ = _digest(writer.con)
        distinct = writer.con.execute('SELECT count(DISTINCT ("__entryId", "__seq"))'
                                      " FROM lake.p1.billing").fetchone()
        assert count == rows and distinct == (rows,)
        assert writer.write(seed_entries(90, 100)).written == []
        writer.close()
        assert _digest(reader) == pinned
    reader.execute("COMMIT")
    reader.close()
    writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
    compact(writer.con, keep_snapshots=ZERO, orphan_grace=ZERO)
    assert _digest(writer.con)[0] == rows
    writer.close()


def test_ledger_rows_past_their_retention_are_pruned(tmp_path: Path) -> None:
    writer = _filled(tmp_path, 3)
    report = compact(writer.con, ledger_retention=timedelta(days=1))
    assert report.ledger_pruned == 0
    later = compact(writer.con, ledger_retention=timedelta(days=1),
                    now=datetime.now(UTC) + timedelta(days=2))
    assert later.ledger_pruned == 6
    assert writer.con.execute("SELECT count(*) FROM lake.__strictgate.ledger").fetchone() == (0,)
    assert _digest(writer.con)[0] == 600  # the records stay
    writer.close()


def test_a_lake_nobody_wrote_to_yet_compacts_without_error(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    connect(config).close()  # the catalog exists, no table and no ledger yet
    report = compact_lake(config)
    assert (report.ledger_pruned, report.files_merged, report.files_deleted) == (0, 0, 0)

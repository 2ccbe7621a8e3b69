"""Exactly-once commits into a real DuckLake (SQLite catalog, Parquet files): redelivery,
two writer processes racing on the same entries, SIGKILL before and after the commit, and
the fence row that makes the loser of a race conflict (DuckDB-file catalog); each record's
event (OneSight) stored beside it, and never misaligned; merges (the last admitted row of
each key kept, whatever order entries and writers commit in)."""

from __future__ import annotations

import dataclasses
import itertools
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import orjson
import pytest

from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.tables import admission_key, admission_position, json_object_size
from strictgate.lake.writer import LakeEntry, LakeWriter, write_quarantine_stage, write_stage
from strictgate.queue_entry import (
    MERGE_KEY_MAX_CHARS,
    MalformedEntryError,
    QueuedEvent,
    QueueEntry,
    encode_events,
)
from tests.lake_support import (
    ROOT,
    SEED,
    dump_entries,
    lake_entry,
    payload,
    seed_definitions,
    seed_entries,
    seed_record,
)
from tests.test_lake_tables import V2
from validator.definition import normalize


def counts(config: LakeConfig) -> tuple[int, int, int, int]:
    """(rows, distinct (entry, seq), ledger rows, distinct ledger ids) of p1.billing."""
    con = connect(config)
    try:
        rows = con.execute('SELECT count(*), count(DISTINCT ("__entryId", "__seq"))'
                           " FROM lake.p1.billing").fetchone()
        ledger = con.execute("SELECT count(*), count(DISTINCT entry_id)"
                             " FROM lake.__strictgate.ledger").fetchone()
    finally:
        con.close()
    assert rows is not None and ledger is not None
    return int(rows[0]), int(rows[1]), int(ledger[0]), int(ledger[1])


def test_write_and_redelivery_is_exactly_once(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    entries = seed_entries(5, 100)
    first = writer.write(entries)
    assert (len(first.written), len(first.skipped), first.records) == (5, 0, 500)
    # the same entries again (a redelivery), mixed with two new ones
    more = seed_entries(2, 100, start=5)
    second = writer.write(entries[:3] + more)
    assert sorted(second.skipped) == sorted(e.entry_id for e in entries[:3])
    assert second.written == [e.entry_id for e in more]
    assert second.records == 200
    writer.close()
    assert counts(config) == (700, 700, 7, 7)


def test_one_commit_holds_many_entries_and_datasets(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    entries = seed_entries(3, 10) + seed_entries(2, 10, dataset="other", start=10)
    result = writer.write(entries)
    assert result.records == 50 and result.attempts == 1
    rows = writer.con.execute("SELECT changes FROM lake.snapshots() ORDER BY snapshot_id DESC"
                              " LIMIT 1").fetchone()
    writer.close()
    assert rows is not None
    # one snapshot (one commit) holds it all: two tables, the ledger, two fences
    assert len(rows[0]["tables_inserted_into"]) == 5
    assert len(rows[0]["tables_deleted_from"]) == 2


def test_fence_makes_the_loser_of_a_race_retry_and_skip(tmp_path: Path) -> None:
    """Writer A is inside its transaction (ledger checked, rows inserted) when writer B
    commits the same entries. A's COMMIT must conflict (both UPDATE the fence) and its retry
    must find B's ledger rows. A DuckDB-file catalog shows DuckLake's own conflict check
    (what PostgreSQL does too); with SQLite the lock makes the loser fail anyway."""
    config = LakeConfig(catalog=str(tmp_path / "catalog.ducklake"),
                        data_path=f"{tmp_path / 'data'}/")
    (tmp_path / "data").mkdir()
    entries = seed_entries(4, 50)
    a = LakeWriter(config, seed_definitions)
    b = LakeWriter(config, seed_definitions, con=a.con.cursor())
    b.con.execute("USE lake")
    b.layout("p1", "billing", 1)
    raced: list[int] = []

    def b_commits_first() -> None:
        if not raced:
            raced.append(len(b.write(entries).written))

    a.before_commit = b_commits_first
    # A read them as new (no ledger lookup at first), B claimed them as pending
    result = a.write(entries, first_delivery=True)
    assert raced == [4]
    assert result.attempts == 2
    assert result.written == [] and len(result.skipped) == 4
    rows = a.con.execute('SELECT count(*) FROM lake.p1.billing').fetchone()
    assert rows == (200,)


def _run_writer(lake_dir: Path, entries_file: Path,
                kill: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.lake_support", str(lake_dir), str(entries_file), kill],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_two_writer_processes_on_the_same_entries(tmp_path: Path) -> None:
    entries = seed_entries(40, 100)
    forward, backward = tmp_path / "f.json", tmp_path / "b.json"
    dump_entries(entries, forward)
    dump_entries(entries[::-1], backward)
    lake_dir = tmp_path / "lake"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.lake_support", str(lake_dir), str(path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for path in (forward, backward)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    written = sum(int(line.split()[0]) for out, _ in outs for line in out.splitlines())
    skipped = sum(int(line.split()[1]) for out, _ in outs for line in out.splitlines())
    assert written == 40 and skipped == 40
    assert counts(LakeConfig.local(lake_dir)) == (4000, 4000, 40, 40)


@pytest.mark.parametrize("kill", ["before_commit", "after_commit"])
def test_sigkill_then_rerun_writes_each_record_once(tmp_path: Path, kill: str) -> None:
    entries = seed_entries(30, 100)
    path = tmp_path / "e.json"
    dump_entries(entries, path)
    lake_dir = tmp_path / "lake"
    died = _run_writer(lake_dir, path, kill)
    assert died.returncode == -signal.SIGKILL, died.stderr
    config = LakeConfig.local(lake_dir)
    # killed after its first commit of 10 entries, or inside it: 10 or 0 entries landed
    expected_before = 1000 if kill == "after_commit" else 0
    n = expected_before // 100
    assert counts(config) == (expected_before, expected_before, n, n)
    stale = list((lake_dir / "stage").iterdir())
    assert len(stale) == (1 if kill == "before_commit" else 0)  # the dead writer's stage
    again = _run_writer(lake_dir, path)
    assert again.returncode == 0, again.stderr
    lines = [tuple(map(int, line.split())) for line in again.stdout.splitlines()]
    assert sum(w for w, _, _ in lines) == 30 - expected_before // 100
    assert sum(s for _, s, _ in lines) == expected_before // 100
    assert counts(config) == (3000, 3000, 30, 30)
    assert list((lake_dir / "stage").iterdir()) == []  # swept by the next writer


def test_queue_entry_from_stream_fields() -> None:
    fields = {b"records": b'[{"a":1}]', b"trace_id": b"t1", b"dataset_version": b"3",
              b"received_at": b"2026-06-10T11:00:00.123Z", b"project_id": b"p",
              b"dataset_id": b"d", b"user_id": b"u7"}
    entry = LakeEntry.from_fields(b"1781000000000-5", fields)
    assert entry == LakeEntry("u7/1781000000000-5", QueueEntry(
        records=b'[{"a":1}]', trace_id="t1", dataset_version=3,
        received_at="2026-06-10T11:00:00.123Z", project_id="p", dataset_id="d", user_id="u7"))


def test_a_failed_insert_rolls_back_everything(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    good = seed_entries(2, 10)
    bad = lake_entry("u/bad-0", "p1", "billing", 1, "t", "not a time", b'[{"timestamp":1}]')
    with pytest.raises(duckdb.Error):
        writer.write([*good, bad])
    writer.close()
    assert counts(config) == (0, 0, 0, 0)


def test_a_commit_needs_memory_for_its_lines_not_a_gigabyte(tmp_path: Path) -> None:
    """DuckDB's JSON reader allocates about twice its maximum_object_size per read: with a
    fixed 1 GiB a worker's memory climbed to gigabytes in minutes. Under a 128 MB limit a
    commit of small entries, and one of a 2 MB entry, still go through."""
    writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
    try:
        writer.con.execute("SET memory_limit = '128MB'")
        assert writer.write(seed_entries(3, 2)).records == 6
        big = seed_entries(1, 8000, start=100)  # one stage line of about 2 MB
        assert len(big[0].queued.records) > 1_500_000
        assert writer.write(big).records == 8000
    finally:
        writer.close()
    assert json_object_size(10) == 1 << 20 and json_object_size(3_000_000) == 1 << 22


def test_the_writer_replaces_its_connection_when_duckdbs_cache_passes_the_limit(
    tmp_path: Path,
) -> None:
    """DuckLake caches each table's statistics per commit in DuckDB's object cache, without
    bound: the writer opens a new connection once the cache passes its limit, between two
    commits, and every record still lands exactly once (a redelivery after the new
    connection is skipped by the ledger)."""
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions, cache_limit_bytes=48 * 1024,
                        cache_check_every=5)
    try:
        entries = seed_entries(40, 5)
        held = []
        for i in range(0, 30, 2):
            assert len(writer.write(entries[i:i + 2]).written) == 2
            held.append(writer.cache_bytes())
        assert writer.reconnects >= 1
        # the cache grows with commits, and a new connection starts it from scratch
        assert max(held) >= 48 * 1024
        assert any(later < earlier for earlier, later in itertools.pairwise(held))
        again = writer.write(entries[26:34])  # 26..29 were written before
        assert sorted(again.skipped) == sorted(e.entry_id for e in entries[26:30])
        assert again.written == [e.entry_id for e in entries[30:34]]
    finally:
        writer.close()
    assert counts(config) == (170, 170, 34, 34)


def test_a_writer_keeps_a_connection_it_was_given_and_one_without_a_limit(
    tmp_path: Path,
) -> None:
    config = LakeConfig.local(tmp_path)
    owner = LakeWriter(config, seed_definitions, cache_limit_bytes=None, cache_check_every=1)
    given = LakeWriter(config, seed_definitions, con=owner.con.cursor(), cache_limit_bytes=1,
                       cache_check_every=1)
    given.con.execute("USE lake")
    try:
        for i in range(0, 8, 2):
            owner.write(seed_entries(2, 3, start=i))
            given.write(seed_entries(2, 3, start=100 + i))
        assert (owner.reconnects, given.reconnects) == (0, 0)
        assert owner.cache_bytes() > 0
    finally:
        given.close()
        owner.close()


# --- events (OneSight): each record's id, source and time, NULL for other entries -------------

EVENT_TIMES = [
    ("2026-04-12T10:30:00Z", datetime(2026, 4, 12, 10, 30, tzinfo=UTC)),
    ("2026-04-12t10:30:00.5z", datetime(2026, 4, 12, 10, 30, 0, 500000, tzinfo=UTC)),
    ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # a leap second: next second
    ("2026-04-12T19:30:00.123456789+09:00",  # an offset, nanoseconds cut
     datetime(2026, 4, 12, 10, 30, 0, 123456, tzinfo=UTC)),
    ("2026-04-12T10:30:00-00:30", datetime(2026, 4, 12, 11, 0, tzinfo=UTC)),
]


def _with_events(entry: LakeEntry, events: bytes) -> LakeEntry:
    return dataclasses.replace(entry, queued=msgspec.structs.replace(entry.queued,
                                                                     events=events))


@pytest.mark.parametrize("definition", [SEED, V2], ids=["typed-read", "json-read"])
def test_each_record_gets_its_own_event_and_other_entries_none(
    tmp_path: Path, definition: dict[str, Any],
) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, lambda p, d, v: definition)
    changes = {} if definition is SEED else {"amount": "1"}
    n = len(EVENT_TIMES)
    records = payload(definition, [orjson.dumps({**seed_record(i), **changes})
                                   for i in range(n)])
    events = encode_events([QueuedEvent(f"ev-{i} ü \"q\"", None if i % 2 else f"src{i}", text)
                            for i, (text, _) in enumerate(EVENT_TIMES)])
    writer.write([
        lake_entry("u/1-0", "p1", "billing", 1, "t1", "2026-06-10T11:00:00.000Z", records),
        _with_events(lake_entry("u/2-0", "p1", "billing", 1, "t2", "2026-06-10T11:00:00.000Z",
                                records), events),
        lake_entry("u/3-0", "p1", "billing", 1, "t3", "2026-06-10T11:00:00.000Z", records)])
    stored = writer.con.execute(
        'SELECT "__entryId", "__seq", "__eventId", "__source", "__eventTime", country'
        " FROM lake.p1.billing ORDER BY ALL").fetchall()
    writer.close()
    assert [r[2:5] for r in stored if r[0] != "u/2-0"] == [(None, None, None)] * 2 * n
    assert [r[1:5] for r in stored if r[0] == "u/2-0"] == [
        (i, f"ev-{i} ü \"q\"", None if i % 2 else f"src{i}", at)
        for i, (_, at) in enumerate(EVENT_TIMES)]
    assert {r[5] for r in stored} == {"RO"}


def test_events_that_are_not_one_per_record_write_nothing(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    good = seed_entries(2, 3)
    one = encode_events([QueuedEvent("a", None, "2026-04-12T10:30:00Z")])
    for counted in (None, 3):  # counted by the caller or by the writer
        short = dataclasses.replace(_with_events(seed_entries(1, 3, start=5)[0], one),
                                    record_count=counted)
        with pytest.raises(MalformedEntryError, match="holds 1 events for 3 records"):
            writer.write([*good, short])
    writer.close()
    assert counts(config) == (0, 0, 0, 0)


def test_events_with_line_breaks_still_make_one_stage_line(tmp_path: Path) -> None:
    events = b'[\n {"id": "a\\nb", "source": null,\r\n  "time": "2026-04-12T10:30:00Z"}\n]'
    entry = _with_events(seed_entries(1, 1)[0], events)
    path = tmp_path / "stage.ndjson"
    write_stage(path, [entry])
    [line] = path.read_bytes().splitlines()
    assert orjson.loads(line)["k"] == [
        {"id": "a\nb", "source": None, "time": "2026-04-12T10:30:00Z"}]
    writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
    writer.write([entry])
    assert writer.con.execute('SELECT "__eventId" FROM lake.p1.billing').fetchall() == [
        ("a\nb",)]
    writer.close()


def test_quarantined_records_with_line_breaks_still_make_one_stage_line(
    tmp_path: Path,
) -> None:
    value = (b'[\n {"index": 0, "record": "{\\n \\"a\\": 1}",\r\n'
             b'  "errors": [{"code": "c", "field": "a", "message": "m"}]}\n]')
    [entry] = seed_entries(1, 1)
    entry = dataclasses.replace(entry, queued=msgspec.structs.replace(entry.queued,
                                                                      quarantine=value))
    path = tmp_path / "stage.ndjson"
    write_quarantine_stage(path, [entry])
    [line] = path.read_bytes().splitlines()
    assert orjson.loads(line)["q"][0]["record"] == '{\n "a": 1}'
    writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
    assert writer.write([entry]).quarantined == 1
    assert writer.con.execute(
        "SELECT record, error_codes FROM lake.__strictgate.quarantine").fetchall() == [
        ('{\n "a": 1}', ["c"])]
    writer.close()


# --- merge: entries with a merge_key, last admitted row per key ------------------------------

CUSTOMERS = normalize({"envelope": "none", "fields": {
    "id": "integer", "name": "string", "seen": "timestamp"}})


def customer_definitions(project: str, dataset: str, version: int) -> dict[str, Any]:
    """Every dataset of the merge tests is the customers table."""
    return CUSTOMERS


def _merged(entry_id: str, rows: list[dict[str, Any]], *, key: str | None = "id"
            ) -> LakeEntry:
    """A merge entry (``key`` None: an append) of customer rows into p1.customers."""
    entry = lake_entry(entry_id, "p1", "customers", 1, f"t-{entry_id}",
                       "2026-06-10T11:00:00.123Z",
                       payload(CUSTOMERS, [orjson.dumps(r) for r in rows]))
    return dataclasses.replace(entry, queued=msgspec.structs.replace(entry.queued,
                                                                     merge_key=key))


def _c(i: int, name: str) -> dict[str, Any]:
    return {"id": i, "name": name, "seen": "2026-06-10T10:00:00Z"}


def customers(config: LakeConfig) -> list[tuple[int, str]]:
    """(id, name) of every row of p1.customers, sorted."""
    con = connect(config)
    try:
        return sorted(con.execute("SELECT id, name FROM lake.p1.customers").fetchall())
    finally:
        con.close()


def test_a_merge_replaces_stored_rows_and_inserts_new_keys(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, customer_definitions)
    writer.write([_merged("u/1781000000001-0", [_c(1, "a"), _c(2, "b")])])
    result = writer.write([_merged("u/1781000000002-0", [_c(2, "b2"), _c(3, "c")])])
    assert (result.written, result.records) == (["u/1781000000002-0"], 2)
    assert customers(config) == [(1, "a"), (2, "b2"), (3, "c")]
    # the replacing row is the new one, whole: every column, its entry's system columns
    con = connect(config)
    row = con.execute('SELECT name, seen, "__entryId", "__traceId" FROM lake.p1.customers'
                      " WHERE id = 2").fetchall()
    con.close()
    assert [(r[0], r[2], r[3]) for r in row] == [
        ("b2", "u/1781000000002-0", "t-u/1781000000002-0")]


def test_in_one_commit_the_last_admitted_entry_of_a_key_wins_whatever_the_order(
        tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, customer_definitions)
    # ms compared as numbers (9 < 10), then seq (also as a number: 2 < 10)
    entries = [_merged("u/1781000000010-0", [_c(1, "ms10")]),
               _merged("u/1781000000009-0", [_c(1, "ms9"), _c(2, "ms9")]),
               _merged("u/1781000000010-10", [_c(2, "seq10")]),
               _merged("u/1781000000010-2", [_c(2, "seq2"), _c(3, "seq2")])]
    assert len(writer.write(entries).written) == 4
    assert customers(config) == [(1, "ms10"), (2, "seq10"), (3, "seq2")]


def test_two_writers_committing_out_of_admission_order_keep_the_last_admitted(
        tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    older = _merged("u/1781000000100-0", [_c(1, "older"), _c(4, "only-older")])
    newer = _merged("u/1781000000200-0", [_c(1, "newer")])
    a = LakeWriter(config, customer_definitions)
    b = LakeWriter(config, customer_definitions)
    a.write([newer])
    b.write([older])
    assert customers(config) == [(1, "newer"), (4, "only-older")]
    # exactly once: the older entry redelivered (to either writer) changes nothing
    assert a.write([older]).skipped == ["u/1781000000100-0"]
    assert b.write([newer, older]).written == []
    assert customers(config) == [(1, "newer"), (4, "only-older")]


def test_overlapping_merge_commits_conflict_and_the_retry_keeps_the_last_admitted(
        tmp_path: Path) -> None:
    """Writer A holds the older entry inside its transaction when writer B commits the newer
    one: A's COMMIT conflicts on the fence and its retry sees B's row (DuckDB-file catalog,
    as in the fence test above)."""
    config = LakeConfig(catalog=str(tmp_path / "catalog.ducklake"),
                        data_path=f"{tmp_path / 'data'}/")
    (tmp_path / "data").mkdir()
    older = _merged("u/1781000000100-0", [_c(1, "older"), _c(2, "older")])
    newer = _merged("u/1781000000200-0", [_c(1, "newer")])
    a = LakeWriter(config, customer_definitions)
    b = LakeWriter(config, customer_definitions, con=a.con.cursor())
    b.con.execute("USE lake")
    b.layout("p1", "customers", 1)
    raced: list[int] = []

    def b_commits_first() -> None:
        if not raced:
            raced.append(len(b.write([newer]).written))

    a.before_commit = b_commits_first
    result = a.write([older], first_delivery=True)
    assert raced == [1] and result.attempts == 2 and result.written == [older.entry_id]
    rows = a.con.execute("SELECT id, name FROM lake.p1.customers ORDER BY id").fetchall()
    assert rows == [(1, "newer"), (2, "older")]


def test_appends_and_merges_in_one_commit_apply_in_admission_order(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, customer_definitions)
    writer.write([_merged("u/1781000000300-0", [_c(1, "appended-1"), _c(1, "appended-2")],
                          key=None),
                  _merged("u/1781000000302-0", [_c(1, "appended-after")], key=None),
                  _merged("u/1781000000301-0", [_c(1, "merged"), _c(2, "merged")])])
    assert customers(config) == [(1, "appended-after"), (1, "merged"), (2, "merged")]
    # a later merge replaces every stored row of its key, appended or merged
    writer.write([_merged("u/1781000000400-0", [_c(1, "last")])])
    assert customers(config) == [(1, "last"), (2, "merged")]


def test_a_merge_key_naming_no_field_writes_nothing(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, customer_definitions)
    good = _merged("u/1781000000001-0", [_c(1, "a")])
    bad = _merged("u/1781000000002-0", [_c(2, "b")], key="email")
    with pytest.raises(MalformedEntryError, match="merge_key: names no field of version 1"):
        writer.write([good, bad])
    assert customers(config) == []


def test_a_merge_key_is_queued_only_when_set_and_checked() -> None:
    entry = _merged("u/1781000000001-0", [_c(1, "a")]).queued
    fields = entry.to_fields()
    assert list(fields)[-1] == "merge_key" and fields["merge_key"] == "id"
    raw = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in fields.items()}
    assert QueueEntry.from_fields(raw) == entry
    plain = msgspec.structs.replace(entry, merge_key=None)
    assert "merge_key" not in plain.to_fields()
    for bad in ("", "  ", "a\nb", "x" * (MERGE_KEY_MAX_CHARS + 1)):
        with pytest.raises(ValueError, match="merge_key"):
            msgspec.structs.replace(entry, merge_key=bad).to_args()
        with pytest.raises(MalformedEntryError, match="merge_key"):
            QueueEntry.from_fields({**raw, b"merge_key": bad.encode()})
    with pytest.raises(MalformedEntryError, match="merge_key: not UTF-8"):
        QueueEntry.from_fields({**raw, b"merge_key": b"\xff"})


def test_the_python_and_sql_admission_orders_agree(tmp_path: Path) -> None:
    ids = ["u/1781000000010-0", "u/1781000000009-5", "u/1781000000010-10",
           "u/1781000000010-2", "v/1781000000010-2", "u/x", "u/0-0", "a/b/99-1"]
    con = connect(LakeConfig.local(tmp_path))
    try:
        sql = con.execute(
            f"SELECT e FROM (SELECT unnest(?::VARCHAR[]) AS e) ORDER BY {admission_position('e')}",
            [ids]).fetchall()
    finally:
        con.close()
    assert [r[0] for r in sql] == sorted(ids, key=admission_key)
    assert sorted(ids, key=admission_key)[-4:] == [
        "u/1781000000010-0", "u/1781000000010-2", "v/1781000000010-2", "u/1781000000010-10"]

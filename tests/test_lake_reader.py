"""Reading a real lake: pages in receipt order with signed cursors, from/to, version, the
parameter errors, the operators' read-only SQL, and the event keys of records stored as
events (the events query itself: test_lake_events)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import msgspec
import pytest

from strictgate.lake import engine
from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import (
    CursorCodec,
    DatasetNotFound,
    LakeReader,
    NotARead,
    ReadError,
    parse_bound,
    parse_limit,
    parse_version,
)
from strictgate.lake.writer import LakeWriter
from strictgate.queue_entry import QueuedEvent, encode_events
from tests.lake_support import seed_definitions, seed_entries

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeConfig:
    """p1.billing: 250 records on 2026-06-10 (5 entries, written in reverse receipt order),
    100 on 2026-06-11; p1.other: 10 records."""
    config = LakeConfig.local(tmp_path_factory.mktemp("reader"))
    writer = LakeWriter(config, seed_definitions)
    day1 = [seed_entries(1, 50, start=n, received_at=f"2026-06-10T0{n}:00:00.000Z")[0]
            for n in range(5)]
    writer.write(day1[::-1])
    writer.write(seed_entries(2, 50, start=5, received_at="2026-06-11T00:00:00.000Z"))
    writer.write(seed_entries(1, 10, dataset="other", start=9))
    writer.close()
    return config


def test_pages_walk_every_record_once_in_receipt_order(lake: LakeConfig) -> None:
    reader = LakeReader(lake, SECRET)
    seen: list[tuple[str, str]] = []
    cursor = None
    pages = 0
    while True:
        page = reader.page("p1", "billing", limit=100, cursor=cursor)
        pages += 1
        seen.extend((r["__receivedAt"], r["timestamp"]) for r in page.records)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    reader.close()
    assert pages == 4 and len(seen) == 350 and len(set(seen)) == 350
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert seen[0] == ("2026-06-10T00:00:00.000Z", "2026-06-10T11:00:00.000Z")


def test_from_to_and_version(lake: LakeConfig) -> None:
    reader = LakeReader(lake, SECRET)
    day = reader.page("p1", "billing", limit=1000,
                      since=parse_bound("from", "2026-06-10", end=False),
                      until=parse_bound("to", "2026-06-10", end=True))
    assert len(day.records) == 250 and day.next_cursor is None
    hours = reader.page("p1", "billing", limit=1000,
                        since=parse_bound("from", "2026-06-10T01:00:00Z", end=False),
                        until=parse_bound("to", "2026-06-10T05:00:00+02:00", end=True))
    assert {r["__receivedAt"][:13] for r in hours.records} == {"2026-06-10T01", "2026-06-10T02"}
    assert reader.page("p1", "billing", version=2).records == []
    assert len(reader.page("p1", "billing", version=1, limit=5).records) == 5
    reader.close()


def test_a_cursor_we_did_not_issue_is_refused(lake: LakeConfig) -> None:
    reader = LakeReader(lake, SECRET)
    cursor = reader.page("p1", "billing", limit=10).next_cursor
    assert cursor is not None
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for bad in (tampered, "garbage", "", "x" * 5000):
        with pytest.raises(ReadError) as err:
            reader.page("p1", "billing", cursor=bad or "=")
        assert err.value.param == "cursor"
    with pytest.raises(ReadError):  # another dataset's cursor
        reader.page("p1", "other", cursor=cursor)
    other_key = LakeReader(lake, b"another secret, 32 bytes long!!")
    with pytest.raises(ReadError):
        other_key.page("p1", "billing", cursor=cursor)
    other_key.close()
    reader.close()


def test_cursor_round_trip() -> None:
    codec = CursorCodec(SECRET)
    key = (datetime(2026, 6, 10, 1, 2, 3, 456789, tzinfo=UTC), "u/1-0", 7)
    assert codec.decode("p", "d", codec.encode("p", "d", key)) == key


@pytest.mark.parametrize(("fn", "value", "param"), [
    (parse_limit, "0", "limit"), (parse_limit, "1001", "limit"), (parse_limit, "ten", "limit"),
    (parse_limit, "-1", "limit"), (parse_version, "-1", "version"),
    (parse_version, "v1", "version"),
])
def test_bad_parameters_name_themselves(fn: object, value: str, param: str) -> None:
    with pytest.raises(ReadError) as err:
        fn(value)  # type: ignore[operator]
    assert err.value.param == param


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "yesterday", "2026-06-10T10:00",
                                  "2026-06-10 10:00:00Z", "2026-06-10T25:00:00Z"])
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(ReadError) as err:
        parse_bound("from", text, end=False)
    assert err.value.param == "from"


def test_limits_and_bounds_accepted() -> None:
    assert parse_limit(None) == 100 and parse_limit("1000") == 1000
    assert parse_bound("to", "2026-06-10", end=True) == datetime(2026, 6, 11, tzinfo=UTC)
    assert parse_bound("from", "2016-12-31T23:59:60Z", end=False) == datetime(
        2017, 1, 1, tzinfo=UTC)


def test_unknown_dataset(lake: LakeConfig, tmp_path: Path) -> None:
    reader = LakeReader(lake, SECRET)
    with pytest.raises(DatasetNotFound):
        reader.page("p1", "nope")
    reader.close()
    empty = LakeReader(LakeConfig.local(tmp_path), SECRET)
    with pytest.raises(DatasetNotFound):
        empty.page("p1", "billing")
    empty.close()


def test_records_are_visible_right_after_the_commit(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    writer.write(seed_entries(1, 1))
    reader = LakeReader(config, SECRET)
    assert len(reader.page("p1", "billing").records) == 1
    writer.write(seed_entries(1, 3, start=1))  # the reader's connection stays open
    assert len(reader.page("p1", "billing").records) == 4
    reader.close()
    writer.close()


def test_sql_reads_and_refuses_everything_else(lake: LakeConfig, tmp_path: Path) -> None:
    reader = LakeReader(lake, SECRET)
    names, rows = reader.sql("SELECT count(*) AS n, max(amount) FROM p1.billing")
    assert names[0] == "n" and rows[0][0] == 350
    assert reader.sql("SELECT country FROM p1.billing", max_rows=3)[1] == [("RO",)] * 3
    outside = tmp_path / "out.csv"
    for statement in ("INSERT INTO p1.billing (country) VALUES ('x')",
                      "DELETE FROM p1.billing", "CREATE TABLE p1.x (a INT)",
                      f"COPY (SELECT 1) TO '{outside}'", f"ATTACH '{tmp_path / 'x.db'}' AS x",
                      "SET enable_external_access = true", "USE memory", "DETACH lake",
                      "SELECT 1; DELETE FROM p1.billing", "CALL ducklake_snapshots('lake')"):
        with pytest.raises(NotARead):
            reader.sql(statement)
    # a read statement of a file: refused by the connection itself
    with pytest.raises(duckdb.PermissionException):
        reader.sql("SELECT * FROM read_csv('/etc/passwd')")
    assert not outside.exists()
    assert reader.sql("SELECT count(*) FROM p1.billing")[1] == [(350,)]
    for read in ("SHOW ALL TABLES", "DESCRIBE p1.billing", "EXPLAIN SELECT 1",
                 "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "FROM p1.other SELECT count(*)",
                 "SELECT count(*) FROM ducklake_snapshots('lake')"):
        assert reader.sql(read)[1], read
    reader.close()


def test_the_sql_connection_refuses_writes_by_itself(lake: LakeConfig, tmp_path: Path) -> None:
    """Below the statement check: the READ_ONLY attach and the locked configuration."""
    con = engine.connect(lake, read_only=True)
    outside = tmp_path / "out.csv"
    for statement in ("INSERT INTO p1.billing (country) VALUES ('x')",
                      f"COPY (SELECT 1) TO '{outside}'", "SELECT * FROM read_csv('/etc/passwd')",
                      f"ATTACH '{tmp_path / 'x.db'}' AS x", "SET enable_external_access = true"):
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    assert not outside.exists()
    con.close()


def test_records_of_events_carry_them_and_other_records_read_as_before(
    tmp_path: Path,
) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    plain, evented = seed_entries(2, 2)
    events = encode_events([QueuedEvent("ev-0", "store", "2026-04-12t19:30:00.5+09:00"),
                            QueuedEvent("ev-1", None, "2016-12-31T23:59:60Z")])
    writer.write([plain, dataclasses.replace(evented, queued=msgspec.structs.replace(
        evented.queued, events=events))])
    writer.close()
    reader = LakeReader(config, SECRET)
    records = reader.page("p1", "billing").records
    reader.close()
    assert [list(r)[-4:] for r in records[:2]] == [
        ["__traceId", "__datasetVersion", "__receivedAt", "__entryId"]] * 2
    assert [{k: r[k] for k in ("__eventId", "__source", "__eventTime")} for r in records[2:]] == [
        {"__eventId": "ev-0", "__source": "store", "__eventTime": "2026-04-12T10:30:00.500Z"},
        {"__eventId": "ev-1", "__source": None, "__eventTime": "2017-01-01T00:00:00.000Z"}]
    assert list(records[2])[-3:] == ["__eventId", "__source", "__eventTime"]
    assert records[2]["country"] == records[0]["country"]


def test_event_cursor_round_trip() -> None:
    codec = CursorCodec(SECRET)
    at = datetime(2026, 6, 10, 1, 2, 3, 456789, tzinfo=UTC)
    key = (at, at, "pos_transaction", "u/1-0", 7)
    assert codec.decode_event("p", ["b", "a"], codec.encode_event("p", ["a", "b"], key)) == key
    assert codec.decode_event("p", None, codec.encode_event("p", None, key)) == key

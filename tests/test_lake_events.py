"""Events in a real lake (OneSight): rows written with per-record ``__eventId``,
``__source`` and ``__eventTime``, read back by :meth:`LakeReader.events` across the
project's tables in event order, a page at a time, filtered by type and time, with cursors
bound to the project and the filter; and the lake worker setting aside an entry whose
events do not match its records."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from strictgate.context import utc_now
from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import EventPage, LakeReader, ReadError, parse_bound
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.queue_entry import QueuedEvent, QueueEntry, encode_events
from strictgate.registry.store import Registry
from strictgate.worker.lake_sink import LakeWorker
from tests.lake_support import SEED, lake_entry, payload, seed_entries
from tests.worker_lake_support import enqueue
from validator.definition import normalize

SECRET = b"0123456789abcdef0123456789abcdef"
UWB = normalize({"envelope": "none", "fields": {
    "customer_id": "string", "zone": "string", "timestamp": "timestamp",
    "position": {"type": "object", "properties": {"x": "number", "y": "number"}}}})
POS = normalize({"envelope": "none", "fields": {
    "transaction_id": "string", "total": "number", "timestamp": "timestamp",
    "items": {"type": "array"}, "note": {"type": "string", "required": False}}})
DEFS: dict[str, dict[str, Any]] = {"uwb_location": UWB, "pos_transaction": POS}

# (event id, source, event time)
Event = tuple[str, str | None, str]


def uwb(n: int, at: str) -> dict[str, Any]:
    """A UWB location payload."""
    return {"customer_id": f"cust_{n}", "position": {"x": 12.5, "y": n}, "zone": "produce",
            "timestamp": at}


def pos(n: int, at: str) -> dict[str, Any]:
    """A POS transaction payload (``note`` left out)."""
    return {"transaction_id": f"TXN{n}", "items": [{"sku": "A001", "qty": 1, "price": 298}],
            "total": 298, "timestamp": at}


def event_entry(stream_id: str, dataset: str, received_at: str,
                events: list[tuple[Event, dict[str, Any]]], *,
                project: str = "p1") -> LakeEntry:
    """A queue entry of ``events`` (meta, payload) into ``dataset``, records through the
    real validator."""
    records = payload(DEFS[dataset], [orjson.dumps(body) for _, body in events])
    entry = lake_entry(f"u/{stream_id}", project, dataset, 1, f"trace-{stream_id}",
                       received_at, records)
    meta = encode_events([QueuedEvent(*m) for m, _ in events])
    return dataclasses.replace(entry, queued=msgspec.structs.replace(entry.queued,
                                                                     events=meta))


def simple(stream_id: str, dataset: str, received_at: str, *times: str,
           project: str = "p1") -> LakeEntry:
    """An entry of one event per time in ``times`` (ids ``<stream id>.<n>``)."""
    body = uwb if dataset == "uwb_location" else pos
    return event_entry(stream_id, dataset, received_at, [
        ((f"{stream_id}.{n}", "store", t), body(n, t)) for n, t in enumerate(times)],
        project=project)


def write(config: LakeConfig, *entries: LakeEntry) -> None:
    """Commit ``entries`` (one commit)."""
    writer = LakeWriter(config, lambda p, d, v: DEFS[d])
    try:
        writer.write(list(entries))
    finally:
        writer.close()


def walk(reader: LakeReader, project: str, types: list[str] | None, limit: int,
         **bounds: datetime | None) -> tuple[list[dict[str, Any]], int]:
    """Every event of a query, page by page; also how many pages."""
    out: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        page = reader.events(project, types, limit=limit, cursor=cursor, **bounds)
        pages += 1
        out.extend(page.events)
        if page.next_cursor is None:
            return out, pages
        cursor = page.next_cursor


@pytest.fixture
def config(tmp_path: Path) -> LakeConfig:
    """An empty lake under the test's directory."""
    return LakeConfig.local(tmp_path)


def test_an_event_reads_back_with_its_type_id_source_payload_and_receipt(
    config: LakeConfig,
) -> None:
    write(config, event_entry("1-0", "pos_transaction", "2026-04-12T10:35:01.250Z", [
        (("loc_1", None, "2026-04-12T10:35:00Z"), pos(1, "2026-04-12T10:35:00Z"))]))
    reader = LakeReader(config, SECRET)
    page = reader.events("p1", None)
    reader.close()
    assert page == EventPage([{
        "event_type": "pos_transaction", "event_id": "loc_1", "source": None,
        "payload": pos(1, "2026-04-12T10:35:00Z"),  # no system key; note stays absent
        "received_at": "2026-04-12T10:35:01.250Z"}], None)


def test_order_is_event_time_then_receipt_then_type_then_entry_then_place(
    config: LakeConfig,
) -> None:
    t = "2026-04-12T10:00:00Z"
    write(config,
          # same time and receipt in two tables: the type's id decides (pos < uwb)
          simple("5-0", "uwb_location", "2026-04-12T11:00:00.000Z", t),
          simple("6-0", "pos_transaction", "2026-04-12T11:00:00.000Z", t),
          # same table, time and receipt: the entry, then the place in it
          simple("2-0", "uwb_location", "2026-04-12T11:00:00.000Z", t, t),
          # an earlier receipt comes first; an earlier time before everything
          simple("9-0", "pos_transaction", "2026-04-12T10:59:00.000Z", t),
          simple("8-0", "uwb_location", "2026-04-12T12:00:00.000Z", "2026-04-12T09:59:59Z"))
    reader = LakeReader(config, SECRET)
    expected = ["8-0.0", "9-0.0", "6-0.0", "2-0.0", "2-0.1", "5-0.0"]
    assert [e["event_id"] for e in reader.events("p1", None, limit=100).events] == expected
    # the same order a page of one at a time: the cursor resumes across tables exactly
    events, pages = walk(reader, "p1", None, 1)
    reader.close()
    assert [e["event_id"] for e in events] == expected and pages == 6


def test_pages_lose_and_repeat_nothing_while_rows_are_committed_between_them(
    config: LakeConfig,
) -> None:
    def times(hour: int, n: int) -> list[str]:
        return [f"2026-04-12T{hour:02d}:{m:02d}:00Z" for m in range(n)]

    write(config, simple("1-0", "uwb_location", "2026-04-12T12:00:00.000Z", *times(10, 7)),
          simple("2-0", "pos_transaction", "2026-04-12T12:00:00.000Z", *times(10, 6)))
    reader = LakeReader(config, SECRET)
    seen: list[str] = []
    cursor = None
    added = 0
    while True:
        page = reader.events("p1", None, limit=4, cursor=cursor)
        seen.extend(e["event_id"] for e in page.events)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        if added == 3:
            continue
        added += 1
        # later events, in both tables, land before the next page
        write(config, simple(f"{10 + added}-0", "uwb_location", "2026-04-12T13:00:00.000Z",
                             *times(10 + added, 2)),
              simple(f"{20 + added}-0", "pos_transaction", "2026-04-12T13:00:00.000Z",
                     *times(10 + added, 1)))
    everything = [e["event_id"] for e in reader.events("p1", None, limit=1000).events]
    reader.close()
    assert len(seen) == len(set(seen)) == len(everything)
    assert seen == everything and added == 3 and len(seen) == 13 + 9


def test_from_and_to_select_on_the_event_time_a_date_as_to_taking_its_whole_day(
    config: LakeConfig,
) -> None:
    write(config, simple(
        "1-0", "uwb_location", "2026-04-20T00:00:00.000Z",
        "2026-04-10T23:59:59.999Z",        # before
        "2026-04-11T00:00:00Z",            # the first instant of the 11th
        "2026-04-12T08:30:00+09:00",       # the 11th, 23:30 UTC
        "2026-04-12T23:59:59.999999Z",     # the last microsecond of the 12th
        "2026-04-12t23:59:60z",            # a leap second: the next day's first instant
        "2026-04-13T00:00:00Z"))           # after
    reader = LakeReader(config, SECRET)

    def ids(since: str | None, until: str | None) -> list[str]:
        return [e["event_id"] for e in reader.events(
            "p1", None, since=parse_bound("from", since, end=False),
            until=parse_bound("to", until, end=True)).events]

    assert ids("2026-04-11", "2026-04-12") == ["1-0.1", "1-0.2", "1-0.3"]
    assert ids("2026-04-11T00:00:00Z", "2026-04-12T23:00:00Z") == ["1-0.1", "1-0.2"]
    assert ids("2026-04-13", None) == ["1-0.4", "1-0.5"]
    assert ids(None, "2026-04-10T23:59:59.999Z") == []
    # the receipt (the 20th) plays no part
    assert ids("2026-04-20", None) == []
    reader.close()


def test_the_event_type_filter_and_rows_that_are_not_events(config: LakeConfig) -> None:
    write(config, simple("1-0", "uwb_location", "2026-04-12T12:00:00.000Z",
                         "2026-04-12T10:00:00Z"),
          simple("2-0", "pos_transaction", "2026-04-12T12:00:00.000Z",
                 "2026-04-12T10:00:01Z"),
          simple("3-0", "uwb_location", "2026-04-12T12:00:00.000Z", "2026-04-12T10:00:02Z",
                 project="p2"))
    # rows of the same table without events (another API's records) are not events
    plain = lake_entry("u/4-0", "p1", "uwb_location", 1, "t4", "2026-04-12T12:00:00.000Z",
                       payload(UWB, [orjson.dumps(uwb(4, "2026-04-12T10:00:03Z"))]))
    write(config, plain)
    reader = LakeReader(config, SECRET)

    def ids(types: list[str] | None, project: str = "p1") -> list[str]:
        return [e["event_id"] for e in reader.events(project, types).events]

    assert ids(None) == ["1-0.0", "2-0.0"]
    assert ids(["uwb_location"]) == ["1-0.0"]
    assert ids(["pos_transaction", "uwb_location", "pos_transaction"]) == ["1-0.0", "2-0.0"]
    assert ids(["zone_trigger"]) == [] and ids([]) == []
    assert ids(None, "p2") == ["3-0.0"] and ids(None, "p3") == []
    reader.close()


def test_a_cursor_is_bound_to_its_project_and_its_filter(config: LakeConfig) -> None:
    t = "2026-04-12T10:00:00Z"
    write(config, simple("1-0", "uwb_location", "2026-04-12T12:00:00.000Z", t, t, t),
          simple("2-0", "uwb_location", "2026-04-12T12:00:00.000Z", t, t, t, project="p2"))
    reader = LakeReader(config, SECRET)
    every = reader.events("p1", None, limit=1).next_cursor
    typed = reader.events("p1", ["uwb_location", "pos_transaction"], limit=1).next_cursor
    assert every is not None and typed is not None
    # the same filter in another order (or repeated) takes it
    assert reader.events("p1", ["pos_transaction", "uwb_location", "uwb_location"], limit=1,
                         cursor=typed).events[0]["event_id"] == "1-0.1"
    records_cursor = reader.page("p1", "uwb_location", limit=1).next_cursor
    tampered = every[:-2] + ("AA" if every[-2:] != "AA" else "BB")
    for project, types, cursor in [
        ("p2", None, every),                        # another project
        ("p1", ["uwb_location"], every),            # a filter where there was none
        ("p1", None, typed),                        # none where there was one
        ("p1", ["uwb_location"], typed),            # another filter
        ("p1", None, records_cursor),               # a records cursor
        ("p1", None, tampered), ("p1", None, "garbage"), ("p1", None, "x" * 5000),
    ]:
        with pytest.raises(ReadError) as err:
            reader.events(project, types, cursor=cursor)
        assert err.value.param == "cursor"
    with pytest.raises(ReadError):  # and an events cursor is no records cursor
        reader.page("p1", "uwb_location", cursor=every)
    other_key = LakeReader(config, b"another secret, 32 bytes long!!")
    with pytest.raises(ReadError):
        other_key.events("p1", None, cursor=every)
    other_key.close()
    for bad in (0, 1001):
        with pytest.raises(ReadError) as err:
            reader.events("p1", None, limit=bad)
        assert err.value.param == "limit"
    reader.close()


def test_an_empty_lake_and_a_table_older_than_the_event_columns(
    config: LakeConfig, tmp_path: Path,
) -> None:
    reader = LakeReader(config, SECRET)
    assert reader.events("p1", None) == EventPage([], None)  # no lake at all yet
    # a bad cursor is refused all the same
    with pytest.raises(ReadError):
        reader.events("p1", None, cursor="garbage")
    reader.close()
    # a table an older release made: no event columns; it has no events, and read fine
    writer = LakeWriter(config, lambda p, d, v: DEFS.get(d, SEED))
    writer.write(seed_entries(1, 2, dataset="old"))
    for column in ("__eventId", "__source", "__eventTime"):
        writer.con.execute(f'ALTER TABLE lake.p1.old DROP COLUMN "{column}"')
    writer.close()
    write(config, simple("1-0", "uwb_location", "2026-04-12T12:00:00.000Z",
                         "2026-04-12T10:00:00Z"))
    reader = LakeReader(config, SECRET)
    assert [e["event_type"] for e in reader.events("p1", None).events] == ["uwb_location"]
    assert reader.events("p1", ["old"]).events == []
    assert reader.events("nobody", None) == EventPage([], None)
    reader.close()


async def test_the_lake_worker_sets_aside_an_entry_whose_events_do_not_match_its_records(
    aredis: aioredis.Redis, sync_redis: redis.Redis, config: LakeConfig,
) -> None:
    await Registry(aredis, clock=utc_now).put("p1", "uwb_location", UWB)
    good = simple("1-0", "uwb_location", "2026-04-12T12:00:00.000Z",
                  "2026-04-12T10:00:00Z", "2026-04-12T10:00:01Z").queued
    one_short = msgspec.structs.replace(good, trace_id="short", events=encode_events(
        [QueuedEvent("only", None, "2026-04-12T10:00:00Z")]))
    not_events = {**good.to_fields(), "trace_id": "bad", "events": b'[{"id": 1}]'}
    stream = ""
    for fields in (good.to_fields(), one_short.to_fields(), not_events, good.to_fields()):
        stream = enqueue(sync_redis, fields, dataset="uwb_location")
    worker = LakeWorker(aredis, config, reclaim_idle_ms=0)
    try:
        await worker.drain()
    finally:
        worker.close()
    dead = {f[b"trace_id"]: f for _, f in sync_redis.xrange(keys.dead_letter_key(stream))}
    assert set(dead) == {b"short", b"bad"}
    assert b"holds 1 events for 2 records" in dead[b"short"][b"dead_detail"]
    assert b"events" in dead[b"bad"][b"dead_detail"]
    assert sync_redis.xlen(stream) == 0
    assert int(sync_redis.get(keys.queued_records_key(stream)) or 0) == 0
    reader = LakeReader(config, SECRET)
    events = reader.events("p1", None).events
    reader.close()
    # the good entry twice (two stream entries): each event time holds both
    assert [e["event_id"] for e in events] == ["1-0.0", "1-0.0", "1-0.1", "1-0.1"]


def test_a_queue_entry_with_events_reads_back_from_stream_fields() -> None:
    entry = simple("1-0", "uwb_location", "2026-04-12T12:00:00.000Z",
                   "2026-04-12T10:00:00Z").queued
    fields = {k.encode(): v if isinstance(v, bytes) else v.encode()
              for k, v in entry.to_fields().items()}
    assert QueueEntry.from_fields(fields) == entry

"""Dataset tables in a real DuckLake: typed columns, new definition versions (added fields,
changed types, colliding names), partitions by day of receipt, the event type, the event
(id, source, time) and the replay time of each row (also in a table an older release
created without their columns), and the quarantine table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import LakeReader
from strictgate.lake.tables import ensure_layout, load_layouts, plan_layout
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.queue_entry import QueuedEvent, encode_events
from tests.lake_support import SEED, lake_entry, payload, seed_entries, seed_record
from validator.definition import normalize

V2 = normalize({"fields": {
    "country": "string", "plan": "string",
    "amount": "string",                                   # number -> string
    "active": "boolean", "signup_at": "timestamp",
    "region": {"type": "string", "required": False},      # added
}})
V3 = normalize({"fields": {**V2["fields"], "amount__v2": "integer",  # takes a used name
                           "Plan": "string"}})            # differs from plan only in case
DEFS: dict[int, dict[str, Any]] = {1: SEED, 2: V2, 3: V3}


def _columns(writer: LakeWriter) -> dict[str, str]:
    rows = writer.con.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_catalog = 'lake' AND table_schema = 'p1' AND table_name = 'billing'"
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_columns_are_typed_from_the_definition(tmp_path: Path) -> None:
    writer = LakeWriter(LakeConfig.local(tmp_path), lambda p, d, v: SEED)
    writer.write(seed_entries(1, 3))
    assert _columns(writer) == {
        "__receivedAt": "TIMESTAMP WITH TIME ZONE", "__entryId": "VARCHAR",
        "__seq": "INTEGER", "__traceId": "VARCHAR", "__datasetVersion": "INTEGER",
        "__absent": "VARCHAR[]", "__eventType": "VARCHAR", "__eventId": "VARCHAR",
        "__source": "VARCHAR", "__eventTime": "TIMESTAMP WITH TIME ZONE",
        "__replayedAt": "TIMESTAMP WITH TIME ZONE",
        "timestamp": "TIMESTAMP WITH TIME ZONE",
        "timestamp__text": "VARCHAR", "context": "JSON", "country": "VARCHAR",
        "plan": "VARCHAR", "amount": "DOUBLE", "active": "BOOLEAN",
        "signup_at": "TIMESTAMP WITH TIME ZONE", "signup_at__text": "VARCHAR"}
    writer.close()


def test_new_versions_add_columns_and_every_version_stays_readable(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, lambda p, d, v: DEFS[v])
    v1 = seed_entries(1, 2)
    v2_records = [orjson.dumps({"timestamp": "2026-06-10T12:00:00Z", "context": {},
                                "country": "DE", "plan": "free", "amount": "12.50 EUR",
                                "active": True, "signup_at": "2026-06-01T00:00:00Z",
                                "region": "eu"})]
    v3_records = [orjson.dumps({"timestamp": "2026-06-10T13:00:00Z", "context": {},
                                "country": "FR", "plan": "pro", "Plan": "PRO",
                                "amount": "1", "amount__v2": 7, "active": False,
                                "signup_at": "2026-06-01T00:00:00Z"})]
    writer.write(v1)
    before = _columns(writer)
    writer.write([
        lake_entry("u/2-0", "p1", "billing", 2, "t2", "2026-06-10T12:00:00.000Z",
                   payload(V2, v2_records)),
        lake_entry("u/3-0", "p1", "billing", 3, "t3", "2026-06-10T13:00:00.000Z",
                   payload(V3, v3_records))])
    after = _columns(writer)
    added = {k: v for k, v in after.items() if k not in before}
    assert added == {"amount__v2": "VARCHAR", "region": "VARCHAR",
                     "amount__v2__v3": "BIGINT", "Plan__v3": "VARCHAR"}
    assert after["amount"] == "DOUBLE"  # the old column is kept as it was
    layouts = load_layouts(writer.con, "p1", "billing")
    assert {fc.field: fc.column for fc in layouts[3].fields}["amount"] == "amount__v2"
    writer.close()

    reader = LakeReader(config, b"s" * 32)
    records = reader.page("p1", "billing").records
    reader.close()
    assert [r["__datasetVersion"] for r in records] == [1, 1, 2, 3]
    assert records[0]["amount"] == 0.0 and "region" not in records[0]
    assert records[2]["amount"] == "12.50 EUR" and records[2]["region"] == "eu"
    assert records[3]["amount"] == "1" and records[3]["amount__v2"] == 7
    assert records[3]["Plan"] == "PRO" and records[3]["plan"] == "pro"
    assert "region" not in records[3]  # optional, absent


def test_ensure_layout_is_idempotent(tmp_path: Path) -> None:
    writer = LakeWriter(LakeConfig.local(tmp_path), lambda p, d, v: SEED)
    first = ensure_layout(writer.con, "p1", "billing", 1, SEED)
    columns = _columns(writer)
    assert ensure_layout(writer.con, "p1", "billing", 1, SEED) == first
    assert _columns(writer) == columns
    writer.close()


def test_a_field_keeps_its_column_when_only_constraints_change() -> None:
    v1 = normalize({"fields": {"n": {"type": "integer", "minimum": 0}}})
    v2 = normalize({"fields": {"n": {"type": "integer", "minimum": 5}}})
    first, added1 = plan_layout("p", "d", 1, v1, {}, [])
    second, added2 = plan_layout("p", "d", 2, v2, {1: first}, [n for n, _ in added1])
    assert added2 == [] and second.fields == first.fields


def test_partitions_by_day_of_receipt(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, lambda p, d, v: SEED)
    writer.write(seed_entries(1, 5, received_at="2026-06-10T23:59:59.999Z")
                 + seed_entries(1, 5, start=1, received_at="2026-06-11T00:00:00.000Z"))
    writer.close()
    table_dir = tmp_path / "lake" / "data" / "p1" / "billing"
    days = sorted(str(p.parent.relative_to(table_dir)) for p in table_dir.rglob("*.parquet"))
    assert days == ["year=2026/month=6/day=10", "year=2026/month=6/day=11"]


def _with_event_type(entries: list[LakeEntry], event_type: str) -> list[LakeEntry]:
    return [dataclasses.replace(e, queued=msgspec.structs.replace(e.queued,
                                                                  event_type=event_type))
            for e in entries]


def _read(config: LakeConfig, dataset: str = "billing") -> list[dict[str, Any]]:
    reader = LakeReader(config, b"s" * 32)
    try:
        return reader.page("p1", dataset).records
    finally:
        reader.close()


@pytest.mark.parametrize("definition", [SEED, V2], ids=["typed-read", "json-read"])
def test_the_event_type_is_stored_per_row_and_read_back_only_when_set(
    tmp_path: Path, definition: dict[str, Any],
) -> None:
    """Rows of an entry with an event type carry it (quotes, non-ASCII kept); rows of one
    without read back exactly as before: no ``__eventType`` key, not null. Both ways the
    INSERT reads records (a layout with an optional field reads JSON, see insert_sql)."""
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, lambda p, d, v: definition)
    # V2's amount is a string and its region optional (left out)
    changes = {} if definition is SEED else {"amount": "1"}
    records = payload(definition, [orjson.dumps({**seed_record(i), **changes})
                                   for i in range(2)])
    job = 'backfill "2026_05" — ñ'
    writer.write([
        *_with_event_type([lake_entry("u/1-0", "p1", "billing", 1, "t1",
                                      "2026-06-10T11:00:00.000Z", records)], job),
        lake_entry("u/2-0", "p1", "billing", 1, "t2", "2026-06-10T11:00:01.000Z", records)])
    stored = writer.con.execute(
        'SELECT "__entryId", "__eventType" FROM lake.p1.billing ORDER BY ALL').fetchall()
    writer.close()
    assert stored == [("u/1-0", job), ("u/1-0", job), ("u/2-0", None), ("u/2-0", None)]
    read = _read(config)
    assert [r.get("__eventType", "absent") for r in read] == [job, job, "absent", "absent"]
    assert list(read[0])[-5:] == ["__traceId", "__datasetVersion", "__receivedAt",
                                  "__entryId", "__eventType"]


@pytest.mark.parametrize("version", [1, 2], ids=["known-version", "new-version"])
def test_a_table_created_without_the_event_type_column_gets_it_when_first_written(
    tmp_path: Path, version: int,
) -> None:
    """A table as a release before ``__eventType`` left it (column missing, rows written):
    the first writer of this release adds the column in place, whether the version it
    writes is known to the table or new; old rows read back as they did."""
    config = LakeConfig.local(tmp_path)
    old = LakeWriter(config, lambda p, d, v: SEED)
    old.write(seed_entries(1, 2))
    old.con.execute('ALTER TABLE lake.p1.billing DROP COLUMN "__eventType"')
    old.close()
    before = _read(config)
    assert "__eventType" not in before[0]

    writer = LakeWriter(config, lambda p, d, v: DEFS[v])
    assert "__eventType" not in _columns(writer)
    fresh = [orjson.dumps(seed_record(9))] if version == 1 else [orjson.dumps(
        {**seed_record(9), "amount": "12.50 EUR", "region": "eu"})]
    writer.write(_with_event_type([lake_entry(
        "u/9-0", "p1", "billing", version, "t9", "2026-06-10T12:00:00.000Z",
        payload(DEFS[version], fresh))], "ecommerce_sync"))
    assert _columns(writer)["__eventType"] == "VARCHAR"
    writer.close()
    after = _read(config)
    assert after[:2] == before  # the old rows, unchanged
    assert after[2]["__eventType"] == "ecommerce_sync"
    assert after[2]["__datasetVersion"] == version


def _with_events(entry: LakeEntry, *events: tuple[str, str | None, str]) -> LakeEntry:
    value = encode_events([QueuedEvent(*e) for e in events])
    return dataclasses.replace(entry, queued=msgspec.structs.replace(entry.queued,
                                                                     events=value))


@pytest.mark.parametrize("version", [1, 2], ids=["known-version", "new-version"])
def test_a_table_created_without_the_event_columns_gets_them_when_first_written(
    tmp_path: Path, version: int,
) -> None:
    """A table as a release before ``__eventId``/``__source``/``__eventTime`` left it:
    the first writer of this release adds them in place, whether the version it writes is
    known to the table or new; old rows read back as they did, their events NULL."""
    config = LakeConfig.local(tmp_path)
    old = LakeWriter(config, lambda p, d, v: SEED)
    old.write(seed_entries(1, 2))
    for column in ("__eventId", "__source", "__eventTime"):
        old.con.execute(f'ALTER TABLE lake.p1.billing DROP COLUMN "{column}"')
    old.close()
    before = _read(config)

    writer = LakeWriter(config, lambda p, d, v: DEFS[v])
    assert "__eventId" not in _columns(writer)
    fresh = [orjson.dumps(seed_record(9))] if version == 1 else [orjson.dumps(
        {**seed_record(9), "amount": "12.50 EUR", "region": "eu"})]
    writer.write([_with_events(lake_entry(
        "u/9-0", "p1", "billing", version, "t9", "2026-06-10T12:00:00.000Z",
        payload(DEFS[version], fresh)), ("ev9", "pos", "2026-06-10T11:59:00Z"))])
    columns = _columns(writer)
    assert {k: columns[k] for k in ("__eventId", "__source", "__eventTime")} == {
        "__eventId": "VARCHAR", "__source": "VARCHAR",
        "__eventTime": "TIMESTAMP WITH TIME ZONE"}
    stored = writer.con.execute(
        'SELECT "__entryId", "__eventId", "__source", "__eventTime" FROM lake.p1.billing'
        " ORDER BY ALL").fetchall()
    writer.close()
    assert [r[:3] for r in stored] == [(before[0]["__entryId"], None, None)] * 2 + [
        ("u/9-0", "ev9", "pos")]
    assert stored[2][3] == datetime(2026, 6, 10, 11, 59, tzinfo=UTC)
    after = _read(config)
    assert after[:2] == before  # the old rows, unchanged
    assert (after[2]["__eventId"], after[2]["__eventTime"]) == ("ev9", "2026-06-10T11:59:00.000Z")


def test_the_quarantine_table_is_created_with_the_bookkeeping_tables(tmp_path: Path) -> None:
    writer = LakeWriter(LakeConfig.local(tmp_path), lambda p, d, v: SEED)
    writer.write(seed_entries(1, 1))
    rows = writer.con.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_catalog = 'lake' AND table_schema = '__strictgate'"
        " AND table_name = 'quarantine' ORDER BY ordinal_position").fetchall()
    writer.close()
    assert rows == [
        ("project", "VARCHAR"), ("dataset", "VARCHAR"), ("entry_id", "VARCHAR"),
        ("seq", "INTEGER"), ("request_index", "INTEGER"), ("record", "VARCHAR"),
        ("errors", "JSON"), ("error_codes", "VARCHAR[]"), ("dataset_version", "INTEGER"),
        ("trace_id", "VARCHAR"), ("received_at", "TIMESTAMP WITH TIME ZONE"),
        ("user_id", "VARCHAR"), ("event_type", "VARCHAR"), ("event", "JSON"),
        ("checked_at", "TIMESTAMP WITH TIME ZONE")]


def test_a_table_created_without_the_replay_time_gets_it_and_replays_read_it_back(
    tmp_path: Path,
) -> None:
    """A table as a release before ``__replayedAt`` left it: the first writer of this
    release adds the column; only a replayed record reads back with ``__replayedAt``."""
    config = LakeConfig.local(tmp_path)
    old = LakeWriter(config, lambda p, d, v: SEED)
    old.write(seed_entries(1, 1))
    old.con.execute('ALTER TABLE lake.p1.billing DROP COLUMN "__replayedAt"')
    old.close()
    before = _read(config)
    writer = LakeWriter(config, lambda p, d, v: SEED)
    [entry] = seed_entries(1, 1, start=5)
    replayed = dataclasses.replace(entry, queued=msgspec.structs.replace(
        entry.queued, replayed_at="2026-07-01T09:30:00.250Z"))
    writer.write([replayed])
    assert _columns(writer)["__replayedAt"] == "TIMESTAMP WITH TIME ZONE"
    writer.close()
    after = _read(config)
    assert after[:1] == before and "__replayedAt" not in after[0]
    assert after[1]["__replayedAt"] == "2026-07-01T09:30:00.250Z"

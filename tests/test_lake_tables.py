"""Dataset tables in a real DuckLake: typed columns, new definition versions (added fields,
changed types, colliding names), partitions by day of receipt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import LakeReader
from strictgate.lake.tables import ensure_layout, load_layouts, plan_layout
from strictgate.lake.writer import LakeWriter
from tests.lake_support import SEED, lake_entry, payload, seed_entries
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
        "__absent": "VARCHAR[]", "timestamp": "TIMESTAMP WITH TIME ZONE",
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

"""Every example definition in ``schemas/examples`` compiles, registers, and accepts a record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from registry.evolution import breaking_changes
from validator import compile_dataset

EXAMPLES = Path(__file__).resolve().parents[1] / "schemas" / "examples"
ENVELOPE = {"timestamp": "2026-06-10T10:00:00Z", "context": {}}
GOOD_RECORDS: dict[str, dict[str, Any]] = {
    "seed.json": {"country": "RO", "plan": "pro", "amount": 42.5, "active": True,
                  "signup_at": "2026-06-01T08:00:00Z"},
    "orders.json": {"order_id": "ord_1", "status": "paid", "total_cents": 1250,
                    "currency": "EUR", "customer": {"id": "c1", "email": "a@b.io"},
                    "items": [{"sku": "x", "qty": 2, "unit_cents": 625}],
                    "placed_at": "2026-06-10T10:00:00Z"},
}


def test_every_example_has_a_record_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(GOOD_RECORDS)


@pytest.mark.parametrize("name", sorted(GOOD_RECORDS))
def test_example_compiles_and_accepts_its_record(name: str) -> None:
    definition = json.loads((EXAMPLES / name).read_text())
    compiled = compile_dataset(definition)
    assert compiled.validate({**ENVELOPE, **GOOD_RECORDS[name]}) == []
    assert breaking_changes(definition, definition) == []
    assert breaking_changes(definition, compiled.definition) == []


def test_orders_evolution_report_reads_well() -> None:
    v1 = json.loads((EXAMPLES / "orders.json").read_text())
    v2 = json.loads((EXAMPLES / "orders.json").read_text())
    v2["fields"]["status"]["enum"].remove("refunded")
    v2["fields"]["items"]["items"]["properties"]["qty"]["maximum"] = 100
    v2["fields"]["customer"]["required"].append("email")
    del v2["fields"]["coupon"]
    assert breaking_changes(v1, v2) == [
        {"field": "status", "change": "enum_value_removed",
         "message": 'Field status no longer accepts "refunded"'},
        {"field": "coupon", "change": "field_removed",
         "message": "Field coupon was removed: records that carry it are now rejected"},
        {"field": "customer.email", "change": "field_became_required",
         "message": "Field customer.email became required: records without it are now rejected"},
        {"field": "items[].qty", "change": "range_tightened",
         "message": "Field items[].qty must now be <= 100"},
    ]

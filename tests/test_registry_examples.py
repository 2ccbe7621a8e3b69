"""Every example definition in ``schemas/examples`` compiles, registers, and accepts a record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import schemas
from strictgate.registry.evolution import breaking_changes
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


def test_the_package_serves_the_checkouts_schemas() -> None:
    """What ``validator`` reads is the ``schemas`` package's data (importlib.resources):
    the very files of the top-level ``schemas/`` folder."""
    for name in GOOD_RECORDS:
        assert schemas.example(name.removesuffix(".json")) == json.loads(
            (EXAMPLES / name).read_text())
    assert schemas.read_text(schemas.META_SCHEMA) == (
        EXAMPLES.parent / schemas.META_SCHEMA).read_text()


@pytest.mark.slow
def test_a_built_wheel_compiles_the_examples_on_its_own(tmp_path: Path) -> None:
    """A non-editable install has the meta-schema and the examples: the wheel, unpacked
    and first on the path, compiles both examples from outside the checkout."""
    # A copy of the sources: setuptools reuses a checkout's build/ left by an earlier build
    # (a stale copy there could hide a file missing from the package data).
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES.parents[1], source, ignore=shutil.ignore_patterns(
        ".*", "var", "build", "*.egg-info", "__pycache__", "tests", "fuzz", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("strictgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"schemas/definition.schema.json", "schemas/examples/seed.json",
            "schemas/examples/orders.json"} <= set(names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    program = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import schemas, validator\n"
        "from validator import compile_dataset\n"
        "assert validator.__file__.startswith(sys.argv[1]), validator.__file__\n"
        "assert schemas.__file__.startswith(sys.argv[1]), schemas.__file__\n"
        "for name in ('seed', 'orders'):\n"
        "    compile_dataset(schemas.example(name))\n"
        "print('ok')\n")
    # -I: no checkout on the path (cwd, PYTHONPATH); run from elsewhere
    out = subprocess.run([sys.executable, "-I", "-c", program, str(tmp_path / "site")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr

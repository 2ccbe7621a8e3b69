"""The hot path (``validate_batch`` from bytes, with its typed all-valid fast path) agrees
record by record with ``validate`` and with the oracle: on the seed's dataset and on flat
definitions (what a typed decoder checks by itself), with timestamps near every edge of their
shape, and with one edge value hidden in an otherwise valid batch."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz.oracle import ORACLE_FORMATS, oracle
from fuzz.strategies import (
    Dataset,
    ShortSpec,
    TimestampSpec,
    datasets,
    shaped_timestamps,
    valid_ish_records,
    valid_records,
)
from validator import compile_dataset

SEED_PATH = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "seed.json"
SEED = Dataset((("country", ShortSpec("string"), False), ("plan", ShortSpec("string"), False),
                ("amount", ShortSpec("number"), False), ("active", ShortSpec("boolean"), False),
                ("signup_at", TimestampSpec(short=True), False)))


def test_seed_dataset_is_the_example_file() -> None:
    example = json.loads(SEED_PATH.read_text(encoding="utf-8"))
    assert example["fields"] == SEED.definition()["fields"]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_hot_path_agrees(data: st.DataObject) -> None:
    ds = data.draw(st.just(SEED) | datasets(flat=True), label="dataset")
    definition = ds.definition()
    note(f"definition: {json.dumps(definition)}")
    v = compile_dataset(definition)
    check = oracle(v.json_schema)
    records = data.draw(st.lists(valid_ish_records(ds), min_size=1, max_size=8), label="records")
    batch = v.validate_batch(json.dumps(records).encode())
    got = [(e.index, e.code, e.field, e.message) for e in batch.errors]
    want = []
    for i, record in enumerate(records):
        errors = v.validate(record)
        assert (errors == []) == check.is_valid(record), f"record {i}: {errors}"
        want += [(i, e.code, e.field, e.message) for e in errors]
    assert got == want


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_one_edge_value_in_a_valid_batch(data: st.DataObject) -> None:
    """A valid batch with one value at an edge: the fast path must not wave it through."""
    ds = data.draw(st.just(SEED) | datasets(flat=True) | datasets(formats=ORACLE_FORMATS),
                   label="dataset")
    definition = ds.definition()
    note(f"definition: {json.dumps(definition)}")
    v = compile_dataset(definition)
    check = oracle(v.json_schema)
    records = data.draw(st.lists(valid_records(ds), min_size=1, max_size=5), label="records")
    index = data.draw(st.integers(0, len(records) - 1), label="index")
    places = [(name, spec.near()) for name, spec, _ in ds.fields]
    places.append(("timestamp", shaped_timestamps()))
    name, values = data.draw(st.sampled_from(places), label="field")
    records[index][name] = data.draw(values, label="value")
    note(f"record: {json.dumps(records[index])}")
    errors = v.validate(records[index])
    assert (errors == []) == check.is_valid(records[index]), errors
    batch = v.validate_batch(json.dumps(records).encode())
    assert [(e.index, e.code, e.field, e.message) for e in batch.errors] == [
        (index, e.code, e.field, e.message) for e in errors]

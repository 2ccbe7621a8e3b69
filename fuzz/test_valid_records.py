"""Records drawn from a random definition are valid, for the validator and for the oracle."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz.oracle import oracle
from fuzz.strategies import datasets, valid_records
from validator import compile_dataset


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_generated_records_are_valid(data: st.DataObject) -> None:
    ds = data.draw(datasets(), label="dataset")
    definition = ds.definition()
    note(f"definition: {json.dumps(definition)}")
    v = compile_dataset(definition)
    check = oracle(v.json_schema)
    records = data.draw(st.lists(valid_records(ds), min_size=1, max_size=4), label="records")
    for record in records:
        assert v.validate(record) == [], f"record: {json.dumps(record)}"
        problems = [e.message for e in check.iter_errors(record)]
        assert not problems, f"oracle: {problems}\nrecord: {json.dumps(record)}"
    batch = v.validate_batch(json.dumps(records).encode())
    assert batch.ok and batch.errors == [] and batch.count == len(records)

"""One fault in a valid record gives exactly the expected first error: code, field, message."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz.strategies import Mutation, datasets, mutations
from validator import compile_dataset

# The validator's stable codes (validator/errors.py) per fault kind.
CODES = {
    "missing": "missing_field",
    "extra": "extra_field",
    "range": "out_of_range",
    "huge": "integer_too_large",
    "timestamp_field": "invalid_timestamp",
    "envelope_timestamp": "invalid_timestamp",
    "context": "invalid_context",
    "type:string": "invalid_string",
    "type:number": "invalid_number",
    "type:integer": "invalid_integer",
    "type:boolean": "invalid_boolean",
    "type:timestamp": "invalid_timestamp",
}


def expected_code(m: Mutation) -> str:
    if m.kind == "type":
        return CODES["type:" + m.message.split()[1]]
    return CODES[m.kind]


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_single_mutation_gives_exactly_its_error(data: st.DataObject) -> None:
    ds = data.draw(datasets(), label="dataset")
    definition = ds.definition()
    note(f"definition: {json.dumps(definition)}")
    v = compile_dataset(definition)
    m = data.draw(mutations(ds), label="mutation")
    note(f"record: {json.dumps(m.record)}")
    errors = v.validate(m.record)
    assert errors, f"{m.kind} fault not detected"
    first = errors[0]
    assert (first.code, first.field, first.message) == (expected_code(m), m.field, m.message)
    # The hot path, from bytes, says the same.
    batch = v.validate_batch(json.dumps([m.record]).encode())
    assert not batch.ok
    assert batch.errors[0] == (0, first.code, first.field, first.message)

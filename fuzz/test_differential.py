"""Differential: the compiled validator and the jsonschema oracle agree on every verdict, and
``validate_batch`` agrees record by record with ``validate``.

Definitions use only the formats the oracle checks exactly (see :mod:`fuzz.oracle`).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz.oracle import ORACLE_FORMATS, oracle
from fuzz.strategies import datasets, valid_ish_records
from validator import compile_dataset

MAX_ERRORS = 20
MAX_QUOTED = 200
MAX_MESSAGE = MAX_QUOTED + 1 + 60  # the quoted part ("…" marks a cut) after the wording
STYLES: list[dict[str, Any]] = [
    {}, {"ensure_ascii": False}, {"separators": (",", ":")}, {"indent": 2},
    {"ensure_ascii": False, "indent": "\t", "separators": (" ,", " : ")},
]


def _triples(errors: list[Any]) -> list[tuple[str, str, str]]:
    return [(e.code, e.field, e.message) for e in errors]


@settings(max_examples=180, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_validator_agrees_with_oracle(data: st.DataObject) -> None:
    ds = data.draw(datasets(formats=ORACLE_FORMATS), label="dataset")
    definition = ds.definition()
    note(f"definition: {json.dumps(definition)}")
    v = compile_dataset(definition)
    check = oracle(v.json_schema)
    records = data.draw(st.lists(valid_ish_records(ds), min_size=1, max_size=6),
                        label="records")
    for record in records:
        errors = v.validate(record)
        # Capped per record; messages never quote more than 200 characters of input.
        assert len(errors) <= MAX_ERRORS
        assert all(len(e.field) <= MAX_QUOTED + 1 and len(e.message) <= MAX_MESSAGE
                   for e in errors), errors
        expected = check.is_valid(record)
        assert (errors == []) == expected, (
            f"record: {json.dumps(record)}\nvalidator: {_triples(errors)}\n"
            f"oracle: {[e.message for e in check.iter_errors(record)]}")

    # The hot path reads bytes: vary how they are written (escapes, whitespace, newlines).
    style = data.draw(st.sampled_from(STYLES), label="json style")
    batch = v.validate_batch(json.dumps(records, **style).encode())
    singles = [v.validate(r) for r in records]
    assert batch.count == len(records)
    assert batch.ok == all(e == [] for e in singles)
    got = [(e.index, e.code, e.field, e.message) for e in batch.errors]
    want = [(i, *t) for i, errs in enumerate(singles) for t in _triples(errs)]
    assert got == want[: len(got)] and (len(got) == len(want) or batch.error_count > len(got))
    assert batch.error_count == len(want)

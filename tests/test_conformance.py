"""JSON-Schema-Test-Suite conformance of the dataset definition language.

Every case of the suite (draft 2020-12) for each keyword and format the language supports runs
as a one-field dataset, through ``validate`` and through ``validate_batch``; the verdict must be
the suite's. How cases are adapted or skipped (each skip carries its computed reason) is
documented in :mod:`tests.conformance_summary`. The timestamp cases of ``date-time.json`` run
three times: as ``format: date-time``, as a ``timestamp`` field and as the envelope
``timestamp``. Where the jsonschema oracle is exact, ``v.json_schema`` must give the suite's
verdict too. The last test prints ran / passed / skipped per keyword.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from fuzz.oracle import oracle
from tests.conformance_summary import (
    SUITE_ENV,
    Case,
    Stats,
    load_cases,
    plainly_in_language,
    suite_dir,
)
from validator import DefinitionError, compile_dataset

CASES = load_cases()
STATS = Stats()
# Guards against a run that silently exercises (almost) nothing.
MIN_CASES = 900
MIN_RAN = 800
# About 80% of what runs today, per keyword: a regression that skips a keyword wholesale fails.
MIN_RAN_PER_KEYWORD = {
    "type": 64, "enum": 35, "const": 43, "minimum": 8, "maximum": 6, "exclusiveMinimum": 3,
    "exclusiveMaximum": 3, "multipleOf": 8, "minLength": 5, "maxLength": 5, "pattern": 7,
    "items": 6, "minItems": 4, "maxItems": 4, "uniqueItems": 34, "properties": 12,
    "required": 14, "format": 38, "format:date-time": 26, "format:date": 64,
    "format:time": 37, "format:email": 21, "format:uuid": 22, "format:ipv4": 32,
    "format:ipv6": 33, "format:uri": 36, "timestamp field": 21, "envelope timestamp": 21,
    "pattern:ecmascript": 36, "pattern:non-bmp": 5,
}


@cache
def _compiled(definition_json: str) -> Any:
    return compile_dataset(json.loads(definition_json))


def _oracle_is_exact(keyword: str) -> bool:
    """jsonschema's own email/uuid/ip/date/uri checks are laxer than the suite, and its
    patterns are Python's, not ECMA 262's; the oracle's date-time and time checks are the
    suite's (fuzz/test_oracle.py)."""
    if keyword.startswith("pattern:"):
        return False
    return not keyword.startswith("format:") or keyword in ("format:date-time", "format:time")


def _describe(case: Case) -> str:
    return (f"{case.id}\n  {case.description}\n  suite schema: {json.dumps(case.schema)}\n"
            f"  definition: {json.dumps(case.definition)}\n  record: {json.dumps(case.record)}\n"
            f"  expected valid={case.valid}")


def _params() -> list[Any]:
    if not CASES:
        return [pytest.param(None, id="suite-missing")]
    return [pytest.param(c, id=c.id) for c in CASES]


def test_suite_is_present() -> None:
    assert suite_dir() is not None, (
        "JSON-Schema-Test-Suite not found: expected ../shared/conformance/JSON-Schema-Test-Suite "
        f"next to the repo, /work/shared/conformance, or ${SUITE_ENV}")
    assert len(CASES) >= MIN_CASES, f"only {len(CASES)} suite cases loaded"


@pytest.mark.parametrize("case", _params())
def test_suite_case(case: Case | None) -> None:
    assert case is not None, "JSON-Schema-Test-Suite not found (see test_suite_is_present)"
    if case.skip:
        STATS.add(case.keyword, "skipped")
        pytest.skip(case.skip)
    assert case.definition is not None and case.record is not None
    try:
        v = _compiled(json.dumps(case.definition, sort_keys=True))
    except DefinitionError as exc:
        problems = "; ".join(f"{ptr}: {msg}" for ptr, msg in exc.problems)
        f = case.definition["fields"]["f"]
        if isinstance(f, dict) and not plainly_in_language(f):
            STATS.add(case.keyword, "skipped")
            pytest.skip(f"compile_dataset rejects the adapted field (outside the language): "
                        f"{problems}")
        STATS.add(case.keyword, "ran")
        pytest.fail(f"compile_dataset rejected a field inside the language: {problems}\n"
                    f"{_describe(case)}")
    except Exception as exc:
        STATS.add(case.keyword, "ran")
        pytest.fail(f"compile_dataset raised {exc!r}\n{_describe(case)}")
    STATS.add(case.keyword, "ran")

    errors = v.validate(case.record)
    if (errors == []) != case.valid:
        pytest.fail(f"validate gave {errors!r}\n{_describe(case)}", pytrace=False)
    if errors:
        first = errors[0]
        field = case.expect_field
        assert first.field == field or first.field.startswith((f"{field}.", f"{field}[")), (
            f"first error {first!r} does not name {field!r}\n{_describe(case)}")
        if case.expect_message is not None:
            assert first.message == case.expect_message, f"{first!r}\n{_describe(case)}"

    if _oracle_is_exact(case.keyword):
        # v.json_schema (the public schema of a record) gives the suite's verdict too.
        assert oracle(v.json_schema).is_valid(case.record) == case.valid, (
            f"v.json_schema disagrees: {json.dumps(v.json_schema)}\n{_describe(case)}")

    body = json.dumps([case.record]).encode()
    batch = v.validate_batch(body)
    assert batch.ok == case.valid, f"validate_batch gave {batch!r}\n{_describe(case)}"
    assert [(e.index, e.code, e.field, e.message) for e in batch.errors] == [
        (0, e.code, e.field, e.message) for e in errors
    ], f"validate_batch and validate disagree\n{_describe(case)}"
    STATS.add(case.keyword, "passed")


def test_zz_conformance_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the per-keyword counts; when the whole module ran, insist enough cases ran."""
    with capsys.disabled():
        print(f"\n\nJSON-Schema-Test-Suite conformance (draft 2020-12, {len(CASES)} cases):")
        print(STATS.table())
    seen = sum(c["ran"] + c["skipped"] for c in STATS.counts.values())
    if seen < len(CASES):
        pytest.skip(f"only {seen} of {len(CASES)} cases were selected; minimums not checked")
    ran = {k: c["ran"] for k, c in STATS.counts.items()}
    assert sum(ran.values()) >= MIN_RAN, f"only {sum(ran.values())} suite cases ran"
    short = {k: (ran.get(k, 0), n) for k, n in MIN_RAN_PER_KEYWORD.items() if ran.get(k, 0) < n}
    assert not short, f"keywords with too few cases run (ran, minimum): {short}"

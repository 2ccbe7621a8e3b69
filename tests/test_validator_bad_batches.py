"""Bodies where most records fail: the scanner's exact descriptions of invalid records, the
counts past the error cap, and ``validate_batch(..., all_errors=True)`` with
``failures()`` and ``valid_payload()`` (what a quarantine policy needs)."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from validator import BatchResult, RecordError, compile_dataset, compiled
from validator.checker import MAX_ERRORS_PER_RECORD, MAX_STRING
from validator.compiled import MAX_BATCH_ERRORS, SCANNER_ENABLED, CompiledDataset, RecordFailure

ROOT = Path(__file__).resolve().parent.parent
SEED_DEF = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
ORDERS_DEF = json.loads((ROOT / "schemas" / "examples" / "orders.json").read_text())
REC: dict[str, Any] = {
    "timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
    "country": "RO", "plan": "pro", "amount": 20, "active": True,
    "signup_at": "2026-06-01T08:00:00Z"}
EVENT_DEF = {"envelope": "event", "fields": {
    "service": "string", "n": {"type": "integer"}, "ratio": {"type": ["number", "null"]},
    "at": {"type": "string", "format": "date-time", "required": False}}}
EVENT: dict[str, Any] = {"service": "api", "n": 3, "ratio": None}
needs_scanner = pytest.mark.skipif(not SCANNER_ENABLED,
                                   reason="the scanner is disabled (STRICTGATE_SCANNER=0)")


@pytest.fixture
def describe_every_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner's descriptions used however few records they describe."""
    monkeypatch.setattr(compiled, "MIN_DESCRIBED", 0)


def with_(rec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**rec, **changes}


def without(rec: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: x for k, x in rec.items() if k not in names}


def dup(record: dict[str, Any], key: str, first: Any) -> bytes:
    """``record`` written with ``key`` twice: ``first``, then its value."""
    text = orjson.dumps(record)
    return text.replace(f'"{key}":'.encode(), f'"{key}":'.encode() + orjson.dumps(first)
                        + f',"{key}":'.encode(), 1)


def array(*parts: bytes) -> bytes:
    return b"[" + b",".join(parts) + b"]"


def paths(definition: dict[str, Any]) -> dict[str, CompiledDataset]:
    """The definition compiled three times: with the scanner, without it (msgspec and
    precise paths) and with the precise path alone."""
    out = {}
    for name in ("scanner", "fast", "precise"):
        v = compile_dataset(definition)
        if name != "scanner":
            v._scanner = None
        if name == "precise":
            v._fast = None
        out[name] = v
    return out


def summary(result: BatchResult) -> tuple[Any, ...]:
    return (result.count, result.errors, result.error_count, result.failed_records,
            result.error_codes, result.complete)


def all_paths(definition: dict[str, Any], body: bytes, all_errors: bool = False,
              ) -> BatchResult:
    """The one result every path gives on ``body`` (and the same failures and valid
    payload in ``all_errors`` mode)."""
    results = {name: v.validate_batch(body, all_errors=all_errors)
               for name, v in paths(definition).items()}
    got = {name: summary(r) for name, r in results.items()}
    assert got["scanner"] == got["fast"] == got["precise"], got
    if all_errors:
        splits = {name: (r.failures(), r.valid_payload()) for name, r in results.items()}
        assert splits["scanner"] == splits["fast"] == splits["precise"]
    return results["scanner"]


def checker_calls(v: CompiledDataset) -> list[Any]:
    """The records ``v``'s precise checker is asked about from now on."""
    calls: list[Any] = []
    inner = v._check

    def spy(record: Any, valid_times: Any = ()) -> Any:
        calls.append(record)
        return inner(record, valid_times)
    v._check = spy
    return calls


# A producer's bad release: every kind of error the seed's definition has, and records
# with several at once.
BAD_RELEASE: list[bytes] = [json.dumps(r, ensure_ascii=False).encode() for r in [
    without(REC, "amount"), with_(REC, extra="x"), with_(REC, country=7),
    with_(REC, amount="12.5"), with_(REC, active=1), with_(REC, active=None),
    with_(REC, signup_at="2026-06-10T10:00:00+0200"), with_(REC, signup_at="yesterday"),
    with_(REC, signup_at=20260610), with_(REC, timestamp="2026-02-30T10:00:00Z"),
    with_(REC, timestamp="2026-06-10 10:00:00Z"), without(REC, "timestamp"),
    with_(REC, timestamp=None), with_(REC, context=[]), with_(REC, context="svc"),
    with_(REC, context=None), without(REC, "context"), with_(REC, amount=2**63),
    with_(REC, amount=-(2**63) - 1), with_(REC, amount=10**30),
    {**without(REC, "amount"), "amount_cents": 2000},
    with_(REC, country=None, active="true", amount=[1]), {}, {"x": 1},
    with_(REC, **{"ünïcode": 1, "k" * 300: 2, "": 3}),
    # Valid, but the scanner doubts them (19 digits): described as having no error.
    with_(REC, amount=-(2**63)), with_(REC, amount=2**63 - 1),
]] + [
    dup(REC, "plan", "x"), dup(REC, "amount", "not a number"), dup(REC, "context", []),
    dup(with_(REC, country=1), "country", "RO"), dup(REC, "timestamp", "x").replace(
        b'"plan"', b'"plan":1,"plan"', 1),
    b"[]", b"7", b'"a record"', b"null", b'{"timestamp": "2026-06-10T11:00:00Z",\n "context"'
    b': {},\n "country": 1}',
]


@needs_scanner
@pytest.mark.usefixtures("describe_every_body")
def test_every_kind_of_a_bad_release_is_described_without_the_checker() -> None:
    """Each kind, alone and all in one body: the same result on every path, and with the
    scanner neither parsed nor checked (the checker is never asked)."""
    v = paths(SEED_DEF)["scanner"]
    calls = checker_calls(v)
    body = array(*BAD_RELEASE, orjson.dumps(REC))
    scan = v._scanner.scan(body, 1000)  # type: ignore[union-attr]
    assert scan is not None and scan.inexact == []
    assert scan.exact == list(range(len(BAD_RELEASE)))
    for all_errors in (False, True):
        result = all_paths(SEED_DEF, body, all_errors)
        assert summary(v.validate_batch(body, all_errors=all_errors)) == summary(result)
        for raw in BAD_RELEASE:
            all_paths(SEED_DEF, array(raw), all_errors)
    assert calls == []
    assert result.failed_records == len(BAD_RELEASE) - 2
    assert {e.code for e in result.errors} >= {
        "missing_field", "extra_field", "invalid_string", "invalid_number", "invalid_boolean",
        "invalid_timestamp", "invalid_context", "integer_too_large", "duplicate_field",
        "invalid_record"}


@needs_scanner
def test_what_the_scanner_cannot_tell_goes_to_the_checker() -> None:
    """A leap second, an escaped key, a context to walk, a float that may overflow, a
    string longer than the limit in bytes: the checker decides, the verdict is the same."""
    unsure = [
        with_(REC, signup_at="2016-12-31T23:59:60Z"), with_(REC, signup_at="2016-12-31T12:59:60Z"),
        with_(REC, context={"deep": {"n": "x" * (MAX_STRING + 1)}}),
        with_(REC, country="\u00e9" * MAX_STRING),  # too long in bytes, not in characters
    ]
    text = orjson.dumps(REC)
    raws = [orjson.dumps(r) for r in unsure] + [
        text.replace(b'"plan"', b'"pl\\u0061n"'),
        text.replace(b'"plan"', b'"pl\\u0061n":1,"plan"'),
        text.replace(b'"source"', b'"a":1,"a":2,"source"'),
        text.replace(b'"amount":20', b'"amount":1e999'),
        text.replace(b'"amount":20', b'"amount":' + b"9" * 400),
    ]
    v = paths(SEED_DEF)["scanner"]
    body = array(*raws)
    scan = v._scanner.scan(body, 1000)  # type: ignore[union-attr]
    assert scan is not None and scan.inexact == list(range(len(raws)))
    calls = checker_calls(v)
    v.validate_batch(body)
    assert len(calls) == len(raws)
    for all_errors in (False, True):
        all_paths(SEED_DEF, body, all_errors)


@needs_scanner
@pytest.mark.usefixtures("describe_every_body")
def test_event_and_integer_fields_are_described_too() -> None:
    """Another envelope (no context, an optional timestamp first) and integer and
    format fields, whose messages are compile_field's."""
    v = paths(EVENT_DEF)["scanner"]
    calls = checker_calls(v)
    body = array(*(json.dumps(r).encode() for r in [
        EVENT, with_(EVENT, n="3"), with_(EVENT, n=2**64), with_(EVENT, timestamp="x"),
        with_(EVENT, at="2026-13-01T00:00:00Z"), with_(EVENT, at=5), with_(EVENT, id="x"),
        without(EVENT, "service"), with_(EVENT, ratio="1"), with_(EVENT, context={})]))
    result = all_paths(EVENT_DEF, body)
    assert summary(v.validate_batch(body)) == summary(result)
    assert calls == [] and result.failed_records == 9
    # An integer written as a float may be integral: the checker decides.
    floats = array(orjson.dumps(with_(EVENT, n=1.0)), orjson.dumps(with_(EVENT, n=1.5)))
    assert summary(v.validate_batch(floats)) == summary(all_paths(EVENT_DEF, floats))
    assert len(calls) == 2


@needs_scanner
def test_few_described_records_are_checked_instead() -> None:
    """Below MIN_DESCRIBED described records a body's doubtful records go to the checker
    (cheaper than the numpy calls), from MIN_DESCRIBED on they do not: same result."""
    v = compile_dataset(SEED_DEF)
    calls = checker_calls(v)
    bad = orjson.dumps(with_(REC, amount="1"))
    few = array(*[bad] * (compiled.MIN_DESCRIBED - 1))
    enough = array(*[bad] * compiled.MIN_DESCRIBED)
    assert summary(v.validate_batch(few)) == summary(all_paths(SEED_DEF, few))
    assert len(calls) == compiled.MIN_DESCRIBED - 1
    assert summary(v.validate_batch(enough)) == summary(all_paths(SEED_DEF, enough))
    assert len(calls) == compiled.MIN_DESCRIBED - 1


def failures_as_errors(result: BatchResult) -> list[RecordError]:
    """Every error of every failure, as ``errors`` would list them without a cap."""
    return [RecordError(f.index, *e) for f in result.failures() for e in f.errors]


def test_counts_past_the_cap_are_exact_and_all_errors_keeps_them() -> None:
    """3 errors in each of 1000 records, and some the checker must see past the cap:
    error_count, error_codes and failed_records count them all; the list is the first
    MAX_BATCH_ERRORS of them, all_errors or not; all_errors keeps them all."""
    three = orjson.dumps(with_(REC, country=1, plan=2, active="no"))
    walk = orjson.dumps(with_(REC, context={"n": "x" * (MAX_STRING + 1)}))
    parts = [three] * 1000
    parts[10] = parts[600] = parts[990] = walk
    parts[500] = orjson.dumps(REC)
    body = array(*parts)
    capped = all_paths(SEED_DEF, body)
    full = all_paths(SEED_DEF, body, all_errors=True)
    assert capped.error_count == full.error_count == 996 * 3 + 3
    assert capped.failed_records == full.failed_records == 999
    every = failures_as_errors(full)
    assert len(capped.errors) == MAX_BATCH_ERRORS
    assert capped.errors == full.errors == every[:MAX_BATCH_ERRORS]
    assert len(every) == full.error_count and full.complete and not capped.complete
    assert capped.error_codes == full.error_codes == {
        "invalid_string": 996 * 2, "invalid_boolean": 996, "string_too_long": 3}
    assert every[-1] == RecordError(999, "invalid_boolean", "active",
                                    "Invalid boolean field: active")


def test_all_errors_on_the_precise_path() -> None:
    """A definition without a scanner (the orders example: patterns, enums, nested
    objects): every record's errors, uncapped, each equal to validate() of the record."""
    good = {"timestamp": "2026-06-10T11:00:00Z", "context": {}, "order_id": "ord_1",
            "status": "paid", "total_cents": 100, "currency": "EUR",
            "customer": {"id": "c1"}, "items": [{"sku": "a", "qty": 1, "unit_cents": 100}],
            "placed_at": "2026-06-10T11:00:00Z"}
    bad = [with_(good, order_id="x"), with_(good, status="lost"),
           with_(good, total_cents=-1), with_(good, items=[])]
    records = [bad[i % 4] if i % 5 else good for i in range(1500)]
    v = compile_dataset(ORDERS_DEF)
    assert v._scanner is None
    result = v.validate_batch(orjson.dumps(records), max_records=1500, all_errors=True)
    want = [(i, *e) for i, r in enumerate(records) for e in v.validate(r)]
    assert [tuple(e) for e in failures_as_errors(result)] == want
    assert [tuple(e) for e in result.errors] == want[:MAX_BATCH_ERRORS]
    assert result.error_count == len(want) and result.failed_records == 1200
    assert [f.index for f in result.failures()] == [i for i in range(1500) if i % 5]
    assert result.valid_payload()[0] == 300


@pytest.mark.parametrize("describe", [False, True])
def test_failures_are_the_records_as_sent_and_the_valid_payload_is_the_rest(
        describe: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """failures(): each failing record's bytes exactly as in the body (its line breaks
    and spaces), with its errors; valid_payload(): the valid records as one compact array
    (one record per line). Both need all_errors=True."""
    if describe:
        monkeypatch.setattr(compiled, "MIN_DESCRIBED", 0)
    ok_text = json.dumps(REC, indent=2).encode()
    bad_text = json.dumps(with_(REC, amount="1"), indent=2).encode()
    body = b"[\n  " + b",\n  ".join([ok_text, bad_text, b'"x"', ok_text]) + b"\n]"
    for name, v in paths(SEED_DEF).items():
        result = v.validate_batch(body, all_errors=True)
        assert result.failures() == [
            RecordFailure(1, bad_text, v.validate(with_(REC, amount="1"))),
            RecordFailure(2, b'"x"', v.validate("x"))], name
        count, payload = result.valid_payload()
        assert count == 2 and orjson.loads(payload) == [REC, REC], name
        assert b"\n" not in payload, name
        capped = v.validate_batch(body)
        with pytest.raises(ValueError, match="all_errors"):
            capped.failures()
        with pytest.raises(ValueError, match="all_errors"):
            capped.valid_payload()
    valid = compile_dataset(SEED_DEF).validate_batch(array(ok_text, ok_text), all_errors=True)
    assert valid.failures() == [] and valid.valid_payload() == (2, valid.payload)


@needs_scanner
@pytest.mark.usefixtures("describe_every_body")
def test_records_of_many_errors_are_cut_at_twenty_in_the_checkers_order() -> None:
    """A described record with repeated keys, envelope errors, extras and field errors,
    more than 20 in all: the first 20 in the checker's order (repeats, envelope, extras,
    fields)."""
    extras = {f"x{i}": i for i in range(25)}
    record = dup({"timestamp": 1, "context": 2, **extras, "country": 1}, "country", "RO")
    v = paths(SEED_DEF)["scanner"]
    calls = checker_calls(v)
    result = all_paths(SEED_DEF, array(record, record), all_errors=True)
    assert summary(v.validate_batch(array(record, record), all_errors=True)) == summary(result)
    assert calls == []
    first = [tuple(e) for e in result.failures()[0].errors]
    assert len(first) == MAX_ERRORS_PER_RECORD
    assert [e[0] for e in first[:3]] == ["duplicate_field", "invalid_timestamp",
                                         "invalid_context"]
    assert first[3:] == [("extra_field", f"x{i}", f"Extra field: x{i}") for i in range(17)]
    # Counted by code as listed: each record's first 20 (none of its field errors).
    assert result.error_codes == {"duplicate_field": 2, "invalid_timestamp": 2,
                                  "invalid_context": 2, "extra_field": 34}


def test_error_codes_count_every_error_by_code() -> None:
    """error_codes adds up to error_count, over every failing record (listed or not),
    described or checked, with more than 20 errors or not: the counts a metric needs
    without a list of every error."""
    extras = {f"x{i}": i for i in range(30)}
    parts = [*BAD_RELEASE * 10, orjson.dumps({**REC, **extras}),
             orjson.dumps(with_(REC, context={"n": "x" * (MAX_STRING + 1)}))]
    body = array(*parts)
    capped = all_paths(SEED_DEF, body)
    full = all_paths(SEED_DEF, body, all_errors=True)
    want: dict[str, int] = {}
    for e in failures_as_errors(full):
        want[e.code] = want.get(e.code, 0) + 1
    assert capped.error_codes == full.error_codes == want
    assert sum(want.values()) == capped.error_count > len(capped.errors)


def test_a_described_failing_batch_leaves_no_cyclic_garbage() -> None:
    """Like the precise path's (see test_validator_batch): no GC work per bad batch."""
    v = compile_dataset(SEED_DEF)
    body = array(*BAD_RELEASE * 20)
    for all_errors in (False, True):
        v.validate_batch(body, all_errors=all_errors)  # warm caches
        gc.collect()
        gc.disable()
        try:
            result = v.validate_batch(body, all_errors=all_errors)
            if all_errors:
                result.failures()
                result.valid_payload()
            assert not result.ok
            assert gc.collect() == 0
        finally:
            gc.enable()

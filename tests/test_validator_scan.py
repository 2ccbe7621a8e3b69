"""The record scanner (validator/scan.py): which definitions get one, what it reads, and
that a body's verdict is the same with it as without it, case by case at every edge."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from validator import BodyError, compile_dataset
from validator.checker import MAX_STRING, pairs_hook
from validator.compiled import MAX_BATCH_ERRORS, BatchResult, CompiledDataset
from validator.scan import MAX_NEST, _encodable, build_scanner

ROOT = Path(__file__).resolve().parent.parent
SEED_DEF = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
REC: dict[str, Any] = {
    "timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
    "country": "RO", "plan": "pro", "amount": 20, "active": True,
    "signup_at": "2026-06-01T08:00:00Z"}
WIDE_DEF = {"fields": {
    "name": "string", "qty": {"type": "integer"}, "price": {"type": ["number", "null"]},
    "flag": {"type": "boolean", "required": False},
    "seen_at": {"type": "string", "format": "date-time"},
    "maybe_at": {"type": ["timestamp", "null"], "required": False},
    "naïve": {"type": "string", "required": False}}}
WIDE: dict[str, Any] = {
    "timestamp": "2026-06-10T11:00:00Z", "context": {}, "name": "n", "qty": 3,
    "price": None, "seen_at": "2026-06-10T11:00:00.5+02:00"}


def verdicts(definition: dict[str, Any], body: bytes) -> list[Any]:
    """The verdict on ``body`` with the scanner, without it (msgspec and precise paths)
    and with the precise path alone: a BodyError's code, or the result's fields."""
    out: list[Any] = []
    for keep in ("scanner", "fast", "precise"):
        v = compile_dataset(definition)
        if keep != "scanner":
            v._scanner = None
        if keep == "precise":
            v._fast = None
        try:
            r = v.validate_batch(body)
        except BodyError as exc:
            out.append(("body", exc.code))
        else:
            out.append((r.count, r.errors, r.error_count, r.failed_records, r.payload))
    return out


def same(definition: dict[str, Any], body: bytes) -> Any:
    """The one verdict all three paths give on ``body``."""
    got = verdicts(definition, body)
    assert got[0] == got[1] == got[2], got
    return got[0]


def with_(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_plain_scalar_definitions_get_a_scanner_and_others_do_not() -> None:
    assert compile_dataset(SEED_DEF)._scanner is not None
    assert compile_dataset(WIDE_DEF)._scanner is not None
    for field in ({"type": "number", "minimum": 0}, {"type": "string", "pattern": "^a"},
                  {"type": "string", "enum": ["a"]}, {"type": "string", "format": "email"},
                  {"type": "array", "items": {"type": "string"}},
                  {"type": "object", "properties": {"a": {"type": "string"}}},
                  {"type": "string", "maxLength": 3}):
        assert compile_dataset({"fields": {"f": field}})._scanner is None, field
    assert build_scanner({f"f{i}": {"type": "string", "required": True}
                          for i in range(61)}) is None


def test_valid_records_are_not_doubtful_and_errors_only_the_broken() -> None:
    v = compile_dataset(SEED_DEF)
    assert v._scanner is not None
    body = orjson.dumps([REC, with_(REC, amount="1"), REC, with_(REC, plan=...)])
    scan = v._scanner.scan(body, 1000)
    assert scan is not None and scan.count == 4 and scan.doubtful == [1, 3]
    assert scan.exotic == []
    result = v.validate_batch(body)
    assert [(e.index, e.message) for e in result.errors] == [
        (1, "Invalid number field: amount"), (3, "Missing field: plan")]
    # Record spans are exact.
    assert [body[s:e] for s, e in zip(scan.starts[:4], scan.ends[:4], strict=True)] == [
        orjson.dumps(r) for r in orjson.loads(body)]


def test_a_valid_body_is_decided_by_the_scanner_alone() -> None:
    v = compile_dataset(SEED_DEF)
    v._fast = None

    def boom(*_: Any) -> Any:
        raise AssertionError("the precise path ran")
    v._precise_batch = boom  # type: ignore[method-assign]
    v._check = boom
    result = v.validate_batch(orjson.dumps([REC] * 50))
    assert result.ok and result.count == 50


@pytest.mark.parametrize("record", [
    with_(REC, amount=...), with_(REC, extra=1), with_(REC, country=7),
    with_(REC, amount="12.5"), with_(REC, active=1), with_(REC, active=None),
    with_(REC, signup_at="2026-06-10T10:00:00+0200"),
    with_(REC, timestamp="2026-02-30T10:00:00Z"), with_(REC, context=[]),
    with_(REC, context=None), with_(REC, timestamp=...), with_(REC, context=...),
    with_(REC, context={"a": {"b": [1, {"c": None}]}}),
    with_(REC, context={"big": 2 ** 63}), with_(REC, context={"big": -2 ** 63}),
    with_(REC, context={"long": "x" * (MAX_STRING + 1)}),
    with_(REC, context={"x" * (MAX_STRING + 1): 1}),
    with_(REC, country="x" * MAX_STRING), with_(REC, country="x" * (MAX_STRING + 1)),
    with_(REC, country="é" * (MAX_STRING // 2 + 1)),
    with_(REC, country="\u2028\x00\"\\/\n"), with_(REC, country="😀 naïve"),
    with_(REC, amount=2 ** 63 - 1), with_(REC, amount=2 ** 63), with_(REC, amount=-2 ** 63),
    with_(REC, amount=-2 ** 63 - 1), with_(REC, amount=1.7976931348623157e308),
    with_(REC, amount=-0.0), with_(REC, amount=1e-300), with_(REC, amount=True),
    *[with_(REC, timestamp=t) for t in (
        "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z", "2026-06-10T23:59:60Z", "2026-06-10T23:59:59.1234567z",
        "2026-06-10t10:00:00+23:59", "2026-06-10T10:00:00+24:00", "2026-06-10T24:00:00Z",
        "2026-13-10T10:00:00Z", "2026-00-10T10:00:00Z", "2026-06-00T10:00:00Z",
        "2026-06-31T10:00:00Z", "2026-06-10T10:00:00.Z", "2026-06-10T10:00:00",
        "2026-06-10 10:00:00Z", "0000-01-01T00:00:00Z", "2026-06-10T10:60:00Z",
        "2026-06-10T10:00:00-00:60", "２026-06-10T10:00:00Z", "2026-06-10T10:00:00ZZ",
        "2026-06-10T15:59:60-08:00")],
    [REC], "record", 5, None, {},
])
def test_each_edge_gets_the_same_verdict_with_and_without_the_scanner(record: Any) -> None:
    same(SEED_DEF, json.dumps([REC, record, REC], separators=(",", ":"),
                              ensure_ascii=False).encode())
    same(SEED_DEF, json.dumps([record, REC]).encode())  # \u escapes for non-ASCII


@pytest.mark.parametrize("raw", [
    # Numbers as written, not as a serializer would write them.
    b'1E+2', b'1e309', b'-1e400', b'1e-400', b'0.5e-99999', b'1' * 19, b'-' + b'9' * 18,
    b'9' * 308 + b'.0', b'9' * 400, b'2' + b'0' * 310 + b'e-0', b'1' + b'0' * 310 + b'e-2',
    b'1' + b'0' * 310 + b'e-3', b'9' * 300 + b'e8', b'9' * 300 + b'.5e7', b'1.0', b'-0',
    b'00', b'01', b'1.', b'.5', b'-', b'+1',
    b'1e', b'NaN', b'Infinity', b'-Infinity', b'tru', b'nul', b'"\\u0041"', b'"\\x41"',
    b'"a\tb"', b'"\\ud83d\\ude00"', b'"\\ud83d"', b'"\\ude00"', b'"\\ud83dx"',
    b'"\xc3\xa9"', b'"\xc3"', b'"\xe0\x80\x80"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"',
    b'"\xf0\x9f\x98\x80"', b'"\xff"', b'"\xc0\xaf"',
])
def test_raw_values_in_every_kind_of_field(raw: bytes) -> None:
    for key in ("amount", "country", "active"):
        body = orjson.dumps([REC]).replace(
            b'"' + key.encode() + b'":' + orjson.dumps(REC[key]), b'"' + key.encode()
            + b'":' + raw, 1)
        same(SEED_DEF, body)
        same(SEED_DEF, orjson.dumps([REC]).replace(
            b'"source":"billing-service"', b'"source":' + raw, 1))
    same(WIDE_DEF, orjson.dumps([WIDE]).replace(b'"qty":3', b'"qty":' + raw, 1))


@pytest.mark.parametrize("body", [
    # Repeated keys, plain or escaped, at the top and inside context.
    orjson.dumps([REC]).replace(b'"plan":', b'"plan":"x","plan":', 1),
    orjson.dumps([REC]).replace(b'"plan":', b'"extra":1,"extra":2,"plan":', 1),
    orjson.dumps([REC]).replace(b'"plan":', b'"\\u0070lan":"x","plan":', 1),
    orjson.dumps([REC]).replace(b'"plan":', b'"e\\u0078":"x","ex":"y","plan":', 1),
    orjson.dumps([REC]).replace(b'"source":', b'"s":1,"s":2,"source":', 1),
    orjson.dumps([REC]).replace(b'"source":', b'"s":{"a":1,"a":2},"source":', 1),
    orjson.dumps([REC]).replace(b'"source":', b'"s":[{"a":1},{"a":1,"b":{"a":[],"a":0}}],'
                                b'"source":', 1),
    orjson.dumps([REC]).replace(b'"source":', b'"\\u0073ource":1,"source":', 1),
    orjson.dumps([with_(REC, context={f"k{i}": i for i in range(600)})]).replace(
        b'"k599"', b'"k0"'),
    orjson.dumps([with_(REC, context={f"k{i}": i for i in range(600)})]),
    orjson.dumps([with_(REC, **{f"x{i}": i for i in range(300)})]).replace(
        b'"x299"', b'"x0"'),
    # Nesting around the scanner's limit and beyond the body's.
    *[orjson.dumps([REC]).replace(b'{"source":"billing-service"}',
                                  b"[" * depth + b"]" * depth) for depth in (
        MAX_NEST - 2, MAX_NEST - 1, MAX_NEST, MAX_NEST + 1, 31, 32, 40)],
    orjson.dumps([REC]).replace(b'"billing-service"', b'{"a":' * 30 + b"1" + b"}" * 30),
    # Grammar: whitespace everywhere, and the ways to break it.
    json.dumps([REC, REC], indent=1, separators=(" , ", " : ")).encode().replace(
        b"\n", b"\r\n\t"),
    b" \n[" + orjson.dumps(REC) + b"]\n ", b"[" + orjson.dumps(REC) + b",]",
    b"[" + orjson.dumps(REC) + b"] x", b"[" + orjson.dumps(REC) + b"]\x00",
    b"[" + orjson.dumps(REC) + b"," + orjson.dumps(REC),
    b"[" + orjson.dumps(REC)[:-1] + b",}]", b"[" + orjson.dumps(REC)[:-1] + b"]",
    orjson.dumps([REC]).replace(b'":', b'"', 1), orjson.dumps([REC]).replace(b",", b",,", 1),
    b"[]", b"[ ]", b"{}", b"", b"   ", b"5", b'"[]"', b"[1]", b"[[]]", b"[{}]",
    b"[" + b",".join([orjson.dumps(REC)] * 1001) + b"]",
])
def test_bodies_get_the_same_verdict_with_and_without_the_scanner(body: bytes) -> None:
    same(SEED_DEF, body)


@pytest.mark.parametrize("record", [
    WIDE, with_(WIDE, flag=True), with_(WIDE, flag=None), with_(WIDE, price=1.5),
    with_(WIDE, price="1"), with_(WIDE, qty=1.0), with_(WIDE, qty=1.5), with_(WIDE, qty=None),
    with_(WIDE, qty=2 ** 63), with_(WIDE, maybe_at=None),
    with_(WIDE, maybe_at="2026-06-10T11:00:00Z"), with_(WIDE, maybe_at="yesterday"),
    with_(WIDE, seen_at=None), with_(WIDE, seen_at="2026-06-10"), with_(WIDE, name=...),
    with_(WIDE, price=...), with_(WIDE, **{"naïve": "é"}), with_(WIDE, **{"naïve": 1}),
    with_(WIDE, **{"naive": "x"}),
])
def test_nullable_optional_and_format_fields(record: dict[str, Any]) -> None:
    same(WIDE_DEF, orjson.dumps([record]))
    same(WIDE_DEF, json.dumps([record, WIDE]).encode())


def test_timestamps_the_scanner_found_valid_are_not_checked_again() -> None:
    v = compile_dataset(SEED_DEF)
    checked: list[Any] = []
    inner = v._check

    def spy(record: Any, valid_times: Any = ()) -> Any:
        checked.append(set(valid_times))
        return inner(record, valid_times)
    v._check = spy
    # A context the checker must walk: the scanner cannot say what is wrong with it.
    long_context = {"note": "x" * (MAX_STRING + 1)}
    result: BatchResult = v.validate_batch(orjson.dumps([with_(REC, context=long_context)]))
    assert result.failed_records == 1
    assert checked == [{REC["timestamp"], REC["signup_at"]}]


def test_seed_examples_through_the_scanner() -> None:
    v: CompiledDataset = compile_dataset(SEED_DEF)
    seed = [
        {"timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
         "country": "RO", "plan": "pro", "amount": 20, "active": True,
         "signup_at": "2026-06-01T08:00:00Z"},
        {"timestamp": "2026-06-10T11:00:01Z", "context": {"source": "billing-service"},
         "country": "RO", "plan": "pro", "amount": "20", "active": True,
         "signup_at": "2026-06-01T08:00:00Z"}]
    result = v.validate_batch(orjson.dumps(seed))
    assert [(e.index, e.code, e.field, e.message) for e in result.errors] == [
        (1, "invalid_number", "amount", "Invalid number field: amount")]


def test_scanner_switch_is_a_checked_setting() -> None:
    from strictgate.settings import SettingsError, load_settings
    assert load_settings({}).scanner is True
    assert load_settings({"STRICTGATE_SCANNER": "0"}).scanner is False
    with pytest.raises(SettingsError, match="STRICTGATE_SCANNER"):
        load_settings({"STRICTGATE_SCANNER": "maybe"})


def test_scanner_off_leaves_numba_out_and_gives_the_same_verdicts() -> None:
    import os
    import subprocess
    import sys
    body = orjson.dumps([REC, with_(REC, amount="1"), with_(REC, plan=...)])
    program = (
        "import json, sys\n"
        "from validator import compile_dataset\n"
        f"v = compile_dataset({SEED_DEF!r})\n"
        "r = v.validate_batch(sys.stdin.buffer.read())\n"
        "print(json.dumps([v._scanner is None, 'numba' in sys.modules,"
        " [list(e) for e in r.errors]]))\n")
    seen = []
    for value in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", program], input=body, check=True,
                             capture_output=True, cwd=ROOT,
                             env={**os.environ, "STRICTGATE_SCANNER": value}).stdout
        seen.append(json.loads(out))
    assert seen[0][:2] == [True, False] and seen[1][:2] == [False, True]
    assert seen[0][2] == seen[1][2] == [[1, "invalid_number", "amount",
                                         "Invalid number field: amount"],
                                        [2, "missing_field", "plan", "Missing field: plan"]]


@pytest.mark.parametrize("max_records", [0, -1])
def test_no_record_allowed_is_the_other_paths_answer(max_records: int) -> None:
    v = compile_dataset(SEED_DEF)
    assert v._scanner is not None and v._scanner.scan(orjson.dumps([REC]), max_records) is None
    with pytest.raises(BodyError) as info:
        v.validate_batch(orjson.dumps([REC]), max_records=max_records)
    assert info.value.code == "too_many_records"


@pytest.mark.parametrize("name", ['a"b', "a\\b", "a\x01b", "a\ud800b"])
def test_field_names_no_fast_path_can_hold_are_checked_precisely(name: str) -> None:
    v = compile_dataset({"fields": {name: "string"}})
    assert not v.has_fast_path
    if not _encodable(name):
        assert v._scanner is None
        return  # no body can name it: lone surrogates are refused
    record = {"timestamp": "2026-06-10T11:00:00Z", "context": {}, name: "x"}
    body = json.dumps([record, {**record, name: 1}]).encode()
    result = v.validate_batch(body)
    assert [(e.index, e.code) for e in result.errors] == [(1, "invalid_string")]


# --- expected verdicts ------------------------------------------------------------------------
# The tests above compare the paths with each other, so a rule broken the same way everywhere
# (or in the one path every other defers to) would pass them: these name the answer.

def expect_on_every_path(definition: dict[str, Any], body: bytes,
                         expected: list[tuple[int, str, str, str]]) -> None:
    """Scanner, msgspec and precise paths all give ``expected`` (index, code, field,
    message) on ``body`` (listed up to the cap, all counted), and ``validate`` of each
    record gives its part of it."""
    for count, errors, error_count, _, _ in verdicts(definition, body):
        assert count == len(json.loads(body))
        assert [(e.index, e.code, e.field, e.message) for e in errors] == \
            expected[:MAX_BATCH_ERRORS]
        assert error_count == len(expected)
    v = compile_dataset(definition)
    for i, record in enumerate(json.loads(body, object_pairs_hook=pairs_hook)):
        assert [(i, e.code, e.field, e.message) for e in v.validate(record)] == [
            e for e in expected if e[0] == i]


DUPLICATE_PLAN = orjson.dumps([REC, REC]).replace(b'"plan":', b'"plan":"x","plan":', 1)


@pytest.mark.parametrize(("body", "field"), [
    (DUPLICATE_PLAN, "plan"),  # the value is the same type either way: only the key is wrong
    (orjson.dumps([REC, REC]).replace(b'"plan":', b'"\\u0070lan":"x","plan":', 1), "plan"),
    (orjson.dumps([REC, REC]).replace(b'"source":', b'"s":1,"s":2,"source":', 1), "context.s"),
])
def test_a_repeated_key_is_a_duplicate_field_error(body: bytes, field: str) -> None:
    expect_on_every_path(SEED_DEF, body, [
        (0, "duplicate_field", field, f"Duplicate field: {field}")])


def test_a_repeated_key_in_a_declared_object_is_a_duplicate_field_error() -> None:
    definition = {"fields": {"o": {"type": "object", "properties": {"a": "integer"}}}}
    record = {"timestamp": "2026-06-10T11:00:00Z", "context": {}, "o": {"a": 1}}
    body = json.dumps([record]).encode().replace(b'{"a": 1}', b'{"a": 1, "a": 2}')
    expect_on_every_path(definition, body, [(0, "duplicate_field", "o.a",
                                             "Duplicate field: o.a")])


CENTURIES = [("1900-02-29", False), ("2100-02-29", False), ("2000-02-29", True),
             ("2400-02-29", True), ("2024-02-29", True), ("2023-02-29", False)]


@pytest.mark.parametrize(("date", "valid"), CENTURIES)
@pytest.mark.parametrize("copies", [1, 70])  # 70: runs long enough for the numpy calendar
def test_leap_years_follow_the_century_rule(date: str, valid: bool, copies: int) -> None:
    """Every 4th year is a leap year, but not a century unless divisible by 400: in the
    envelope ``timestamp``, in a timestamp field and in a ``format: date-time`` field."""
    stamp = f"{date}T10:00:00Z"
    records = [with_(REC, timestamp=stamp, signup_at=stamp)] * copies
    expected = [] if valid else [
        e for i in range(copies) for e in (
            (i, "invalid_timestamp", "timestamp", "Invalid or missing timestamp"),
            (i, "invalid_timestamp", "signup_at", "Invalid timestamp field: signup_at"))]
    expect_on_every_path(SEED_DEF, orjson.dumps(records), expected)
    wide = [with_(WIDE, seen_at=stamp)] * copies
    expect_on_every_path(WIDE_DEF, orjson.dumps(wide), [] if valid else [
        (i, "invalid_timestamp", "seen_at", "Invalid timestamp field: seen_at")
        for i in range(copies)])

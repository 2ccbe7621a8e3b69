"""One test per rule of the definition language and per message of the Loguro ingest API's
error table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from validator import CompiledDataset, DefinitionError, FieldError, compile_dataset
from validator.formats import is_date_time

ROOT = Path(__file__).resolve().parent.parent
SEED = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
TS = "2026-06-10T10:00:00Z"


def record(**fields: Any) -> dict[str, Any]:
    """A valid seed-payload-rules record, with ``fields`` replaced (None-valued ones kept)."""
    out: dict[str, Any] = {"timestamp": TS, "context": {}, "country": "RO", "amount": 12.5,
                           "active": True}
    out.update(fields)
    return out


PAYLOAD_RULES = compile_dataset(
    {"fields": {"country": "string", "amount": "number", "active": "boolean"}})


def first(v: CompiledDataset, rec: Any) -> tuple[str, str, str]:
    errs = v.validate(rec)
    assert errs, "expected an error"
    return errs[0].code, errs[0].field, errs[0].message


def one_field(decl: Any) -> CompiledDataset:
    return compile_dataset({"fields": {"f": decl}})


def with_f(value: Any) -> dict[str, Any]:
    return {"timestamp": TS, "context": {}, "f": value}


# ---------------------------------------------------------------- seed examples and messages


def test_seed_payload_rules_valid_record() -> None:
    assert PAYLOAD_RULES.validate(record()) == []


def test_seed_amount_as_string_is_invalid_number() -> None:
    assert first(PAYLOAD_RULES, record(amount="12.5")) == (
        "invalid_number", "amount", "Invalid number field: amount")


def test_seed_extra_field() -> None:
    assert first(PAYLOAD_RULES, record(extra="not allowed")) == (
        "extra_field", "extra", "Extra field: extra")


def test_seed_missing_field() -> None:
    rec = record()
    del rec["amount"]
    assert first(PAYLOAD_RULES, rec) == ("missing_field", "amount", "Missing field: amount")


@pytest.mark.parametrize("value", [None, "", "2026-06-10", "2026-06-10T10:00:00+0200", 5])
def test_seed_invalid_timestamp(value: Any) -> None:
    assert first(PAYLOAD_RULES, record(timestamp=value)) == (
        "invalid_timestamp", "timestamp", "Invalid or missing timestamp")


def test_seed_missing_timestamp() -> None:
    rec = record()
    del rec["timestamp"]
    assert first(PAYLOAD_RULES, rec)[2] == "Invalid or missing timestamp"


@pytest.mark.parametrize("value", [None, [], "x", 1, True])
def test_seed_context_must_be_object(value: Any) -> None:
    assert first(PAYLOAD_RULES, record(context=value)) == (
        "invalid_context", "context", "context must be an object")


def test_seed_missing_context() -> None:
    rec = record()
    del rec["context"]
    assert first(PAYLOAD_RULES, rec)[2] == "context must be an object"


def test_seed_invalid_string() -> None:
    assert first(PAYLOAD_RULES, record(country=7)) == (
        "invalid_string", "country", "Invalid string field: country")


@pytest.mark.parametrize("value", ["true", 1, 0, None])
def test_seed_invalid_boolean(value: Any) -> None:
    assert first(PAYLOAD_RULES, record(active=value)) == (
        "invalid_boolean", "active", "Invalid boolean field: active")


@pytest.mark.parametrize("value", ["2026-06-10", 1718000000, "2026-02-30T10:00:00Z"])
def test_seed_invalid_timestamp_field(value: Any) -> None:
    v = compile_dataset(SEED)
    rec = {"timestamp": TS, "context": {}, "country": "RO", "plan": "pro", "amount": 1,
           "active": True, "signup_at": value}
    assert first(v, rec) == ("invalid_timestamp", "signup_at", "Invalid timestamp field: signup_at")


def test_seed_dataset_example_record() -> None:
    v = compile_dataset(SEED)
    rec = {"timestamp": "2026-06-10T10:58:00Z",
           "context": {"source": "billing-service", "request_id": "req_123"},
           "country": "RO", "plan": "pro", "amount": 42.5, "active": True,
           "signup_at": "2026-06-01T08:00:00Z"}
    assert v.validate(rec) == []


def test_non_object_record() -> None:
    assert PAYLOAD_RULES.validate([1]) == [
        FieldError("invalid_record", "", "Payload must be an object")]


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_never_numbers(value: bool) -> None:
    assert first(one_field("number"), with_f(value))[0] == "invalid_number"
    assert first(one_field("integer"), with_f(value))[0] == "invalid_integer"


def test_integer_accepts_integral_float_rejects_fraction() -> None:
    v = one_field("integer")
    assert v.validate(with_f(3)) == []
    assert v.validate(with_f(3.0)) == []
    assert first(v, with_f(3.5)) == ("invalid_integer", "f", "Invalid integer field: f")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_int64_rejected(value: int) -> None:
    assert first(one_field("integer"), with_f(value)) == (
        "integer_too_large", "f", "Invalid integer field: f")
    assert first(one_field("number"), with_f(value))[0] == "integer_too_large"


def test_int64_bounds_accepted() -> None:
    v = one_field("integer")
    assert v.validate(with_f(2**63 - 1)) == []
    assert v.validate(with_f(-(2**63))) == []


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_numbers_are_finite(value: float) -> None:
    assert first(one_field("number"), with_f(value)) == (
        "number_not_finite", "f", "Invalid number field: f")


@pytest.mark.parametrize(("decl", "good", "bad"), [
    ({"minimum": 0}, 0, -1),
    ({"maximum": 10}, 10, 10.5),
    ({"exclusiveMinimum": 0}, 0.1, 0),
    ({"exclusiveMaximum": 10}, 9, 10),
])
def test_numeric_bounds(decl: dict[str, Any], good: Any, bad: Any) -> None:
    v = one_field({"type": "number", **decl})
    assert v.validate(with_f(good)) == []
    assert first(v, with_f(bad)) == ("out_of_range", "f", "Field out of range: f")


def test_multiple_of() -> None:
    # Float arithmetic as the jsonschema oracle does it (19.99 / 0.01 is not integral there).
    v = one_field({"type": "number", "multipleOf": 0.5})
    assert v.validate(with_f(19.5)) == []
    assert first(v, with_f(0.25))[0] == "not_multiple_of"
    assert first(one_field({"type": "integer", "multipleOf": 3}), with_f(4))[0] == "not_multiple_of"


# ---------------------------------------------------------------- strings and formats


def test_string_lengths() -> None:
    v = one_field({"type": "string", "minLength": 2, "maxLength": 3})
    assert v.validate(with_f("ab")) == []
    assert first(v, with_f("a")) == ("too_short", "f", "Field too short: f")
    assert first(v, with_f("abcd")) == ("too_long", "f", "Field too long: f")
    # Lengths count code points, not UTF-16 units or bytes.
    assert v.validate(with_f("😀😀")) == []


def test_pattern_is_a_search() -> None:
    v = one_field({"type": "string", "pattern": "^[A-Z]{2}$"})
    assert v.validate(with_f("RO")) == []
    assert first(v, with_f("ro")) == ("pattern_mismatch", "f", "Field does not match pattern: f")
    assert one_field({"type": "string", "pattern": "b"}).validate(with_f("abc")) == []


@pytest.mark.parametrize(("fmt", "good", "bad", "word"), [
    ("date-time", "1998-12-31T23:59:60Z", "2026-06-10T10:00:00+0200", "timestamp"),
    ("date", "2024-02-29", "2023-02-29", "date"),
    ("time", "08:30:06Z", "08:30:06", "time"),
    ("email", "joe@example.com", "joe", "email"),
    ("uuid", "2eb8aa08-aa98-11ea-b4aa-73b441d16380", "2eb8aa08aa9811eab4aa73b441d16380", "uuid"),
    ("ipv4", "192.168.0.1", "192.168.00.1", "ipv4"),
    ("ipv6", "::1", "::1%eth0", "ipv6"),
    ("uri", "https://example.com/a?b#c", "//example.com", "uri"),
])
def test_formats(fmt: str, good: str, bad: str, word: str) -> None:
    v = one_field({"type": "string", "format": fmt})
    assert v.validate(with_f(good)) == []
    code = "invalid_timestamp" if fmt == "date-time" else "invalid_format"
    assert first(v, with_f(bad)) == (code, "f", f"Invalid {word} field: f")


def test_date_time_suite_verdicts() -> None:
    """Every string case of the suite's date-time.json, as a timestamp field."""
    from tests.conformance_summary import suite_dir

    root = suite_dir()
    assert root is not None, "conformance suite not found (see tests/conformance_summary.py)"
    suite = root / "optional" / "format" / "date-time.json"
    v = one_field("timestamp")
    ran = 0
    for group in json.loads(suite.read_text()):
        for case in group["tests"]:
            if isinstance(case["data"], str):
                ran += 1
                assert (v.validate(with_f(case["data"])) == []) is case["valid"], case
    assert ran >= 20


@pytest.mark.parametrize("value", ["1998-12-31t23:59:60z", "1998-12-31T15:59:60.123-08:00",
                                   "1985-04-12T00:59:59.999999999999999Z"])
def test_timestamp_rfc3339_edges_valid(value: str) -> None:
    assert one_field("timestamp").validate(with_f(value)) == []


@pytest.mark.parametrize("value", ["1998-12-31T22:59:60Z", "2026-06-10 10:00:00Z",
                                   "2026-06-10T10:00:00Z\n", "0000-01-01T00:00:0Z"])
def test_timestamp_rfc3339_edges_invalid(value: str) -> None:
    assert first(one_field("timestamp"), with_f(value))[0] == "invalid_timestamp"


# ---------------------------------------------------------------- enum, const, null, optional


def test_enum_and_const_use_json_equality() -> None:
    v = one_field({"type": ["integer", "boolean"], "enum": [1, True]})
    assert v.validate(with_f(1.0)) == []
    assert first(v, with_f(False)) == ("not_in_enum", "f", "Field not in enum: f")
    c = one_field({"type": "number", "const": 0})
    assert c.validate(with_f(0.0)) == []
    assert first(c, with_f(1))[0] == "not_const"
    b = one_field({"type": ["boolean", "integer"], "const": False})
    assert first(b, with_f(0))[0] == "not_const"


def test_nullable_type_list() -> None:
    v = one_field({"type": ["string", "null"]})
    assert v.validate(with_f(None)) == []
    assert first(v, with_f(1)) == ("invalid_string", "f", "Invalid string field: f")
    assert first(one_field("string"), with_f(None))[0] == "invalid_string"


def test_optional_field() -> None:
    v = one_field({"type": "integer", "required": False})
    assert v.validate({"timestamp": TS, "context": {}}) == []
    assert first(v, with_f("x"))[0] == "invalid_integer"
    assert v.definition["fields"]["f"]["required"] is False


# ---------------------------------------------------------------- arrays and nested objects


def test_arrays() -> None:
    v = one_field({"type": "array", "items": "integer", "minItems": 1, "maxItems": 3,
                   "uniqueItems": True})
    assert v.validate(with_f([1, 2])) == []
    assert first(v, with_f([])) == ("too_short", "f", "Field has too few items: f")
    assert first(v, with_f([1, 2, 3, 4]))[0] == "too_long"
    assert first(v, with_f([1, 1.0])) == ("not_unique", "f", "Field has duplicate items: f")
    assert first(v, with_f([1, True]))[:2] == ("invalid_integer", "f[1]")
    assert first(v, with_f([1, "x"])) == ("invalid_integer", "f[1]", "Invalid integer field: f[1]")


def test_nested_objects_closed_with_paths() -> None:
    v = compile_dataset({"fields": {"a": {"type": "object", "required": ["b"], "properties": {
        "b": {"type": "array", "items": {"type": "object", "required": ["c"],
                                         "properties": {"c": "number"}}},
        "opt": "string"}}}})
    ok = {"timestamp": TS, "context": {}, "a": {"b": [{"c": 1}, {"c": 2}, {"c": 3}]}}
    assert v.validate(ok) == []
    bad = {"timestamp": TS, "context": {}, "a": {"b": [{"c": 1}, {"c": 2}, {"c": "x"}]}}
    assert first(v, bad) == ("invalid_number", "a.b[2].c", "Invalid number field: a.b[2].c")
    extra = {"timestamp": TS, "context": {}, "a": {"b": [], "z": 1}}
    assert first(v, extra) == ("extra_field", "a.z", "Extra field: a.z")
    missing = {"timestamp": TS, "context": {}, "a": {}}
    assert first(v, missing) == ("missing_field", "a.b", "Missing field: a.b")


def test_open_nested_object() -> None:
    v = one_field({"type": "object", "properties": {"x": "integer"},
                   "additionalProperties": True})
    assert v.validate(with_f({"x": 1, "y": "anything"})) == []


# ---------------------------------------------------------------- order, cap, quoting, context


def test_error_order_is_deterministic_and_first_is_seed_message() -> None:
    rec = {"context": 5, "zzz": 1, "amount": "x", "active": 1, "aaa": 2}
    codes = [(e.code, e.field) for e in PAYLOAD_RULES.validate(rec)]
    assert codes == [
        ("invalid_timestamp", "timestamp"), ("invalid_context", "context"),
        ("extra_field", "zzz"), ("extra_field", "aaa"), ("missing_field", "country"),
        ("invalid_number", "amount"), ("invalid_boolean", "active")]
    assert PAYLOAD_RULES.validate(rec) == PAYLOAD_RULES.validate(rec)


def test_errors_capped_at_20() -> None:
    rec = record(**{f"x{i}": i for i in range(50)})
    errs = PAYLOAD_RULES.validate(rec)
    assert len(errs) == 20
    assert errs[0] == FieldError("extra_field", "x0", "Extra field: x0")


def test_messages_quote_at_most_200_chars() -> None:
    name = "k" * 5000
    err = PAYLOAD_RULES.validate(record(**{name: 1}))[0]
    assert err.code == "extra_field"
    assert len(err.field) == 201 and err.field.endswith("…")
    assert len(err.message) <= len("Extra field: ") + 201


def test_context_limits() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"d": deep}
    errs = PAYLOAD_RULES.validate(record(context=deep))
    assert errs[0].code == "too_deep"
    assert errs[0].field.startswith("context.d.d")
    assert first(PAYLOAD_RULES, record(context={"n": 2**64}))[:2] == (
        "integer_too_large", "context.n")
    assert first(PAYLOAD_RULES, record(context={"a": [float("inf")]}))[:2] == (
        "number_not_finite", "context.a[0]")
    assert first(PAYLOAD_RULES, record(context={"s": "x" * 70_000}))[0] == "string_too_long"


def test_depth_32_allowed() -> None:
    ctx: Any = 1
    for _ in range(31):  # containers: the record (1), then context and 30 more (2..32)
        ctx = {"d": ctx}
    assert PAYLOAD_RULES.validate(record(context=ctx)) == []
    assert PAYLOAD_RULES.validate(record(context={"d": ctx}))[0].code == "too_deep"


# ---------------------------------------------------------------- definitions


def test_definition_normalized_and_schema() -> None:
    v = compile_dataset(SEED)
    assert v.definition["fields"]["country"] == {"type": "string", "required": True}
    assert v.definition["description"] == SEED["description"]
    s = v.json_schema
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["required"] == ["timestamp", "context", "country", "plan", "amount", "active",
                             "signup_at"]
    assert s["properties"]["signup_at"] == {"type": "string", "format": "date-time"}
    assert s["additionalProperties"] is False
    jsonschema.Draft202012Validator.check_schema(s)


def problems(definition: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        compile_dataset(definition)
    assert str(info.value)
    return info.value.problems


@pytest.mark.parametrize("name", ["timestamp", "context", "__x", "__traceId"])
def test_reserved_names_cannot_be_declared(name: str) -> None:
    assert [p for p, _ in problems({"fields": {name: "string"}})] == [f"/fields/{name}"]


def test_every_problem_listed_with_pointer() -> None:
    got = problems({"fields": {"a": "strng", "b": {"type": "number", "minimum": "x"},
                               "c": {"type": "string", "minimum": 1}}, "bogus": 1})
    pointers = [p for p, _ in got]
    assert "/fields/a" in pointers
    assert "/fields/b/minimum" in pointers
    assert "" in pointers  # additional property "bogus" at the root


def test_semantic_problems_listed() -> None:
    got = problems({"fields": {
        "c": {"type": "string", "minimum": 1},
        "d": {"type": "integer", "minimum": 5, "maximum": 1},
        "e": {"type": "string", "pattern": "("},
        "g": {"type": "object", "properties": {"x": {"type": "string", "required": False}}},
    }})
    pointers = {p for p, _ in got}
    assert {"/fields/c/minimum", "/fields/d/minimum", "/fields/e/pattern",
            "/fields/g/properties/x/required"} <= pointers


@pytest.mark.parametrize("bad", [None, [], {"fields": []}, {}])
def test_definition_shape(bad: Any) -> None:
    assert problems(bad)


# ---------------------------------------------------------------- oracle agreement


# jsonschema checks date-time only with an optional package; give it the strict RFC 3339 one.
ORACLE_FORMATS = jsonschema.FormatChecker()
ORACLE_FORMATS.checks("date-time")(is_date_time)

FULL = {"fields": {
    "country": {"type": "string", "minLength": 2, "maxLength": 2},
    "plan": {"type": "string", "enum": ["free", "pro"]},
    "amount": {"type": "number", "minimum": 0},
    "qty": {"type": ["integer", "null"], "maximum": 100},
    "tags": {"type": "array", "items": "string", "uniqueItems": True},
    "at": "timestamp",
    "opt": {"type": "boolean", "required": False},
}}
GOOD = {"timestamp": TS, "context": {"a": [1, {"b": None}]}, "country": "RO", "plan": "pro",
        "amount": 0, "qty": None, "tags": ["a", "b"], "at": "2026-06-10T10:00:00.5+02:00"}


@pytest.mark.parametrize("change", [
    {}, {"opt": True}, {"country": "ROU"}, {"plan": "team"}, {"amount": -1}, {"qty": 101},
    {"qty": 1.0}, {"tags": ["a", "a"]}, {"at": "2026-06-10T10:00:00+0200"}, {"extra": 1},
    {"timestamp": "nope"}, {"context": []}, {"opt": 1}, {"amount": True},
])
def test_agrees_with_jsonschema_oracle(change: dict[str, Any]) -> None:
    v = compile_dataset(FULL)
    oracle = jsonschema.Draft202012Validator(
        v.json_schema, format_checker=ORACLE_FORMATS)
    rec = {**GOOD, **change}
    assert (v.validate(rec) == []) is oracle.is_valid(rec)

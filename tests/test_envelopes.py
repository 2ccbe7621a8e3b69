"""Definitions without the Loguro envelope (``"envelope": "none"`` / ``"event"``) and the
``additionalProperties`` field declaration: what records must carry, the errors, the
definition refusals and evolution reports over the admin API, and that the scanner, the
msgspec fast path and the precise checker give one verdict on every body."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from fuzz.oracle import oracle
from strictgate.registry.evolution import breaking_changes
from strictgate.registry.store import digest_of
from tests.ingest_fixtures import SEED_DEFINITION, Service
from validator import BodyError, DefinitionError, compile_dataset

NONE_DEF: dict[str, Any] = {"envelope": "none", "fields": {
    "timestamp": {"type": "string", "required": False},
    "context": {"type": "integer"},
    "name": "string",
}}
EVENT_DEF: dict[str, Any] = {"envelope": "event", "fields": {
    "service": {"type": "string", "minLength": 1},
    "n": {"type": "number", "required": False},
}}
LABELS_DEF: dict[str, Any] = {"envelope": "none", "fields": {
    "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}},
    "extra": {"type": ["object", "null"], "additionalProperties": "integer", "required": False},
}}


def verdicts(definition: dict[str, Any], body: bytes) -> list[Any]:
    """The verdict on ``body`` with the scanner, with the msgspec fast path and with the
    precise checker alone: a BodyError's code, or the result's fields."""
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


def errors_of(definition: dict[str, Any], *records: Any) -> list[tuple[int, str, str, str]]:
    """The errors of ``records`` as one batch, the same on every path."""
    body = json.dumps(list(records)).encode()
    got = verdicts(definition, body)
    assert got[0] == got[1] == got[2], got
    return [tuple(e) for e in got[0][1]]


# --- envelope none ------------------------------------------------------------------------------

def test_none_records_are_only_their_declared_fields() -> None:
    assert errors_of(NONE_DEF, {"context": 5, "name": "a"},
                     {"context": 5, "name": "a", "timestamp": "not a time at all"}) == []
    assert compile_dataset(NONE_DEF)._scanner is not None  # plain fields: all three paths


def test_none_timestamp_and_context_are_checked_as_declared() -> None:
    assert errors_of(NONE_DEF, {"context": {}, "name": "a", "timestamp": 5}) == [
        (0, "invalid_string", "timestamp", "Invalid string field: timestamp"),
        (0, "invalid_integer", "context", "Invalid integer field: context"),
    ]
    # no envelope error: a missing context is a missing field like any other
    assert errors_of(NONE_DEF, {"name": "a"}) == [
        (0, "missing_field", "context", "Missing field: context")]


def test_none_refuses_what_is_not_declared() -> None:
    only = {"envelope": "none", "fields": {"name": "string"}}
    assert errors_of(only, {"name": "a", "timestamp": "2026-01-01T00:00:00Z",
                            "context": {}}) == [
        (0, "extra_field", "timestamp", "Extra field: timestamp"),
        (0, "extra_field", "context", "Extra field: context"),
    ]


def test_none_json_schema_has_no_envelope() -> None:
    schema = compile_dataset(NONE_DEF).json_schema
    assert schema["properties"] == {"timestamp": {"type": "string"},
                                    "context": {"type": "integer"}, "name": {"type": "string"}}
    assert schema["required"] == ["context", "name"]


# --- envelope event -----------------------------------------------------------------------------

def test_event_timestamp_is_optional_and_a_timestamp() -> None:
    assert errors_of(EVENT_DEF, {"service": "a"},
                     {"service": "b", "timestamp": "2026-06-10T10:58:00.5+02:00"}) == []
    assert errors_of(EVENT_DEF, {"service": "a", "timestamp": "yesterday"},
                     {"service": "a", "timestamp": None}) == [
        (0, "invalid_timestamp", "timestamp", "Invalid timestamp field: timestamp"),
        (1, "invalid_timestamp", "timestamp", "Invalid timestamp field: timestamp"),
    ]


def test_event_records_may_not_send_an_id() -> None:
    assert errors_of(EVENT_DEF, {"service": "a", "id": "mine"}) == [
        (0, "extra_field", "id", "Extra field: id")]


def test_plain_event_definitions_are_scanned() -> None:
    plain = {"envelope": "event", "fields": {"service": "string",
                                             "n": {"type": "number", "required": False}}}
    assert compile_dataset(plain)._scanner is not None
    assert errors_of(plain, {"service": "a"}, {"service": "a", "n": 1,
                                               "timestamp": "2026-06-10T10:58:00Z"}) == []
    assert errors_of(plain, {"service": "a", "timestamp": "2026-13-10T10:58:00Z"},
                     {"service": "a", "context": {}}, {"n": "1"}) == [
        (0, "invalid_timestamp", "timestamp", "Invalid timestamp field: timestamp"),
        (1, "extra_field", "context", "Extra field: context"),
        (2, "missing_field", "service", "Missing field: service"),
        (2, "invalid_number", "n", "Invalid number field: n"),
    ]
    body = b'[{"service":"a","timestamp":"2026-06-10T10:58:00Z","timestamp":"x"}]'
    got = verdicts(plain, body)
    assert got[0] == got[1] == got[2]
    assert [(e.code, e.field) for e in got[0][1]] == [
        ("duplicate_field", "timestamp"), ("invalid_timestamp", "timestamp")]


def test_event_declared_timestamp_may_be_required() -> None:
    definition = {"envelope": "event", "fields": {
        "service": "string", "timestamp": {"type": "timestamp", "required": True}}}
    assert errors_of(definition, {"service": "a"}) == [
        (0, "missing_field", "timestamp", "Missing field: timestamp")]
    assert compile_dataset(definition).json_schema["required"] == ["timestamp", "service"]


def test_event_json_schema_describes_what_clients_send() -> None:
    schema = compile_dataset(EVENT_DEF).json_schema
    assert list(schema["properties"]) == ["timestamp", "service", "n"]
    assert schema["properties"]["timestamp"] == {"type": "string", "format": "date-time"}
    assert schema["required"] == ["service"] and "id" not in schema["properties"]
    assert compile_dataset(EVENT_DEF).envelope == "event"


# --- loguro: the default, unchanged ---------------------------------------------------------------

def test_loguro_spelled_out_is_the_default_exactly() -> None:
    spelled = {**SEED_DEFINITION, "envelope": "loguro"}
    a, b = compile_dataset(SEED_DEFINITION), compile_dataset(spelled)
    assert a.definition == b.definition == {"fields": a.definition["fields"]}
    assert digest_of(a.definition) == digest_of(b.definition)
    assert a.json_schema == b.json_schema and a.envelope == b.envelope == "loguro"
    record = {"context": [], "country": 1, "plan": "p", "amount": 1, "active": True,
              "signup_at": "2026-06-01T08:00:00Z", "id": 1}
    assert errors_of(SEED_DEFINITION, record) == errors_of(spelled, record) == [
        (0, "invalid_timestamp", "timestamp", "Invalid or missing timestamp"),
        (0, "invalid_context", "context", "context must be an object"),
        (0, "extra_field", "id", "Extra field: id"),
        (0, "invalid_string", "country", "Invalid string field: country"),
    ]


def test_loguro_reserved_names_are_refused_as_before() -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_dataset({"fields": {"timestamp": "string", "context": "string", "__x": "string",
                                    "id": "string"}})
    assert caught.value.problems == [
        ("/fields/__x", "field name '__x' cannot be declared (reserved: timestamp, context,"
                        " names starting with __)"),
        ("/fields/context", "field name 'context' cannot be declared (reserved: timestamp,"
                            " context, names starting with __)"),
        ("/fields/timestamp", "field name 'timestamp' cannot be declared (reserved: timestamp,"
                              " context, names starting with __)"),
    ]


# --- additionalProperties: a declaration of the undeclared members ------------------------------

def test_labels_values_must_be_strings() -> None:
    good = {"labels": {"region": "eu", "env": "prod"}, "extra": {"a": 1}}
    assert errors_of(LABELS_DEF, good, {"labels": {}}, {"labels": {}, "extra": None}) == []
    assert errors_of(LABELS_DEF, {"labels": {"region": 1, "env": "production"},
                                  "extra": {"a": 1.5, "b": "x"}}) == [
        (0, "invalid_string", "labels.region", "Invalid string field: labels.region"),
        (0, "too_long", "labels.env", "Field too long: labels.env"),
        (0, "invalid_integer", "extra.a", "Invalid integer field: extra.a"),
        (0, "invalid_integer", "extra.b", "Invalid integer field: extra.b"),
    ]
    assert errors_of(LABELS_DEF, {"labels": {"a": "x", "a\u0301": "y"}}) == []


def test_labels_repeated_keys_are_refused_on_every_path() -> None:
    body = b'[{"labels":{"a":"x","a":"y"}}, {"labels":{"\\u0061":"x","a":"y"}}]'
    got = verdicts(LABELS_DEF, body)
    assert got[0] == got[1] == got[2]
    assert [(e.index, e.code, e.field) for e in got[0][1]] == [
        (0, "duplicate_field", "labels.a"), (1, "duplicate_field", "labels.a")]


def test_labels_take_the_fast_path_and_compile_to_json_schema() -> None:
    compiled = compile_dataset(LABELS_DEF)
    assert compiled.has_fast_path
    assert compiled.json_schema["properties"]["labels"] == {
        "type": "object", "additionalProperties": {"type": "string", "maxLength": 5}}
    assert compiled.definition["fields"]["extra"]["additionalProperties"] == {
        "type": "integer"}
    for name in schemas.BUILTIN_DATASETS:
        assert compile_dataset(schemas.builtin(name)).has_fast_path, name


@pytest.mark.parametrize(("field", "pointer", "message"), [
    ({"type": "string", "additionalProperties": "string"}, "/fields/f/additionalProperties",
     "additionalProperties does not apply to type ['string']"),
    ({"type": "object", "additionalProperties": {"type": "string", "required": False}},
     "/fields/f/additionalProperties/required", "a boolean required applies to top-level"
     " fields only; nested objects list theirs in an array"),
    ({"type": "object", "additionalProperties": {"type": "number", "minimum": 2,
                                                  "maximum": 1}},
     "/fields/f/additionalProperties/minimum", "minimum 2 is greater than maximum 1"),
])
def test_bad_member_declarations_are_refused(field: dict[str, Any], pointer: str,
                                             message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_dataset({"fields": {"f": field}})
    assert (pointer, message) in caught.value.problems


# --- the three paths and the oracle agree on the built-in datasets ------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=6)
SCALARS = st.none() | st.booleans() | st.integers(-2**63 - 2, 2**63 + 1) | st.floats(
    allow_nan=False, allow_infinity=False) | TEXT
LEVELS = st.sampled_from(["debug", "info", "warn", "error", "fatal", "trace", "INFO", ""])
STAMPS = st.sampled_from(["2026-06-10T10:58:00Z", "2026-06-10T10:58:00.123+02:00",
                          "2026-02-30T00:00:00Z", "2026-06-10 10:58:00Z", ""])
FREE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    TEXT, inner, max_size=3), max_leaves=8)


def _event(data: st.DataObject, kind: str) -> dict[str, Any]:
    """A log or metric event, mostly valid, sometimes off in one or two ways."""
    draw = data.draw
    record: dict[str, Any] = {"service": draw(st.sampled_from(["api", "", "b" * 3])
                                              | SCALARS)}
    if kind == "logs":
        record |= {"level": draw(LEVELS | SCALARS), "message": draw(TEXT | SCALARS)}
        if draw(st.booleans()):
            record["metadata"] = draw(st.dictionaries(TEXT, FREE, max_size=4) | SCALARS)
        if draw(st.booleans()):
            record["traceId"] = draw(TEXT | SCALARS)
    else:
        record |= {"name": draw(TEXT), "value": draw(st.floats(allow_nan=False,
                                                                allow_infinity=False)
                                                      | SCALARS), "unit": draw(TEXT)}
        if draw(st.booleans()):
            record["labels"] = draw(st.dictionaries(TEXT, TEXT | SCALARS, max_size=4)
                                    | SCALARS)
    if draw(st.booleans()):
        record["timestamp"] = draw(STAMPS)
    if draw(st.integers(0, 9)) == 0:
        record[draw(st.sampled_from(["id", "extra", "level", "name"]))] = draw(SCALARS)
    if draw(st.integers(0, 9)) == 0:
        del record[draw(st.sampled_from(sorted(record)))]
    return record


@settings(max_examples=2000 if os.environ.get("SG_FUZZ_LONG") else 150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_builtin_events_get_one_verdict_from_every_path_and_the_oracle(
        data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["logs", "metrics"]))
    definition = schemas.builtin(kind)
    records = [_event(data, kind) for _ in range(data.draw(st.integers(1, 20)))]
    body = json.dumps(records).encode()
    got = verdicts(definition, body)
    assert got[0] == got[1] == got[2], got
    compiled = compile_dataset(definition)
    checker = oracle(compiled.json_schema)
    failed = {e.index for e in got[0][1]}
    for i, record in enumerate(records):
        ints_ok = all(-2**63 <= v < 2**63 for v in _ints(record))
        if ints_ok:  # the language refuses integers beyond int64, JSON Schema does not
            assert checker.is_valid(record) == (i not in failed), record


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    return []


# --- evolution --------------------------------------------------------------------------------

def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["change"]) for c in breaking_changes(
        compile_dataset(old).definition, compile_dataset(new).definition)]


def test_envelope_changes_are_breaking_and_name_what_records_lose() -> None:
    plain = {"fields": {"name": "string"}}
    assert _changes(plain, {**plain, "envelope": "none"}) == [
        ("", "envelope_changed"), ("timestamp", "field_removed"), ("context", "field_removed")]
    assert _changes({**plain, "envelope": "none"}, plain) == [
        ("", "envelope_changed"), ("timestamp", "field_added_required"),
        ("context", "field_added_required")]
    assert _changes(plain, {**plain, "envelope": "event"}) == [
        ("", "envelope_changed"), ("context", "field_removed")]
    assert _changes({**plain, "envelope": "event"}, {**plain, "envelope": "none"}) == [
        ("", "envelope_changed"), ("timestamp", "field_removed")]
    # the same envelope spelled out or not: nothing changed
    assert _changes(plain, {**plain, "envelope": "loguro"}) == []
    message = breaking_changes(compile_dataset(plain).definition,
                               compile_dataset({**plain, "envelope": "event"}).definition)[0]
    assert message["message"].startswith("Envelope changed from loguro to event: the server")


def test_event_timestamp_made_required_is_breaking() -> None:
    old = {"envelope": "event", "fields": {"s": "string"}}
    new = {"envelope": "event", "fields": {"s": "string", "timestamp": {
        "type": "timestamp", "required": True}}}
    assert _changes(old, new) == [("timestamp", "field_became_required")]
    assert _changes(new, old) == []


def test_member_declarations_in_the_evolution_report() -> None:
    def labels(additional: Any, **more: Any) -> dict[str, Any]:
        return {"fields": {"labels": {"type": "object", "additionalProperties": additional,
                                      **more}}}
    assert _changes(labels(True), labels("string")) == [("labels.*", "type_narrowed")]
    assert _changes(labels("string"), labels(True)) == []
    assert _changes(labels({"type": "string", "maxLength": 9}),
                    labels({"type": "string", "maxLength": 3})) == [
        ("labels.*", "length_tightened")]
    assert _changes(labels("string"), labels(False)) == [("labels", "properties_restricted")]
    assert _changes(labels(False), labels("string")) == []
    # a declared member that becomes an undeclared one must now be what they must be
    declared = labels(True, properties={"n": {"type": "integer"}})
    assert _changes(declared, labels("string")) == [
        ("labels.*", "type_narrowed"), ("labels.n", "type_narrowed")]
    # a new property of an object whose members were strings: compared with a string
    assert _changes(labels("string"), labels("string", properties={"n": {"type": "integer"}}))\
        == [("labels.n", "type_narrowed")]


# --- over the admin API -------------------------------------------------------------------------

def put(svc: Service, dataset: str, definition: Any, **query: str) -> Any:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    return svc.admin("PUT", f"/admin/projects/p1/datasets/{dataset}{suffix}", json=definition)


@pytest.mark.parametrize(("definition", "pointer", "message"), [
    ({"envelope": "event", "fields": {"id": "string"}}, "/fields/id",
     'field name \'id\' cannot be declared: with envelope "event" the server assigns every'
     " record its id"),
    ({"envelope": "event", "fields": {"timestamp": "string"}}, "/fields/timestamp",
     'with envelope "event", timestamp is the event time (the receipt time when a record has'
     ' none): declare it as {"type": "timestamp"}, maybe with "required": true, nothing else'),
    ({"envelope": "event", "fields": {"timestamp": {"type": ["timestamp", "null"]}}},
     "/fields/timestamp", None),
    ({"envelope": "none", "fields": {}}, "/fields",
     'with envelope "none" a record is only its declared fields: declare at least one'),
    ({"envelope": "none", "fields": {"__x": "string"}}, "/fields/__x",
     "field name '__x' cannot be declared (reserved: names starting with __)"),
    ({"envelope": "loguro", "fields": {"context": "string"}}, "/fields/context",
     "field name 'context' cannot be declared (reserved: timestamp, context, names starting"
     " with __)"),
    ({"envelope": "Event", "fields": {}}, "/envelope",
     "'Event' is not one of ['loguro', 'none', 'event']"),
])
def test_put_refuses_bad_envelope_definitions(svc: Service, definition: dict[str, Any],
                                              pointer: str, message: str | None) -> None:
    r = put(svc, "d", definition)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "Invalid dataset definition"
    assert all(e["code"] == "invalid_definition" for e in body["errors"])
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert pointer in fields, fields
    if message is not None:
        assert fields[pointer] == message
    assert svc.admin("GET", "/admin/projects/p1/datasets/d").status_code == 404


def test_put_stores_envelopes_and_reports_an_envelope_change(svc: Service) -> None:
    r = put(svc, "d", SEED_DEFINITION)
    assert r.status_code == 201
    none = {"envelope": "none", "fields": {**SEED_DEFINITION["fields"],
                                           "timestamp": "timestamp"}}
    r = put(svc, "d", none, dry_run="true")
    assert (r.status_code, r.json()["version"], r.json()["dry_run"]) == (200, 2, True)
    assert [(c["field"], c["change"]) for c in r.json()["breaking_changes"]] == [
        ("", "envelope_changed"), ("context", "field_removed")]
    assert "context" not in r.json()["json_schema"]["properties"]
    r = put(svc, "d", none)
    assert (r.status_code, r.json()["version"], r.json()["changed"]) == (200, 2, True)
    got = svc.admin("GET", "/admin/projects/p1/datasets/d").json()
    assert got["definition"] == none and got["version"] == 2
    # the same definition again is no change; back to Loguro is one more envelope change
    assert put(svc, "d", none).json()["changed"] is False
    back = put(svc, "d", SEED_DEFINITION).json()
    assert back["version"] == 3
    assert ("", "envelope_changed") in [(c["field"], c["change"])
                                        for c in back["breaking_changes"]]


def test_put_dry_run_shows_a_labels_map(svc: Service) -> None:
    r = put(svc, "m", copy.deepcopy(LABELS_DEF), dry_run="true")
    assert r.status_code == 200, r.text
    assert r.json()["json_schema"]["properties"]["labels"]["additionalProperties"] == {
        "type": "string", "maxLength": 5}


def test_envelope_free_records_over_http(svc: Service) -> None:
    svc.put_dataset("p1", "plain", NONE_DEF)
    key = svc.create_key("p1", "u1")
    assert svc.post("/datasets/plain", key, {"context": 5, "name": "a"}).status_code == 202
    r = svc.post("/datasets/plain/batch", key, [
        {"context": 5, "name": "a"},
        {"timestamp": "2026-06-10T10:58:00Z", "context": {"source": "x"}, "name": "b"}])
    assert r.status_code == 400
    assert r.json()["errors"] == [{"index": 1, "code": "invalid_integer", "field": "context",
                                   "message": "Invalid integer field: context"}]

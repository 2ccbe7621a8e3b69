"""Issue 6, "Auth and tenancy" (definitions): hostile dataset definitions are refused at
registration through the admin API, with JSON Pointers, without touching the network or the
file system; and validation never mutates what it is given.
"""

from __future__ import annotations

import builtins
import copy
import io
import json
import os
import socket
import time
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest_fixtures import SEED_DEFINITION, Service
from validator import DefinitionError, compile_dataset
from validator.ecma_regex import compile_pattern

DS = "/admin/projects/p1/datasets/hostile"
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


class Tripwire:
    """Records every network connection, name lookup and file open while armed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        self.armed = False
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo
        real_open = builtins.open
        real_io_open = io.open
        real_os_open = os.open

        def record(kind: str, target: Any) -> None:
            if self.armed:
                self.calls.append((kind, str(target)))

        def connect(sock: socket.socket, address: Any) -> Any:
            record("connect", address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            record("connect", address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
            record("getaddrinfo", host)
            return real_getaddrinfo(host, *args, **kw)

        def open_(file: Any, *args: Any, **kw: Any) -> Any:
            record("open", file)
            return real_open(file, *args, **kw)

        def io_open(file: Any, *args: Any, **kw: Any) -> Any:
            record("open", file)
            return real_io_open(file, *args, **kw)

        def os_open(path: Any, *args: Any, **kw: Any) -> Any:
            record("open", path)
            return real_os_open(path, *args, **kw)

        def urlopen(url: Any, *args: Any, **kw: Any) -> Any:
            record("urlopen", url)
            raise AssertionError(f"urlopen({url!r}) during a definition check")

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", io_open)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(urllib.request, "urlopen", urlopen)

    def hostile(self) -> list[tuple[str, str]]:
        """Calls that reach for a referenced resource."""
        return [(kind, target) for kind, target in self.calls
                if "169.254" in target or "passwd" in target or kind == "urlopen"]


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Tripwire:
    # Warm what is legitimately loaded once (the meta-schema file) before arming.
    compile_dataset(SEED_DEFINITION)
    return Tripwire(monkeypatch)


def _string_field(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


REF_DEFINITIONS: dict[str, tuple[dict[str, Any], str]] = {
    "field_is_a_ref": ({"fields": {"x": {"$ref": METADATA}}}, "/fields/x"),
    "ref_beside_a_type": ({"fields": {"x": _string_field(**{"$ref": METADATA})}}, "/fields/x"),
    "ref_to_a_file": ({"fields": {"x": {"$ref": "file:///etc/passwd"}}}, "/fields/x"),
    "nested_property_ref": (
        {"fields": {"x": {"type": "object",
                          "properties": {"y": {"$ref": "file:///etc/passwd#/x"}}}}},
        "/fields/x/properties/y"),
    "items_ref": ({"fields": {"x": {"type": "array", "items": {"$ref": METADATA}}}},
                  "/fields/x/items"),
    "dynamic_ref": ({"fields": {"x": _string_field(**{"$dynamicRef": METADATA})}}, "/fields/x"),
    "top_level_ref": ({"$ref": METADATA, "fields": {"x": "string"}}, ""),
    "top_level_id_and_schema": ({"$id": METADATA, "$schema": "file:///etc/passwd",
                                 "fields": {"x": "string"}}, ""),
    "defs_with_ref": ({"$defs": {"a": {"$ref": METADATA}}, "fields": {"x": "string"}}, ""),
    "field_type_is_a_url": ({"fields": {"x": METADATA}}, "/fields/x"),
}


@pytest.mark.parametrize("name", list(REF_DEFINITIONS))
def test_refs_to_the_network_or_files_are_refused_at_registration_without_access(
    svc: Service, tripwire: Tripwire, name: str
) -> None:
    definition, pointer = REF_DEFINITIONS[name]
    tripwire.armed = True
    started = time.monotonic()
    r = svc.admin("PUT", DS, json=definition)
    elapsed = time.monotonic() - started
    tripwire.armed = False
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "Invalid dataset definition"
    assert pointer in [e["field"] for e in body["errors"]], body["errors"]
    assert all(e["field"] == "" or e["field"].startswith("/") for e in body["errors"])
    assert tripwire.hostile() == []
    assert elapsed < 2
    assert svc.admin("GET", DS).status_code == 404


@pytest.mark.parametrize("name", list(REF_DEFINITIONS))
def test_the_pure_validator_never_resolves_a_ref(tripwire: Tripwire, name: str) -> None:
    definition, pointer = REF_DEFINITIONS[name]
    tripwire.armed = True
    with pytest.raises(DefinitionError) as info:
        compile_dataset(definition)
    tripwire.armed = False
    assert pointer in [p for p, _ in info.value.problems]
    # The validator is pure: no socket, no lookup, no file at all.
    assert tripwire.calls == []


def test_a_ref_shaped_value_is_only_data(svc: Service, tripwire: Tripwire) -> None:
    # "$ref" as a property *name*, or inside enum/const values, is plain data: accepted,
    # and still nothing is fetched.
    definition = {"fields": {
        "x": {"type": "object", "properties": {"$ref": "string"}, "required": ["$ref"]},
        "y": {"enum": [{"$ref": METADATA}, "b"]},
        "z": {"const": {"$ref": "file:///etc/passwd"}},
    }}
    tripwire.armed = True
    r = svc.admin("PUT", DS, json=definition)
    tripwire.armed = False
    assert r.status_code == 201, r.text
    assert tripwire.hostile() == []
    key = svc.create_key("p1", "u1")
    record = {"timestamp": "2026-06-10T10:58:00Z", "context": {}, "x": {"$ref": METADATA},
              "y": {"$ref": METADATA}, "z": {"$ref": "file:///etc/passwd"}}
    tripwire.armed = True
    assert svc.post("/datasets/hostile", key, record).status_code == 202
    tripwire.armed = False
    assert tripwire.hostile() == []
    line = svc.drain()[0]
    assert {k: v for k, v in line.items() if not k.startswith("__")} == record


# --- catastrophic patterns ---------------------------------------------------------------------

# Exponential on a backtracking engine; on RE2 (linear time) harmless, so accepted.
CATASTROPHIC = ["(a+)+$", "^(a+)+$", "(a|a)*$", "(a|aa)+$", "(.*a){12}", r"^(\w+\s?)*$",
                "(x+x+)+y", "^(([a-z])+.)+[A-Z]([a-z])+$", "^a*a*a*a*a*a*a*a*b$"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_catastrophic_pattern_checks_a_hostile_record_fast(
    svc: Service, pattern: str
) -> None:
    """The issue's case: the pattern is accepted and a record with the longest hostile
    value a field may hold gets its 400 at once (it took 30 s on Python's engine)."""
    assert svc.admin("PUT", DS, json={"fields": {
        "x": _string_field(pattern=pattern),
        "y": {"type": "array", "items": _string_field(pattern=pattern), "required": False},
    }}).status_code == 201
    key = svc.create_key("p1", "u1")
    hostile = "a" * 60_000 + "!"
    record = {"timestamp": "2026-06-10T10:58:00Z", "context": {}, "x": hostile,
              "y": [hostile]}
    started = time.monotonic()
    r = svc.post("/datasets/hostile", key, record)
    assert time.monotonic() - started < 1
    if compile_pattern(pattern).search(hostile):  # (a|a)*$ matches the empty end
        assert r.status_code == 202, r.text
        return
    assert r.status_code == 400, r.text
    assert [(e["code"], e["field"]) for e in r.json()["errors"]] == [
        ("pattern_mismatch", "x"), ("pattern_mismatch", "y[0]")]


@pytest.mark.parametrize(("pattern", "says"), [
    (r"(a)\1", "backreferences"), ("a(?=b)", "lookahead"), ("(?<!a)b", "lookbehind"),
    ("(.*a){999}", "too large"),
])
def test_what_re2_cannot_run_is_refused_at_registration(
    svc: Service, pattern: str, says: str
) -> None:
    for decl, pointer in (
        (_string_field(pattern=pattern), "/fields/x/pattern"),
        ({"type": "array", "items": _string_field(pattern=pattern)}, "/fields/x/items/pattern"),
    ):
        r = svc.admin("PUT", DS, json={"fields": {"x": decl}})
        assert r.status_code == 400, (pattern, r.status_code, r.text)
        errors = [e for e in r.json()["errors"] if e["field"] == pointer]
        assert errors and says in errors[0]["message"], r.text
    assert svc.admin("GET", DS).status_code == 404


@pytest.mark.parametrize("pattern", [r"^[A-Z]{2}$", r"^(ab)+$", r"a+b+", r"^\d{4}-\d{2}$",
                                     r"^[a-z0-9._-]+@[a-z0-9.-]+$", r"^(?:foo|bar)baz$"])
def test_ordinary_patterns_are_still_accepted(svc: Service, pattern: str) -> None:
    r = svc.admin("PUT", DS, json={"fields": {"x": _string_field(pattern=pattern)}})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("pattern", ["(", "[a-", "(?P<x>a)(?P<x>b)", "a{2,1}", "\\"])
def test_a_pattern_that_does_not_compile_is_400_with_its_pointer(
    svc: Service, pattern: str
) -> None:
    r = svc.admin("PUT", DS, json={"fields": {"x": _string_field(pattern=pattern)}})
    assert r.status_code == 400, r.text
    assert "/fields/x/pattern" in [e["field"] for e in r.json()["errors"]]


# --- nesting -----------------------------------------------------------------------------------

def _nested_text(levels: int, shape: str) -> bytes:
    """A definition nested ``levels`` deep, built as text (json.dumps would recurse)."""
    if shape == "properties":
        opener, leaf, closer = '{"type": "object", "properties": {"a": ', '"string"', "}}"
    else:
        opener, leaf, closer = '{"type": "array", "items": ', '"string"', "}"
    return ('{"fields": {"x": ' + opener * levels + leaf + closer * levels + "}}").encode()


def _nested(levels: int, shape: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_nested_text(levels, shape))
    return value


def test_nesting_up_to_the_limit_is_accepted(svc: Service) -> None:
    assert svc.admin("PUT", DS, json=_nested(28, "properties")).status_code == 201
    assert svc.admin("PUT", DS, json=_nested(28, "items")).status_code == 200


@pytest.mark.parametrize(("levels", "shape"), [
    (29, "properties"), (31, "properties"), (60, "properties"),
    (100, "properties"),
    (500, "properties"),
    (1000, "properties"),  # 2,000 JSON levels: past orjson's limit, invalid JSON
    (29, "items"), (31, "items"), (60, "items"), (100, "items"),
    (500, "items"),
    (1000, "items"),
    (5000, "properties"), (5000, "items"),
])
def test_nesting_past_the_limit_is_refused_with_a_pointer_never_500(
    svc: Service, levels: int, shape: str
) -> None:
    started = time.monotonic()
    r = svc.admin("PUT", DS, content=_nested_text(levels, shape),
                  headers={"Content-Type": "application/json"})
    assert time.monotonic() - started < 5
    assert r.status_code == 400, (levels, shape, r.status_code, r.text[:300])
    body = r.json()
    assert body["success"] is False
    json_levels = levels * (2 if shape == "properties" else 1) + 2
    if json_levels <= 1024:  # orjson parses it (its limit): the definition check must name where
        fields = [e["field"] for e in body["errors"]]
        assert any(f.startswith("/fields/x/") for f in fields), fields
        assert len(r.content) < 64 * 1024
    else:
        assert body["errors"][0]["code"] == "invalid_json"
    assert svc.admin("GET", DS).status_code == 404


# --- validation never mutates --------------------------------------------------------------------

RICH: dict[str, Any] = {
    "fields": {
        "s": {"type": "string", "minLength": 1, "maxLength": 50, "pattern": "^[a-z]+$"},
        "n": {"type": "number", "minimum": 0, "maximum": 100},
        "i": {"type": "integer", "multipleOf": 2},
        "b": "boolean",
        "t": "timestamp",
        "opt": {"type": ["string", "null"], "required": False},
        "e": {"enum": ["a", 1, None, [1, 2], {"k": "v"}]},
        "c": {"const": {"deep": [1, {"x": True}]}},
        "o": {"type": "object", "required": ["p"],
              "properties": {"p": "integer", "q": {"type": "array", "items": "string"}}},
        "oa": {"type": "object", "additionalProperties": True, "properties": {"p": "string"}},
        "a": {"type": "array", "items": {"type": "object", "properties": {"v": "number"},
                                         "required": ["v"]},
              "uniqueItems": True, "maxItems": 5},
        "u": {"type": "string", "format": "uuid", "required": False},
    }
}
VALID = {
    "timestamp": "2026-06-10T10:58:00Z",
    "context": {"nested": {"list": [1, 2.5, None, {"x": "y"}]}, "big": 2**62},
    "s": "abc", "n": 1.0, "i": 4, "b": False, "t": "2026-06-10T10:58:00.123+02:00",
    "opt": None, "e": [1, 2], "c": {"deep": [1, {"x": True}]},
    "o": {"p": 1, "q": ["a"]}, "oa": {"p": "x", "extra": {"free": [1]}},
    "a": [{"v": 1}, {"v": 2.5}], "u": "123e4567-e89b-12d3-a456-426614174000",
}
INVALID = [
    {**VALID, "s": "ABC", "n": -1, "i": 3, "b": "no", "t": "tomorrow", "opt": 5},
    {**VALID, "e": [2, 1], "c": {"deep": [1, {"x": False}]}, "o": {"q": [1]}},
    {**VALID, "a": [{"v": 1}, {"v": 1}], "oa": {"p": 5}, "u": "not-a-uuid", "extra": 1},
    {**VALID, "context": [], "timestamp": 5},
    {k: v for k, v in VALID.items() if k not in ("s", "o", "timestamp")},
    {**VALID, "o": {"p": True, "q": "x", "r": 1}, "a": [{"v": "1"}] * 6, "n": 1e308},
    [VALID], "record", None, 5,
]


def _same(a: Any, b: Any) -> bool:
    """Equal with exact types (1 and 1.0, True and 1 differ), dict key order included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_compiling_never_mutates_the_definition() -> None:
    given = copy.deepcopy(RICH)
    compiled = compile_dataset(given)
    assert _same(given, RICH)
    # and the compiled dataset shares nothing mutable with what it was given
    given["fields"]["o"]["properties"]["p"] = "string"
    assert compiled.validate(VALID) == []


@pytest.mark.parametrize("record", [VALID, *INVALID])
def test_validate_never_mutates_the_record(record: Any) -> None:
    dataset = compile_dataset(RICH)
    before = copy.deepcopy(record)
    errors = dataset.validate(record)
    assert _same(record, before)
    assert (errors == []) == (record is VALID)
    dataset.validate(record)
    assert _same(record, before)


def test_validate_batch_and_validate_one_never_change_what_is_stored() -> None:
    dataset = compile_dataset(RICH)
    records = [VALID, {**VALID, "n": 0, "i": -2, "context": {"x": "\u00e9\n\"", "y": 1e-7}}]
    body = json.dumps(records).encode()
    frozen = bytes(body)
    result = dataset.validate_batch(body)
    assert result.ok, result.errors
    assert body == frozen
    # what will be stored decodes to exactly what was sent (and was validated)
    assert _same(result.records, json.loads(body))
    one = dataset.validate_one(json.dumps(records[1]).encode())
    assert one.ok and _same(one.records, [json.loads(json.dumps(records[1]))])
    bad = json.dumps([VALID, *[r for r in INVALID if isinstance(r, dict)]]).encode()
    frozen_bad = bytes(bad)
    result = dataset.validate_batch(bad)
    assert not result.ok and bad == frozen_bad


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from([*RICH["fields"], "timestamp", "context",
                                                  "zzz"]), _JSON, max_size=6))
def test_validate_never_mutates_random_records(overrides: dict[str, Any]) -> None:
    dataset = _RICH_COMPILED
    record = {**VALID, **overrides}
    before = copy.deepcopy(record)
    dataset.validate(record)
    assert _same(record, before)
    body = json.dumps([record]).encode()
    result = dataset.validate_batch(body)
    if result.ok:
        assert _same(result.records, [before])


_RICH_COMPILED = compile_dataset(RICH)

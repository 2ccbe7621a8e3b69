"""A ``type`` list accepts every type it names; ``string`` with ``timestamp`` (which would
make the timestamp check nothing) is refused at registration, saying why. A value of none of
the listed types is named with all of them, in the seed's grammar."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ingest_fixtures import Service
from validator import DefinitionError, compile_dataset

BASE = {"timestamp": "2026-06-10T10:58:00Z", "context": {}}
DS = "/admin/projects/p1/datasets/lists"


def _verdicts(definition: dict[str, Any], value: Any) -> list[tuple[str, str, str]]:
    """(code, field, message) of a record with ``t`` = ``value``, from ``validate`` and
    from ``validate_batch`` (which must agree)."""
    v = compile_dataset(definition)
    record = {**BASE, "t": value}
    one = [(e.code, e.field, e.message) for e in v.validate(record)]
    batch = v.validate_batch(json.dumps([record]).encode())
    assert [(e.code, e.field, e.message) for e in batch.errors] == one
    return one


@pytest.mark.parametrize("types", [["string", "timestamp"], ["timestamp", "string", "null"]])
def test_string_with_timestamp_is_refused_with_the_reason(types: list[str]) -> None:
    for decl, pointer in (({"type": types}, "/fields/t/type"),
                          ({"type": "array", "items": {"type": types}},
                           "/fields/t/items/type")):
        with pytest.raises(DefinitionError) as info:
            compile_dataset({"fields": {"t": decl}})
        assert [(p, "every string would be accepted" in m) for p, m in info.value.problems
                ] == [(pointer, True)]


TIMESTAMP_OR_NUMBER = {"fields": {"t": {"type": ["timestamp", "number"]}}}


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-06-10T10:58:00Z", []),
    (12.5, []),
    (3, []),
    # a string that is not a timestamp is neither listed type
    ("hello", [("invalid_timestamp", "t", "Invalid timestamp field: t")]),
    (None, [("invalid_type", "t", "Invalid timestamp or number field: t")]),
    (True, [("invalid_type", "t", "Invalid timestamp or number field: t")]),
    ({}, [("invalid_type", "t", "Invalid timestamp or number field: t")]),
])
def test_every_listed_type_is_accepted(value: Any, expected: list[Any]) -> None:
    assert _verdicts(TIMESTAMP_OR_NUMBER, value) == expected


@pytest.mark.parametrize(("types", "value", "expected"), [
    (["string", "integer", "boolean"], "x", []),
    (["string", "integer", "boolean"], 7, []),
    (["string", "integer", "boolean"], False, []),
    (["string", "integer", "boolean"], 1.5,
     [("invalid_type", "t", "Invalid string, integer or boolean field: t")]),
    (["string", "integer", "null"], None, []),
    (["string", "integer", "null"], [],
     [("invalid_type", "t", "Invalid string or integer field: t")]),
    # one type (and null) keeps the seed's words
    (["string", "null"], 5, [("invalid_string", "t", "Invalid string field: t")]),
    (["timestamp", "null"], "hello", [("invalid_timestamp", "t", "Invalid timestamp field: t")]),
    (["timestamp", "null"], None, []),
])
def test_type_list_verdicts(types: list[str], value: Any, expected: list[Any]) -> None:
    assert _verdicts({"fields": {"t": {"type": types}}}, value) == expected


def test_type_lists_over_http(svc: Service) -> None:
    r = svc.admin("PUT", DS, json={"fields": {"t": {"type": ["string", "timestamp"]}}})
    assert r.status_code == 400, r.text
    [error] = [e for e in r.json()["errors"] if e["field"] == "/fields/t/type"]
    assert "every string would be accepted" in error["message"]

    svc.put_dataset("p1", "lists", TIMESTAMP_OR_NUMBER)
    key = svc.create_key("p1", "u1")
    assert svc.post("/datasets/lists", key, {**BASE, "t": 4.5}).status_code == 202
    assert svc.post("/datasets/lists", key, {**BASE, "t": "2026-01-01T00:00:00Z"}
                    ).status_code == 202
    r = svc.post("/datasets/lists", key, {**BASE, "t": None})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "Invalid timestamp or number field: t"
    assert [(e["code"], e["field"]) for e in body["errors"]] == [("invalid_type", "t")]
    r = svc.post("/datasets/lists", key, {**BASE, "t": "hello"})
    assert r.status_code == 400
    assert r.json()["error"] == "Invalid timestamp field: t"

"""The evolution report, one rule at a time (pure; the property test is in
``test_registry_evolution_property.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from strictgate.registry.evolution import breaking_changes


def _defn(**fields: Any) -> dict[str, Any]:
    return {"fields": fields}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["change"]) for c in breaking_changes(old, new)]


SEED = _defn(country="string", plan="string", amount="number", active="boolean",
             signup_at="timestamp")


def test_identical_and_cosmetic_changes_are_not_breaking() -> None:
    assert breaking_changes(SEED, SEED) == []
    described = {"description": "billing", "fields": {
        **SEED["fields"], "amount": {"type": "number", "description": "EUR"}}}
    assert breaking_changes(SEED, described) == []
    assert breaking_changes(_defn(a="timestamp"),
                            _defn(a={"type": "string", "format": "date-time"})) == []


def test_every_change_has_field_change_and_sentence() -> None:
    changes = breaking_changes(SEED, _defn(country="string"))
    assert changes and all(set(c) == {"field", "change", "message"} for c in changes)
    assert changes[0]["message"].startswith("Field plan was removed")


@pytest.mark.parametrize(("old", "new", "expected"), [
    # fields
    (_defn(a="string"), _defn(), [("a", "field_removed")]),
    (_defn(a={"type": "string", "required": False}), _defn(), [("a", "field_removed")]),
    (_defn(), _defn(a="string"), [("a", "field_added_required")]),
    (_defn(), _defn(a={"type": "string", "required": False}), []),
    (_defn(a={"type": "string", "required": False}), _defn(a="string"),
     [("a", "field_became_required")]),
    (_defn(a="string"), _defn(a={"type": "string", "required": False}), []),
    # types
    (_defn(a="number"), _defn(a="integer"), [("a", "type_narrowed")]),
    (_defn(a="integer"), _defn(a="number"), []),
    (_defn(a="string"), _defn(a="number"), [("a", "type_narrowed")]),
    (_defn(a={"type": ["string", "null"]}), _defn(a="string"), [("a", "type_narrowed")]),
    (_defn(a="string"), _defn(a={"type": ["string", "null"]}), []),
    (_defn(a="string"), _defn(a="timestamp"), [("a", "format_changed")]),
    (_defn(a="timestamp"), _defn(a="string"), []),
    # ranges
    (_defn(a="number"), _defn(a={"type": "number", "minimum": 0}), [("a", "range_tightened")]),
    (_defn(a={"type": "number", "minimum": 0}), _defn(a={"type": "number", "minimum": -1}), []),
    (_defn(a={"type": "number", "minimum": 0}),
     _defn(a={"type": "number", "exclusiveMinimum": 0}), [("a", "range_tightened")]),
    (_defn(a={"type": "number", "exclusiveMinimum": 0}),
     _defn(a={"type": "number", "minimum": 0}), []),
    (_defn(a={"type": "number", "maximum": 10}), _defn(a={"type": "number", "maximum": 9}),
     [("a", "range_tightened")]),
    (_defn(a={"type": "number", "maximum": 10}),
     _defn(a={"type": "number", "exclusiveMaximum": 10}), [("a", "range_tightened")]),
    (_defn(a={"type": "integer", "multipleOf": 4}), _defn(a={"type": "integer", "multipleOf": 2}),
     []),
    (_defn(a={"type": "integer", "multipleOf": 2}), _defn(a={"type": "integer", "multipleOf": 4}),
     [("a", "range_tightened")]),
    (_defn(a={"type": "number", "multipleOf": 0.5}),
     _defn(a={"type": "number", "multipleOf": 0.25}), [("a", "range_tightened")]),
    # lengths, patterns, formats
    (_defn(a="string"), _defn(a={"type": "string", "maxLength": 3}),
     [("a", "length_tightened")]),
    (_defn(a={"type": "string", "minLength": 1}), _defn(a={"type": "string", "minLength": 2}),
     [("a", "length_tightened")]),
    (_defn(a={"type": "string", "maxLength": 3}), _defn(a={"type": "string", "maxLength": 4}), []),
    (_defn(a="string"), _defn(a={"type": "string", "pattern": "^x"}),
     [("a", "pattern_changed")]),
    (_defn(a={"type": "string", "pattern": "^x"}), _defn(a={"type": "string", "pattern": "^y"}),
     [("a", "pattern_changed")]),
    (_defn(a={"type": "string", "pattern": "^x"}), _defn(a="string"), []),
    (_defn(a="string"), _defn(a={"type": "string", "format": "email"}),
     [("a", "format_changed")]),
    # enums
    (_defn(a={"type": "string", "enum": ["x", "y"]}),
     _defn(a={"type": "string", "enum": ["x"]}), [("a", "enum_value_removed")]),
    (_defn(a={"type": "string", "enum": ["x"]}),
     _defn(a={"type": "string", "enum": ["x", "y"]}), []),
    (_defn(a="string"), _defn(a={"type": "string", "enum": ["x"]}), [("a", "enum_added")]),
    (_defn(a={"type": "string", "enum": ["x"]}), _defn(a={"type": "string", "const": "x"}), []),
    (_defn(a={"type": "integer", "enum": [1, 2]}), _defn(a={"type": "number", "enum": [1.0, 2]}),
     []),
    (_defn(a={"type": ["boolean", "integer"], "enum": [True, 1]}),
     _defn(a={"type": ["boolean", "integer"], "enum": [1]}), [("a", "enum_value_removed")]),
    # old enum values are checked one by one against new limits
    (_defn(a={"type": "integer", "enum": [1, 2]}),
     _defn(a={"type": "integer", "enum": [1, 2], "maximum": 5}), []),
    (_defn(a={"type": "integer", "enum": [1, 9]}),
     _defn(a={"type": "integer", "enum": [1, 9], "maximum": 5}), [("a", "range_tightened")]),
    (_defn(a={"type": "string", "enum": ["ab"]}),
     _defn(a={"type": "string", "enum": ["ab"], "maxLength": 1}), [("a", "length_tightened")]),
    # arrays
    (_defn(a={"type": "array", "items": "string"}),
     _defn(a={"type": "array", "items": "string", "maxItems": 2}), [("a", "items_tightened")]),
    (_defn(a={"type": "array", "items": "string"}),
     _defn(a={"type": "array", "items": "string", "uniqueItems": True}),
     [("a", "items_tightened")]),
    (_defn(a={"type": "array", "items": "number"}), _defn(a={"type": "array", "items": "integer"}),
     [("a[]", "type_narrowed")]),
    (_defn(a={"type": "array", "items": {"type": "string", "maxLength": 5}}),
     _defn(a={"type": "array", "items": {"type": "string", "maxLength": 4}}),
     [("a[]", "length_tightened")]),
    # nested objects
    (_defn(a={"type": "object", "properties": {"b": "string"}}),
     _defn(a={"type": "object", "properties": {}}), [("a.b", "field_removed")]),
    (_defn(a={"type": "object", "properties": {"b": "string"}}),
     _defn(a={"type": "object", "properties": {"b": "string", "c": "integer"}}), []),
    (_defn(a={"type": "object", "properties": {"b": "string"}, "required": ["b"]}),
     _defn(a={"type": "object", "properties": {"b": "string", "c": "integer"},
              "required": ["b", "c"]}),
     [("a.c", "field_added_required")]),
    # open objects (additionalProperties: true)
    (_defn(a={"type": "object", "properties": {}, "additionalProperties": True}),
     _defn(a={"type": "object", "properties": {}}), [("a", "properties_restricted")]),
    (_defn(a={"type": "object", "properties": {"b": "string"}}),
     _defn(a={"type": "object", "properties": {}, "additionalProperties": True}), []),
    (_defn(a={"type": "object", "additionalProperties": True}),
     _defn(a={"type": "object", "properties": {"b": "string"}, "additionalProperties": True}),
     [("a.b", "type_narrowed")]),
    (_defn(a={"type": "object", "additionalProperties": True}),
     _defn(a={"type": "object", "additionalProperties": True, "required": ["z"]}),
     [("a.z", "field_became_required")]),
    # untyped (enum) fields
    (_defn(a={"enum": ["x", 1]}), _defn(a={"enum": ["x"]}), [("a", "enum_value_removed")]),
    (_defn(a={"enum": ["x", 1]}), _defn(a={"type": "string", "enum": ["x", 1]}),
     [("a", "type_narrowed")]),
    (_defn(a={"type": "object", "properties": {"b": "string"}, "required": []}),
     _defn(a={"type": "object", "properties": {"b": "string"}, "required": ["b"]}),
     [("a.b", "field_became_required")]),
    (_defn(a={"type": "object", "properties": {"b": "string"}, "required": ["b"]}),
     _defn(a={"type": "object", "properties": {"b": "string", "c": "string"},
              "required": ["b"]}), []),
    (_defn(a={"type": "array", "items": {"type": "object", "properties": {"c": "number"}}}),
     _defn(a={"type": "array", "items": {"type": "object", "properties": {
         "c": {"type": "number", "minimum": 1}}}}),
     [("a[].c", "range_tightened")]),
])
def test_rules(
    old: dict[str, Any], new: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert _changes(old, new) == expected


def test_type_narrowed_message_names_both_types() -> None:
    [change] = breaking_changes(_defn(amount="number"), _defn(amount="integer"))
    assert change["message"] == (
        "Field amount changed type from number to integer: number values are now rejected"
    )


def test_range_message_quotes_the_new_bound() -> None:
    [change] = breaking_changes(
        _defn(amount="number"), _defn(amount={"type": "number", "exclusiveMinimum": 0}))
    assert change["message"] == "Field amount must now be > 0"


def test_several_changes_are_all_listed_in_a_stable_order() -> None:
    old = _defn(a="string", b="number", c={"type": "string", "required": False})
    new = _defn(b="integer", c="string", d="boolean")
    assert _changes(old, new) == [
        ("a", "field_removed"), ("b", "type_narrowed"), ("c", "field_became_required"),
        ("d", "field_added_required"),
    ]

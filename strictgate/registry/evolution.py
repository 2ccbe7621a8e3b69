"""The evolution report: which changes of a definition reject records the old one accepted.

``breaking_changes(old, new)`` compares two dataset definitions field by field and lists every
change that can make a record valid under ``old`` invalid under ``new``: a field removed or
added as required, an optional field made required, a type narrowed, a range, length or item
count tightened, an enum value removed (or an enum/const added), a pattern or format added or
changed, ``uniqueItems`` switched on. Nested fields are named ``a.b`` and array items ``a[]``.

It is sound by construction: every keyword of the definition language is compared, so a
record valid under ``old`` and invalid under ``new`` always fails on a field a listed change
names. Where deciding inclusion exactly is impractical (two different regexes, two float
``multipleOf``), the change is listed. When the old field is an enum, the old values are
checked one by one against the new numeric and length limits, so narrowing ``maximum`` past
every allowed value is not reported.

The comparison works on definitions as written (string shorthand or keyword objects) and on
the validator's normalized form alike.

A change of envelope (``loguro``, ``none``, ``event``: see :mod:`validator.definition`) is
always reported (``envelope_changed``): what a record must carry and how it is stored both
change. The envelope's own fields are compared as fields too (Loguro's ``timestamp`` and
``context``, an event's optional ``timestamp``), so the report also names what records lose
or must now send. An object whose ``additionalProperties`` is a field declaration checks
its undeclared members against it: they are named ``a.*``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from validator.definition import (
    DEFAULT_ENVELOPE,
    EVENT_TIMESTAMP,
    IMPLICIT_EVENT_TIMESTAMP,
    envelope_of,
)

ALL_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
# Types reported to users as they wrote them; "timestamp" is a string with format date-time.
_TIMESTAMP = "timestamp"
_DATE_TIME = "date-time"


@dataclasses.dataclass(frozen=True)
class Bound:
    """A lower or upper numeric bound; ``exclusive`` for exclusiveMinimum/Maximum."""

    value: int | float
    exclusive: bool


@dataclasses.dataclass
class Spec:
    """One field's constraints in a uniform shape (absent keyword = no constraint)."""

    types: frozenset[str] = ALL_TYPES
    required: bool = True
    timestamp: bool = False  # declared as "timestamp" (only changes the wording)
    enum: tuple[Any, ...] | None = None
    lower: Bound | None = None
    upper: Bound | None = None
    multiple_of: int | float | None = None
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None
    items: Spec | None = None
    min_items: int = 0
    max_items: int | None = None
    unique_items: bool = False
    properties: dict[str, Spec] = dataclasses.field(default_factory=dict)
    members_required: frozenset[str] = frozenset()
    """Names a nested object requires (with ``open``, they need not be declared)."""
    open: bool = True
    """Whether members beyond ``properties`` are accepted (see ``additional``)."""
    additional: Spec | None = None
    """What an open object's undeclared members must be (None: anything)."""


# --- parsing ------------------------------------------------------------------------------------


def _types(raw: Any) -> tuple[frozenset[str], bool, str | None]:
    """(JSON types, declared as timestamp, implied format) of a ``type`` value."""
    if raw is None:
        # No type (an enum/const field): every JSON type passes the type test.
        return ALL_TYPES, False, None
    names = [raw] if isinstance(raw, str) else [str(t) for t in raw]
    timestamp = _TIMESTAMP in names
    types = frozenset("string" if t == _TIMESTAMP else t for t in names)
    return types, timestamp, _DATE_TIME if timestamp else None


def _lower(spec: Mapping[str, Any]) -> Bound | None:
    bounds = []
    if _is_number(spec.get("minimum")):
        bounds.append(Bound(spec["minimum"], False))
    if _is_number(spec.get("exclusiveMinimum")):
        bounds.append(Bound(spec["exclusiveMinimum"], True))
    # The tighter of the two is the one in force.
    return max(bounds, key=lambda b: (b.value, b.exclusive)) if bounds else None


def _upper(spec: Mapping[str, Any]) -> Bound | None:
    bounds = []
    if _is_number(spec.get("maximum")):
        bounds.append(Bound(spec["maximum"], False))
    if _is_number(spec.get("exclusiveMaximum")):
        bounds.append(Bound(spec["exclusiveMaximum"], True))
    return min(bounds, key=lambda b: (b.value, not b.exclusive)) if bounds else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_field(raw: Any, *, required: bool = True, top: bool = False) -> Spec:
    """A field definition (``"string"`` or a keyword object) as a :class:`Spec`.

    ``required`` is what the parent says (a nested object's ``required`` list); a top-level
    field says it itself with ``"required": false``.
    """
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        return Spec(required=required)
    types, timestamp, implied_format = _types(raw.get("type"))
    own_required = raw.get("required")
    if top and isinstance(own_required, bool):
        required = own_required
    enum: tuple[Any, ...] | None = None
    if "const" in raw:
        enum = (raw["const"],)
    if isinstance(raw.get("enum"), list):
        values = tuple(raw["enum"])
        enum = values if enum is None else tuple(v for v in enum if _key(v) in _keys(values))
    fmt = raw.get("format") if isinstance(raw.get("format"), str) else None
    # Members not listed in "required" are optional, as in JSON Schema.
    required_members = set(own_required) if isinstance(own_required, list) else set()
    properties: dict[str, Spec] = {}
    if isinstance(raw.get("properties"), Mapping):
        properties = {
            str(name): parse_field(sub, required=name in required_members)
            for name, sub in raw["properties"].items()
        }
    # A declared object is closed unless it says otherwise; an untyped field's objects are not
    # checked for extra members (JSON Schema's default).
    declared_object = raw.get("type") is not None and "object" in types
    additional = raw.get("additionalProperties")
    members: Spec | None = None
    if isinstance(additional, str | Mapping):
        members = parse_field(additional)
        open_ = True
    else:
        open_ = additional if isinstance(additional, bool) else not declared_object
    items = parse_field(raw["items"]) if "items" in raw else None
    return Spec(
        types=types,
        required=required,
        timestamp=timestamp,
        enum=enum,
        lower=_lower(raw),
        upper=_upper(raw),
        multiple_of=raw["multipleOf"] if _is_number(raw.get("multipleOf")) else None,
        min_length=_int(raw.get("minLength"), 0) or 0,
        max_length=_int(raw.get("maxLength"), None),
        pattern=raw.get("pattern") if isinstance(raw.get("pattern"), str) else None,
        format=fmt or implied_format,
        items=items,
        min_items=_int(raw.get("minItems"), 0) or 0,
        max_items=_int(raw.get("maxItems"), None),
        unique_items=raw.get("uniqueItems") is True,
        properties=properties,
        members_required=frozenset(required_members),
        open=open_,
        additional=members,
    )


def _int(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_definition(definition: Mapping[str, Any]) -> Spec:
    """A whole definition as the :class:`Spec` of its (closed) top-level object, the
    envelope's fields included."""
    fields = definition.get("fields")
    properties: dict[str, Spec] = {}
    envelope = envelope_of(definition)
    if envelope == DEFAULT_ENVELOPE:
        properties = {"timestamp": parse_field("timestamp"),
                      "context": Spec(types=frozenset({"object"}))}
    elif envelope == "event":
        properties = {EVENT_TIMESTAMP: parse_field(IMPLICIT_EVENT_TIMESTAMP, top=True)}
    if isinstance(fields, Mapping):
        properties.update(
            {str(name): parse_field(spec, top=True) for name, spec in fields.items()})
    return Spec(types=frozenset({"object"}), properties=properties, open=False)


ANY = Spec(required=False)
"""What an open object says about a member it does not declare: anything, or nothing."""


# --- JSON value equality (1 == 1.0, true != 1) ---------------------------------------------------


def _key(value: Any) -> Any:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", Fraction(value))
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z",)
    if isinstance(value, list):
        return ("a", tuple(_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("o", tuple(sorted((str(k), _key(v)) for k, v in value.items())))
    return ("?", repr(value))


def _keys(values: tuple[Any, ...]) -> set[Any]:
    return {_key(v) for v in values}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


# --- comparison ----------------------------------------------------------------------------------


def _describe_types(spec: Spec) -> str:
    if spec.types == ALL_TYPES:
        return "any type"
    names = sorted(spec.types - ({"integer"} if "number" in spec.types else set()))
    if spec.timestamp:
        names = ["timestamp" if n == "string" else n for n in names]
    return " or ".join(names) if names else "nothing"


def _covers(new: frozenset[str], t: str) -> bool:
    return t in new or (t == "integer" and "number" in new)


def _tighter_lower(old: Bound | None, new: Bound | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return new.value > old.value or (
        new.value == old.value and new.exclusive and not old.exclusive
    )


def _tighter_upper(old: Bound | None, new: Bound | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return new.value < old.value or (
        new.value == old.value and new.exclusive and not old.exclusive
    )


def _multiple_breaks(old: int | float | None, new: int | float | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    if isinstance(old, int) and isinstance(new, int):
        return old % new != 0
    # Float multipleOf is approximate in every engine: only an unchanged value is safe.
    return Fraction(old) != Fraction(new)


def _bound_text(bound: Bound, lower: bool) -> str:
    op = (">" if bound.exclusive else ">=") if lower else ("<" if bound.exclusive else "<=")
    return f"{op} {bound.value}"


def _passes_number(value: Any, spec: Spec) -> bool:
    """Whether an old enum number passes the new numeric limits."""
    if not _is_number(value):
        return True
    lo, hi, m = spec.lower, spec.upper, spec.multiple_of
    if lo is not None and (value < lo.value or (lo.exclusive and value == lo.value)):
        return False
    if hi is not None and (value > hi.value or (hi.exclusive and value == hi.value)):
        return False
    return m is None or (Fraction(value) / Fraction(m)).denominator == 1


def _passes_length(value: Any, spec: Spec) -> bool:
    if not isinstance(value, str):
        return True
    return len(value) >= spec.min_length and (
        spec.max_length is None or len(value) <= spec.max_length
    )


def _passes_items(value: Any, spec: Spec) -> bool:
    if not isinstance(value, list):
        return True
    return len(value) >= spec.min_items and (
        spec.max_items is None or len(value) <= spec.max_items
    )


class _Report:
    def __init__(self) -> None:
        self.changes: list[dict[str, str]] = []

    def add(self, field: str, change: str, message: str) -> None:
        self.changes.append({"field": field, "change": change, "message": message})


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _undeclared(spec: Spec) -> Spec:
    """What an open object says about a member it does not declare."""
    return spec.additional if spec.additional is not None else ANY


def _compare_properties(path: str, old: Spec, new: Spec, out: _Report) -> None:
    old_props, new_props = old.properties, new.properties
    if old.open and not new.open:
        out.add(path, "properties_restricted",
                f"{path} now accepts only its declared fields "
                f"({', '.join(sorted(new_props)) or 'none'}): records with others are rejected")
    if old.open and new.open and new.additional is not None:
        # Undeclared members (of both) must now be what the new declaration says.
        _compare(_child(path, "*"), dataclasses.replace(_undeclared(old), required=True),
                 dataclasses.replace(new.additional, required=True), out)
    for name, old_spec in old_props.items():
        field = _child(path, name)
        if name in new_props:
            _compare(field, old_spec, new_props[name], out)
        elif not new.open:
            out.add(field, "field_removed",
                    f"Field {field} was removed: records that carry it are now rejected")
        else:
            if name in new.members_required and not old_spec.required:
                out.add(field, "field_became_required",
                        f"Field {field} became required: records without it are now rejected")
            if new.additional is not None:
                # Now an undeclared member: it must be what the declaration says.
                _compare(field, dataclasses.replace(old_spec, required=False),
                         dataclasses.replace(new.additional, required=False), out)
    for name, new_spec in new_props.items():
        if name in old_props:
            continue
        field = _child(path, name)
        if old.open:
            # The old object let this member hold anything its undeclared members could.
            was = dataclasses.replace(_undeclared(old), required=name in old.members_required)
            _compare(field, was, new_spec, out)
        elif new_spec.required:
            out.add(field, "field_added_required",
                    f"Field {field} was added as required: records without it are now rejected")
    if new.open:
        # Undeclared members that became required (only an open object can require them).
        for name in sorted(new.members_required - old.members_required):
            if name not in new_props and name not in old_props:
                field = _child(path, name)
                out.add(field, "field_became_required",
                        f"Field {field} became required: records without it are now rejected")


def _compare(path: str, old: Spec, new: Spec, out: _Report) -> None:
    if new.required and not old.required:
        out.add(path, "field_became_required",
                f"Field {path} became required: records without it are now rejected")
    if old.enum is not None:
        # Only the types of values the old enum admits can be lost.
        admitted = {_json_type(v) for v in old.enum if _covers(old.types, _json_type(v))}
        lost = sorted(t for t in admitted if not _covers(new.types, t))
    else:
        lost = sorted(t for t in old.types if not _covers(new.types, t))
    if lost:
        out.add(path, "type_narrowed",
                f"Field {path} changed type from {_describe_types(old)} to "
                f"{_describe_types(new)}: {' and '.join(lost)} values are now rejected")
    kept = frozenset(t for t in old.types if _covers(new.types, t))
    if not kept:
        return
    old_enum = old.enum
    if old_enum is not None:
        # Only the old enum's values can reach the new checks: test them one by one.
        old_enum = tuple(v for v in old_enum if _covers(kept, _json_type(v)))
    _compare_enum(path, old_enum, new, out)
    if kept & {"number", "integer"}:
        _compare_numbers(path, old, old_enum, new, out)
    if "string" in kept:
        _compare_strings(path, old, old_enum, new, out)
    if "array" in kept:
        _compare_arrays(path, old, old_enum, new, out)
    if "object" in kept and (old_enum is None or any(isinstance(v, Mapping) for v in old_enum)):
        _compare_properties(path, old, new, out)


def _compare_enum(path: str, old_enum: tuple[Any, ...] | None, new: Spec, out: _Report) -> None:
    if new.enum is None:
        return
    if old_enum is None:
        out.add(path, "enum_added",
                f"Field {path} now accepts only {_values(new.enum)}: other values are rejected")
        return
    allowed = _keys(new.enum)
    removed = [v for v in old_enum if _key(v) not in allowed]
    if removed:
        out.add(path, "enum_value_removed",
                f"Field {path} no longer accepts {_values(tuple(removed))}")


def _values(values: tuple[Any, ...]) -> str:
    import json

    shown = ", ".join(json.dumps(v, ensure_ascii=False)[:60] for v in values[:10])
    return shown + (", …" if len(values) > 10 else "")


def _compare_numbers(
    path: str, old: Spec, old_enum: tuple[Any, ...] | None, new: Spec, out: _Report
) -> None:
    if old_enum is not None:
        failing = [v for v in old_enum if not _passes_number(v, new)]
        if failing:
            out.add(path, "range_tightened",
                    f"Field {path} range no longer admits {_values(tuple(failing))}")
        return
    if _tighter_lower(old.lower, new.lower):
        assert new.lower is not None
        out.add(path, "range_tightened",
                f"Field {path} must now be {_bound_text(new.lower, True)}")
    if _tighter_upper(old.upper, new.upper):
        assert new.upper is not None
        out.add(path, "range_tightened",
                f"Field {path} must now be {_bound_text(new.upper, False)}")
    if _multiple_breaks(old.multiple_of, new.multiple_of):
        out.add(path, "range_tightened",
                f"Field {path} must now be a multiple of {new.multiple_of}")


def _compare_strings(
    path: str, old: Spec, old_enum: tuple[Any, ...] | None, new: Spec, out: _Report
) -> None:
    if old_enum is not None:
        failing = [v for v in old_enum if not _passes_length(v, new)]
        if failing:
            out.add(path, "length_tightened",
                    f"Field {path} length limits no longer admit {_values(tuple(failing))}")
    else:
        if new.min_length > old.min_length:
            out.add(path, "length_tightened",
                    f"Field {path} must now be at least {new.min_length} characters long")
        if new.max_length is not None and (
            old.max_length is None or new.max_length < old.max_length
        ):
            out.add(path, "length_tightened",
                    f"Field {path} must now be at most {new.max_length} characters long")
    has_strings = old_enum is None or any(isinstance(v, str) for v in old_enum)
    if has_strings and new.pattern is not None and new.pattern != old.pattern:
        verb = "added" if old.pattern is None else "changed"
        out.add(path, "pattern_changed",
                f"Field {path} pattern {verb}: strings must now match {new.pattern[:120]!r}")
    if has_strings and new.format is not None and new.format != old.format:
        if new.timestamp and new.format == _DATE_TIME:
            message = f"Field {path} must now be a timestamp (RFC 3339 date-time)"
        else:
            verb = "added" if old.format is None else "changed"
            message = f"Field {path} format {verb}: strings must now be {new.format}"
        out.add(path, "format_changed", message)


def _compare_arrays(
    path: str, old: Spec, old_enum: tuple[Any, ...] | None, new: Spec, out: _Report
) -> None:
    if old_enum is not None:
        failing = [v for v in old_enum if not _passes_items(v, new)]
        if failing:
            out.add(path, "items_tightened",
                    f"Field {path} item count limits no longer admit {_values(tuple(failing))}")
    else:
        if new.min_items > old.min_items:
            out.add(path, "items_tightened",
                    f"Field {path} must now have at least {new.min_items} items")
        if new.max_items is not None and (old.max_items is None or new.max_items < old.max_items):
            out.add(path, "items_tightened",
                    f"Field {path} must now have at most {new.max_items} items")
    if new.unique_items and not old.unique_items:
        out.add(path, "items_tightened", f"Field {path} items must now be unique")
    if new.items is None:
        return
    item_path = f"{path}[]"
    if old.items is None:
        out.add(item_path, "items_restricted",
                f"Items of {path} now must be {_describe_types(new.items)}")
        return
    _compare(item_path, dataclasses.replace(old.items, required=True),
             dataclasses.replace(new.items, required=True), out)


def breaking_changes(
    old_definition: Mapping[str, Any], new_definition: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Every change from ``old_definition`` to ``new_definition`` that can reject a record the
    old one accepted, as ``{"field", "change", "message"}`` dicts in a stable order."""
    out = _Report()
    old_envelope, new_envelope = envelope_of(old_definition), envelope_of(new_definition)
    if old_envelope != new_envelope:
        out.add("", "envelope_changed",
                f"Envelope changed from {old_envelope} to {new_envelope}:"
                f" {_ENVELOPES[new_envelope]} (the lake table gets the new envelope's columns)")
    _compare_properties("", parse_definition(old_definition), parse_definition(new_definition),
                        out)
    return out.changes


_ENVELOPES = {
    DEFAULT_ENVELOPE: "records must now carry timestamp (RFC 3339) and context (an object)",
    "none": "records now carry only their declared fields",
    "event": "the server now assigns every record an id (records may not send one) and"
             " its receipt time as timestamp when a record has none",
}

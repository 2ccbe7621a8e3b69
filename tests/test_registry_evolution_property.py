"""The evolution report is checked against the compiler itself.

Random v1 definitions, v2 = v1 with a few random mutations, records built to be valid under
v1: whenever such a record is invalid under v2, ``breaking_changes(v1, v2)`` must be non-empty
and every field v2 complains about must be named by a listed change (or sit under / above
one: a type change of ``a`` explains an error at ``a.b``).
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from strictgate.registry.evolution import breaking_changes
from validator import DefinitionError, compile_dataset

NAMES = ["a", "b", "c", "d"]
SCALARS = ["string", "number", "integer", "boolean", "timestamp"]
PATTERNS = ["^a", "b$", "^[ab]*$"]
FORMATS = ["email", "uuid", "date"]
STRINGS = ["", "a", "ab", "abc", "b", "ba", "aaaa", "x@y.io", "2026-06-10",
           "2026-06-10T10:00:00Z", "123e4567-e89b-12d3-a456-426614174000"]
NUMBERS: list[Any] = [-4, -3, -2, -1, 0, 1, 2, 3, 4, 6, -2.5, -0.5, 0.5, 1.5, 2.5, 1000]
SCALAR_POOL: list[Any] = [None, True, False, *NUMBERS, *STRINGS]
Spec = dict[str, Any]

# --- definitions --------------------------------------------------------------------------------


@st.composite
def scalar_spec(draw: st.DrawFn, with_enum: bool = False) -> Spec:
    t = draw(st.sampled_from(["string", "integer"] if with_enum else SCALARS))
    spec: Spec = {"type": t}
    if t in ("number", "integer"):
        if draw(st.booleans()):
            spec[draw(st.sampled_from(["minimum", "exclusiveMinimum"]))] = draw(
                st.integers(-3, 0))
        if draw(st.booleans()):
            spec[draw(st.sampled_from(["maximum", "exclusiveMaximum"]))] = draw(
                st.integers(1, 4))
        if t == "integer" and draw(st.integers(0, 3)) == 0:
            spec["multipleOf"] = draw(st.sampled_from([2, 3]))
        if t == "integer" and (with_enum or draw(st.integers(0, 3)) == 0):
            spec["enum"] = draw(st.lists(st.integers(-2, 3), min_size=1, max_size=4,
                                         unique=True))
    elif t == "string":
        if draw(st.integers(0, 2)) == 0:
            spec["minLength"] = draw(st.integers(0, 2))
        if draw(st.integers(0, 2)) == 0:
            spec["maxLength"] = draw(st.integers(2, 4))
        choice = 2 if with_enum else draw(st.integers(0, 5))
        if choice == 0:
            spec["pattern"] = draw(st.sampled_from(PATTERNS))
        elif choice == 1:
            spec["format"] = draw(st.sampled_from(FORMATS))
        elif choice == 2:
            spec["enum"] = draw(st.lists(st.sampled_from(STRINGS[:6]), min_size=1, max_size=4,
                                         unique=True))
    if draw(st.integers(0, 4)) == 0:
        spec["type"] = [t, "null"]
        if "enum" in spec:
            spec["enum"] = [*spec["enum"], None]
    return spec


def field_spec(depth: int) -> st.SearchStrategy[Spec]:
    options: list[st.SearchStrategy[Spec]] = [scalar_spec()]
    if depth < 2:
        options.append(array_spec(depth))
        options.append(object_spec(depth))
    return st.one_of(*options)


@st.composite
def array_spec(draw: st.DrawFn, depth: int) -> Spec:
    spec: Spec = {"type": "array", "items": draw(scalar_spec())}
    if draw(st.booleans()):
        spec["minItems"] = draw(st.integers(0, 1))
    if draw(st.booleans()):
        spec["maxItems"] = draw(st.integers(1, 3))
    if draw(st.integers(0, 3)) == 0:
        spec["uniqueItems"] = True
    return spec


@st.composite
def object_spec(draw: st.DrawFn, depth: int) -> Spec:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    props = {n: draw(field_spec(depth + 1)) for n in names}
    required = [n for n in names if draw(st.integers(0, 3)) > 0]
    spec: Spec = {"type": "object", "properties": props, "required": required}
    if draw(st.integers(0, 3)) == 0:
        spec["additionalProperties"] = True
    return spec


@st.composite
def definition(draw: st.DrawFn) -> Spec:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    fields: Spec = {}
    for name in names:
        spec = draw(field_spec(0))
        # An object's "required" is its member list; only other fields can be optional.
        if spec["type"] != "object" and draw(st.integers(0, 3)) == 0:
            spec = {**spec, "required": False}
        fields[name] = spec
    return {"fields": fields}


# --- mutations ----------------------------------------------------------------------------------


def _types(spec: Spec) -> list[str]:
    t = spec["type"]
    return list(t) if isinstance(t, list) else [t]


NUMBER_KEYS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
SIZE_KEYS = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems")}


def _moves(spec: Spec, depth: int) -> list[str]:
    """The mutations that apply to ``spec`` (drawn uniformly, so each is tried often)."""
    kind = _types(spec)[0]
    moves = ["replace", "nullable"]
    if kind != "object" and depth == 0:
        moves.append("required")
    if "enum" in spec:
        moves += ["enum_drop", "enum_remove"]
    if kind in ("number", "integer"):
        moves += ["number_type", "bound_set", "bound_shift"]
        if kind == "integer":
            moves.append("multiple")
    if kind in SIZE_KEYS:
        moves += ["size_set", "size_shift"]
    if kind == "string":
        moves += ["pattern", "format"]
    if kind == "array":
        moves += ["items", "unique"]
    if kind == "object":
        moves += ["members", "open"]
    return moves


@st.composite
def mutate_spec(draw: st.DrawFn, spec: Spec, depth: int, move: str | None = None) -> Spec:
    spec = copy.deepcopy(spec)
    kind = _types(spec)[0]
    if move is None:
        move = draw(st.sampled_from(_moves(spec, depth)))
    if move == "replace":
        replacement = draw(field_spec(depth))
        if isinstance(spec.get("required"), bool) and _types(replacement)[0] != "object":
            replacement["required"] = spec["required"]
        return replacement
    if move == "nullable":
        if "null" in _types(spec):
            spec["type"] = kind
            if "enum" in spec:
                spec["enum"] = [v for v in spec["enum"] if v is not None]
                if not spec["enum"]:
                    del spec["enum"]
        else:
            spec["type"] = [kind, "null"]
            if "enum" in spec and draw(st.booleans()):
                spec["enum"].append(None)
    elif move == "required":
        spec["required"] = not spec.get("required", True)
    elif move == "enum_drop":
        del spec["enum"]
    elif move == "enum_remove":
        if len(spec["enum"]) > 1:
            spec["enum"].pop(draw(st.integers(0, len(spec["enum"]) - 1)))
    elif move == "number_type":
        number = "integer" if kind == "number" else "number"
        spec["type"] = [number, "null"] if "null" in _types(spec) else number
    elif move == "bound_set":
        spec[draw(st.sampled_from(NUMBER_KEYS))] = draw(st.integers(-3, 4))
    elif move == "bound_shift":
        present = [k for k in NUMBER_KEYS if k in spec]
        if present:
            key = draw(st.sampled_from(present))
            spec[key] += draw(st.sampled_from([-1, 1]))
        else:
            spec[draw(st.sampled_from(NUMBER_KEYS))] = draw(st.integers(-3, 4))
    elif move == "multiple":
        if "multipleOf" in spec and draw(st.booleans()):
            del spec["multipleOf"]
        else:
            spec["multipleOf"] = draw(st.sampled_from([2, 3, 4, 6]))
    elif move == "size_set":
        spec[draw(st.sampled_from(SIZE_KEYS[kind]))] = draw(st.integers(0, 3))
    elif move == "size_shift":
        key = draw(st.sampled_from(SIZE_KEYS[kind]))
        spec[key] = max(0, spec.get(key, 1) + draw(st.sampled_from([-1, 1])))
    elif move == "pattern":
        if "pattern" in spec and draw(st.booleans()):
            del spec["pattern"]
        else:
            spec["pattern"] = draw(st.sampled_from(PATTERNS))
    elif move == "format":
        if "format" in spec and draw(st.booleans()):
            del spec["format"]
        else:
            spec["format"] = draw(st.sampled_from(FORMATS))
    elif move == "items":
        spec["items"] = draw(mutate_spec(spec["items"], depth + 1))
    elif move == "unique":
        spec["uniqueItems"] = not spec.get("uniqueItems", False)
    elif move == "open":
        spec["additionalProperties"] = not spec.get("additionalProperties", False)
    elif move == "members":
        spec["properties"], spec["required"] = draw(
            mutate_fields(spec["properties"], spec["required"], depth + 1))
    return spec


@st.composite
def mutate_fields(
    draw: st.DrawFn, props: Spec, required: list[str] | None, depth: int
) -> tuple[Spec, list[str]]:
    props = copy.deepcopy(props)
    req = list(required) if required is not None else []
    move = draw(st.integers(0, 3))
    names = sorted(props)
    if move == 0 and len(props) > 1:
        gone = draw(st.sampled_from(names))
        del props[gone]
        req = [n for n in req if n != gone]
    elif move == 1 and len(props) < len(NAMES):
        new = draw(st.sampled_from([n for n in NAMES if n not in props]))
        props[new] = draw(field_spec(depth))
        if draw(st.booleans()):
            req.append(new)
    elif move == 2:
        name = draw(st.sampled_from(names))
        req = [n for n in req if n != name] if name in req else [*req, name]
    else:
        name = draw(st.sampled_from(names))
        props[name] = draw(mutate_spec(props[name], depth))
    return props, req


@st.composite
def mutate_definition(draw: st.DrawFn, defn: Spec) -> Spec:
    fields = copy.deepcopy(defn["fields"])
    for _ in range(draw(st.integers(1, 2))):
        move = draw(st.integers(0, 5))
        names = sorted(fields)
        if move == 0 and len(fields) > 1:
            del fields[draw(st.sampled_from(names))]
        elif move == 1 and len(fields) < len(NAMES):
            new = draw(st.sampled_from([n for n in NAMES if n not in fields]))
            spec = draw(field_spec(0))
            if spec["type"] != "object" and draw(st.booleans()):
                spec["required"] = False
            fields[new] = spec
        else:
            name = draw(st.sampled_from(names))
            fields[name] = draw(mutate_spec(fields[name], 0))
    return {"fields": fields}


# --- records ------------------------------------------------------------------------------------


def _pool(spec: Any) -> list[Any]:
    """Scalars worth trying for ``spec``: the generic pool plus its enum and bounds."""
    values = list(SCALAR_POOL)
    if isinstance(spec, dict):
        values += list(spec.get("enum", []))
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if key in spec:
                values += [spec[key], spec[key] + 0.5, spec[key] - 0.5]
    return values


def _typed_pool(spec: Spec) -> list[Any]:
    """Values of the spec's own type (most records should pass v1)."""
    if "enum" in spec:
        return list(spec["enum"])
    kind = _types(spec)[0]
    by_kind: dict[str, list[Any]] = {
        "string": STRINGS, "timestamp": ["2026-06-10T10:00:00Z", "2026-06-10T10:00:00+02:00"],
        "boolean": [True, False], "integer": [n for n in NUMBERS if isinstance(n, int)],
        "number": NUMBERS,
    }
    values = by_kind[kind]
    return [*values, None] if "null" in _types(spec) else list(values)


@st.composite
def value_for(draw: st.DrawFn, spec: Spec) -> Any:
    kind = _types(spec)[0]
    if draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(_pool(spec)))
    if kind == "array":
        return draw(st.lists(value_for(spec["items"]), max_size=3))
    if kind == "object":
        value = draw(object_for(spec["properties"], spec.get("required")))
        if spec.get("additionalProperties") and draw(st.booleans()):
            extra = draw(st.sampled_from([n for n in [*NAMES, "z"] if n not in value]))
            value[extra] = draw(st.sampled_from(SCALAR_POOL))
        return value
    return draw(st.sampled_from(_typed_pool(spec)))


@st.composite
def object_for(draw: st.DrawFn, props: Spec, required: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in props.items():
        is_required = (
            name in required if required is not None else spec.get("required", True) is not False
        )
        if not is_required and draw(st.booleans()):
            continue
        out[name] = draw(value_for(spec))
    return out


def _norm(field: str) -> str:
    return re.sub(r"\[\d+\]", "[]", field)


def _related(change: str, error: str) -> bool:
    if change == error:
        return True
    short, long = sorted((change, error), key=len)
    return long.startswith(short) and long[len(short)] in ".["


def _compile(defn: Spec) -> Any:
    try:
        return compile_dataset(defn)
    except DefinitionError:
        assume(False)


ENVELOPE = {"timestamp": "2026-06-10T10:00:00Z", "context": {}}


EXAMPLES = int(os.environ.get("EVOLUTION_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _check(data: st.DataObject, v1_defn: Spec, v2_defn: Spec) -> None:
    v1, v2 = _compile(v1_defn), _compile(v2_defn)
    changes = breaking_changes(v1_defn, v2_defn)
    named = [c["field"] for c in changes]
    valid_v1 = newly_rejected = 0
    for _ in range(30):
        record = {**ENVELOPE, **data.draw(object_for(v1_defn["fields"], None))}
        if v1.validate(record):
            continue
        valid_v1 += 1
        errors = v2.validate(record)
        if not errors:
            continue
        newly_rejected += 1
        assert changes, f"record {record} fails v2 with {errors} but no change was listed"
        for error in errors:
            field = _norm(error.field)
            assert any(_related(c, field) for c in named), (
                f"v2 error {error} on {record} is not explained by {changes}")
    # --hypothesis-show-statistics tells how often the interesting case was reached
    event("some records valid under v1" if valid_v1 else "no record valid under v1")
    event("v2 rejects some of them" if newly_rejected else "v2 rejects none of them")
    event("changes listed" if changes else "no change listed")


SCALAR_MOVES = ["replace", "nullable", "required", "enum_drop", "enum_remove", "number_type",
                "bound_set", "bound_shift", "multiple", "size_set", "size_shift", "pattern",
                "format"]
CONTAINER_MOVES = ["replace", "nullable", "size_set", "size_shift", "items", "unique",
                   "members", "open"]
PER_MOVE = settings(SETTINGS, max_examples=max(10, EXAMPLES // 5))


@pytest.mark.parametrize("move", SCALAR_MOVES)
@PER_MOVE
@given(data=st.data())
def test_scalar_change_every_newly_rejected_record_is_explained(
    move: str, data: st.DataObject
) -> None:
    """One scalar field and one given kind of change (then maybe one more): every rule is
    reached often, whatever its share among random mutations."""
    spec = data.draw(scalar_spec(with_enum=move.startswith("enum")), label="field")
    assume(move in _moves(spec, 0))
    if move != "required" and data.draw(st.integers(0, 3)) == 0:
        spec["required"] = False
    v2_spec = data.draw(mutate_spec(spec, 0, move), label="mutated")
    if data.draw(st.integers(0, 3)) == 0:
        v2_spec = data.draw(mutate_spec(v2_spec, 0), label="mutated again")
    _check(data, {"fields": {"a": spec}}, {"fields": {"a": v2_spec}})


@pytest.mark.parametrize("move", CONTAINER_MOVES)
@PER_MOVE
@given(data=st.data())
def test_container_change_every_newly_rejected_record_is_explained(
    move: str, data: st.DataObject
) -> None:
    """One array or object field and one given kind of change to it."""
    spec = data.draw(st.one_of(array_spec(0), object_spec(0)), label="field")
    assume(move in _moves(spec, 0))
    v2_spec = data.draw(mutate_spec(spec, 0, move), label="mutated")
    _check(data, {"fields": {"a": spec}}, {"fields": {"a": v2_spec}})


@SETTINGS
@given(st.data())
def test_nested_definitions_every_newly_rejected_record_is_explained(
    data: st.DataObject
) -> None:
    """Several fields, arrays and nested objects, one or two mutations anywhere."""
    v1_defn = data.draw(definition(), label="v1")
    _check(data, v1_defn, data.draw(mutate_definition(v1_defn), label="v2"))


def test_the_property_finds_failures_when_they_exist() -> None:
    """Guards the generator: a known breaking change is caught by the same check."""
    v1_defn = {"fields": {"a": {"type": "number"}}}
    v2_defn = {"fields": {"a": {"type": "integer"}}}
    v1, v2 = compile_dataset(v1_defn), compile_dataset(v2_defn)
    record = {**ENVELOPE, "a": 1.5}
    assert v1.validate(record) == [] and v2.validate(record)
    assert [c["field"] for c in breaking_changes(v1_defn, v2_defn)] == ["a"]

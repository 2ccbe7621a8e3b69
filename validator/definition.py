"""Dataset definitions: checked against ``schemas/definition.schema.json``, normalized, and
turned into one draft 2020-12 JSON Schema for a record.

The normalized form (what the registry digests) spells every field as an object and every
top-level field's ``required`` as a boolean; nested objects keep JSON Schema's ``required``
list and are closed unless ``additionalProperties`` is ``true`` (any members) or a field
declaration (members of that declaration). ``envelope`` is kept only when it is not the
default ``loguro``, so a definition written before envelopes existed digests as it did.

Envelopes (what every record carries besides its declared fields):

- ``loguro`` (the default): ``timestamp`` (RFC 3339) and ``context`` (an object), both
  required and not declarable;
- ``none``: nothing; ``timestamp`` and ``context`` are ordinary declarable fields;
- ``event`` (Operyn's events): the server gives each record an ``id`` (not declarable, not
  sent) and, when the record has none, its receipt time as ``timestamp``, an optional
  field of type timestamp unless the definition declares it (then as a timestamp).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

import schemas
from validator.ecma_regex import PatternError, compile_pattern
from validator.errors import DefinitionError

RESERVED = ("timestamp", "context")
ENVELOPES = ("loguro", "none", "event")
DEFAULT_ENVELOPE = "loguro"
# What the server adds to every record of an event dataset (so a definition cannot declare it)
EVENT_ID = "id"
EVENT_TIMESTAMP = "timestamp"
# The event time of an event dataset that does not declare its own
IMPLICIT_EVENT_TIMESTAMP: dict[str, Any] = {"type": "timestamp", "required": False}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Declared structure may nest this deep (the record is level 1, the limit for records is 32).
MAX_DECLARED_DEPTH = 30
# JSON nesting of a whole definition (each declared level takes two: properties -> name)
MAX_JSON_DEPTH = 2 * MAX_DECLARED_DEPTH + 8
RECORD_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_STRING = ("minLength", "maxLength", "pattern", "format")
_ARRAY = ("items", "minItems", "maxItems", "uniqueItems")
_OBJECT = ("properties", "additionalProperties")


@cache
def _meta_validator() -> jsonschema.Draft202012Validator:
    # Package data (schemas/), so an installed wheel has it too.
    schema = json.loads(schemas.read_text(schemas.META_SCHEMA))
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def pointer(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """RFC 6901 JSON Pointer of ``parts``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _deepest(errs: list[ValidationError]) -> ValidationError:
    # Of the branches of a oneOf, the one that got furthest names the real problem.
    deepest = max(len(e.absolute_path) for e in errs)
    best: ValidationError = best_match(e for e in errs if len(e.absolute_path) == deepest)
    return best


def envelope_of(definition: Any) -> str:
    """The envelope a definition (as written or normalized) names, ``loguro`` when absent."""
    given = definition.get("envelope") if isinstance(definition, Mapping) else None
    return given if isinstance(given, str) and given in ENVELOPES else DEFAULT_ENVELOPE


def _reserved_name(name: str, envelope: str) -> str:
    """Why field ``name`` cannot be declared under ``envelope``."""
    if envelope == DEFAULT_ENVELOPE:
        return (f"field name {name!r} cannot be declared"
                " (reserved: timestamp, context, names starting with __)")
    if envelope == "event" and name == EVENT_ID:
        return (f"field name {name!r} cannot be declared: with envelope \"event\" the server"
                " assigns every record its id")
    return f"field name {name!r} cannot be declared (reserved: names starting with __)"


def _meta_problems(definition: Any) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    envelope = envelope_of(definition)
    for err in _meta_validator().iter_errors(definition):
        # oneOf/anyOf failures say little; their closest sub-error says what is wrong.
        shown: ValidationError = err
        while shown.context:
            shown = _deepest(shown.context)
        parts = list(shown.absolute_path)
        if "propertyNames" in shown.absolute_schema_path:
            parts.append(str(shown.instance))
            problems.append((pointer(parts), _reserved_name(str(shown.instance), envelope)))
            continue
        problems.append((pointer(parts), shown.message[:300]))
    return problems


def _types(decl: dict[str, Any]) -> list[str]:
    t = decl.get("type")
    if isinstance(t, str):
        return [t]
    return [x for x in t if isinstance(x, str)] if isinstance(t, list) else []


def _semantic_problems(decl: dict[str, Any], at: list[str | int], depth: int, top: bool,
                       out: list[tuple[str, str]]) -> None:
    """What the meta-schema cannot say: keywords that fit no declared type, bounds that
    contradict, patterns RE2 cannot run, nesting too deep."""
    types = _types(decl)
    if not types and "enum" not in decl and "const" not in decl:
        out.append((pointer(at), "a field needs a type (or enum/const)"))
    if depth > MAX_DECLARED_DEPTH:
        out.append((pointer(at), f"declared nesting deeper than {MAX_DECLARED_DEPTH}"))
        return
    kinds = set(types)
    if types:
        for group, fits in ((_NUMERIC, {"number", "integer"}), (_STRING, {"string", "timestamp"}),
                            (_ARRAY, {"array"}), (_OBJECT, {"object"})):
            for kw in group:
                if kw in decl and not kinds & fits:
                    out.append((pointer([*at, kw]), f"{kw} does not apply to type {types}"))
    req = decl.get("required")
    if isinstance(req, bool) and not top:
        out.append((pointer([*at, "required"]), "a boolean required applies to top-level"
                    " fields only; nested objects list theirs in an array"))
    if isinstance(req, list):
        if "object" not in kinds:
            out.append((pointer([*at, "required"]), "a required list needs type object"))
        props = decl.get("properties", {})
        for i, name in enumerate(req):
            # An open object (additionalProperties true or a declaration) may require
            # members it does not list.
            if isinstance(props, dict) and name not in props and not decl.get(
                    "additionalProperties", False):
                out.append((pointer([*at, "required", i]), f"{name!r} is not a property"))
    for lo, hi in (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems")):
        a, b = decl.get(lo), decl.get(hi)
        if isinstance(a, int | float) and isinstance(b, int | float) and a > b:
            out.append((pointer([*at, lo]), f"{lo} {a} is greater than {hi} {b}"))
    for kw in (*_NUMERIC, "const"):
        v = decl.get(kw)
        if isinstance(v, float) and not math.isfinite(v):
            out.append((pointer([*at, kw]), "numbers must be finite"))
    if {"string", "timestamp"} <= kinds:
        out.append((pointer([*at, "type"]), 'type lists both "string" and "timestamp": every'
                    ' string would be accepted, so the timestamp check would check nothing;'
                    ' declare one of them (with "null" to also accept null)'))
    if "format" in decl and "timestamp" in kinds:
        out.append((pointer([*at, "format"]), "type timestamp already has a format"))
    pattern = decl.get("pattern")
    if isinstance(pattern, str):
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            out.append((pointer([*at, "pattern"]), str(exc)))
    items = decl.get("items")
    if isinstance(items, dict):
        _semantic_problems(items, [*at, "items"], depth + 1, False, out)
    additional = decl.get("additionalProperties")
    if isinstance(additional, dict):
        _semantic_problems(additional, [*at, "additionalProperties"], depth + 1, False, out)
    props = decl.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            if isinstance(sub, dict):
                _semantic_problems(sub, [*at, "properties", name], depth + 1, False, out)


def _expand(decl: Any) -> Any:
    """Shorthand type words become ``{"type": word}``, recursively."""
    if isinstance(decl, str):
        return {"type": decl}
    if not isinstance(decl, dict):
        return decl
    out = dict(decl)
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        # JSON Schema counts 2.0 as the integer 2; store it as one.
        if isinstance(out.get(key), float) and out[key].is_integer():
            out[key] = int(out[key])
    if isinstance(out.get("items"), str | dict):
        out["items"] = _expand(out["items"])
    if isinstance(out.get("additionalProperties"), str | dict):
        out["additionalProperties"] = _expand(out["additionalProperties"])
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _expand(v) for k, v in out["properties"].items()}
    return out


def _too_deep(document: Any) -> str | None:
    """Pointer to the first place ``document`` nests past :data:`MAX_JSON_DEPTH`, else None."""
    stack: list[tuple[Any, list[str | int]]] = [(document, [])]
    while stack:
        node, at = stack.pop()
        if len(at) > MAX_JSON_DEPTH:
            return pointer(at[: MAX_JSON_DEPTH + 1])
        if isinstance(node, dict):
            stack.extend((v, [*at, str(k)]) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, [*at, i]) for i, v in enumerate(node))
    return None


SCALAR_TYPES = frozenset({"string", "number", "integer", "boolean", "timestamp"})


def scalar_type(decl: dict[str, Any]) -> tuple[str, bool] | None:
    """(its one type, nullable) for a normalized field declared with one scalar type,
    maybe with ``"null"``; None for any other field."""
    t = decl.get("type")
    kinds = [t] if isinstance(t, str) else list(t or [])
    nullable = "null" in kinds
    kinds = [k for k in kinds if k != "null"]
    if len(kinds) != 1 or kinds[0] not in SCALAR_TYPES:
        return None
    return kinds[0], nullable


def normalize(definition: Any) -> dict[str, Any]:
    """Check ``definition`` and return its normalized form; :class:`DefinitionError` lists
    every problem with its JSON Pointer."""
    too_deep = _too_deep(definition)
    if too_deep is not None:
        # Checked first, without recursion: the meta-schema check and the compiler recurse.
        raise DefinitionError([(too_deep, f"definition nested deeper than {MAX_JSON_DEPTH}"
                                          " levels")])
    problems = _meta_problems(definition)
    given = definition.get("fields") if isinstance(definition, dict) else None
    fields = {n: _expand(d) for n, d in given.items()} if isinstance(given, dict) else {}
    # Semantic checks run even when the meta-schema failed: every problem is listed at once.
    for name, decl in fields.items():
        if isinstance(decl, dict):
            _semantic_problems(decl, ["fields", name], 2, True, problems)
    envelope = envelope_of(definition)
    if envelope == "event" and EVENT_TIMESTAMP in fields:
        _event_timestamp_problems(fields[EVENT_TIMESTAMP], problems)
    if envelope == "none" and isinstance(given, dict) and not given:
        problems.append(("/fields", 'with envelope "none" a record is only its declared'
                         " fields: declare at least one"))
    if problems:
        raise DefinitionError(sorted(set(problems)))
    out: dict[str, Any] = {}
    if "description" in definition:
        out["description"] = definition["description"]
    if envelope != DEFAULT_ENVELOPE:
        out["envelope"] = envelope
    out["fields"] = {}
    for name, decl in fields.items():
        decl = dict(decl)
        # A list is an object field's required properties (the field itself is required).
        if not isinstance(decl.get("required"), list):
            decl["required"] = decl.get("required", True) is not False
        out["fields"][name] = decl
    return out


def _event_timestamp_problems(decl: Any, out: list[tuple[str, str]]) -> None:
    """An event dataset's own ``timestamp``: the event time, which the server fills in
    when a record has none, so it is a plain (non-null) timestamp, maybe required."""
    if not isinstance(decl, dict):
        return  # the meta-schema has said what is wrong
    if decl.get("type") != "timestamp" or set(decl) - {"type", "description", "required"} \
            or not isinstance(decl.get("required", False), bool):
        out.append((pointer(["fields", EVENT_TIMESTAMP]), 'with envelope "event", timestamp'
                    " is the event time (the receipt time when a record has none): declare it"
                    ' as {"type": "timestamp"}, maybe with "required": true, nothing else'))


def record_fields(normalized: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fields a record of a normalized definition is checked against, the envelope's
    ``timestamp`` and ``context`` aside (the record check handles those of ``loguro``):
    the declared ones, and for ``event`` first ``timestamp`` (declared or implicit)."""
    fields: dict[str, dict[str, Any]] = normalized["fields"]
    if envelope_of(normalized) != "event":
        return fields
    stamp = fields.get(EVENT_TIMESTAMP) or dict(IMPLICIT_EVENT_TIMESTAMP)
    return {EVENT_TIMESTAMP: stamp, **{n: d for n, d in fields.items() if n != EVENT_TIMESTAMP}}


def field_schema(decl: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one (normalized) field."""
    out: dict[str, Any] = {}
    types = _types(decl)
    if types:
        mapped = ["string" if t == "timestamp" else t for t in types]
        out["type"] = mapped[0] if len(mapped) == 1 else list(dict.fromkeys(mapped))
        if "timestamp" in types:
            out["format"] = "date-time"
    for key, value in decl.items():
        if key in ("type", "required") and not (key == "required" and isinstance(value, list)):
            continue
        if key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = field_schema(value)
        elif key == "properties":
            out["properties"] = {k: field_schema(v) for k, v in value.items()}
        else:
            out[key] = value
    if "object" in types and "additionalProperties" not in decl:
        out["additionalProperties"] = False
    return out


def record_schema(normalized: dict[str, Any]) -> dict[str, Any]:
    """One draft 2020-12 JSON Schema document for a record of the dataset (as the client
    sends it: an event's ``id`` is the server's)."""
    props: dict[str, Any] = {}
    required: list[str] = []
    if envelope_of(normalized) == DEFAULT_ENVELOPE:
        props = {"timestamp": {"type": "string", "format": "date-time"},
                 "context": {"type": "object"}}
        required = ["timestamp", "context"]
    for name, decl in record_fields(normalized).items():
        props[name] = field_schema(decl)
        if decl["required"] is not False:
            required.append(name)
    out: dict[str, Any] = {"$schema": RECORD_SCHEMA_URI}
    if "description" in normalized:
        out["description"] = normalized["description"]
    out.update({"type": "object", "properties": props, "required": required,
                "additionalProperties": False})
    return out

"""The precise path: every error of one decoded record, in a deterministic order.

A definition compiles to a tree of small closures, one per field and keyword (as jsonschema
has one function per keyword). Order of errors: duplicate keys, ``timestamp``, ``context``
(the Loguro envelope only), extra fields (in input order), then declared fields in
definition order (an event dataset's ``timestamp`` first), depth first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sized
from fractions import Fraction
from typing import Any, NamedTuple, Protocol

from validator import errors as E
from validator.definition import INT64_MAX, INT64_MIN
from validator.ecma_regex import compile_pattern
from validator.errors import FieldError, clip
from validator.formats import FORMAT_WORDS, FORMATS, is_date_time

# A record nests at most this deep (the record object is level 1).
MAX_DEPTH = 32
# Longest string (value or key) anywhere in a record, in characters.
MAX_STRING = 65_536
# At most this many errors are reported for one record.
MAX_ERRORS_PER_RECORD = 20

class Errors(list[FieldError]):
    """The errors of one record as they are found. ``valid_times``: date-time strings
    already known valid (checked in bulk by the batch path), not checked again."""

    __slots__ = ("valid_times",)
    valid_times: Collection[str]


Check = Callable[[Any, str, Errors], None]


class DupDict(dict[str, Any]):
    """A JSON object that had repeated keys (the precise parser builds it); ``duplicates``
    names them in order of appearance."""

    duplicates: list[str]


def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: a plain dict, or a :class:`DupDict`
    remembering repeated keys (a strict gateway rejects them, JSON parsers disagree on them)."""
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    dup = DupDict(out)
    seen: set[str] = set()
    dup.duplicates = []
    for key, _ in pairs:
        if key in seen and key not in dup.duplicates:
            dup.duplicates.append(key)
        seen.add(key)
    return dup


def join(path: str, key: str) -> str:
    """``a.b`` (or ``b`` at the top)."""
    return f"{path}.{key}" if path else key


def _err(out: Errors, code: str, message: str, path: str) -> None:
    shown = clip(path)
    out.append(FieldError(code, shown, f"{message}: {shown}"))


def json_type_ok(kind: str, v: Any) -> bool:
    """Does ``v`` have JSON type ``kind`` (booleans are never numbers; 1.0 is an integer)?"""
    t = type(v)
    if kind == "string" or kind == "timestamp":
        return t is str
    if kind == "number":
        return t is int or t is float
    if kind == "integer":
        return t is int or (t is float and v.is_integer())
    if kind == "boolean":
        return t is bool
    if kind == "null":
        return v is None
    if kind == "object":
        return isinstance(v, dict)
    if kind == "array":
        return t is list
    return False


def json_key(v: Any) -> Any:
    """A hashable key with JSON equality: ``1 == 1.0``, ``True != 1``, objects unordered."""
    t = type(v)
    if t is bool:
        return ("b", v)
    if t is int or t is float:
        return ("n", v)
    if t is list:
        return ("a", tuple(json_key(x) for x in v))
    if isinstance(v, dict):
        return ("o", frozenset((k, json_key(x)) for k, x in v.items()))
    return ("s", v)


def _multiple_ok(v: int | float, m: int | float) -> bool:
    # The same arithmetic as the jsonschema oracle, so verdicts agree on float edges.
    if isinstance(m, float):
        q = v / m
        try:
            return int(q) == q
        except OverflowError:
            return (Fraction(v) / Fraction(m)).denominator == 1
    return not (v % m)


def _number_problem(v: Any) -> str | None:
    """Why a number cannot be stored, or None: non-finite floats, ints outside int64."""
    t = type(v)
    if t is float and not math.isfinite(v):
        return E.NUMBER_NOT_FINITE
    if t is int and not INT64_MIN <= v <= INT64_MAX:
        return E.INTEGER_TOO_LARGE
    return None


def walk_free(v: Any, path: str, depth: int, out: Errors) -> None:
    """Limits on undeclared content (``context``): depth, duplicate keys, finite numbers in
    int64, string length."""
    if len(out) >= MAX_ERRORS_PER_RECORD:
        return
    t = type(v)
    if t is str:
        if len(v) > MAX_STRING:
            _err(out, E.STRING_TOO_LONG, "Field too long", path)
        return
    if t is int or t is float:
        problem = _number_problem(v)
        if problem:
            _err(out, problem, "Invalid number field", path)
        return
    if t is list or isinstance(v, dict):
        if depth > MAX_DEPTH:
            _err(out, E.TOO_DEEP, "Field nested too deeply", path)
            return
        if t is list:
            for i, item in enumerate(v):
                walk_free(item, f"{path}[{i}]", depth + 1, out)
            return
        if type(v) is DupDict:
            for key in v.duplicates:
                _err(out, E.DUPLICATE_FIELD, "Duplicate field", join(path, key))
        for key, item in v.items():
            if len(key) > MAX_STRING:
                _err(out, E.STRING_TOO_LONG, "Field too long", join(path, key))
            walk_free(item, join(path, key), depth + 1, out)


def compile_field(decl: dict[str, Any], depth: int) -> Check:
    """The check of one declared field (``depth``: its nesting level in the record)."""
    types = decl.get("type")
    kinds: list[str] = [] if types is None else [types] if isinstance(types, str) else types
    word = next((k for k in kinds if k != "null"), kinds[0] if kinds else "value")
    checks: list[Check] = []

    if "enum" in decl:
        allowed = {json_key(x) for x in decl["enum"]}

        def check_enum(v: Any, path: str, out: Errors) -> None:
            if json_key(v) not in allowed:
                _err(out, E.NOT_IN_ENUM, "Field not in enum", path)
        checks.append(check_enum)
    if "const" in decl:
        const = json_key(decl["const"])

        def check_const(v: Any, path: str, out: Errors) -> None:
            if json_key(v) != const:
                _err(out, E.NOT_CONST, "Field not equal to const", path)
        checks.append(check_const)
    checks.extend(_numeric_checks(decl))
    checks.extend(_string_checks(decl, kinds))
    checks.extend(_array_checks(decl, depth))
    checks.extend(_object_checks(decl, depth))

    # The type test: exact Python types first, the other kinds (integer as an integral
    # float, object as a dict subclass) by json_type_ok.
    exact: set[type] = set()
    other: list[str] = []
    for k in kinds:
        if k in ("string", "timestamp"):
            exact.add(str)
        elif k == "number":
            exact.update((int, float))
        elif k == "integer":
            exact.add(int)
            other.append(k)
        elif k == "boolean":
            exact.add(bool)
        elif k == "null":
            exact.add(type(None))
        elif k == "array":
            exact.add(list)
        else:
            other.append(k)
    exact_types = frozenset(exact)
    named = list(dict.fromkeys(k for k in kinds if k != "null"))
    if len(named) > 1:
        # A value of none of the listed types: the message names them all.
        code, message = E.INVALID_TYPE, f"Invalid {E.type_words(named)} field"
    else:
        code, message = E.type_code(word), f"Invalid {word} field"

    def check(v: Any, path: str, out: Errors) -> None:
        t = type(v)
        if kinds and t not in exact_types and not any(json_type_ok(k, v) for k in other):
            _err(out, code, message, path)
            return
        if t is int or t is float:
            problem = _number_problem(v)
            if problem:
                _err(out, problem, message, path)
                return
        elif t is str and len(v) > MAX_STRING:
            _err(out, E.STRING_TOO_LONG, "Field too long", path)
            return
        for c in checks:
            c(v, path, out)
    return check


def _numeric_checks(decl: dict[str, Any]) -> list[Check]:
    bounds: list[tuple[str, Callable[[Any, Any], bool]]] = [
        ("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b),
        ("exclusiveMinimum", lambda v, b: v > b), ("exclusiveMaximum", lambda v, b: v < b)]
    tests = [(decl[kw], ok) for kw, ok in bounds if kw in decl]
    checks: list[Check] = []
    if tests:
        def check_range(v: Any, path: str, out: Errors) -> None:
            if (type(v) is int or type(v) is float) and not all(ok(v, b) for b, ok in tests):
                _err(out, E.OUT_OF_RANGE, "Field out of range", path)
        checks.append(check_range)
    if "multipleOf" in decl:
        m = decl["multipleOf"]

        def check_multiple(v: Any, path: str, out: Errors) -> None:
            if (type(v) is int or type(v) is float) and not _multiple_ok(v, m):
                _err(out, E.NOT_MULTIPLE, "Field not a multiple of its step", path)
        checks.append(check_multiple)
    return checks


def _size_check(kind: type[Sized], lo: int | None, hi: int | None, too_short: str,
                too_long: str) -> Check:
    """The ``len`` bounds of a value of type ``kind`` (string length, array items)."""
    def check_size(v: Any, path: str, out: Errors) -> None:
        if type(v) is kind:
            if lo is not None and len(v) < lo:
                _err(out, E.TOO_SHORT, too_short, path)
            elif hi is not None and len(v) > hi:
                _err(out, E.TOO_LONG, too_long, path)
    return check_size


def _string_checks(decl: dict[str, Any], kinds: list[str]) -> list[Check]:
    checks: list[Check] = []
    lo, hi = decl.get("minLength"), decl.get("maxLength")
    if lo is not None or hi is not None:
        checks.append(_size_check(str, lo, hi, "Field too short", "Field too long"))
    if "pattern" in decl:
        # ECMA 262 semantics, as JSON Schema says, in linear time (validator.ecma_regex)
        search = compile_pattern(decl["pattern"]).search

        def check_pattern(v: Any, path: str, out: Errors) -> None:
            if type(v) is str and not search(v):
                _err(out, E.PATTERN_MISMATCH, "Field does not match pattern", path)
        checks.append(check_pattern)
    fmt = "date-time" if "timestamp" in kinds else decl.get("format")
    if fmt is not None:
        fn = FORMATS[fmt]
        fword = FORMAT_WORDS[fmt]
        code = E.INVALID_TIMESTAMP if fmt == "date-time" else E.INVALID_FORMAT

        if fmt == "date-time":
            def check_date_time(v: Any, path: str, out: Errors) -> None:
                if type(v) is str and v not in out.valid_times and not fn(v):
                    _err(out, code, f"Invalid {fword} field", path)
            checks.append(check_date_time)
        else:
            def check_format(v: Any, path: str, out: Errors) -> None:
                if type(v) is str and not fn(v):
                    _err(out, code, f"Invalid {fword} field", path)
            checks.append(check_format)
    return checks


def _array_checks(decl: dict[str, Any], depth: int) -> list[Check]:
    checks: list[Check] = []
    lo, hi = decl.get("minItems"), decl.get("maxItems")
    if lo is not None or hi is not None:
        checks.append(_size_check(list, lo, hi, "Field has too few items",
                                  "Field has too many items"))
    if decl.get("uniqueItems"):
        def check_unique(v: Any, path: str, out: Errors) -> None:
            if type(v) is list and len({json_key(x) for x in v}) != len(v):
                _err(out, E.NOT_UNIQUE, "Field has duplicate items", path)
        checks.append(check_unique)
    if "items" in decl:
        item_check = compile_field(decl["items"], depth + 1)

        def check_items(v: Any, path: str, out: Errors) -> None:
            if type(v) is list:
                for i, item in enumerate(v):
                    if len(out) >= MAX_ERRORS_PER_RECORD:
                        return
                    item_check(item, f"{path}[{i}]", out)
        checks.append(check_items)
    elif "array" in _kinds(decl):
        # Items without a declaration are free content: only the record-wide limits.
        def check_free_items(v: Any, path: str, out: Errors) -> None:
            if type(v) is list:
                for i, item in enumerate(v):
                    walk_free(item, f"{path}[{i}]", depth + 1, out)
        checks.append(check_free_items)
    return checks


def _kinds(decl: dict[str, Any]) -> list[str]:
    t = decl.get("type")
    return [] if t is None else [t] if isinstance(t, str) else list(t)


def _object_checks(decl: dict[str, Any], depth: int) -> list[Check]:
    if "object" not in _kinds(decl):
        return []
    props = {k: compile_field(v, depth + 1) for k, v in decl.get("properties", {}).items()}
    required = list(decl.get("required", [])) if isinstance(decl.get("required"), list) else []
    additional = decl.get("additionalProperties", False)
    closed = not additional
    members = compile_field(additional, depth + 1) if isinstance(additional, dict) else None
    return [object_check(props, required, closed, depth, members)]


def object_check(props: dict[str, Check], required: list[str], closed: bool,
                 depth: int, members: Check | None = None) -> Check:
    """Duplicates, extras (if ``closed``; checked by ``members`` if given, else free
    content), missing ``required`` names, then each property."""
    def check_object(v: Any, path: str, out: Errors) -> None:
        if not isinstance(v, dict):
            return
        if type(v) is DupDict:
            for key in v.duplicates:
                _err(out, E.DUPLICATE_FIELD, "Duplicate field", join(path, key))
        if closed:
            for key in v:
                if key not in props:
                    _err(out, E.EXTRA_FIELD, "Extra field", join(path, key))
        elif members is not None:
            for key, item in v.items():
                if key not in props:
                    if len(out) >= MAX_ERRORS_PER_RECORD:
                        break
                    if len(key) > MAX_STRING:
                        _err(out, E.STRING_TOO_LONG, "Field too long", join(path, key))
                    members(item, join(path, key), out)
        else:
            for key, item in v.items():
                if key not in props:
                    walk_free(item, join(path, key), depth + 1, out)
        for key in required:
            if key not in v:
                _err(out, E.MISSING_FIELD, "Missing field", join(path, key))
        for key, c in props.items():
            if key in v and len(out) < MAX_ERRORS_PER_RECORD:
                c(v[key], join(path, key), out)
    return check_object


_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "timestamp": (str,), "number": (int, float), "boolean": (bool,)}


def _simple(decl: dict[str, Any]) -> tuple[frozenset[type], str, str, bool] | None:
    """(accepted types, type error code, its message, is a timestamp) of a field declared
    by its type alone (nullable or not), which ``check_record`` checks inline; else None."""
    if set(decl) - {"type", "description", "required"}:
        return None
    t = decl.get("type")
    kinds = [t] if isinstance(t, str) else list(t or [])
    word = [k for k in kinds if k != "null"]
    if len(word) != 1 or word[0] not in _SIMPLE_TYPES or len(kinds) - 1 > kinds.count("null"):
        return None
    types = set(_SIMPLE_TYPES[word[0]])
    if "null" in kinds:
        types.add(type(None))
    return (frozenset(types), E.type_code(word[0]), f"Invalid {word[0]} field",
            word[0] == "timestamp")


def _error(code: str, message: str, path: str) -> FieldError:
    """The error :func:`_err` appends for ``path``."""
    shown = clip(path)
    return FieldError(code, shown, f"{message}: {shown}")


def extra_field(key: str) -> FieldError:
    """The error of an undeclared top-level ``key`` (also what the record scanner's exact
    errors use: see :class:`validator.scan.ExactErrors`)."""
    return _error(E.EXTRA_FIELD, "Extra field", key)


class _Step(NamedTuple):
    """How ``check_record`` checks one declared field. A field declared by its type alone
    is checked inline (``types``: its accepted types), else by ``check``; the errors of a
    field's name do not depend on the record, so they are made once, here."""

    name: str
    check: Check
    missing: FieldError | None  # None: the field is optional
    types: frozenset[type] | None
    wrong_type: FieldError | None
    bad_timestamp: FieldError | None  # None: not a timestamp
    too_long: FieldError
    not_finite: FieldError | None
    too_large: FieldError | None


def _step(name: str, check: Check, required: bool, decl: dict[str, Any]) -> _Step:
    """The :class:`_Step` of the declared field ``name`` (``check``: its compiled check)."""
    simple = _simple(decl)
    missing = _error(E.MISSING_FIELD, "Missing field", name) if required else None
    too_long = _error(E.STRING_TOO_LONG, "Field too long", name)
    if simple is None:
        return _Step(name, check, missing, None, None, None, too_long, None, None)
    types, code, message, is_timestamp = simple
    return _Step(name, check, missing, types, _error(code, message, name),
                 _error(E.INVALID_TIMESTAMP, "Invalid timestamp field", name)
                 if is_timestamp else None, too_long,
                 _error(E.NUMBER_NOT_FINITE, message, name),
                 _error(E.INTEGER_TOO_LARGE, message, name))


class RecordCheck(Protocol):
    """A compiled record check: every error of ``record``, at most 20, in order."""

    def __call__(self, record: Any, valid_times: Collection[str] = ...) -> list[FieldError]:
        ...


def compile_record(fields: dict[str, dict[str, Any]], loguro: bool = True) -> RecordCheck:
    """The precise check of a whole record for a normalized definition's ``fields`` (see
    :func:`validator.definition.record_fields`); ``loguro``: records carry the Loguro
    envelope (``timestamp`` and ``context``), else only the fields."""
    checks = {name: compile_field(decl, 2) for name, decl in fields.items()}
    required = {name for name, decl in fields.items() if decl["required"] is not False}
    known = frozenset({*checks, "timestamp", "context"} if loguro else checks)
    plan = [_step(name, c, name in required, decl)
            for (name, c), decl in zip(checks.items(), fields.values(), strict=True)]
    absent = object()

    def check_record(record: Any, valid_times: Collection[str] = ()) -> list[FieldError]:
        """``valid_times``: date-time strings known to be valid (see :class:`Errors`)."""
        if not isinstance(record, dict):
            return [FieldError(E.INVALID_RECORD, "", "Payload must be an object")]
        out = Errors()
        out.valid_times = valid_times
        if type(record) is DupDict:
            for key in record.duplicates:
                _err(out, E.DUPLICATE_FIELD, "Duplicate field", key)
        if loguro:
            ts = record.get("timestamp")
            if type(ts) is not str or (ts not in valid_times and not is_date_time(ts)):
                out.append(FieldError(E.INVALID_TIMESTAMP, "timestamp",
                                      "Invalid or missing timestamp"))
            ctx = record.get("context")
            if not isinstance(ctx, dict):
                out.append(FieldError(E.INVALID_CONTEXT, "context",
                                      "context must be an object"))
            elif type(ctx) is not dict:
                walk_free(ctx, "context", 2, out)
            else:
                # A flat object of short strings (the usual context) has nothing to report.
                for key, item in ctx.items():
                    if type(item) is not str or len(item) > MAX_STRING or \
                            len(key) > MAX_STRING:
                        walk_free(ctx, "context", 2, out)
                        break
        if not known.issuperset(record):
            out.extend(extra_field(key) for key in record if key not in known)
        # Errors past the 20th are cut at the end: the inline checks do not count them
        # (errors are only ever appended, so the first 20 are the same).
        for (name, c, missing, types, wrong_type, bad_timestamp, too_long, not_finite,
             too_large) in plan:
            v = record.get(name, absent)
            if v is absent:
                if missing is not None:
                    out.append(missing)
            elif types is None:
                if len(out) < MAX_ERRORS_PER_RECORD:
                    c(v, name, out)
            else:
                # compile_field's check of a type-only field, inlined.
                t = type(v)
                if t not in types:
                    out.append(wrong_type)  # type: ignore[arg-type]
                elif t is str:
                    if len(v) > MAX_STRING:
                        out.append(too_long)
                    elif bad_timestamp is not None and v not in valid_times and \
                            not is_date_time(v):
                        out.append(bad_timestamp)
                elif t is float:
                    if not math.isfinite(v):
                        out.append(not_finite)  # type: ignore[arg-type]
                elif t is int and not INT64_MIN <= v <= INT64_MAX:
                    out.append(too_large)  # type: ignore[arg-type]
        return out[:MAX_ERRORS_PER_RECORD]
    return check_record

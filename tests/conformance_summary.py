"""Load JSON-Schema-Test-Suite cases and adapt them to the dataset definition language.

Every case of the suite files for the keywords and formats the language supports becomes one
:class:`Case`: a definition ``{"fields": {"f": <field object>}}`` and a record
``{"timestamp": ..., "context": {}, "f": <case data>}`` whose expected verdict is the suite's.

The language is narrower than JSON Schema, so a case is *adapted* only by transformations that
cannot change its verdict, and *skipped* (with a reason computed here) when it cannot be
expressed:

- ``$schema`` and ``$comment`` are dropped: the suite's dialect is the language's dialect and a
  comment asserts nothing.
- A schema without ``type`` gets the JSON type(s) of the instance(s) it applies to (a union
  such as ``["boolean", "number"]`` when they differ), plus the type of any keyword that
  applies to none of them (``{"minimum": 5}`` on ``"x"`` becomes ``{"type": ["number",
  "string"], "minimum": 5}``: JSON Schema ignores ``minimum`` for a string, and so must the
  language). The instance satisfies its own type, so the verdict stands. Under
  ``enum``/``const`` whose values share one type, the values stand in for the instances (a
  valid instance equals one of them, an invalid one stays invalid whatever else is added);
  otherwise ``enum`` values of no injected type are dropped (they can never match).
- Nested objects are closed in the language, JSON Schema's are open. Every key an instance
  object has that its schema does not declare is declared with a schema adapted from the
  values it holds (that is, a constraint the instance already meets); ``required`` defaults
  to ``[]`` (JSON Schema's default). A name in ``required`` that is not a property is
  declared the same way (the language rejects requiring an undeclared name; an instance
  without it fails either way). An array without ``items`` gets ``items`` adapted the same
  way from its elements.
- Keywords outside the language (``$ref``, ``allOf``, ``prefixItems``, ...), boolean schemas,
  and instances with integers beyond int64 that the suite calls valid are skipped.
- A field that ``compile_dataset`` rejects is skipped as outside the language, unless it is
  plainly inside it (see :func:`plainly_in_language`): then the rejection is a failure.

Besides ``optional/format/*``, the optional files about the language's keywords run too
(:data:`OPTIONAL_FILES`: ECMA 262 regex semantics, non-BMP patterns, float overflow, big
numbers), plus one case the suite means but does not test (:func:`_supplement`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITE_ENV = "STRICTGATE_CONFORMANCE_DIR"
SUITE_REL = Path("JSON-Schema-Test-Suite") / "tests" / "draft2020-12"
TIMESTAMP = "2026-01-01T00:00:00Z"

# Suite file (without .json) per keyword of the language.
KEYWORD_FILES = (
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "items", "minItems", "maxItems",
    "uniqueItems", "properties", "required", "format",
)
FORMATS = ("date-time", "date", "time", "email", "uuid", "ipv4", "ipv6", "uri")
# Optional suite files about keywords of the language: (file under optional/, keyword label).
OPTIONAL_FILES = (
    ("ecmascript-regex", "pattern:ecmascript"),
    ("non-bmp-regex", "pattern:non-bmp"),
    ("float-overflow", "multipleOf:float-overflow"),
    ("bignum", "bignum"),
)

LANG_KEYWORDS = frozenset({
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "format", "items", "minItems",
    "maxItems", "uniqueItems", "properties", "required", "description",
})
IGNORED_KEYWORDS = frozenset({"$schema", "$comment"})
LANG_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
ANY_TYPE_KEYWORDS = frozenset({"type", "enum", "const", "description"})
APPLIES = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                         "multipleOf"}),
    "array": frozenset({"items", "minItems", "maxItems", "uniqueItems"}),
    "object": frozenset({"properties", "required"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
APPLIES["integer"] = APPLIES["number"]
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INT64 = (-(2**63), 2**63 - 1)


class Outside(Exception):
    """The case cannot be expressed in the language; the message says why."""


@dataclass(frozen=True)
class Case:
    """One suite test, wrapped as a record of a one-field dataset."""

    id: str
    keyword: str
    description: str
    schema: Any
    data: Any
    valid: bool
    definition: dict[str, Any] | None = None
    record: dict[str, Any] | None = None
    skip: str | None = None
    injected: bool = False  # a type/items/properties was added by adaptation
    expect_field: str = "f"  # the first error of an invalid record names this field (or below)
    expect_message: str | None = None  # ... with exactly this message, when set


@dataclass
class Stats:
    """Per-keyword counts, filled while the tests run."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, keyword: str, outcome: str) -> None:
        self.counts.setdefault(keyword, Counter())[outcome] += 1

    def table(self) -> str:
        rows = [f"{'keyword':<22}{'cases':>7}{'ran':>7}{'passed':>8}{'failed':>8}{'skipped':>9}"]
        total: Counter[str] = Counter()
        for keyword in sorted(self.counts):
            c = self.counts[keyword]
            total.update(c)
            rows.append(self._row(keyword, c))
        rows.append(self._row("TOTAL", total))
        return "\n".join(rows)

    @staticmethod
    def _row(name: str, c: Counter[str]) -> str:
        failed = c["ran"] - c["passed"]
        return (f"{name:<22}{c['ran'] + c['skipped']:>7}{c['ran']:>7}{c['passed']:>8}"
                f"{failed:>8}{c['skipped']:>9}")


def suite_dir() -> Path | None:
    """The suite's draft2020-12 directory, found relative to the repo or the shared dir."""
    candidates: list[Path] = []
    if os.environ.get(SUITE_ENV):
        candidates.append(Path(os.environ[SUITE_ENV]))
    here = Path(__file__).resolve()
    candidates += [here.parents[2] / "shared" / "conformance",
                   here.parents[1] / "shared" / "conformance",
                   Path("/work/shared/conformance")]
    for base in candidates:
        if (base / SUITE_REL).is_dir():
            return base / SUITE_REL
    return None


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    raise TypeError(type(value))


def matches_type(value: Any, type_: str) -> bool:
    if type_ == "integer":
        return json_type(value) == "number" and float(value).is_integer()
    return json_type(value) == type_


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _one_type(instances: list[Any]) -> str | list[str] | None:
    """The one type (or ``[T, "null"]``) of these instances; ``""`` when there are none."""
    seen = sorted({json_type(i) for i in instances})
    if not seen:
        return ""
    if len(seen) == 1:
        return seen[0]
    if len(seen) == 2 and "null" in seen:
        return [next(t for t in seen if t != "null"), "null"]
    return None


def adapt(schema: Any, instances: list[Any]) -> tuple[dict[str, Any], bool]:
    """``schema`` as a field object of the language, for these instances at its place.

    Returns the field object and whether anything was injected. Raises :class:`Outside`.
    """
    if isinstance(schema, bool):
        raise Outside("boolean schema outside the language")
    s = {k: v for k, v in schema.items() if k not in IGNORED_KEYWORDS}
    unknown = sorted(set(s) - LANG_KEYWORDS)
    if unknown:
        raise Outside(f"schema uses keyword {', '.join(unknown)} outside the language")
    injected = False
    # The instance must equal one of the enum/const values, so constraints those values meet
    # cannot change the verdict: inject from them when they share a type.
    values = ([s["const"]] if "const" in s else []) + list(s.get("enum", []))
    if values and _one_type(values) is not None:
        instances = values
    if "type" not in s:
        injected = True
        seen = {json_type(i) for i in instances}
        # A keyword that applies to none of those types stays, its own type joining the
        # union: JSON Schema ignores it for these instances, and so must the language.
        for family in ("string", "number", "array", "object"):
            if set(s) & APPLIES[family] and family not in seen:
                seen.add(family)
        types = sorted(seen or {"string"}, key=lambda t: (t == "null", t))
        s["type"] = types[0] if len(types) == 1 else types
        if "enum" in s:
            s["enum"] = [e for e in s["enum"] if any(matches_type(e, t) for t in types)]
    types = _types(s)
    if "array" in types:
        elements = [e for i in instances if isinstance(i, list) for e in i]
        s["items"], more = adapt(s.get("items", {}), elements)
        injected = injected or more or "items" not in schema
    if "object" in types:
        objects = [i for i in instances if isinstance(i, dict)]
        props = dict(s.get("properties", {}))
        names = [k for o in objects for k in o] + [
            k for k in s.get("required", []) if isinstance(k, str)]
        for key in names:
            if key not in props:
                props[key] = {}
                injected = True
        for key in list(props):
            props[key], more = adapt(props[key], [o[key] for o in objects if key in o])
            injected = injected or more
        s["properties"] = props
        if "required" not in s:
            s["required"] = []
    return s, injected


def plainly_in_language(f: dict[str, Any]) -> bool:
    """Whether a field object is obviously inside the language, so it must compile.

    One type of the language (optionally with ``null``), only keywords that apply to it, enum
    and const values of that type, nested names that are identifiers, arrays with items.
    """
    types = _types(f)
    main = [t for t in types if t != "null"]
    if len(main) != 1 or len(types) != len(set(types)) or not set(types) <= LANG_TYPES:
        return False
    type_ = main[0]
    if set(f) - ANY_TYPE_KEYWORDS - APPLIES[type_]:
        return False
    values = list(f.get("enum", [])) + ([f["const"]] if "const" in f else [])
    if "enum" in f and not f["enum"]:
        return False
    if not all(any(matches_type(v, t) for t in types) for v in values):
        return False
    if type_ == "array":
        return "items" in f and plainly_in_language(f["items"])
    if type_ == "object":
        props = f.get("properties", {})
        if not props or not all(IDENTIFIER.match(k) for k in props):
            return False
        return all(plainly_in_language(p) for p in props.values())
    if "pattern" in f:  # ECMA 262 only (\p{...}): the language may keep to Python's re
        try:
            re.compile(f["pattern"])
        except re.error:
            return False
    if type_ in ("number", "integer") and "multipleOf" in f:
        return bool(f["multipleOf"] > 0)
    return True


def _outside_int64(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not INT64[0] <= value <= INT64[1]
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_outside_int64(v) for v in value)
    if isinstance(value, dict):
        return any(_outside_int64(v) for v in value.values())
    return False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60]


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        groups: list[dict[str, Any]] = json.load(fh)
    return groups


def _field_case(keyword: str, ident: str, desc: str, schema: Any, data: Any,
                valid: bool) -> Case:
    base = {"id": ident, "keyword": keyword, "description": desc, "schema": schema,
            "data": data, "valid": valid}
    try:
        if valid and _outside_int64(data):
            raise Outside("instance holds an integer beyond int64, which the language "
                          "rejects by design (integers are int64: see the README)")
        if keyword == "format" and isinstance(schema, dict):
            fmt = schema.get("format")
            if fmt not in FORMATS:
                raise Outside(f"format {fmt!r} outside the language")
            if isinstance(data, str):
                raise Outside("format.json checks that format is only an annotation by "
                              "default; the language asserts formats (see format:<name>)")
        f, injected = adapt(schema, [data])
    except Outside as exc:
        return Case(**base, skip=str(exc))
    definition = {"fields": {"f": f}}
    record = {"timestamp": TIMESTAMP, "context": {}, "f": data}
    return Case(**base, definition=definition, record=record, injected=injected)


def load_cases() -> list[Case]:
    """Every suite case of the supported keywords and formats, adapted or marked skipped."""
    root = suite_dir()
    if root is None:
        return []
    cases: list[Case] = []
    for stem in KEYWORD_FILES:
        for gi, group in enumerate(_load(root / f"{stem}.json")):
            for ti, test in enumerate(group["tests"]):
                slug = f"{gi}-{_slug(group['description'])}/{ti}-{_slug(test['description'])}"
                ident = f"{stem}/{slug}"
                desc = f"{group['description']} / {test['description']}"
                cases.append(_field_case(stem, ident, desc, group["schema"], test["data"],
                                         test["valid"]))
    for stem, label in OPTIONAL_FILES:
        for gi, group in enumerate(_load(root / "optional" / f"{stem}.json")):
            for ti, test in enumerate(group["tests"]):
                slug = f"{gi}-{_slug(group['description'])}/{ti}-{_slug(test['description'])}"
                desc = f"{group['description']} / {test['description']}"
                cases.append(_field_case(label, f"{stem}/{slug}", desc, group["schema"],
                                         test["data"], test["valid"]))
    cases += _supplement()
    for fmt in FORMATS:
        for gi, group in enumerate(_load(root / "optional" / "format" / f"{fmt}.json")):
            for ti, test in enumerate(group["tests"]):
                slug = f"{gi}-{_slug(group['description'])}/{ti}-{_slug(test['description'])}"
                desc = f"{group['description']} / {test['description']}"
                cases.append(_field_case(f"format:{fmt}", f"format-{fmt}/{slug}", desc,
                                         group["schema"], test["data"], test["valid"]))
                if fmt == "date-time":
                    cases += _timestamp_cases(slug, desc, group["schema"], test)
    return cases


def _supplement() -> list[Case]:
    """Cases the suite means but does not test. ``ecmascript-regex.json``'s "$ does not match
    trailing newline" carries ``"abc\\n"`` (a backslash and an ``n``), so the newline itself
    is never tried; here it is."""
    schema = {"type": "string", "pattern": "^abc$"}
    return [
        _field_case("pattern:ecmascript", f"supplement/ecma-dollar/{i}-{_slug(desc)}", desc,
                    schema, data, valid)
        for i, (desc, data, valid) in enumerate([
            ("$ does not match before a trailing newline", "abc\n", False),
        ])
    ]


def _timestamp_cases(slug: str, desc: str, schema: Any, test: dict[str, Any]) -> list[Case]:
    """The date-time cases again, through a ``timestamp`` field and the envelope timestamp."""
    data, valid = test["data"], test["valid"]
    base = {"description": desc, "schema": schema, "data": data, "valid": valid}
    if not isinstance(data, str):
        reason = ("a timestamp rejects non-strings; the suite case checks that format "
                  "ignores them")
        return [Case(id=f"timestamp-field/{slug}", keyword="timestamp field", skip=reason,
                     **base),
                Case(id=f"timestamp-envelope/{slug}", keyword="envelope timestamp",
                     skip=reason, **base)]
    return [
        Case(id=f"timestamp-field/{slug}", keyword="timestamp field",
             definition={"fields": {"f": "timestamp"}},
             record={"timestamp": TIMESTAMP, "context": {}, "f": data},
             expect_message="Invalid timestamp field: f", **base),
        Case(id=f"timestamp-envelope/{slug}", keyword="envelope timestamp",
             definition={"fields": {"f": "string"}},
             record={"timestamp": data, "context": {}, "f": "x"},
             expect_field="timestamp", expect_message="Invalid or missing timestamp", **base),
    ]

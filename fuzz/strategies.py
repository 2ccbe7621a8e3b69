"""Hypothesis strategies: definitions of the dataset language, records valid under them,
single mutations with the error they must produce, and "valid-ish" records for differential
testing.

A definition is drawn as a tree of :class:`Spec` objects. Each spec renders its part of the
definition (:meth:`Spec.decl`), draws values valid under it (:meth:`Spec.valid`), values of
another JSON type (:meth:`Spec.wrong`), values near its boundaries (:meth:`Spec.near`), and,
for bounded numbers, values beyond the range (:meth:`Spec.beyond`).

The generators stay inside what the jsonschema oracle judges exactly like the contract:
strings carry no surrogates or control characters (Python's ``$`` matches before a final
newline, ECMA 262's does not), patterns use no ``\\d``/``\\w`` (Unicode in Python, ASCII in
ECMA 262), integers stay in int64, floats are finite, and format strings come from generators
of valid values or from suite strings the oracle judges as the suite does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from typing import Any

from hypothesis import strategies as st

from fuzz.oracle import FORMAT_CHECKER
from tests.conformance_summary import suite_dir

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RESERVED = frozenset({"timestamp", "context"})
ALL_FORMATS = ("date-time", "date", "time", "email", "uuid", "ipv4", "ipv6", "uri")

# No "@": jsonschema's email check is only "contains @", so random text must not hold one.
CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="@")
TEXT = st.text(CHARS, max_size=12)
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(
    lambda n: n not in RESERVED)
INTS = st.integers(INT64_MIN, INT64_MAX)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
# Random values keep floats within 2**53: an integral float beyond int64 (1e19) is an integer
# to JSON Schema but one the language rejects by design, so the oracle is no judge there.
SMALL_FLOATS = st.floats(-(2.0**53), 2.0**53)
SCALARS = st.none() | st.booleans() | INTS | SMALL_FLOATS | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=6,
)

# (pattern in the definition, regex that generates exactly its matches). No \d, \w or \s.
PATTERNS = (
    ("^[A-Z]{2}$", "[A-Z]{2}"),
    ("^[a-z0-9_-]{3,12}$", "[a-z0-9_-]{3,12}"),
    ("^(free|pro|team)$", "(free|pro|team)"),
    ("^[+]?[0-9]{6,10}$", "[+]?[0-9]{6,10}"),
)
MULTIPLES_NUMBER = (Fraction(1, 2), Fraction(1, 4), Fraction(2), Fraction(5))
MULTIPLES_INTEGER = (Fraction(2), Fraction(3), Fraction(10))
BROKEN_TIMESTAMPS = (
    "", "not a timestamp", "2026-06-10", "2026-06-10T10:00:00", "2026-06-10 10:00:00Z",
    "2026-06-10T10:00:00+0200", "2026-13-10T10:00:00Z", "2026-02-30T10:00:00Z",
    "2026-06-10T24:00:00Z", "2026-06-10T10:60:00Z", "2026-06-10T10:00:61Z",
    "2026-06-10T10:00:00.Z", "20260610T100000Z", "2026-06-10T10:00:00+24:00",
)


def _num(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def json_key(value: Any) -> str:
    """A key equal for JSON-equal values (1 == 1.0, but False != 0)."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return ["n", float(v)]
        if isinstance(v, list):
            return [norm(x) for x in v]
        return {k: norm(x) for k, x in v.items()}
    return json.dumps(norm(value), sort_keys=True)


# ---------------------------------------------------------------- suite format strings


@cache
def suite_format_cases(fmt: str) -> tuple[tuple[Any, bool], ...]:
    """``(data, valid)`` of the suite's ``optional/format/<fmt>.json``."""
    root = suite_dir()
    if root is None:
        return ()
    path = root / "optional" / "format" / f"{fmt}.json"
    groups = json.loads(path.read_text(encoding="utf-8"))
    return tuple((t["data"], t["valid"]) for g in groups for t in g["tests"])


@cache
def suite_pool(fmt: str) -> tuple[str, ...]:
    """Suite strings of a format that the oracle judges as the suite does."""
    out = []
    for data, valid in suite_format_cases(fmt):
        if isinstance(data, str) and "\n" not in data:
            try:
                ok = FORMAT_CHECKER.conforms(data, fmt)
            except Exception:  # a checker that raises is no reference
                continue
            if ok == valid:
                out.append(data)
    return tuple(out)


# ---------------------------------------------------------------- format generators


@st.composite
def _date_parts(draw: st.DrawFn) -> str:
    year = draw(st.integers(1000, 9999))
    month = draw(st.integers(1, 12))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    day = draw(st.integers(1, days))
    return f"{year:04d}-{month:02d}-{day:02d}"


@st.composite
def _time_parts(draw: st.DrawFn) -> str:
    hms = f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:" \
          f"{draw(st.integers(0, 59)):02d}"
    frac = draw(st.sampled_from(["", ".5", ".123", ".000001"]))
    offset = draw(st.sampled_from(["Z", "z", "+00:00", "-08:00", "+05:30", "+23:59"]))
    return hms + frac + offset


@st.composite
def shaped_timestamps(draw: st.DrawFn) -> str:
    """The RFC 3339 shape with every part near or past its edge (month 13, 24:00, :60,
    offset +24:00, Feb 29 of a common year, ...): what a fast shape check lets through."""
    def part(edges: list[int], width: int) -> str:
        return f"{draw(st.sampled_from(edges) | st.integers(0, 10**width - 1)):0{width}d}"
    date = (f"{part([0, 1, 1900, 2000, 2024, 2026, 9999], 4)}-{part([0, 1, 2, 12, 13], 2)}"
            f"-{part([0, 1, 28, 29, 30, 31, 32], 2)}")
    time = f"{part([0, 23, 24], 2)}:{part([0, 59, 60], 2)}:{part([0, 59, 60, 61], 2)}"
    frac = draw(st.sampled_from(["", ".0", ".123456789012"]))
    offset = draw(st.sampled_from(["Z", "z"]) | st.builds(
        lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"),
        st.sampled_from(["00", "08", "23", "24", "99"]), st.sampled_from(["00", "30", "59", "60"])))
    return date + draw(st.sampled_from("Tt ")) + time + frac + offset


DATE_TIMES = st.builds(lambda d, sep, t: d + sep + t, _date_parts(), st.sampled_from("Tt"),
                       _time_parts())
FORMAT_VALUES: dict[str, st.SearchStrategy[str]] = {
    "date-time": DATE_TIMES,
    "date": _date_parts(),
    "time": _time_parts(),
    "email": st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,5})?@[a-z]{1,8}\.(com|org|ro)",
                           fullmatch=True),
    "uuid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    "ipv4": st.ip_addresses(v=4).map(str),
    "ipv6": st.ip_addresses(v=6).map(str),
    "uri": st.from_regex(r"https?://[a-z]{1,8}\.(com|org)(/[a-z0-9]{1,6}){0,3}(\?q=[0-9]{1,3})?",
                         fullmatch=True),
}


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class Spec:
    """One place of a definition: a field, an array's items or a nested property."""

    kind: str  # the type word of messages: string number integer boolean timestamp array object
    nullable: bool = False
    description: str | None = None

    @property
    def scalar(self) -> bool:
        return self.kind not in ("array", "object")

    def keywords(self) -> dict[str, Any]:
        return {}

    def decl(self) -> Any:
        """This place in the definition (a field object)."""
        out: dict[str, Any] = {"type": [self.kind, "null"] if self.nullable else self.kind}
        out.update(self.keywords())
        if self.description is not None:
            out["description"] = self.description
        return out

    def base(self) -> st.SearchStrategy[Any]:
        raise NotImplementedError

    def valid(self) -> st.SearchStrategy[Any]:
        return (st.none() | self.base()) if self.nullable else self.base()

    def wrong(self) -> st.SearchStrategy[Any]:
        """A value of another JSON type (never null when null is allowed)."""
        others = {
            "string": INTS | st.booleans() | st.just([]) | st.just({}),
            "timestamp": INTS | SMALL_FLOATS | st.booleans() | st.just([]) | st.just({}),
            "number": TEXT | st.booleans() | st.just([1]) | st.just({}),
            "integer": TEXT | st.booleans() | st.sampled_from([0.5, -1.25, 1e-3]) | st.just([]),
            "boolean": st.sampled_from([0, 1, 1.0]) | TEXT | st.just([]) | st.just({}),
        }[self.kind]
        return others if self.nullable else (others | st.none())

    def near(self) -> st.SearchStrategy[Any]:
        """Values at or just past the edges, for differential testing."""
        return self.valid()

    def beyond(self) -> st.SearchStrategy[Any] | None:
        return None

    def distinct(self) -> int:
        """How many distinct valid values there are at least (capped)."""
        return 1000


@dataclass(frozen=True)
class StringSpec(Spec):
    kind: str = "string"
    min_length: int | None = None
    max_length: int | None = None
    pattern: tuple[str, str] | None = None
    enum: tuple[str, ...] | None = None
    const: str | None = None
    format: str | None = None

    def keywords(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.min_length is not None:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = self.pattern[0]
        if self.enum is not None:
            out["enum"] = list(self.enum) + ([None] if self.nullable else [])
        if self.const is not None:
            out["const"] = self.const
        if self.format is not None:
            out["format"] = self.format
        return out

    def base(self) -> st.SearchStrategy[Any]:
        if self.enum is not None:
            return st.sampled_from(self.enum)
        if self.const is not None:
            return st.just(self.const)
        if self.pattern is not None:
            return st.from_regex(self.pattern[1], fullmatch=True)
        if self.format is not None:
            return FORMAT_VALUES[self.format]
        lo = self.min_length or 0
        hi = self.max_length if self.max_length is not None else lo + 12
        return st.text(CHARS, min_size=lo, max_size=hi)

    def valid(self) -> st.SearchStrategy[Any]:
        if self.const is not None:  # const excludes null even on a nullable field
            return st.just(self.const)
        return super().valid()

    def near(self) -> st.SearchStrategy[Any]:
        if self.format is not None:
            pool = suite_pool(self.format)
            near = self.valid() | (st.sampled_from(pool) if pool else self.valid())
            return near | shaped_timestamps() if self.format == "date-time" else near
        lo = max((self.min_length or 0) - 1, 0)
        hi = (self.max_length if self.max_length is not None else lo + 12) + 1
        others = st.text(CHARS, min_size=lo, max_size=hi)
        if self.enum is not None or self.const is not None:
            values = list(self.enum or ()) + ([self.const] if self.const is not None else [])
            others = others | st.sampled_from([v.upper() + "x" for v in values])
        return self.valid() | others

    def distinct(self) -> int:
        if self.const is not None:
            return 1
        if self.enum is not None:
            return len(self.enum) + self.nullable
        return 1000


@dataclass(frozen=True)
class TimestampSpec(Spec):
    kind: str = "timestamp"
    short: bool = False

    def decl(self) -> Any:
        return "timestamp" if self.short else super().decl()

    def base(self) -> st.SearchStrategy[Any]:
        return DATE_TIMES

    def near(self) -> st.SearchStrategy[Any]:
        return self.valid() | shaped_timestamps() | st.sampled_from(
            suite_pool("date-time") + BROKEN_TIMESTAMPS)


@dataclass(frozen=True)
class NumberSpec(Spec):
    kind: str = "number"
    minimum: Fraction | None = None
    maximum: Fraction | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    multiple_of: Fraction | None = None

    def keywords(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive_min else "minimum"] = _num(self.minimum)
        if self.maximum is not None:
            out["exclusiveMaximum" if self.exclusive_max else "maximum"] = _num(self.maximum)
        if self.multiple_of is not None:
            out["multipleOf"] = _num(self.multiple_of)
        return out

    def _step(self) -> Fraction:
        if self.multiple_of is not None:
            return self.multiple_of
        return Fraction(1) if self.kind == "integer" else Fraction(1, 8)

    def _k_range(self) -> tuple[int, int] | None:
        """Multiples k * step in range, when both bounds are set (k from lo to hi)."""
        if self.minimum is None or self.maximum is None:
            return None
        step = self._step()
        lo = math.ceil(self.minimum / step)
        if self.exclusive_min and lo * step == self.minimum:
            lo += 1
        hi = math.floor(self.maximum / step)
        if self.exclusive_max and hi * step == self.maximum:
            hi -= 1
        return lo, hi

    def base(self) -> st.SearchStrategy[Any]:
        step = self._step()
        ks = self._k_range()
        if ks is None and self.multiple_of is None and self.minimum is None \
                and self.maximum is None:
            return INTS if self.kind == "integer" else (FLOATS | st.integers(-2**53, 2**53))
        if ks is None:  # one bound or none: multiples of step on the allowed side
            if self.minimum is None and self.maximum is None:
                ks = (-10_000, 10_000)
            elif self.minimum is not None:
                first = math.ceil(self.minimum / step) + (
                    1 if self.exclusive_min and self.minimum % step == 0 else 0)
                ks = (first, first + 10_000)
            else:
                assert self.maximum is not None
                last = math.floor(self.maximum / step) - (
                    1 if self.exclusive_max and self.maximum % step == 0 else 0)
                ks = (last - 10_000, last)
        lo, hi = ks
        exact = st.integers(lo, hi).map(lambda k: _num(k * step))
        if self.kind == "number" and self.multiple_of is None and self.minimum is not None \
                and self.maximum is not None:
            floats = st.floats(float(self.minimum), float(self.maximum),
                               exclude_min=self.exclusive_min, exclude_max=self.exclusive_max)
            return exact | floats.filter(lambda x: self.minimum is not None
                                         and self.maximum is not None
                                         and self._inside(Fraction(x)))
        return exact

    def _inside(self, x: Fraction) -> bool:
        assert self.minimum is not None and self.maximum is not None
        above = x > self.minimum if self.exclusive_min else x >= self.minimum
        below = x < self.maximum if self.exclusive_max else x <= self.maximum
        return above and below

    def beyond(self) -> st.SearchStrategy[Any] | None:
        """Right type, beyond ``maximum`` (or below ``minimum``), still a multiple."""
        step = self._step()
        options = []
        if self.maximum is not None:
            last = math.floor(self.maximum / step)
            first_out = last if (self.exclusive_max and last * step == self.maximum) else last + 1
            options.append(st.integers(first_out, first_out + 50).map(lambda k: _num(k * step)))
        if self.minimum is not None:
            first = math.ceil(self.minimum / step)
            last_out = first if (self.exclusive_min and first * step == self.minimum) else first - 1
            options.append(st.integers(last_out - 50, last_out).map(lambda k: _num(k * step)))
        return st.one_of(options) if options else None

    def near(self) -> st.SearchStrategy[Any]:
        edges: list[Any] = []
        for bound in (self.minimum, self.maximum):
            if bound is not None:
                for d in (Fraction(0), self._step(), -self._step(), Fraction(1, 3)):
                    edges.append(_num(bound + d))
        extra = st.sampled_from(edges) if edges else st.just(0)
        if self.kind == "integer":
            extra = extra | st.sampled_from([0.5, 2.0, INT64_MAX, INT64_MIN])
        beyond = self.beyond()
        return self.valid() | extra | (beyond if beyond is not None else self.valid())

    def distinct(self) -> int:
        ks = self._k_range()
        return 1000 if ks is None else max(ks[1] - ks[0] + 1, 0) + self.nullable


@dataclass(frozen=True)
class BooleanSpec(Spec):
    kind: str = "boolean"

    def base(self) -> st.SearchStrategy[Any]:
        return st.booleans()

    def near(self) -> st.SearchStrategy[Any]:
        return self.valid() | st.sampled_from([0, 1, "true", None])

    def distinct(self) -> int:
        return 2 + self.nullable


@dataclass(frozen=True)
class ShortSpec(Spec):
    """The seed's short form: ``"amount": "number"``."""

    def decl(self) -> Any:
        return self.kind

    def base(self) -> st.SearchStrategy[Any]:
        return {"string": TEXT, "number": FLOATS | st.integers(-2**53, 2**53),
                "integer": INTS, "boolean": st.booleans()}[self.kind]

    def near(self) -> st.SearchStrategy[Any]:
        return self.valid() | SCALARS


@dataclass(frozen=True)
class UnionSpec(Spec):
    """A type union such as ``["string", "integer"]`` (the meta-schema allows any list)."""

    kind: str = "union"
    kinds: tuple[str, ...] = ("string", "integer")

    def decl(self) -> Any:
        out: dict[str, Any] = {"type": [*self.kinds, "null"] if self.nullable else
                               list(self.kinds)}
        if self.description is not None:
            out["description"] = self.description
        return out

    def base(self) -> st.SearchStrategy[Any]:
        parts = {"string": TEXT, "number": FLOATS, "integer": INTS, "boolean": st.booleans(),
                 "timestamp": DATE_TIMES}
        return st.one_of([parts[k] for k in self.kinds])

    def near(self) -> st.SearchStrategy[Any]:
        return self.valid() | SCALARS | shaped_timestamps()


@dataclass(frozen=True)
class ArraySpec(Spec):
    kind: str = "array"
    items: Spec = field(default_factory=lambda: ShortSpec("string"))
    min_items: int | None = None
    max_items: int | None = None
    unique: bool = False

    def keywords(self) -> dict[str, Any]:
        out: dict[str, Any] = {"items": self.items.decl()}
        if self.min_items is not None:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        if self.unique:
            out["uniqueItems"] = True
        return out

    def base(self) -> st.SearchStrategy[Any]:
        lo = self.min_items or 0
        hi = self.max_items if self.max_items is not None else lo + 3
        if self.unique:
            return st.lists(self.items.valid(), min_size=lo, max_size=hi, unique_by=json_key)
        return st.lists(self.items.valid(), min_size=lo, max_size=hi)

    def wrong(self) -> st.SearchStrategy[Any]:
        return TEXT | INTS | st.booleans() | st.just({})

    def near(self) -> st.SearchStrategy[Any]:
        lo = max((self.min_items or 0) - 1, 0)
        hi = (self.max_items if self.max_items is not None else lo + 3) + 1
        return self.valid() | st.lists(self.items.near(), min_size=lo, max_size=hi)


@dataclass(frozen=True)
class ObjectSpec(Spec):
    kind: str = "object"
    properties: tuple[tuple[str, Spec], ...] = ()
    required: tuple[str, ...] = ()
    open: bool = False  # "additionalProperties": true

    def keywords(self) -> dict[str, Any]:
        out: dict[str, Any] = {"properties": {k: s.decl() for k, s in self.properties},
                               "required": list(self.required)}
        if self.open:
            out["additionalProperties"] = True
        return out

    def base(self) -> st.SearchStrategy[Any]:
        return _object_values(self, False)

    def wrong(self) -> st.SearchStrategy[Any]:
        return TEXT | INTS | st.booleans() | st.just([])

    def near(self) -> st.SearchStrategy[Any]:
        return self.valid() | _object_values(self, True)


@st.composite
def _object_values(draw: st.DrawFn, spec: ObjectSpec, near: bool) -> dict[str, Any]:
    """Objects of ``spec``: valid, or (``near``) with a property flipped or one undeclared."""
    out: dict[str, Any] = {}
    for name, sub in spec.properties:
        present = name in spec.required or draw(st.booleans())
        if near and draw(st.integers(0, 9)) == 0:
            present = not present
        if present:
            out[name] = draw(sub.near() if near else sub.valid())
    if near and draw(st.integers(0, 9)) == 0:
        out[draw(NAMES)] = draw(SCALARS)
    return out


@dataclass(frozen=True)
class Dataset:
    """A drawn definition: top-level fields, each maybe optional (``"required": false``)."""

    fields: tuple[tuple[str, Spec, bool], ...]  # (name, spec, optional)
    description: str | None = None

    def definition(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, spec, optional in self.fields:
            decl = spec.decl()
            if optional:
                decl = dict(decl) | {"required": False}
            fields[name] = decl
        out: dict[str, Any] = {"fields": fields}
        if self.description is not None:
            out["description"] = self.description
        return out


# ---------------------------------------------------------------- drawing definitions


@st.composite
def string_specs(draw: st.DrawFn, formats: tuple[str, ...]) -> Spec:
    nullable = draw(st.booleans())
    desc = draw(st.none() | TEXT)
    mode = draw(st.sampled_from(["plain", "length", "pattern", "enum", "const", "format"]))
    if mode == "length":
        lo = draw(st.none() | st.integers(0, 4))
        hi = draw(st.none() | st.integers(lo or 0, (lo or 0) + 8))
        return StringSpec(nullable=nullable, description=desc, min_length=lo, max_length=hi)
    if mode == "pattern":
        return StringSpec(nullable=nullable, description=desc,
                          pattern=draw(st.sampled_from(PATTERNS)))
    if mode == "enum":
        values = draw(st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1,
                               max_size=4, unique=True))
        return StringSpec(nullable=nullable, description=desc, enum=tuple(values))
    if mode == "const":
        return StringSpec(description=desc, const=draw(st.from_regex(r"[a-z]{1,6}",
                                                                     fullmatch=True)))
    if mode == "format" and formats:
        return StringSpec(nullable=nullable, description=desc,
                          format=draw(st.sampled_from(formats)))
    return StringSpec(nullable=nullable, description=desc)


@st.composite
def number_specs(draw: st.DrawFn, kind: str) -> Spec:
    nullable = draw(st.booleans())
    multiples = MULTIPLES_INTEGER if kind == "integer" else MULTIPLES_NUMBER
    step = draw(st.none() | st.sampled_from(multiples))
    unit = step or Fraction(1)
    lo = hi = None
    if draw(st.booleans()):
        lo = draw(st.integers(-100, 100)) * unit
    if draw(st.booleans()):
        hi = (lo if lo is not None else draw(st.integers(-100, 100)) * unit) \
            + draw(st.integers(10, 200)) * unit
    return NumberSpec(kind=kind, nullable=nullable, description=draw(st.none() | TEXT),
                      minimum=lo, maximum=hi,
                      exclusive_min=lo is not None and draw(st.booleans()),
                      exclusive_max=hi is not None and draw(st.booleans()),
                      multiple_of=step)


def scalar_specs(formats: tuple[str, ...]) -> st.SearchStrategy[Spec]:
    return st.one_of(
        string_specs(formats),
        number_specs("number"),
        number_specs("integer"),
        st.builds(BooleanSpec, nullable=st.booleans()),
        st.builds(TimestampSpec, nullable=st.booleans()),
        st.sampled_from(["string", "number", "integer", "boolean"]).map(ShortSpec),
        st.just(TimestampSpec(short=True)),
        st.builds(UnionSpec, nullable=st.booleans(), kinds=st.lists(
            st.sampled_from(["string", "number", "integer", "boolean", "timestamp"]),
            min_size=2, max_size=3, unique=True).map(tuple).filter(
                # refused at registration: every string would pass, timestamp or not
                lambda kinds: not {"string", "timestamp"} <= set(kinds))),
    )


@st.composite
def array_specs(draw: st.DrawFn, formats: tuple[str, ...], depth: int) -> Spec:
    items = draw(any_specs(formats, depth + 1))
    unique = draw(st.booleans())
    lo = draw(st.none() | st.integers(0, 3))
    if unique:
        lo = min(lo or 0, items.distinct()) if lo is not None else None
    hi = draw(st.none() | st.integers(max(lo or 0, 1), (lo or 0) + 4))
    return ArraySpec(nullable=draw(st.booleans()), items=items, min_items=lo, max_items=hi,
                     unique=unique)


@st.composite
def object_specs(draw: st.DrawFn, formats: tuple[str, ...], depth: int) -> Spec:
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    props = tuple((n, draw(any_specs(formats, depth + 1))) for n in names)
    required = tuple(n for n in names if draw(st.booleans()))
    return ObjectSpec(nullable=draw(st.booleans()), properties=props, required=required,
                      open=draw(st.integers(0, 4)) == 4)


def any_specs(formats: tuple[str, ...], depth: int = 0) -> st.SearchStrategy[Spec]:
    if depth >= 2:
        return scalar_specs(formats)
    return st.one_of(scalar_specs(formats), array_specs(formats, depth),
                     object_specs(formats, depth))


@st.composite
def flat_specs(draw: st.DrawFn) -> Spec:
    """Scalars with only the keywords a typed decoder checks itself (the hot path's case)."""
    spec = draw(scalar_specs(("date-time",)))
    if isinstance(spec, StringSpec) and (spec.enum or spec.const is not None):
        return StringSpec(nullable=spec.nullable)
    if isinstance(spec, NumberSpec) and spec.multiple_of is not None:
        return NumberSpec(kind=spec.kind, nullable=spec.nullable, minimum=spec.minimum,
                          maximum=spec.maximum)
    return spec


@st.composite
def datasets(draw: st.DrawFn, formats: tuple[str, ...] = ALL_FORMATS,
             max_fields: int = 6, flat: bool = False) -> Dataset:
    """A random definition of the language (``flat``: scalars a typed decoder can check)."""
    names = draw(st.lists(NAMES, min_size=1, max_size=max_fields, unique=True))
    fields = []
    for name in names:
        spec = draw(flat_specs() if flat else any_specs(formats))
        # "required": false needs the object form of a field, and an object field's
        # "required" is its list of required properties: such a field cannot be optional.
        optional = isinstance(spec.decl(), dict) and not isinstance(spec, ObjectSpec) \
            and draw(st.integers(0, 3)) == 0
        fields.append((name, spec, optional))
    return Dataset(tuple(fields), description=draw(st.none() | TEXT))


@st.composite
def valid_records(draw: st.DrawFn, ds: Dataset) -> dict[str, Any]:
    """A record valid under ``ds``."""
    record: dict[str, Any] = {"timestamp": draw(DATE_TIMES),
                              "context": draw(st.dictionaries(NAMES, JSON, max_size=3))}
    for name, spec, optional in ds.fields:
        if not optional or draw(st.booleans()):
            record[name] = draw(spec.valid())
    return record


# ---------------------------------------------------------------- mutations


FAULT_KINDS = ("type", "range", "missing", "extra", "timestamp_field", "huge", "context",
               "envelope_timestamp")


@dataclass(frozen=True)
class Mutation:
    """A record with one fault and the first error it must produce."""

    record: Any
    kind: str  # one of FAULT_KINDS
    field: str
    message: str


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _sites(spec: Spec, value: Any, parts: tuple[str | int, ...], unique: bool = False,
           ) -> Iterator[tuple[str, tuple[str | int, ...], Spec]]:
    """Places a single fault can go: (fault kind, path, spec there).

    Inside a ``uniqueItems`` array no property is dropped: that could make two items equal,
    a second fault.
    """
    if isinstance(spec, UnionSpec):
        return  # no single type word to expect in a message
    if spec.scalar:
        yield "type", parts, spec
        if spec.beyond() is not None:
            yield "range", parts, spec
        if spec.kind == "timestamp":
            yield "timestamp_field", parts, spec
        if spec.kind in ("number", "integer") and not unique:
            yield "huge", parts, spec
    elif isinstance(spec, ArraySpec) and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _sites(spec.items, item, (*parts, i), unique or spec.unique)
    elif isinstance(spec, ObjectSpec) and isinstance(value, dict):
        if not spec.open:
            yield "extra", parts, spec
        for name, sub in spec.properties:
            if name in value:
                if name in spec.required and not unique:
                    yield "missing", (*parts, name), sub
                yield from _sites(sub, value[name], (*parts, name), unique)


def _set(record: Any, parts: tuple[str | int, ...], value: Any) -> None:
    target = record
    for p in parts[:-1]:
        target = target[p]
    target[parts[-1]] = value


def _delete(record: Any, parts: tuple[str | int, ...]) -> None:
    target = record
    for p in parts[:-1]:
        target = target[p]
    del target[parts[-1]]


def _get(record: Any, parts: tuple[str | int, ...]) -> Any:
    for p in parts:
        record = record[p]
    return record


@st.composite
def mutations(draw: st.DrawFn, ds: Dataset) -> Mutation:
    """A valid record of ``ds`` with exactly one fault."""
    record = draw(valid_records(ds))
    sites: list[tuple[str, tuple[str | int, ...], Spec | None]] = []
    for name, spec, optional in ds.fields:
        if name in record:
            if not optional:
                sites.append(("missing", (name,), spec))
            sites.extend(_sites(spec, record[name], (name,)))
    sites += [("extra", (), None), ("context", ("context",), None),
              ("envelope_timestamp", ("timestamp",), None)]
    # First the kind of fault, evenly, then where: a plain draw over all places would
    # favour the envelope (hypothesis leans towards the first elements).
    kinds = [k for k in FAULT_KINDS if any(site[0] == k for site in sites)]
    chosen = draw(st.sampled_from(kinds))
    places = sorted((site for site in sites if site[0] == chosen), key=lambda s: -len(s[1]))
    kind, parts, spec = draw(st.sampled_from(places))  # deepest first, for the same reason
    record = json.loads(json.dumps(record))
    where = _path(parts)
    if kind == "envelope_timestamp":
        if draw(st.booleans()):
            del record["timestamp"]
        else:
            record["timestamp"] = draw(st.sampled_from(BROKEN_TIMESTAMPS) | INTS | st.none())
        return Mutation(record, kind, "timestamp", "Invalid or missing timestamp")
    if kind == "context":
        if draw(st.booleans()):
            del record["context"]
        else:
            record["context"] = draw(TEXT | INTS | st.none() | st.just([]) | st.booleans())
        return Mutation(record, kind, "context", "context must be an object")
    if kind == "missing":
        _delete(record, parts)
        return Mutation(record, kind, where, f"Missing field: {where}")
    if kind == "extra":
        target = _get(record, parts)
        declared = set(target) | (
            {n for n, _ in spec.properties} if isinstance(spec, ObjectSpec)
            else {n for n, _, _ in ds.fields} | RESERVED)
        name = draw(NAMES.filter(lambda n: n not in declared))
        target[name] = draw(JSON)
        where = _path((*parts, name))
        return Mutation(record, kind, where, f"Extra field: {where}")
    assert spec is not None
    if kind == "type":
        _set(record, parts, draw(spec.wrong()))
        return Mutation(record, kind, where, f"Invalid {spec.kind} field: {where}")
    if kind == "timestamp_field":
        _set(record, parts, draw(st.sampled_from(BROKEN_TIMESTAMPS)))
        return Mutation(record, kind, where, f"Invalid timestamp field: {where}")
    if kind == "huge":  # beyond int64: the language refuses it, whatever the bounds
        big = draw(st.integers(2**63, 2**70) | st.integers(-(2**70), -(2**63) - 1))
        _set(record, parts, big)
        return Mutation(record, kind, where, f"Invalid {spec.kind} field: {where}")
    beyond = spec.beyond()
    assert kind == "range" and beyond is not None
    _set(record, parts, draw(beyond))
    return Mutation(record, kind, where, f"Field out of range: {where}")


# ---------------------------------------------------------------- differential records


@st.composite
def valid_ish_records(draw: st.DrawFn, ds: Dataset) -> Any:
    """Records near the edges of ``ds``: each part valid, near an edge, random or missing.

    (Hypothesis leans towards small integers, so 0 is "leave it valid" on every roll.)
    """
    choice = draw(st.integers(0, 19))
    if choice == 19:
        return draw(JSON)
    if choice == 18:
        return draw(st.dictionaries(NAMES, JSON, max_size=4))
    record = draw(valid_records(ds))
    for name, spec, _optional in ds.fields:
        roll = draw(st.integers(0, 9))
        if 4 <= roll <= 7:
            record[name] = draw(spec.near())
        elif roll == 8:
            record[name] = draw(JSON)
        elif roll == 9:
            record.pop(name, None)
    roll = draw(st.integers(0, 19))
    if roll == 19:
        record["timestamp"] = draw(st.sampled_from(BROKEN_TIMESTAMPS) | JSON)
    elif roll == 18:
        record["timestamp"] = draw(st.sampled_from(suite_pool("date-time"))
                                   | shaped_timestamps())
    elif roll == 17:
        record["context"] = draw(JSON)
    elif roll == 16:
        record[draw(NAMES)] = draw(JSON)
    elif roll == 15:  # an undeclared name too long to quote whole
        record[draw(st.text(CHARS, min_size=190, max_size=400))] = draw(SCALARS)
    return record

"""Differential: ``validate_batch`` with the record scanner (:mod:`validator.scan`) against
the same :class:`CompiledDataset` with the scanner disabled (``_scanner = None``: the
msgspec fast path and the precise path).

The scanner must never call a record valid that the precise path rejects, and the whole
outcome must not change: either both raise :class:`BodyError` with the same ``code``, or
both return equal ``count``, ``errors``, ``error_count``, ``error_codes`` and
``failed_records``, and so do both with ``all_errors=True``, with the same ``failures()``
(every failing record's bytes as sent and all its errors) and ``valid_payload()``. Most
records the scanner doubts it also describes exactly (:class:`validator.scan.ExactErrors`):
each such description must be the precise checker's verdict on Python's parse of the
record. More checks on every body: each record the scanner calls valid, parsed alone by
Python's parser, has no error for the precise checker; and when Python's parser reads the
whole body, the batch's errors (capped, and all of them in ``failures()``) and their
counts by code are the precise checker's on each record it parsed (a third opinion,
independent of which parser each path chose), each failing record's bytes parse to that
record, and the valid payload to the valid records.

Definitions are plain scalars only (string, number, integer, boolean, timestamp, string
with ``format: date-time``; nullable, optional, described, shorthand), with random field
names (non-ASCII, quotes, backslashes, control characters, names whose bytes read as a JSON
escape, prefixes of one another); every test asserts the scanner is built for them.

* ``test_mutated_records_agree``, ``test_corrupted_bodies_agree``: chaos. Records with one
  to three faults of any kind (wrong types, edge values, missing/extra/repeated/escaped
  keys at the top and deep in ``context``, long keys, nesting around the scanner's 24 and
  the checker's 32 levels, objects wider than the scanner's key table, non-objects),
  written with random whitespace, ``orjson``, ``json.dumps`` or escapes, then perhaps
  corrupted byte by byte (truncated, a byte inserted/deleted/replaced, a comma doubled).
* ``test_edge_values_in_a_valid_batch``, ``test_one_fault_per_record[family]``: valid
  records the scanner reads as plain, each with at most one fault of one family
  (timestamps, numbers, strings, types, keys, shapes, bytes), so that no other doubt hides
  a wrong "valid".
* ``test_many_fields_and_records_agree`` (60 fields, the error cap of a batch),
  ``test_validate_one_agrees`` (the single-record endpoint).
* Deterministic sweeps: every edge value in every kind of place, hand-written bodies at the
  grammar's edges, context depth around the limits; and the mismatches this file found.

Bounded in ``make test``; ``SG_FUZZ_LONG=1`` (``make fuzz``) runs many more examples.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import note as hypothesis_note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from fuzz.strategies import BROKEN_TIMESTAMPS, DATE_TIMES, shaped_timestamps
from validator import compile_dataset
from validator import compiled as compiled_module
from validator.checker import MAX_STRING
from validator.compiled import MAX_BATCH_ERRORS, CompiledDataset, _parse_precise
from validator.errors import BodyError
from validator.scan import MAX_KEYS, MAX_NEST, Scan

LONG = os.environ.get("SG_FUZZ_LONG") == "1"
EXAMPLES = 1500 if LONG else 30
FEW = 500 if LONG else 15
FAMILY = 600 if LONG else 25
SETTINGS = settings(deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KINDS = ("string", "number", "integer", "boolean", "timestamp")

pytestmark = [
    pytest.mark.skipif(not getattr(compiled_module, "SCANNER_ENABLED", True),
                       reason="the scanner is disabled (STRICTGATE_SCANNER=0)"),
    # Values of 65537 characters are drawn on purpose.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]


@pytest.fixture(autouse=True, scope="module")
def describe_every_body() -> Any:
    """The scanner's exact descriptions are used for bodies of any size here (the service
    checks bodies with few of them instead, which is the path without the scanner)."""
    saved = compiled_module.MIN_DESCRIBED
    compiled_module.MIN_DESCRIBED = 0
    yield
    compiled_module.MIN_DESCRIBED = saved


# ---------------------------------------------------------------- JSON text with holes


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are: a number token, a string with odd bytes or escapes, a
    deep nest, or something that is not JSON at all."""

    text: bytes


@dataclass
class Obj:
    """A JSON object as its (key, value) pairs, so keys can repeat; a key is a ``str`` or a
    :class:`Raw` (its JSON text, e.g. an escaped spelling of a declared name)."""

    pairs: list[tuple[Any, Any]]


class NotPlain(Exception):
    """The value has a :class:`Raw` or a repeated key: only :class:`Writer` can write it."""


def note(text: str) -> None:
    """hypothesis' note inside a property, nothing in the plain tests."""
    with contextlib.suppress(InvalidArgument):
        hypothesis_note(text)


def plain(v: Any) -> Any:
    """``v`` as Python JSON values (dicts), for orjson and json.dumps."""
    if isinstance(v, Raw):
        raise NotPlain
    if isinstance(v, Obj):
        out = {}
        for k, x in v.pairs:
            if not isinstance(k, str) or k in out:
                raise NotPlain
            out[k] = plain(x)
        return out
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "\b": "\\b", "\f": "\\f"}
STRING_MODES = ("ascii", "utf8", "orjson", "escape")
WHITESPACE = (b" ", b"\t", b"\n", b"\r", b"\r\n", b"  ", b" \t\r\n ")


def _u(code: int, rnd: random.Random) -> str:
    text = f"{code:04x}"
    return "\\u" + (text.upper() if rnd.random() < 0.5 else text)


def escape_char(c: str, rnd: random.Random) -> str:
    """``c`` as a JSON escape (a short one or ``\\uXXXX``, a surrogate pair past the BMP)."""
    if c in SHORT_ESCAPES and rnd.random() < 0.5:
        return SHORT_ESCAPES[c]
    o = ord(c)
    if o > 0xFFFF:
        o -= 0x10000
        return _u(0xD800 + (o >> 10), rnd) + _u(0xDC00 + (o & 0x3FF), rnd)
    return _u(o, rnd)


def encode_string(s: str, mode: str, rnd: random.Random) -> bytes:
    """``s`` as a JSON string in ``mode``: ``ascii`` (json.dumps), ``utf8`` (raw UTF-8, lone
    surrogates as the invalid bytes they encode to), ``orjson``, ``escape`` (random chars
    escaped), ``raw`` (no escaping at all: broken JSON when ``s``
    holds a quote, a backslash or a control character)."""
    if mode == "raw":
        return ('"' + s + '"').encode("utf-8", "surrogatepass")
    if mode == "orjson":
        try:
            return orjson.dumps(s)
        except orjson.JSONEncodeError:
            mode = "ascii"
    if mode == "escape" and len(s) > 4000:
        mode = "ascii"
    if mode == "ascii":
        return json.dumps(s).encode()
    if mode == "utf8":
        return json.dumps(s, ensure_ascii=False).encode("utf-8", "surrogatepass")
    parts = []
    for c in s:
        if c in '"\\' or ord(c) < 0x20 or rnd.random() < 0.3:
            parts.append(escape_char(c, rnd))
        else:
            parts.append(c)
    return ('"' + "".join(parts) + '"').encode("utf-8", "surrogatepass")


def escaped_key(key: str, rnd: random.Random) -> Raw:
    """``key`` spelled with one character as a ``\\u`` escape (``"\\u0061mount"``), the
    others as JSON needs them (an empty key stays as it is)."""
    if not key:
        return Raw(b'""')
    at = rnd.randrange(len(key))
    parts = []
    for k, c in enumerate(key):
        if k == at:
            parts.append(_u(ord(c), rnd) if ord(c) <= 0xFFFF else escape_char(c, rnd))
        elif c in '"\\' or ord(c) < 0x20:
            parts.append(escape_char(c, rnd))
        else:
            parts.append(c)
    return Raw(('"' + "".join(parts) + '"').encode("utf-8", "surrogatepass"))


class Writer:
    """Writes values as JSON bytes: strings in ``strings`` mode (``mixed``: a mode per
    string; ``mixed_raw``: now and then ``raw``), whitespace between tokens with
    probability ``ws``. Keys are written like json.dumps would in ``ascii`` mode, else
    mostly as raw UTF-8 (an escaped key is always doubtful to the scanner, which would
    hide the rest)."""

    def __init__(self, rnd: random.Random, strings: str, ws: float) -> None:
        self.rnd = rnd
        self.strings = strings
        self.ws = ws

    def key(self, k: Any) -> bytes:
        if isinstance(k, Raw):
            return k.text
        if self.strings in ("ascii", "utf8", "orjson") or self.rnd.random() > 0.9:
            return self.string(k)
        return encode_string(k, "utf8", self.rnd)

    def gap(self) -> bytes:
        if self.ws and self.rnd.random() < self.ws:
            return self.rnd.choice(WHITESPACE)
        return b""

    def string(self, s: str) -> bytes:
        mode = self.strings
        if mode == "mixed":
            mode = self.rnd.choice(STRING_MODES)
        elif mode == "mixed_raw":
            mode = "raw" if self.rnd.random() > 0.8 else self.rnd.choice(STRING_MODES)
        return encode_string(s, mode, self.rnd)

    def write(self, v: Any, out: list[bytes]) -> None:
        g = self.gap
        if isinstance(v, Raw):
            out.append(v.text)
        elif isinstance(v, Obj):
            out.append(b"{")
            for n, (k, x) in enumerate(v.pairs):
                if n:
                    out += [g(), b",", g()]
                else:
                    out.append(g())
                out += [self.key(k), g(), b":", g()]
                self.write(x, out)
            out += [g(), b"}"]
        elif isinstance(v, list):
            out.append(b"[")
            for n, x in enumerate(v):
                out += [g(), b",", g()] if n else [g()]
                self.write(x, out)
            out += [g(), b"]"]
        elif isinstance(v, str):
            out.append(self.string(v))
        elif isinstance(v, bool) or v is None:
            out.append(json.dumps(v).encode())
        elif isinstance(v, int):
            out.append(str(v).encode())
        else:
            out.append(json.dumps(v).encode())  # floats; nan/inf as NaN/Infinity

    def body(self, records: list[Any]) -> bytes:
        out: list[bytes] = [self.gap()]
        self.write(records, out)
        out.append(self.gap())
        return b"".join(out)


# ---------------------------------------------------------------- values at the edges


NUMBER_TOKENS = (
    b"0", b"-0", b"0.0", b"-0.0", b"1.0", b"-1.0", b"1E+2", b"1e2", b"1E2", b"1e-2", b"1E-0",
    b"0e0", b"-0e-0", b"1.5", b"-1.5e3", b"2.5E+1",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
    b"-9223372036854775809", b"999999999999999999", b"-999999999999999999",
    b"1000000000000000000", b"-1000000000000000000", b"9999999999999999999",
    b"18446744073709551615", b"18446744073709551616", b"99999999999999999999",
    b"123456789012345678.0", b"12345678901234567890.5", b"9223372036854775807.0",
    b"9223372036854775808.0", b"9.223372036854776e18", b"1e18", b"1e19",
    b"1e308", b"-1e308", b"1.7976931348623157e308", b"-1.7976931348623157e308",
    b"1.7976931348623158e308", b"1.7976931348623159e308", b"1e309", b"-1e309", b"1e400",
    b"0.1e309", b"0.0000001e310", b"10e307", b"9e306", b"99e306", b"9.99e307",
    b"2e308", b"9e308", b"18e307", b"1.8e308", b"17.976931348623159e307", b"179e306",
    b"1e-400", b"-1e-400", b"4.9e-324", b"2.4703282292062328e-324", b"1e-99999",
    b"0e99999", b"1e99999999999999999999", b"0.99999999999999999", b"1.00000000000000001",
    b"4503599627370496.5", b"9007199254740993", b"9007199254740993.0",
    b"1" + b"0" * 306, b"1" + b"0" * 307, b"1" + b"0" * 308, b"9" * 307 + b".5",
    b"1" * 4300, b"1" * 4301, b"0." + b"1" * 5000, b"1" * 5000 + b"e-4990",
    # More than 308 integer digits, a negative exponent, still past the float range.
    b"1" + b"0" * 308 + b"e-0", b"2" + b"0" * 308 + b"e-0", b"1" + b"0" * 310 + b"e-1",
    b"1" * 400 + b"e-10", b"1" * 400 + b"e-92",
)
# Not JSON: leading zeros, bare signs and dots, hex, non-finite tokens, lone letters.
BAD_NUMBER_TOKENS = (
    b"01", b"00", b"-01", b"007.5", b"-", b"+1", b"1.", b".5", b"-.5", b"1e", b"1e+",
    b"1.e5", b"0x10", b"1_000", b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf",
    b"1 2", b"--1",
)
LITERAL_TOKENS = (b"true", b"false", b"null", b"[]", b"{}", b"[[]]", b"{ }", b"[ ]",
                  b'{"":""}', b'{"a":{"a":1}}', b'{"a":1,"a":1}', b'[{"a":1},{"a":1}]')
BAD_LITERAL_TOKENS = (b"nul", b"tru", b"True", b"NULL", b"nulll", b"undefined", b"falsey",
                      b"truefalse", b"[1,]", b"[,1]", b"{,}", b'{"a":}', b'{"a" 1}',
                      b'{"a":1,}', b"'x'", b"[}", b"{]")
STRING_TOKENS = (
    b'""', b'"\\n"', b'"\\""', b'"\\\\"', b'"\\/"', b'"\\b\\f\\r\\t"', b'"\\u00e9"',
    b'"\\u00E9"', b'"\\u0000"', b'"\\u001f"', b'"\\ud83d\\ude00"', b'"\\uD83D\\uDE00"',
    b'"\\udbff\\udfff"', b'"\\u0061mount"', b'"a\\u0000b"', b'"\\u2028"',
    b'"\xc2\x80"', b'"\xdf\xbf"', b'"\xe0\xa0\x80"', b'"\xed\x9f\xbf"', b'"\xee\x80\x80"',
    b'"\xef\xbf\xbf"', b'"\xf0\x90\x80\x80"', b'"\xf4\x8f\xbf\xbf"', b'"\x7f"',
    b'"\xef\xbb\xbf"', b'"\xe2\x80\xa8"',
)
# Not JSON: escaped lone surrogates, bad escapes, invalid UTF-8, raw control characters.
BAD_STRING_TOKENS = (
    b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\u0041"', b'"\\ud800\\n"',
    b'"\\udc00\\ud800"', b'"\\ud800\\ud800"', b'"x\\ud800"', b'"\\u00"', b'"\\u00g0"',
    b'"\\x41"', b'"\\a"', b'"\\U0041"', b'"\\\'"', b'"\\ "', b'"\\',
    b'"\xc0\x80"', b'"\xc1\xbf"', b'"\xe0\x80\x80"', b'"\xe0\x9f\xbf"', b'"\xed\xa0\x80"',
    b'"\xed\xbf\xbf"', b'"\xf0\x80\x80\x80"', b'"\xf0\x8f\xbf\xbf"', b'"\xf4\x90\x80\x80"',
    b'"\xf5\x80\x80\x80"', b'"\xf8\x88\x80\x80\x80"', b'"\xff"', b'"\xfe"', b'"\x80"',
    b'"\xbf"', b'"\xc3"', b'"\xe2\x82"', b'"\xf0\x9f\x98"', b'"\xc3\x28"', b'"\xe2\x28\xa1"',
    b'"\xe2\x82\x28"', b'"\xf0\x28\x8c\xbc"', b'"\xc3\xa9\xc3"',
    # control characters, raw
    b'"\x00"', b'"\x01"', b'"\x1f"', b'"a\nb"', b'"\t"', b'"\r"',
    # unterminated
    b'"abc', b'"\\"',
)
EDGE_TIMESTAMPS = (
    "2024-01-01T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2100-02-29T12:00:00Z",
    "0000-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "2024-02-30T00:00:00Z", "2024-04-31T00:00:00Z", "2024-06-30T00:00:00Z",
    "2024-12-31T23:59:60Z", "2024-06-30T23:59:60Z", "2024-12-31T23:59:60.999Z",
    "2024-12-31T22:59:60-01:00", "2024-12-31T23:59:60+01:00", "2025-01-01T00:59:60+01:00",
    "2024-12-31T23:59:60+00:00", "2024-12-31T23:59:60-00:00", "2024-12-31T12:00:60Z",
    "2024-12-31T23:59:61Z", "2024-01-01T24:00:00Z", "2024-01-01T23:60:00Z",
    "2024-00-01T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-00T00:00:00Z",
    "2024-01-32T00:00:00Z", "2024-01-01t00:00:00z", "2024-01-01t00:00:00Z",
    "2024-01-01T00:00:00z", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00.",
    "2024-01-01T00:00:00", "2024-01-01T00:00:00.5", "2024-01-01 00:00:00Z",
    "2024-01-01T00:00:00+23:59", "2024-01-01T00:00:00-23:59", "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00+00:60", "2024-01-01T00:00:00+0000", "2024-01-01T00:00:00+00",
    "2024-01-01T00:00:00+00:00:00", "2024-01-01T00:00:00+00:00Z", "2024-01-01T00:00:00Zz",
    "2024-01-01T00:00:00.123456789012Z", "2024-01-01T00:00:00.0+05:30",
    "2024-01-01T00:00:00,5Z", "2024-01-01T00:00:00Z ", " 2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00Z\n", "2024-01-01T00:00:00Z\x00", "2024-1-01T00:00:00Z",
    "24-01-01T00:00:00Z", "02024-01-01T00:00:00Z", "2024-01-01T0:00:00Z",
    "2024-01-01T00:00:00ZZ", "2024/01/01T00:00:00Z", "2024-01-01X00:00:00Z",
    "2024-01-01T00-00-00Z", "\uff12024-01-01T00:00:00Z", "2024-01-01T00:00:0\u0665Z",
    "2024-01-01T00:00:00\u200bZ", "2024-01-01T00:00:00.\u0661Z", "2024-01-01T00:00:00-",
    "2024-01-01T00:00:00+", "2024-01-01T00:00:00+1:00", "2024-01-01T00:00:00+01:0",
    "2024-01-01T00:00:00+01:00:", "", "T", "Z", *BROKEN_TIMESTAMPS,
)
# (character, count): around MAX_STRING in characters and in UTF-8 bytes.
LONG_SPECS = (("x", MAX_STRING), ("x", MAX_STRING + 1), ("x", MAX_STRING - 1),
              ("\u00e9", MAX_STRING // 2), ("\u00e9", MAX_STRING // 2 + 1),
              ("\u00e9", MAX_STRING), ("\u00e9", MAX_STRING + 1), ("\U0001f600", MAX_STRING),
              ("\U0001f600", MAX_STRING + 1), ("\n", MAX_STRING), ("\n", MAX_STRING + 1),
              ('"', MAX_STRING // 2), ("\x01", MAX_STRING // 6 + 1))
LONG_STRINGS = tuple(c * n for c, n in LONG_SPECS)
# Raw tokens of long strings written escaped: more than MAX_STRING bytes, fewer characters.
LONG_TOKENS = (b'"' + b"\\u00e9" * (MAX_STRING // 4) + b'"',
               b'"' + b"\\n" * MAX_STRING + b'"', b'"' + b"\\n" * (MAX_STRING + 1) + b'"',
               b'"' + b"\\ud83d\\ude00" * MAX_STRING + b'"',
               b'"' + b"a" * MAX_STRING + b"\\u0062" + b'"')

TEXT_CHARS = st.characters(codec="utf-8")
TEXT = st.text(TEXT_CHARS, max_size=10)
# Keys mostly without control characters (which every writer escapes, making the record
# "exotic" for the scanner): then the scanner compares them itself.
KEY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=8)
BIG_INTS = st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64,
                            -(2**64), 10**18 - 1, 10**18, 10**19, -(10**19), 10**30])
# Valid values, mostly ones the scanner reads as plain (integers of at most 18 digits,
# floats far from overflow), sometimes not (19 digits, 1.7e308: valid, but doubtful).
SMALL_INTS = st.integers(-(10**18) + 1, 10**18 - 1)
SMALL_FLOATS = st.floats(-1e300, 1e300)
VALID: dict[str, st.SearchStrategy[Any]] = {
    "string": TEXT,
    "number": st.one_of(SMALL_INTS, SMALL_INTS, st.integers(-5, 5), SMALL_FLOATS,
                        SMALL_FLOATS, st.integers(INT64_MIN, INT64_MAX),
                        st.floats(allow_nan=False, allow_infinity=False)),
    "integer": st.one_of(SMALL_INTS, SMALL_INTS, st.integers(-5, 5),
                         st.integers(INT64_MIN, INT64_MAX)),
    "boolean": st.booleans(),
    "timestamp": DATE_TIMES,
}
PLAIN_VALID = {**VALID, "number": SMALL_INTS | SMALL_FLOATS, "integer": SMALL_INTS}
FINITE = st.floats(allow_nan=False, allow_infinity=False)
# Values at the edges that are still JSON (the scanner must give them a verdict).
SCALAR_EDGES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([Raw(t) for t in NUMBER_TOKENS]), st.deferred(lambda: number_tokens()),
    st.sampled_from([Raw(t) for t in STRING_TOKENS]),
    st.sampled_from([Raw(t) for t in LITERAL_TOKENS]),
    st.sampled_from(EDGE_TIMESTAMPS), shaped_timestamps(), DATE_TIMES,
    st.integers(), BIG_INTS, FINITE, TEXT, st.booleans(), st.none(),
)
# And what is not JSON (the scanner must leave the body to the other path).
BROKEN: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([Raw(t) for t in BAD_NUMBER_TOKENS]),
    st.sampled_from([Raw(t) for t in BAD_STRING_TOKENS]),
    st.sampled_from([Raw(t) for t in BAD_LITERAL_TOKENS]),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates
)
JSON_EDGES: st.SearchStrategy[Any] = st.one_of(
    SCALAR_EDGES, SCALAR_EDGES, SCALAR_EDGES, SCALAR_EDGES,
    st.sampled_from(LONG_STRINGS), st.sampled_from([Raw(t) for t in LONG_TOKENS]),
    st.builds(list), st.builds(lambda: Obj([])), st.lists(SCALAR_EDGES, max_size=2),
    st.builds(lambda k, v: Obj([(k, v)]), KEY_TEXT, SCALAR_EDGES),
)
# About one value in ten is not JSON.
EDGE_VALUES: st.SearchStrategy[Any] = st.one_of(*[JSON_EDGES] * 9, BROKEN)


@st.composite
def number_tokens(draw: st.DrawFn) -> Raw:
    """A JSON number token built from parts at the edges: 1 to 20 integer digits or about
    300 (the float range) or 4300 (Python's int parsing limit), a fraction, an exponent of
    either sign (the value can overflow with a negative one, underflow with a positive
    one); or one whose magnitude is just under or over the float range (1e306 to 1e309)
    however its digits and exponent share it."""
    sign = draw(st.sampled_from([b"", b"-"]))
    head = draw(st.sampled_from([b"1", b"9", b"2", b"17976931348623157",
                                 b"17976931348623159"]))
    fill = draw(st.sampled_from([b"0", b"9", b"1", b"5"]))
    frac = draw(st.sampled_from([b"", b"", b".0", b".5", b"." + b"9" * 20, b".000001"]))
    if draw(st.booleans(), label="near the float range?"):
        n = draw(st.sampled_from([1, 2, 3, 17, 18, 100, 300, 306, 307, 308, 309, 310, 400]))
        digits = (head + fill * n)[:n]
        # The value is about 10 ** (n - 1 + e).
        e = draw(st.sampled_from([306, 307, 308, 309])) - (n - 1)
        exp = draw(st.sampled_from([b"e", b"E", b"e+"])) + str(e).encode() if e >= 0 else \
            draw(st.sampled_from([b"e", b"E"])) + str(e).encode()
        return Raw(sign + digits + frac + exp)
    n = draw(st.sampled_from([1, 17, 18, 19, 20, 306, 307, 308, 309, 310, 320, 400, 4300,
                              4301]) | st.integers(1, 21))
    digits = b"0" if n == 1 and draw(st.booleans()) else (head + fill * n)[:n]
    exp = draw(st.sampled_from([b"", b"", b"e0", b"e-0", b"E+0", b"e1", b"e-1", b"E-2",
                                b"e-10", b"e-100", b"e17", b"e18", b"e290", b"e300",
                                b"e307", b"e308", b"e309", b"e-300", b"e-308", b"e-400",
                                b"E-5000", b"e99999", b"e-99999"]))
    return Raw(sign + digits + frac + exp)


def _kind_edges(kind: str) -> st.SearchStrategy[Any]:
    if kind == "timestamp":
        return st.one_of(st.sampled_from(EDGE_TIMESTAMPS), shaped_timestamps(), DATE_TIMES)
    if kind in ("number", "integer"):
        return st.one_of(st.sampled_from([Raw(t) for t in NUMBER_TOKENS]), number_tokens(),
                         number_tokens(), BIG_INTS, FINITE, st.integers())
    if kind == "string":
        return st.one_of(st.sampled_from(LONG_STRINGS), st.sampled_from(
            [Raw(t) for t in (*STRING_TOKENS, *LONG_TOKENS)]), TEXT)
    if kind == "boolean":
        return st.sampled_from([True, False, None, 0, 1, "true", Raw(b"true"),
                                Raw(b"false"), Raw(b"null"), Raw(b"-0"), Raw(b"1.0")])
    assert kind == "context"
    return st.one_of(st.builds(lambda k, v: Obj([(k, v)]), CONTEXT_KEYS, JSON_EDGES),
                     st.builds(lambda k, v: Obj([("k", "v"), (k, Obj([("a", 1), ("b", v)]))]),
                               CONTEXT_KEYS, JSON_EDGES),
                     st.builds(lambda v: Obj([("k", [v])]), JSON_EDGES))


def kind_edges(kind: str, anything: st.SearchStrategy[Any] = JSON_EDGES,
               ) -> st.SearchStrategy[Any]:
    """Values at the edges of a field of ``kind`` (mostly of its own type), or anything."""
    return st.one_of(_kind_edges(kind), _kind_edges(kind), _kind_edges(kind), anything)



# ---------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # string number integer boolean timestamp (format date-time included)
    nullable: bool
    required: bool


def _name_ok(n: str) -> bool:
    return 1 <= len(n) <= 128 and n not in ("timestamp", "context") and not n.startswith("__")


# No lone surrogates in names: compile_dataset cannot take them (msgspec.defstruct raises
# UnicodeEncodeError already without the scanner).
NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=6),
    st.sampled_from(["amount", "amoun", "amountt", "Amount", "a", "ab", "b", "\u00e9",
                     "e\u0301", "\u540d\u524d", "\u043a\u043b\u044e\u0447", "\U0001f600",
                     "a b", 'a"b', "a\\b", "x/y", "tab\tname", "nul\x00", "_", "-", "0",
                     "Timestamp", "contexts", "timestamp ", "_context", "\u2028", "k" * 128,
                     # names whose bytes are a JSON escape: "\u0061" the key means "a"
                     "\\u0061", "\\u0061mount", "a\\nb", "\\\\", "\\/", "x\\\"y"]),
    st.text(TEXT_CHARS, min_size=1, max_size=6),
).filter(_name_ok)


@st.composite
def field_decls(draw: st.DrawFn, name: str) -> tuple[Field, Any]:
    kind = draw(st.sampled_from([*KINDS, "date-time"]))
    nullable = draw(st.booleans())
    required = draw(st.sampled_from([None, True, False]))
    description = draw(st.none() | st.text(max_size=4))
    word = "string" if kind == "date-time" else kind
    decl: Any = {"type": draw(st.sampled_from([[word, "null"], ["null", word]]))
                 if nullable else word}
    if kind == "date-time":
        decl["format"] = "date-time"
    if required is not None:
        decl["required"] = required
    if description is not None:
        decl["description"] = description
    if kind != "date-time" and not nullable and required is None and description is None \
            and draw(st.booleans()):
        decl = kind  # the shorthand
    field = Field(name, "timestamp" if kind == "date-time" else kind, nullable,
                  required is not False)
    return field, decl


@st.composite
def definitions(draw: st.DrawFn, max_fields: int = 6) -> tuple[list[Field], dict[str, Any]]:
    names = draw(st.lists(NAMES, max_size=max_fields, unique=True), label="names")
    fields: list[Field] = []
    decls: dict[str, Any] = {}
    for name in names:
        f, d = draw(field_decls(name))
        fields.append(f)
        decls[name] = d
    return fields, {"fields": decls}


def _no_fast_path(fields: dict[str, Any]) -> None:
    return None


def compiled(definition: dict[str, Any]) -> CompiledDataset:
    """The compiled definition, which must have a scanner. A name with a quote, a backslash
    or a control character makes msgspec.defstruct (the fast path) raise ValueError before
    the scanner is built (so compile_dataset fails for it, scanner or not): such definitions
    are compiled without the fast path, and the scanner is compared with the precise path."""
    note(f"definition: {definition!r}")
    try:
        v = compile_dataset(definition)
    except ValueError as exc:
        if "Renamed field names" not in str(exc):
            raise
        with mock.patch("validator.compiled.build", _no_fast_path):
            v = compile_dataset(definition)
        note("compiled without the fast path (msgspec refuses a field name)")
    assert v._scanner is not None, "a plain-scalar definition must get a scanner"
    return v


# ---------------------------------------------------------------- records


CONTEXT_KEYS = st.one_of(NAMES, KEY_TEXT, KEY_TEXT, KEY_TEXT, TEXT)
CONTEXT_SCALARS = st.one_of(TEXT, TEXT, SMALL_INTS, SMALL_FLOATS, st.booleans(), st.none(),
                            st.integers(INT64_MIN, INT64_MAX), st.floats(allow_nan=False,
                                                                         allow_infinity=False))


def _obj(d: dict[str, Any]) -> Obj:
    return Obj(list(d.items()))


CONTEXT_JSON = st.recursive(
    CONTEXT_SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(CONTEXT_KEYS, inner, max_size=3).map(_obj),
    max_leaves=8)
CONTEXTS = st.one_of(
    st.builds(lambda: Obj([])),
    st.dictionaries(CONTEXT_KEYS, TEXT, max_size=4).map(_obj),
    st.dictionaries(CONTEXT_KEYS, CONTEXT_JSON, max_size=4).map(_obj),
)
# Contexts the scanner calls valid as they are (unescaped keys, plain numbers, shallow).
PLAIN_JSON = st.recursive(
    st.one_of(TEXT, SMALL_INTS, SMALL_FLOATS, st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(KEY_TEXT, inner, max_size=3).map(_obj),
    max_leaves=6)
PLAIN_CONTEXTS = st.one_of(
    st.builds(lambda: Obj([])),
    st.dictionaries(KEY_TEXT, TEXT, max_size=3).map(_obj),
    st.dictionaries(KEY_TEXT, PLAIN_JSON, max_size=3).map(_obj),
)


@st.composite
def records(draw: st.DrawFn, fields: list[Field], plain: bool = False) -> Obj:
    """A record valid under ``fields`` (optional ones sometimes left out, nullable ones
    sometimes null), keys in definition order or shuffled; ``plain``: numbers the scanner
    reads as plain only."""
    valid = PLAIN_VALID if plain else VALID
    pairs: list[tuple[Any, Any]] = [("timestamp", draw(DATE_TIMES)),
                                    ("context", draw(PLAIN_CONTEXTS if plain else CONTEXTS))]
    for f in fields:
        if not f.required and draw(st.integers(0, 3)) == 0:
            continue
        if f.nullable and draw(st.integers(0, 3)) == 0:
            pairs.append((f.name, None))
        else:
            pairs.append((f.name, draw(valid[f.kind])))
    if draw(st.integers(0, 3)) == 0:
        pairs = draw(st.permutations(pairs))
    return copy.deepcopy(Obj(pairs))  # fresh objects: the tests change them


def objects_in(v: Any) -> list[Obj]:
    """Every object in ``v`` (itself included), outermost first."""
    out: list[Obj] = []
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, Obj):
            out.append(x)
            stack.extend(val for _, val in reversed(x.pairs))
        elif isinstance(x, list):
            stack.extend(reversed(x))
    return out


def deep(depth: int, leaf: bytes, rnd: random.Random, key: bytes = b'"k"') -> Raw:
    """``depth`` nested arrays and objects (a random mix) around ``leaf``."""
    opens: list[bytes] = []
    closes: list[bytes] = []
    for _ in range(depth):
        if rnd.random() < 0.5:
            opens.append(b"[")
            closes.append(b"]")
        else:
            opens.append(b"{" + key + b":")
            closes.append(b"}")
    return Raw(b"".join(opens) + leaf + b"".join(reversed(closes)))


DEEP_LEAVES = (b"1", b'"x"', b"{}", b"[]", b"null", b'{"a":1,"a":2}', b'{"\\u0061":1,"a":2}',
               b"1e400", b"12345678901234567890", b"-9223372036854775809", b"0.5",
               b'"' + b"y" * (MAX_STRING + 1) + b'"', b'{"' + b"k" * (MAX_STRING + 1) + b'":1}',
               b"[1,2,3]", b'{"a":[{"b":{}}]}', b"NaN", b"01", b'"\\ud800"')
# Levels of nesting inside context around the scanner's limit (MAX_NEST counts context
# itself), the checker's (MAX_DEPTH 32, context being level 2), and the parsers'.
DEPTHS = (1, 2, MAX_NEST - 3, MAX_NEST - 2, MAX_NEST - 1, MAX_NEST, MAX_NEST + 1, 28,
          29, 30, 31, 32, 33, 40, 62, 63, 64, 65, 200, 2000)
MUTATIONS = ("value", "value", "value", "delete", "extra", "repeat", "repeat_nested",
             "escape_key", "escape_key_nested", "long_key", "deep", "wide", "not_object",
             "context", "shuffle", "null")


@st.composite
def mutated(draw: st.DrawFn, record: Obj, fields: list[Field]) -> Any:
    """``record`` with one to three random faults (see MUTATIONS)."""
    rnd = draw(st.randoms(use_true_random=False), label="rnd")
    names = ["timestamp", "context", *[f.name for f in fields]]
    kinds = {"timestamp": "timestamp", "context": "context",
             **{f.name: f.kind for f in fields}}
    value: Any = copy.deepcopy(record)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]), label="faults")):
        how = draw(st.sampled_from(MUTATIONS), label="mutation")
        objs = objects_in(value)
        if not isinstance(value, Obj):
            how = "value"  # the record itself is no object any more
        if how == "value":
            target = draw(st.sampled_from(objs), label="object") if objs else None
            if target is None or not target.pairs:
                continue
            k = rnd.randrange(len(target.pairs))
            key = target.pairs[k][0]
            edges = kind_edges(kinds[key], EDGE_VALUES) if target is value and key in kinds \
                else EDGE_VALUES
            target.pairs[k] = (key, draw(edges, label="value"))
        elif how == "delete":
            target = draw(st.sampled_from(objs), label="object")
            if target.pairs:
                del target.pairs[rnd.randrange(len(target.pairs))]
        elif how == "extra":
            key = draw(st.sampled_from(names).map(lambda n: n + "x") | NAMES
                       | st.sampled_from([n.upper() for n in names]) | TEXT, label="key")
            value.pairs.insert(rnd.randint(0, len(value.pairs)),
                               (key, draw(EDGE_VALUES | VALID["string"], label="value")))
        elif how in ("repeat", "repeat_nested"):
            target = value if how == "repeat" else draw(st.sampled_from(objs), label="object")
            if target.pairs:
                k, x = target.pairs[rnd.randrange(len(target.pairs))]
                if rnd.random() < 0.5:
                    x = draw(EDGE_VALUES, label="value")
                target.pairs.insert(rnd.randint(0, len(target.pairs)), (k, x))
        elif how in ("escape_key", "escape_key_nested"):
            target = value if how == "escape_key" else draw(st.sampled_from(objs),
                                                             label="object")
            plain_keys = [i for i, (k, _) in enumerate(target.pairs)
                          if isinstance(k, str) and k]
            if plain_keys:
                i = rnd.choice(plain_keys)
                k, x = target.pairs[i]
                spelled = escaped_key(k, rnd)
                if rnd.random() < 0.5:
                    target.pairs[i] = (spelled, x)  # the same key, spelled escaped
                else:  # a repeat, escaped: "\u0061mount" after "amount"
                    target.pairs.insert(rnd.randint(0, len(target.pairs)),
                                        (spelled, draw(EDGE_VALUES | VALID["string"])))
        elif how == "long_key":
            target = draw(st.sampled_from(objs), label="object")
            key = draw(st.sampled_from(LONG_STRINGS) | st.sampled_from(
                [Raw(t) for t in LONG_TOKENS if t.count(b'"') == 2]), label="long key")
            target.pairs.insert(rnd.randint(0, len(target.pairs)), (key, 1))
        elif how == "deep":
            depth = draw(st.sampled_from(DEPTHS), label="depth")
            leaf = draw(st.sampled_from(DEEP_LEAVES), label="leaf")
            nest = deep(depth, leaf, rnd, rnd.choice([b'"k"', b'"\\u006b"', b'"\xc3\xa9"']))
            target = draw(st.sampled_from(objs), label="object")
            if target.pairs and rnd.random() < 0.6:
                k = rnd.randrange(len(target.pairs))
                target.pairs[k] = (target.pairs[k][0], nest)
            else:
                target.pairs.append(("deep", nest))
        elif how == "wide":
            n = draw(st.sampled_from([MAX_KEYS // 2 - 2, MAX_KEYS // 2 - 1, MAX_KEYS // 2,
                                      MAX_KEYS // 2 + 1, MAX_KEYS - 2, MAX_KEYS - 1, MAX_KEYS,
                                      MAX_KEYS + 1, MAX_KEYS + 30]), label="width")
            repeat = draw(st.sampled_from(["none", "first", "last"]), label="repeat")
            pairs: list[tuple[Any, Any]] = [(f"w{j}", j) for j in range(n)]
            if repeat == "first":
                pairs.insert(1, ("w0", "again"))
            elif repeat == "last" and n:
                pairs.append((f"w{n - 1}", "again"))
            target = draw(st.sampled_from(objs), label="object")
            if target is value and rnd.random() < 0.5:
                value.pairs.extend(pairs)  # many extra top-level keys
            else:
                target.pairs.append(("wide", Obj(pairs)))
        elif how == "not_object":
            value = draw(st.sampled_from([[], [value], "record", 1, None, True, Obj([]),
                                          Raw(b"{ }"), Raw(b"[{}]"), 1.5, Raw(b"-0")]),
                         label="record")
        elif how == "context":
            value.pairs = [(k, draw(EDGE_VALUES | CONTEXTS | CONTEXT_JSON, label="context"))
                           if k == "context" else (k, x) for k, x in value.pairs]
        elif how == "shuffle":
            rnd.shuffle(value.pairs)
        elif how == "null":
            target = draw(st.sampled_from(objs), label="object")
            if target.pairs:
                k = rnd.randrange(len(target.pairs))
                target.pairs[k] = (target.pairs[k][0], None)
    return value


# ---------------------------------------------------------------- bodies


@st.composite
def serialized(draw: st.DrawFn, values: list[Any]) -> bytes:
    """``values`` as a body: orjson or json.dumps when they are plain, else (and mostly)
    :class:`Writer` with random string modes and whitespace."""
    how = draw(st.sampled_from(["writer", "writer", "writer", "orjson", "json", "json_utf8"]),
               label="writer")
    if how != "writer":
        try:
            p = plain(values)
            if how == "orjson":
                return orjson.dumps(p)
            if how == "json":
                return json.dumps(p, indent=draw(st.sampled_from([None, 1, "\t"]))).encode()
            return json.dumps(p, ensure_ascii=False).encode("utf-8", "surrogatepass")
        except (NotPlain, TypeError, orjson.JSONEncodeError, ValueError):
            pass
    rnd = draw(st.randoms(use_true_random=False), label="writer rnd")
    strings = draw(st.sampled_from(["mixed", "mixed", *STRING_MODES, "utf8", "orjson",
                                    "mixed_raw"]), label="strings")
    ws = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]), label="whitespace")
    return Writer(rnd, strings, ws).body(values)


INSERTS = (b'"', b",", b"\\", b"{", b"}", b"[", b"]", b":", b"\x00", b"\xff", b"\x80",
           b"\xc3", b" ", b"\n", b"0", b"-", b"e", b".", b"n", b"t", b"1", b"\x1f")


@st.composite
def corrupted(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with one to three byte-level faults."""
    rnd = draw(st.randoms(use_true_random=False), label="corruption rnd")
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["truncate", "insert", "delete", "replace", "comma",
                                    "double", "append", "prepend", "swap"]),
                   label="corruption")
        n = len(body)
        at = rnd.randint(0, n)
        if how == "truncate":
            body = body[:at]
        elif how == "insert":
            body = body[:at] + draw(st.sampled_from(INSERTS)) + body[at:]
        elif how == "delete" and n:
            at = min(at, n - 1)
            body = body[:at] + body[at + 1:]
        elif how == "replace" and n:
            at = min(at, n - 1)
            body = body[:at] + draw(st.sampled_from(INSERTS)) + body[at + 1:]
        elif how == "comma":
            commas = [i for i, c in enumerate(body) if c == 44]
            if commas:
                i = rnd.choice(commas)
                body = body[:i] + b"," + body[i:]
        elif how == "double" and n:
            at = min(at, n - 1)
            body = body[:at] + body[at:at + 1] + body[at:]
        elif how == "append":
            body += draw(st.sampled_from([b"]", b",", b" x", b"\x00", b"[]", b"\n", b"{}"]))
        elif how == "prepend":
            body = draw(st.sampled_from([b"\xef\xbb\xbf", b"[", b" ", b"\x00", b","])) + body
        elif how == "swap" and n > 1:
            at = min(at, n - 2)
            body = body[:at] + body[at + 1:at + 2] + body[at:at + 1] + body[at + 2:]
    return body


# ---------------------------------------------------------------- the comparison


def outcome(v: CompiledDataset, body: bytes, max_records: int) -> tuple[Any, ...]:
    """The verdict on ``body``: capped (``validate_batch``) then complete (``all_errors``,
    with ``failures()`` and ``valid_payload()``)."""
    try:
        r = v.validate_batch(body, max_records=max_records)
        full = v.validate_batch(body, max_records=max_records, all_errors=True)
        failures = [(f.index, f.record, [tuple(e) for e in f.errors])
                    for f in full.failures()]
        valid = full.valid_payload()
    except BodyError as exc:
        return ("body_error", exc.code)
    except Exception as exc:  # a crash: compared too, and never acceptable on the scanner
        return ("raised", type(exc).__name__, str(exc)[:300])
    return ("result", r.count, [tuple(e) for e in r.errors], r.error_count, r.failed_records,
            r.error_codes, [tuple(e) for e in full.errors], full.error_count,
            full.failed_records, full.error_codes, failures, valid)


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 3000 else text[:1500] + " ... " + text[-1500:]


def assert_same(v: CompiledDataset, body: bytes, max_records: int = 1000) -> tuple[Any, ...]:
    """The scanner changes nothing: same BodyError code, or the same result; and a result
    agrees with the precise checker on the records Python's parser reads."""
    note(f"body ({len(body)} bytes): {_short(body)}")
    note(f"max_records: {max_records}")
    scanner = v._scanner
    assert scanner is not None
    try:
        scan = scanner.scan(body, max_records)
    except Exception as exc:  # reported below, as validate_batch's outcome
        note(f"scanner.scan raised {exc!r}")
        scan = None
    _count_verdicts(scan)
    if scan is not None:
        # Each record called valid, on its own: Python's parser reads it and the precise
        # checker finds nothing.
        doubtful = set(scan.doubtful)
        for k in range(scan.count):
            if k not in doubtful:
                raw = body[scan.starts[k]:scan.ends[k]]
                errors: list[Any]
                try:
                    errors = v.validate(_parse_precise(raw))
                except BodyError as exc:
                    errors = [exc]
                assert errors == [], f"record {k} called valid: {_short(raw)}: {errors}"
        # Each record described exactly, on its own: the description is the checker's
        # verdict on Python's parse of it.
        exact = v._exact
        assert exact is not None
        told = exact.errors(body, scan, scan.exact)
        counts = exact.counts(scan, scan.exact).tolist() if scan.exact else []
        for k, errs, n in zip(scan.exact, told, counts, strict=True):
            raw = body[scan.starts[k]:scan.ends[k]]
            try:
                want = v.validate(_parse_precise(raw))
            except BodyError as exc:
                raise AssertionError(f"record {k} described, but Python's parser refuses "
                                     f"it: {exc}: {_short(raw)}") from None
            assert errs == want, f"record {k} described wrongly: {_short(raw)}: {errs}"
            assert n == len(want)
    with_scanner = outcome(v, body, max_records)
    v._scanner = None
    try:
        without = outcome(v, body, max_records)
    finally:
        v._scanner = scanner
    assert with_scanner == without, (
        f"scanner changed the outcome\n  scan verdicts: {_scan_summary(v, body, max_records)}"
        f"\n  with scanner:    {_short(with_scanner)}\n  without scanner: {_short(without)}")
    assert with_scanner[0] != "raised", f"validate_batch crashed: {with_scanner}"
    if with_scanner[0] == "result":
        try:
            parsed = _parse_precise(body)
        except BodyError:
            parsed = None
        if type(parsed) is list:
            want = [(i, *e) for i, r in enumerate(parsed) for e in v.validate(r)]
            failing = {i for i, *_ in want}
            failed = len(failing)
            codes = dict(Counter(code for _, code, *_ in want))
            got = ("result", len(parsed), want[:MAX_BATCH_ERRORS], len(want), failed, codes,
                   want[:MAX_BATCH_ERRORS], len(want), failed, codes)
            assert with_scanner[:10] == got, (
                f"differs from the precise checker on Python's parse\n  batch:   "
                f"{_short(with_scanner[:10])}\n  precise: {_short(got)}")
            failures, (kept, payload) = with_scanner[10:]
            assert [(i, e) for i, _, errs in failures for e in errs] == [
                (i, tuple(e)) for i, *e in want]
            for i, record, _ in failures:
                assert _parse_precise(record) == parsed[i], (i, _short(record))
            assert kept == len(parsed) - failed
            assert _parse_precise(payload) == [r for i, r in enumerate(parsed)
                                               if i not in failing]
    return with_scanner


def _count_verdicts(scan: Scan | None) -> None:
    """hypothesis statistics (``--hypothesis-show-statistics``): what the scanner said."""
    with contextlib.suppress(InvalidArgument):
        if scan is None:
            event("scanner: no verdict")
            return
        event("scanner: every record valid" if not scan.doubtful else
              "scanner: some records valid, some doubtful" if len(scan.doubtful) < scan.count
              else "scanner: every record doubtful")
        if scan.exotic:
            event("scanner: an exotic record")
        if scan.exact:
            event("scanner: a record described exactly")
        if scan.inexact:
            event("scanner: a record left to the checker")


def _scan_summary(v: CompiledDataset, body: bytes, max_records: int) -> str:
    scanner = v._scanner
    assert scanner is not None
    try:
        scan = scanner.scan(body, max_records)
    except Exception as exc:
        return f"scan raised {exc!r}"
    if scan is None:
        return "no verdict"
    return (f"{scan.count} records, doubtful {scan.doubtful}, exotic {scan.exotic}, "
            f"exact {scan.exact}, "
            f"verified {scan.verified[:scan.count].tolist()}")


# ---------------------------------------------------------------- properties


@settings(SETTINGS, max_examples=EXAMPLES)
@given(st.data())
def test_mutated_records_agree(data: st.DataObject) -> None:
    """Mostly valid records, some with one to three faults, written any way; now and then
    corrupted byte by byte."""
    fields, definition = data.draw(definitions(), label="definition")
    v = compiled(definition)
    values: list[Any] = data.draw(st.lists(records(fields), min_size=1, max_size=6),
                                  label="records")
    for i in range(len(values)):
        if data.draw(st.integers(0, 2), label="mutate?") == 0:
            values[i] = data.draw(mutated(values[i], fields), label=f"record {i}")
    body = data.draw(serialized(values), label="body")
    if data.draw(st.integers(0, 9), label="corrupt?") == 0:
        body = data.draw(corrupted(body), label="corrupted")
    max_records = data.draw(st.sampled_from(
        [1000] * 12 + [len(values), max(len(values) - 1, 0), 1]), label="max_records")
    assert_same(v, body, max_records)


@settings(SETTINGS, max_examples=EXAMPLES)
@given(st.data())
def test_edge_values_in_a_valid_batch(data: st.DataObject) -> None:
    """Valid records, most with one value at an edge: a field's (mostly of its own type:
    timestamps near the calendar's edges, number tokens near int64 and the float range,
    long strings), or one deep in ``context``: the scanner must call none of them valid
    unless it is."""
    fields, definition = data.draw(definitions(), label="definition")
    v = compiled(definition)
    kinds = {"timestamp": "timestamp", "context": "context",
             **{f.name: f.kind for f in fields}}
    values: list[Obj] = data.draw(st.lists(records(fields), min_size=1, max_size=6),
                                  label="records")
    for index, record in enumerate(values):
        where = data.draw(st.sampled_from(["none", "field", "field", "field", "nested"]),
                          label=f"edge in record {index}")
        if where == "field":
            k = data.draw(st.integers(0, len(record.pairs) - 1), label="field")
            name = record.pairs[k][0]
            record.pairs[k] = (name, data.draw(kind_edges(kinds[name]), label="value"))
        elif where == "nested":
            target = data.draw(st.sampled_from(objects_in(record)), label="object")
            value = data.draw(JSON_EDGES, label="value")
            if target.pairs and data.draw(st.booleans(), label="replace?"):
                k = data.draw(st.integers(0, len(target.pairs) - 1), label="position")
                target.pairs[k] = (target.pairs[k][0], value)
            else:
                target.pairs.append((data.draw(CONTEXT_KEYS, label="key"), value))
    assert_same(v, data.draw(serialized(values), label="body"))


@settings(SETTINGS, max_examples=EXAMPLES)
@given(st.data())
def test_corrupted_bodies_agree(data: st.DataObject) -> None:
    """Valid bodies broken byte by byte: the scanner's grammar must refuse what msgspec
    refuses (or leave the verdict to it)."""
    fields, definition = data.draw(definitions(max_fields=3), label="definition")
    v = compiled(definition)
    values = data.draw(st.lists(records(fields), min_size=1, max_size=3), label="records")
    body = data.draw(corrupted(data.draw(serialized(values), label="body")), label="broken")
    assert_same(v, body)


@settings(SETTINGS, max_examples=FEW)
@given(st.data())
def test_many_fields_and_records_agree(data: st.DataObject) -> None:
    """Up to 60 fields (the scanner's field bits end at 62) and up to 80 records, many of
    them failing with up to 20 errors each: past the error cap of a batch."""
    n = data.draw(st.sampled_from([20, 40, 59, 60]), label="fields")
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=n, max_size=n), label="kinds")
    nullable = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="nullable")
    fields = [Field(f"f{k}", kind, nul, True)
              for k, (kind, nul) in enumerate(zip(kinds, nullable, strict=True))]
    definition = {"fields": {f.name: {"type": [f.kind, "null"] if f.nullable else f.kind}
                             for f in fields}}
    v = compiled(definition)
    count = data.draw(st.integers(1, 80), label="count")
    rec = data.draw(records(fields, plain=True), label="record")
    text = Writer(random.Random(0), "utf8", 0.0).body([rec])[1:-1]
    bad = Obj([(k, [] if k != "context" else x) for k, x in rec.pairs])
    bad_text = Writer(random.Random(0), "utf8", 0.0).body([bad])[1:-1]
    last = Obj([*rec.pairs, (f"f{n - 1}", data.draw(kind_edges(fields[-1].kind),
                                                     label="last field"))])
    last_text = Writer(random.Random(0), "ascii", 0.0).body([last])[1:-1]
    choices = data.draw(st.lists(st.integers(0, 2), min_size=count, max_size=count),
                        label="which")
    parts = [(text, bad_text, last_text)[c] for c in choices]
    assert_same(v, b"[" + b",".join(parts) + b"]")


@settings(SETTINGS, max_examples=FEW)
@given(st.data())
def test_validate_one_agrees(data: st.DataObject) -> None:
    """The single-record endpoint (a body wrapped in brackets, at most one record)."""
    fields, definition = data.draw(definitions(max_fields=4), label="definition")
    v = compiled(definition)
    record = data.draw(records(fields), label="record")
    if data.draw(st.booleans(), label="mutate?"):
        record = data.draw(mutated(record, fields), label="mutated")
    body = data.draw(serialized([record]), label="body")[1:-1]  # "[...]" -> "..."
    if data.draw(st.integers(0, 3), label="corrupt?") == 0:
        body = data.draw(corrupted(body), label="corrupted")
    note(f"body: {_short(body)}")

    def one() -> tuple[Any, ...]:
        try:
            r = v.validate_one(body)
        except BodyError as exc:
            return ("body_error", exc.code)
        return ("result", r.count, [tuple(e) for e in r.errors], r.error_count,
                r.failed_records)

    with_scanner = one()
    scanner, v._scanner = v._scanner, None
    try:
        without = one()
    finally:
        v._scanner = scanner
    assert with_scanner == without


# ---------------------------------------------------------------- one fault per record
#
# The tests above mix many faults, so a record the scanner should doubt is often doubtful
# for another reason anyway. Here every record is valid and plain (what the scanner calls
# valid) but for at most one fault of one family, so each fault is judged on its own.


@st.composite
def near_timestamps(draw: st.DrawFn) -> str:
    """Valid RFC 3339 date-times but for at most one part at or past an edge: Feb 29 of
    common and leap years (1900, 2000, 2023, 2024), day 0/31/32 of short months, month
    0/13, 24:00, minute 60, second 60 (a leap second only at 23:59:60 UTC) or 61, offsets
    +23:59/+24:00/+00:60/-00:00/none/+0100, no fraction digits, lowercase t and z, a space
    separator."""
    year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 28))
    hour, minute, second = (draw(st.integers(0, 23)), draw(st.integers(0, 59)),
                            draw(st.integers(0, 59)))
    frac = draw(st.sampled_from(["", "", ".5", ".123456789012"]))
    sep = "T"
    offset = draw(st.sampled_from(["Z", "+00:00", "-08:00", "+05:30"]))
    fault = draw(st.sampled_from(["none", "year", "month", "day", "day", "feb29", "feb29",
                                  "hour", "minute", "second", "second", "leap", "leap",
                                  "frac", "sep", "offset", "offset", "offset"]),
                 label="timestamp fault")
    if fault == "year":
        year = draw(st.sampled_from([0, 1900, 2000, 9999]))
    elif fault == "month":
        month = draw(st.sampled_from([0, 13, 19, 99]))
    elif fault == "day":
        month, day = draw(st.sampled_from([(1, 31), (1, 32), (4, 31), (4, 30), (6, 31),
                                           (9, 31), (11, 31), (12, 31), (12, 32), (1, 0),
                                           (2, 30), (2, 28), (5, 99)]))
    elif fault == "feb29":
        month, day = 2, 29
        year = draw(st.sampled_from([1900, 2000, 2023, 2024, 2100, 2400, 0, 4, 1]))
    elif fault == "hour":
        hour = draw(st.sampled_from([23, 24, 25, 99]))
    elif fault == "minute":
        minute = draw(st.sampled_from([59, 60, 99]))
    elif fault == "second":
        second = draw(st.sampled_from([59, 60, 61, 99]))
    elif fault == "leap":
        hour, minute, second = draw(st.sampled_from([(23, 59, 60), (0, 59, 60), (22, 59, 60),
                                                     (12, 0, 60), (23, 58, 60)]))
        offset = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "-01:00",
                                       "+23:59", "-23:59", "+00:01", "-00:01"]))
    elif fault == "frac":
        frac = draw(st.sampled_from([".", ".0", ".000000000000000000001", ",5", ".5."]))
    elif fault == "sep":
        sep = draw(st.sampled_from(["t", " ", "_", "TT", ""]))
    elif fault == "offset":
        offset = draw(st.sampled_from(
            ["z", "+23:59", "-23:59", "+24:00", "-24:00", "+00:60", "+23:60", "-00:00",
             "", "+0100", "+01", "+1:00", "+01:00:00", "Z ", "ZZ", "+01:00Z", "Z\n"]))
    return f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}" \
           f"{frac}{offset}"


NUMBER_EDGES = st.one_of(
    number_tokens(), number_tokens(), st.sampled_from([Raw(t) for t in NUMBER_TOKENS]),
    BIG_INTS, st.integers(), FINITE,
    st.sampled_from([1.0, -0.0, 0.0, 1e300, 1.7976931348623157e308, 2.0**63, -(2.0**63),
                     5e-324, 0.5, 1e18, 1e19]))
STRING_EDGES = st.one_of(
    st.sampled_from(LONG_STRINGS), st.sampled_from([Raw(t) for t in LONG_TOKENS]),
    st.sampled_from([Raw(t) for t in STRING_TOKENS]), TEXT)
TYPE_SWAPS: dict[str, st.SearchStrategy[Any]] = {
    "string": st.one_of(SMALL_INTS, st.booleans(), st.builds(list), st.builds(lambda: Obj([])),
                        st.sampled_from([Raw(b'"x"'), Raw(b"0")])),
    "number": st.one_of(TEXT, st.booleans(), st.sampled_from(["1", "1.5", "NaN", [1]])),
    "integer": st.one_of(TEXT, st.booleans(), st.sampled_from(
        [0.5, 1.0, -0.0, 1e2, 2.5e-1, "1", Raw(b"1E+2"), Raw(b"1.0"), Raw(b"-0.0")])),
    "boolean": st.sampled_from([0, 1, "true", "false", 1.0, Raw(b"[true]"), "", Obj([])]),
    "timestamp": st.one_of(SMALL_INTS, st.booleans(), st.sampled_from(
        [Raw(b"20240101"), Obj([]), ["2024-01-01T00:00:00Z"]])),
    "context": st.one_of(TEXT, SMALL_INTS, st.booleans(), st.builds(list),
                         st.sampled_from([Raw(b"null"), ["k", "v"], Raw(b'[{"k":"v"}]')])),
}


@st.composite
def family_case(draw: st.DrawFn, family: str) -> tuple[CompiledDataset, list[Any]]:
    """A definition (with at least one field the family needs) and 1 to 12 plain valid
    records, most with one fault of ``family``."""
    fields, definition = draw(definitions(max_fields=5), label="definition")
    need = {"number": ("number", "integer"), "string": ("string",)}.get(family)
    if need and not any(f.kind in need for f in fields):
        name = draw(st.sampled_from(["n", "num", "\u00e9", "x_1"]).filter(
            lambda n: n not in definition["fields"]), label="added field")
        kind = draw(st.sampled_from(need), label="added kind")
        nullable = draw(st.booleans(), label="added nullable")
        fields.append(Field(name, kind, nullable, True))
        definition["fields"][name] = {"type": [kind, "null"] if nullable else kind}
    v = compiled(definition)
    kinds = {"timestamp": "timestamp", "context": "context",
             **{f.name: f.kind for f in fields}}
    values: list[Any] = draw(st.lists(records(fields, plain=True), min_size=1, max_size=12),
                             label="records")
    for index, record in enumerate(values):
        if draw(st.integers(0, 3), label=f"fault in record {index}?") == 0:
            continue
        values[index] = draw(one_fault(record, family, fields, kinds), label=f"record {index}")
    return v, values


def _set(record: Obj, name: str, value: Any) -> None:
    """``record[name] = value`` (added at a random-ish place when absent)."""
    for k, (key, _) in enumerate(record.pairs):
        if key == name:
            record.pairs[k] = (key, value)
            return
    record.pairs.insert(len(record.pairs) // 2, (name, value))


@st.composite
def one_fault(draw: st.DrawFn, record: Obj, family: str, fields: list[Field],
              kinds: dict[str, str]) -> Any:
    rnd = draw(st.randoms(use_true_random=False), label="rnd")
    names = list(kinds)
    context = next(x for k, x in record.pairs if k == "context")
    if family == "timestamp":
        name = draw(st.sampled_from([n for n in names if kinds[n] == "timestamp"]))
        _set(record, name, draw(near_timestamps() | st.sampled_from(EDGE_TIMESTAMPS)))
    elif family == "number":
        where = draw(st.sampled_from(["field", "field", "context", "nested"]))
        value = draw(NUMBER_EDGES, label="number")
        if where == "field":
            _set(record, draw(st.sampled_from(
                [n for n in names if kinds[n] in ("number", "integer")])), value)
        elif where == "context":
            context.pairs.append((draw(KEY_TEXT), value))
        else:
            context.pairs.append(("n", [Obj([("a", 1), ("b", [value])])]))
    elif family == "string":
        where = draw(st.sampled_from(["field", "field", "context", "context key", "key"]))
        value = draw(STRING_EDGES, label="string")
        if where == "field":
            _set(record, draw(st.sampled_from([n for n in names if kinds[n] == "string"])),
                 value)
        elif where == "context":
            context.pairs.append((draw(KEY_TEXT), value))
        else:
            key = value if isinstance(value, str | Raw) else "k"
            (context if where == "context key" else record).pairs.append((key, "v"))
    elif family == "type":
        name = draw(st.sampled_from(names))
        kind = kinds[name]
        swaps = TYPE_SWAPS[kind] | st.none() if not any(
            f.name == name and f.nullable for f in fields) else TYPE_SWAPS[kind]
        _set(record, name, draw(swaps, label="wrong type"))
    elif family == "key":
        how = draw(st.sampled_from(
            ["delete", "delete", "extra", "near name", "repeat", "repeat context",
             "repeat nested", "escape", "escape repeat", "escape context",
             "many extra", "wide context", "empty key", "name as bytes",
             "name as bytes"]), label="key fault")
        if how == "delete":
            del record.pairs[rnd.randrange(len(record.pairs))]
        elif how == "extra":
            record.pairs.insert(rnd.randint(0, len(record.pairs)),
                                (draw(NAMES | KEY_TEXT), draw(TEXT | SMALL_INTS)))
        elif how == "near name":
            name = draw(st.sampled_from(names))
            near = draw(st.sampled_from([name + " ", " " + name, name.upper(), name[:-1],
                                         name + "\u0301", name + "\x00", name * 2]))
            if near not in names and near:
                record.pairs.append((near, 1))
        elif how in ("repeat", "repeat context", "repeat nested"):
            target = record if how == "repeat" else context
            if how == "repeat nested":
                inner = Obj([("a", 1), ("b", Obj([("c", 2)]))])
                context.pairs.append(("nest", [inner]))
                target = draw(st.sampled_from([inner, inner.pairs[1][1]]))
            if not target.pairs:
                target.pairs.append(("k", "v"))
            k, x = target.pairs[rnd.randrange(len(target.pairs))]
            x = x if draw(st.booleans()) else draw(VALID[kinds.get(k, "string")]
                                                   if k != "context" else PLAIN_CONTEXTS)
            target.pairs.insert(rnd.randint(0, len(target.pairs)), (k, x))
        elif how in ("escape", "escape repeat", "escape context"):
            target = context if how == "escape context" else record
            if not target.pairs:
                target.pairs.append(("k", "v"))
            k = rnd.randrange(len(target.pairs))
            key, x = target.pairs[k]
            if not isinstance(key, str):
                return record
            if how == "escape repeat":
                target.pairs.insert(rnd.randint(0, len(target.pairs)),
                                    (escaped_key(key, rnd), x))
            else:
                target.pairs[k] = (escaped_key(key, rnd), x)
        elif how == "many extra":
            n = draw(st.sampled_from([MAX_KEYS // 2 - 1, MAX_KEYS // 2, MAX_KEYS // 2 + 1]))
            record.pairs += [(f"x{j}", j) for j in range(n)]
            if draw(st.booleans()):
                record.pairs.append((f"x{draw(st.integers(0, n - 1))}", 0))
        elif how == "wide context":
            n = draw(st.sampled_from([MAX_KEYS - 1, MAX_KEYS, MAX_KEYS + 1]))
            wide = Obj([(f"w{j}", j) for j in range(n)])
            if draw(st.booleans()):
                wide.pairs.append((f"w{draw(st.integers(0, n - 1))}", 0))
            context.pairs.append(("wide", wide))
        elif how == "name as bytes":
            # A declared name's bytes as the key's JSON text: for a name like \u0061 that
            # is a valid escape, which means another key ("a").
            name = draw(st.sampled_from(names))
            text = ('"' + name + '"').encode("utf-8", "surrogatepass")
            for k, (key, x) in enumerate(record.pairs):
                if key == name:
                    record.pairs[k] = (Raw(text), x)
                    break
            else:
                record.pairs.append((Raw(text), draw(VALID[kinds[name]])))
        elif how == "empty key":
            (context if draw(st.booleans()) else record).pairs += [("", 1)] * draw(
                st.integers(1, 2))
    elif family == "bytes":
        # Not JSON, or not UTF-8, somewhere: the scanner must give the body no verdict.
        value = draw(st.one_of(
            st.sampled_from([Raw(t) for t in (*BAD_STRING_TOKENS, *BAD_NUMBER_TOKENS,
                                              *BAD_LITERAL_TOKENS)]),
            st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)),
            label="broken value")
        where = draw(st.sampled_from(["field", "context", "nested", "key"]))
        if where == "field":
            _set(record, draw(st.sampled_from(names)), value)
        elif where == "context":
            context.pairs.append(("k", value))
        elif where == "nested":
            context.pairs.append(("k", [1, Obj([("a", value)])]))
        elif isinstance(value, Raw) and value.text.startswith(b'"'):
            record.pairs.append((value, 1))
    else:
        assert family == "shape"
        how = draw(st.sampled_from(["deep", "deep", "not an object", "empty", "context deep",
                                    "array record"]), label="shape fault")
        if how in ("deep", "context deep"):
            depth = draw(st.sampled_from(DEPTHS[:-1]), label="depth")
            nest = deep(depth, draw(st.sampled_from(DEEP_LEAVES[:11])), rnd)
            if how == "deep":
                context.pairs.append(("d", nest))
            else:
                _set(record, "context", Obj([("d", nest)]) if draw(st.booleans()) else nest)
        elif how == "not an object":
            return draw(st.sampled_from([None, 1, "x", True, -0.5, []]))
        elif how == "empty":
            return Obj([])
        else:
            return [record]
    return record


@st.composite
def quiet_serialized(draw: st.DrawFn, values: list[Any]) -> bytes:
    """``values`` written as a client would, without escaping keys or strings that need
    none: orjson when it can, else raw UTF-8 with random whitespace."""
    if draw(st.booleans(), label="orjson?"):
        with contextlib.suppress(NotPlain, TypeError, orjson.JSONEncodeError):
            return orjson.dumps(plain(values))
    rnd = draw(st.randoms(use_true_random=False), label="writer rnd")
    ws = draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]), label="whitespace")
    return Writer(rnd, "utf8", ws).body(values)


@pytest.mark.parametrize("family", ["timestamp", "number", "string", "type", "key", "shape",
                                    "bytes"])
@settings(SETTINGS, max_examples=FAMILY)
@given(data=st.data())
def test_one_fault_per_record(family: str, data: st.DataObject) -> None:
    v, values = data.draw(family_case(family), label="case")
    assert_same(v, data.draw(quiet_serialized(values), label="body"))


# ---------------------------------------------------------------- every edge, deterministically


FULL_DEFINITION: dict[str, Any] = {"fields": {
    "s": "string", "n": "number", "i": "integer", "b": "boolean", "t": "timestamp",
    "d": {"type": "string", "format": "date-time"},
    "ns": {"type": ["string", "null"]}, "nn": {"type": ["null", "number"], "required": False},
    "ni": {"type": ["integer", "null"]}, "nb": {"type": ["boolean", "null"], "required": False},
    "nt": {"type": ["timestamp", "null"]},
    "nd": {"type": ["string", "null"], "format": "date-time", "required": False},
    "amount": {"type": "number", "description": "x"}, "\u00e9": "string",
    "\u540d\u524d": "integer", "\U0001f600": {"type": "boolean", "required": False},
}}
FULL_RECORD = Obj([("timestamp", "2024-05-01T10:00:00Z"), ("context", Obj([("k", "v")])),
                   ("s", "x"), ("n", 1.5), ("i", 7), ("b", True), ("t", "2024-05-01T10:00:00Z"),
                   ("d", "2024-05-01T10:00:00.5+02:00"), ("ns", None), ("nn", 3), ("ni", None),
                   ("nb", False), ("nt", None), ("nd", "2024-02-29T23:59:59z"), ("amount", 0),
                   ("\u00e9", "\u00e9"), ("\u540d\u524d", -1), ("\U0001f600", True)])
EVERY_EDGE: list[Any] = [*(Raw(t) for t in (*NUMBER_TOKENS, *LITERAL_TOKENS, *STRING_TOKENS,
                                            *LONG_TOKENS, *BAD_NUMBER_TOKENS,
                                            *BAD_LITERAL_TOKENS, *BAD_STRING_TOKENS)),
                         *EDGE_TIMESTAMPS, *LONG_STRINGS, INT64_MAX, INT64_MAX + 1, INT64_MIN,
                         INT64_MIN - 1, 2**64, 1.0, -0.0, 1e300, float("nan"), float("inf"),
                         "\ud800", "\udc00x", "\x00", "\u2028", "\U0001f600", [], Obj([]),
                         [1], Obj([("a", 1), ("a", 1)]), None, True, False]


def _copy(record: Obj) -> Obj:
    return Obj(list(record.pairs))


@pytest.mark.parametrize("place", ["s", "n", "i", "b", "t", "d", "ni", "nt", "timestamp",
                                   "context", "context value", "context key", "extra"])
def test_every_edge_value_in_every_place(place: str) -> None:
    """Each edge value (number tokens, timestamps, escapes, invalid UTF-8, long strings, ...)
    in each kind of place, between two valid records, written two ways."""
    v = compiled(FULL_DEFINITION)
    rnd = random.Random(place)
    for n, value in enumerate(EVERY_EDGE):
        record = _copy(FULL_RECORD)
        if place == "context value":
            record.pairs[1] = ("context", Obj([("k", "v"), ("x", value)]))
        elif place == "context key":
            key = value
            if not isinstance(value, str | Raw):  # a key that is not a string: broken JSON
                text: list[bytes] = []
                Writer(rnd, "utf8", 0.0).write(value, text)
                key = Raw(b"".join(text))
            record.pairs[1] = ("context", Obj([("k", "v"), (key, 1)]))
        elif place == "extra":
            record.pairs.append(("extra", value))
        else:
            k = next(j for j, (name, _) in enumerate(record.pairs) if name == place)
            record.pairs[k] = (place, value)
        # Strings raw and escaped (both, under SG_FUZZ_LONG).
        for strings in ("utf8", "ascii") if LONG else ("utf8", "ascii")[n % 2:n % 2 + 1]:
            body = Writer(rnd, strings, 0.0).body([FULL_RECORD, record, FULL_RECORD])
            assert_same(v, body)


VALID_TEXT = (b'{"timestamp":"2024-05-01T10:00:00Z","context":{"k":"v"},"amount":1.5,'
              b'"\xc3\xa9":"x"}')
ESCAPED_DUPLICATES = [
    # "\u0061mount" repeats "amount" (after it, before it, both escaped differently)
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\\u0061mount":2,'
    b'"\xc3\xa9":"x"}',
    b'{"\\u0061mount":"x","timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"\\u0061mount":1,"amoun\\u0074":2,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\\u00e9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\xc3\xa9":"x",'
    b'"\\u00e9":"y"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\xc3\xa9":"x",'
    b'"\\u00E9":1}',
    b'{"\\u0074imestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","timestamp":"x","context":{},"amount":1,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{"a":1,"\\u0061":2},"amount":1,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{"a":{"b":[{"c":1,"\\u0063":2}]}},'
    b'"amount":1,"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{"a":{"b":1},"a":{"b":1}},"amount":1,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{"a":{"b":1,"c":{"b":1}}},"amount":1,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"context":{},"amount":1,'
    b'"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\xc3\xa9":"x","z":1,'
    b'"y":2,"z":3}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\xc3\xa9":"x",'
    b'"\\"":1,"\\u0022":2}',
    b'{"timestamp":"2024-05-01T10:00:00\\u005a","context":{},"amount":1,"\xc3\xa9":"x"}',
    b'{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1,"\xc3\xa9":"x",'
    b'"\\ud83d\\ude00":1,"\xf0\x9f\x98\x80":2}',
]
BODIES = [
    b"", b" ", b"[]", b"[ ]", b" [ \n] ", b"{}", b"null", b"1", b'"x"', b"[null]", b"[1]",
    b"[[]]", b"[{}]", b"[{ }]", b'["x"]', b"[true]", b"[1,]", b"[,1]", b"[1 2]", b"[{},]",
    b"[" + VALID_TEXT, VALID_TEXT, b"[" + VALID_TEXT + b"]]", b"[" + VALID_TEXT + b"],",
    b"[" + VALID_TEXT + b"] x", b"[" + VALID_TEXT + b"]\x00", b"\x00[" + VALID_TEXT + b"]",
    b"\xef\xbb\xbf[" + VALID_TEXT + b"]", b"[" + VALID_TEXT + b",]",
    b"[" + VALID_TEXT + b",," + VALID_TEXT + b"]", b"[" + VALID_TEXT + VALID_TEXT + b"]",
    b"[" + VALID_TEXT + b"\x0b]", b"[" + VALID_TEXT + b"\x0c]", b"[\xc2\xa0" + VALID_TEXT + b"]",
    b"[" + VALID_TEXT.replace(b":", b" : ").replace(b",", b"\t,\r\n") + b"]",
    b"[" + VALID_TEXT.replace(b"{", b"{ ", 1) + b"]",
    b"[" + VALID_TEXT.replace(b'"amount":1.5', b'"amount" :1.5') + b"]",
    b"[" + VALID_TEXT.replace(b'"amount":1.5', b'"amount":1.5 ') + b"]",
    b"[" + VALID_TEXT.replace(b'"amount":1.5', b"'amount':1.5") + b"]",
    b"[" + VALID_TEXT.replace(b'"amount":1.5', b'amount:1.5') + b"]",
    b"[" + VALID_TEXT.replace(b'"amount":1.5', b'"amount"=1.5') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k":"v",}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k":"v" "j":1}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k":["v",]}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k":["v"}}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k":{"v"]}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k":"v"') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{"k"}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'{1:2}') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'[]') + b"]",
    b"[" + VALID_TEXT.replace(b'{"k":"v"}', b'null') + b"]",
    *(b"[" + VALID_TEXT + b"," + t + b"]" for t in ESCAPED_DUPLICATES),
    *(b"[" + t + b"]" for t in ESCAPED_DUPLICATES),
    b"[" + b",".join([VALID_TEXT] * 1000) + b"]", b"[" + b",".join([VALID_TEXT] * 1001) + b"]",
    b"[" + b",".join([b"{}"] * 1001) + b"]", b"[" + b"[" * 3000 + b"]" * 3000 + b"]",
    b"[" + b"[" * 3000 + b"]" * 2999 + b"]", b"[" + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"]",
]


def test_hand_written_bodies() -> None:
    """Whole bodies at the grammar's edges, escaped repeated keys, the record limit."""
    v = compiled({"fields": {"amount": "number", "\u00e9": {"type": ["string", "null"]}}})
    for body in BODIES:
        for max_records in (1000, 1):
            assert_same(v, body, max_records)


@pytest.mark.parametrize("depth", [MAX_NEST - 2, MAX_NEST - 1, MAX_NEST, MAX_NEST + 1, 30, 31,
                                   32, 33])
def test_context_depth_around_the_limits(depth: int) -> None:
    """``depth`` levels inside context (context itself is level 2 of a record; the checker
    rejects past 32, the scanner follows 24 levels counting context), each leaf."""
    v = compiled({"fields": {"amount": "number"}})
    rnd = random.Random(depth)
    for leaf in DEEP_LEAVES:
        for key in (b'"k"', b'"\\u006b"'):
            nest = deep(depth, leaf, rnd, key)
            for where in ("context", "field", "extra", "record"):
                record = Obj([("timestamp", "2024-05-01T10:00:00Z"), ("context", Obj([])),
                              ("amount", 1)])
                if where == "context":
                    record.pairs[1] = ("context", Obj([("d", nest)]))
                elif where == "field":
                    record.pairs[2] = ("amount", nest)
                elif where == "extra":
                    record.pairs.append(("d", nest))
                body = Writer(rnd, "utf8", 0.0).body(
                    [record if where != "record" else nest, FULL_RECORD])
                assert_same(v, body)


# ---------------------------------------------------------------- explicit cases kept


@example(body=b"[" + VALID_TEXT + b"]")
@settings(SETTINGS, max_examples=FEW)
@given(body=st.builds(lambda rs: b"[" + b",".join(rs) + b"]",
                      st.lists(st.sampled_from([VALID_TEXT, *ESCAPED_DUPLICATES]),
                               min_size=1, max_size=5)))
def test_escaped_and_repeated_keys_mixed(body: bytes) -> None:
    v = compiled({"fields": {"amount": "number", "\u00e9": {"type": ["string", "null"]}}})
    assert_same(v, body)


# ---------------------------------------------------------------- mismatches found


# Found by this file (number_tokens): validator.scan._number gave class 1 ("a float that
# cannot overflow") to every number with a negative exponent, however many integer digits
# it had; the bound (digits + e > 307) was only applied to positive exponents. So
# 2000...0e-0 (a 2 and 308 zeros: 2e308) was a plain valid float to the scanner, which
# called the record valid; Python's parser reads inf and the precise path says
# number_not_finite (msgspec refuses it: "Number out of range"). In a declared number field
# or anywhere in context.
OVERFLOW_TOKENS = (b"2" + b"0" * 308 + b"e-0", b"1" + b"0" * 310 + b"e-1",
                   b"-" + b"1" * 400 + b"e-10", b"1" * 320 + b".5E-2")


def test_found_overflowing_number_with_negative_exponent() -> None:
    v = compiled({"fields": {"amount": "number", "maybe": {"type": ["number", "null"]}}})
    for token in OVERFLOW_TOKENS:
        for record in (b'"context":{},"amount":%s,"maybe":null' % token,
                       b'"context":{},"amount":1,"maybe":%s' % token,
                       b'"context":{"x":%s},"amount":1,"maybe":null' % token,
                       b'"context":{"x":[{"y":[%s]}]},"amount":1,"maybe":null' % token):
            assert_same(v, b'[{"timestamp":"2024-05-01T10:00:00Z",' + record + b"}]")


# Found by this file: a negative max_records made the scanner's numpy.empty(capacity) raise
# ValueError("negative dimensions not allowed") where the other path raises BodyError
# too_many_records. (Settings keep STRICTGATE_MAX_RECORDS >= 1, so the service never passes
# one; validate_batch's contract does not forbid it.)
def test_found_negative_max_records() -> None:
    v = compiled({"fields": {"amount": "number"}})
    body = b'[{"timestamp":"2024-05-01T10:00:00Z","context":{},"amount":1}]'
    for max_records in (0, -1):
        assert_same(v, body, max_records)

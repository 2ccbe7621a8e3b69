"""The record scanner: one pass over the raw body, in machine code, per-record verdicts.

A definition whose fields are all plain scalars (string, number, integer, boolean,
timestamp, each maybe nullable or optional: the seed's form) is described to the scanner as
a table. The scanner reads the body byte by byte (compiled by numba, so no Python object is
made per record or per value) and says, for every record, either "valid" or "doubtful":

* the whole JSON grammar is checked, UTF-8 included: a body the scanner cannot read
  (invalid JSON, invalid UTF-8, an escaped surrogate, nesting deeper than
  :data:`MAX_NEST`, more records than asked) gets no verdict at all and takes the
  msgspec/precise path, which names what is wrong;
* a record is "valid" only when it is an object with exactly the declared keys once each,
  every value of its field's type (strings at most ``MAX_STRING`` bytes, integers of at
  most 18 digits, floats that cannot overflow, timestamps of RFC 3339's shape in the
  calendar, without leap seconds), and a ``context`` object whose content repeats no key
  in any object, whose keys are unescaped and whose numbers are in range;
* anything else is "doubtful": the record is parsed and checked by the precise checker,
  which gives its errors (or finds it valid after all: the scanner only errs towards
  doubt).

So the scanner decides nothing the precise checker would decide otherwise; it only keeps
valid records away from Python. A body scans at about a byte per nanosecond.

Most invalid records need no Python parse either (a producer's bad release fails the same
way in most records): for a doubtful record the scanner also notes, when it is sure, what
the precise checker would say, as a status per field (missing, of a wrong type, a bad
timestamp, an integer beyond int64) and the repeated and undeclared keys in their order.
:class:`ExactErrors` turns that into the checker's errors, from messages the checker itself
wrote for each field once (so they cannot differ); a record the scanner is not sure of
(an escaped key, a possible leap second, a ``context`` to walk, ...) is marked
``INEXACT`` and goes to the precise checker as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from validator.checker import MAX_ERRORS_PER_RECORD, MAX_STRING, extra_field, pairs_hook
from validator.definition import scalar_type
from validator.errors import DUPLICATE_FIELD, EXTRA_FIELD, FieldError, clip

KIND_STRING = 0
KIND_NUMBER = 1
KIND_INTEGER = 2
KIND_BOOLEAN = 3
KIND_TIMESTAMP = 4
KIND_CONTEXT = 5
NULLABLE = 1
# A record's verdict bits: DOUBT, the precise checker must look at it; EXOTIC, it must be
# parsed by Python's parser (a repeated or escaped key, a number msgspec would refuse);
# NOT_OBJECT, it is not an object; INEXACT, its status row and events do not describe its
# errors (only the precise checker can tell them).
DOUBT = 1
EXOTIC = 2
NOT_OBJECT = 4
INEXACT = 8
# A field's status in a record (one byte per field, valid unless the record is INEXACT):
# each but OK is exactly one error of the precise checker, the same for every record.
OK = 0
MISSING = 1
WRONG_TYPE = 2
BAD_TIMESTAMP = 3
TOO_LARGE = 4
STATUSES = 5
# Not a status: the precise checker must tell (the record is INEXACT).
UNSURE = 9
# Events of a record, in the order of its keys: a declared key seen again (its field), an
# undeclared key (its offset and length in the body).
EVENT_REPEAT = 0
EVENT_EXTRA = 1
# Number classes (see _number).
NUM_INT = 0
NUM_FLOAT = 1
NUM_WIDE_FLOAT = 2
NUM_WIDE_INT = 3
NUM_HUGE_INT = 4
# Depth of arrays and objects inside ``context`` the scanner follows; deeper bodies take
# the other path (which also tells a body too deep to parse).
MAX_NEST = 24
# Keys of the objects open at once inside ``context`` that are compared for repeats.
MAX_KEYS = 512
# Fields a record can have: ``timestamp``, ``context`` (the Loguro envelope) and the declared
# ones (one bit each).
MAX_FIELDS = 62

_KINDS = {"string": KIND_STRING, "number": KIND_NUMBER, "integer": KIND_INTEGER,
            "boolean": KIND_BOOLEAN, "timestamp": KIND_TIMESTAMP}
_PLAIN_KEYS = {"type", "required", "description"}
_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


@njit(cache=True)
def _ws(d: Any, i: int) -> int:
    """The first non-whitespace position from ``i`` (the body ends with a 0 byte)."""
    while True:
        c = d[i]
        if c == 32 or c == 10 or c == 13 or c == 9:
            i += 1
        else:
            return i


@njit(cache=True)
def _hex4(d: Any, i: int) -> int:
    """The value of the four hex digits at ``i``, or -1."""
    v = 0
    for k in range(i, i + 4):
        h = int(d[k])
        if 48 <= h <= 57:
            v = v * 16 + h - 48
        elif 97 <= h <= 102:
            v = v * 16 + h - 87
        elif 65 <= h <= 70:
            v = v * 16 + h - 55
        else:
            return -1
    return v


@njit(cache=True)
def _string(d: Any, i: int) -> tuple[int, int]:
    """A string whose opening quote is at ``i``: (the position after its closing quote, or
    -1 if it is not valid JSON in UTF-8 or holds an escaped surrogate; flags: 1 escaped,
    2 longer than MAX_STRING bytes)."""
    start = i
    i += 1
    flags = 0
    while True:
        c = d[i]
        if c == 34:
            if i - start - 1 > MAX_STRING:
                flags |= 2
            return i + 1, flags
        if c == 92:
            flags |= 1
            e = d[i + 1]
            if e == 117:
                v = _hex4(d, i + 2)
                if v < 0 or 0xDC00 <= v <= 0xDFFF:
                    return -1, 0
                if 0xD800 <= v <= 0xDBFF:
                    # A pair: the low half must follow at once.
                    if d[i + 6] != 92 or d[i + 7] != 117:
                        return -1, 0
                    w = _hex4(d, i + 8)
                    if not 0xDC00 <= w <= 0xDFFF:
                        return -1, 0
                    i += 12
                else:
                    i += 6
            elif e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110 \
                    or e == 114 or e == 116:
                i += 2
            else:
                return -1, 0
        elif c < 32:
            return -1, 0
        elif c < 128:
            i += 1
        else:
            # UTF-8: the lead byte fixes the length and the second byte's range.
            lo = 0x80
            hi = 0xBF
            if 0xC2 <= c <= 0xDF:
                need = 1
            elif c == 0xE0:
                need = 2
                lo = 0xA0
            elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
                need = 2
            elif c == 0xED:
                need = 2
                hi = 0x9F
            elif c == 0xF0:
                need = 3
                lo = 0x90
            elif 0xF1 <= c <= 0xF3:
                need = 3
            elif c == 0xF4:
                need = 3
                hi = 0x8F
            else:
                return -1, 0
            b = d[i + 1]
            if b < lo or b > hi:
                return -1, 0
            for k in range(i + 2, i + 1 + need):
                if d[k] < 0x80 or d[k] > 0xBF:
                    return -1, 0
            i += need + 1


@njit(cache=True)
def _number(d: Any, i: int) -> tuple[int, int]:
    """A number starting at ``i``: (the position after it, or -1 if it is not JSON's
    grammar; class: NUM_INT an integer of at most 18 digits, NUM_FLOAT a float that cannot
    overflow, NUM_WIDE_FLOAT another float, NUM_WIDE_INT an integer of 19 to 307 digits,
    NUM_HUGE_INT a longer one, which Python's parser may refuse: 4300 digits at most)."""
    if d[i] == 45:
        i += 1
    c = d[i]
    if c == 48:
        i += 1
        digits = 1
    elif 49 <= c <= 57:
        s = i
        i += 1
        while 48 <= d[i] <= 57:
            i += 1
        digits = i - s
    else:
        return -1, 0
    cls = 0
    if d[i] == 46:
        i += 1
        s = i
        while 48 <= d[i] <= 57:
            i += 1
        if i == s:
            return -1, 0
        cls = 1
    c = d[i]
    if c == 101 or c == 69:
        i += 1
        negative = False
        if d[i] == 43 or d[i] == 45:
            negative = d[i] == 45
            i += 1
        s = i
        e = 0
        while 48 <= d[i] <= 57:
            if e < 100_000:
                e = e * 10 + int(d[i]) - 48
            i += 1
        if i == s:
            return -1, 0
        # Below 10 ** (digits + e), digits before the point: finite while under 1e308
        # (``e`` is capped, which only errs towards class 2).
        if digits + (-e if negative else e) > 307:
            return i, NUM_WIDE_FLOAT
        return i, NUM_FLOAT
    if cls == 0:
        if digits > 307:
            return i, NUM_HUGE_INT
        if digits > 18:
            return i, NUM_WIDE_INT
    elif digits > 307:
        return i, NUM_WIDE_FLOAT
    return i, cls


@njit(cache=True)
def _beyond_int64(d: Any, s: int, e: int) -> bool:
    """Whether the integer written ``d[s:e]`` (JSON: no leading zero) is outside int64."""
    negative = d[s] == 45
    if negative:
        s += 1
    n = e - s
    if n != 19:
        return n > 19
    # 9223372036854775807, or ...808 below zero: compared digit by digit.
    bound = (9, 2, 2, 3, 3, 7, 2, 0, 3, 6, 8, 5, 4, 7, 7, 5, 8, 0, 8 if negative else 7)
    for k in range(19):
        c = int(d[s + k]) - 48
        if c != bound[k]:
            return c > bound[k]
    return False


@njit(cache=True)
def _literal(d: Any, i: int) -> tuple[int, int]:
    """``true``/``false``/``null`` at ``i``: (the position after it or -1; 1 boolean,
    2 null)."""
    c = d[i]
    if c == 116 and d[i + 1] == 114 and d[i + 2] == 117 and d[i + 3] == 101:
        return i + 4, 1
    if c == 102 and d[i + 1] == 97 and d[i + 2] == 108 and d[i + 3] == 115 \
            and d[i + 4] == 101:
        return i + 5, 1
    if c == 110 and d[i + 1] == 117 and d[i + 2] == 108 and d[i + 3] == 108:
        return i + 4, 2
    return -1, 0


@njit(cache=True)
def _two(d: Any, i: int) -> int:
    """The two-digit number at ``i`` (digits already checked)."""
    return (int(d[i]) - 48) * 10 + int(d[i + 1]) - 48


@njit(cache=True)
def _is_digit(c: Any) -> bool:
    return bool(48 <= c <= 57)


@njit(cache=True)
def _timestamp(d: Any, s: int, e: int) -> int:
    """Whether the plain (unescaped) string ``d[s:e]`` is an RFC 3339 date-time: OK, a
    valid one without a leap second; BAD_TIMESTAMP, not one (what
    :func:`validator.formats.is_date_time` refuses); UNSURE, a well-formed one at second
    60, which is valid only at 23:59:60 UTC."""
    if e - s < 20:
        return BAD_TIMESTAMP
    for k in (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18):
        if not _is_digit(d[s + k]):
            return BAD_TIMESTAMP
    if d[s + 4] != 45 or d[s + 7] != 45 or d[s + 13] != 58 or d[s + 16] != 58:
        return BAD_TIMESTAMP
    if d[s + 10] != 84 and d[s + 10] != 116:
        return BAD_TIMESTAMP
    p = s + 19
    if d[p] == 46:
        p += 1
        q = p
        while p < e and _is_digit(d[p]):
            p += 1
        if p == q or p >= e:
            return BAD_TIMESTAMP
    z = d[p]
    if z == 90 or z == 122:
        if p + 1 != e:
            return BAD_TIMESTAMP
    elif z == 43 or z == 45:
        if p + 6 != e or d[p + 3] != 58:
            return BAD_TIMESTAMP
        for k in (1, 2, 4, 5):
            if not _is_digit(d[p + k]):
                return BAD_TIMESTAMP
        if _two(d, p + 1) > 23 or _two(d, p + 4) > 59:
            return BAD_TIMESTAMP
    else:
        return BAD_TIMESTAMP
    year = _two(d, s) * 100 + _two(d, s + 2)
    month = _two(d, s + 5)
    day = _two(d, s + 8)
    if month < 1 or month > 12 or day < 1 or day > _DAYS[month]:
        return BAD_TIMESTAMP
    if month == 2 and day == 29 and (year % 4 != 0 or (year % 100 == 0 and year % 400 != 0)):
        return BAD_TIMESTAMP
    if _two(d, s + 11) > 23 or _two(d, s + 14) > 59:
        return BAD_TIMESTAMP
    second = _two(d, s + 17)
    if second <= 59:
        return OK
    return UNSURE if second == 60 else BAD_TIMESTAMP


@njit(cache=True)
def _timestamp_ok(d: Any, s: int, e: int) -> bool:
    """Whether ``d[s:e]`` is an RFC 3339 date-time without a leap second (what
    :func:`validator.formats.is_date_time` accepts, but ``:60``)."""
    return _timestamp(d, s, e) == OK


@njit(cache=True)
def _key(d: Any, i: int, key_at: Any, key_len: Any, nk: int) -> tuple[int, int, int]:
    """An object key at ``i`` and its colon: (the position of its value or -1; DOUBT |
    EXOTIC when the key is escaped, too long or past MAX_KEYS, so cannot be compared; the
    keys recorded)."""
    if d[i] != 34:
        return -1, 0, nk
    j, flags = _string(d, i)
    if j < 0:
        return -1, 0, nk
    doubt = 0
    if flags != 0 or nk >= MAX_KEYS:
        doubt = DOUBT | EXOTIC
    else:
        key_at[nk] = i + 1
        key_len[nk] = j - i - 2
        nk += 1
    j = _ws(d, j)
    if d[j] != 58:
        return -1, 0, nk
    return _ws(d, j + 1), doubt, nk


@njit(cache=True)
def _repeats(d: Any, key_at: Any, key_len: Any, lo: int, hi: int) -> bool:
    """Whether two of the keys ``lo`` to ``hi - 1`` are the same."""
    for a in range(lo, hi):
        for b in range(a + 1, hi):
            n = key_len[a]
            if key_len[b] == n:
                same = True
                pa = key_at[a]
                pb = key_at[b]
                for k in range(n):
                    if d[pa + k] != d[pb + k]:
                        same = False
                        break
                if same:
                    return True
    return False


@njit(cache=True)
def _any(d: Any, i: int, key_at: Any, key_len: Any, bases: Any, stack: Any, nk: int,
         ) -> tuple[int, int]:
    """Any JSON value at ``i``: (the position after it or -1; DOUBT if the precise checker
    must look at it, a string too long; DOUBT | EXOTIC for a repeated or uncomparable key or
    a number out of range, which only Python's parser reads as the checker expects; and
    INEXACT for an integer Python's parser may refuse). Its object keys are recorded from
    ``key_at[nk]`` on."""
    doubt = 0
    top = 0
    while True:
        # A value starts at i.
        c = d[i]
        if c == 123 or c == 91:
            if top >= MAX_NEST:
                return -1, 0
            stack[top] = c
            bases[top] = nk
            top += 1
            i = _ws(d, i + 1)
            if c == 123:
                if d[i] == 125:
                    top -= 1
                    i += 1
                else:
                    i, kd, nk = _key(d, i, key_at, key_len, nk)
                    if i < 0:
                        return -1, 0
                    doubt |= kd
                    continue
            elif d[i] == 93:
                top -= 1
                i += 1
            else:
                continue
        elif c == 34:
            i, flags = _string(d, i)
            if i < 0:
                return -1, 0
            if flags & 2:
                doubt |= DOUBT
        elif c == 45 or 48 <= c <= 57:
            i, cls = _number(d, i)
            if i < 0:
                return -1, 0
            if cls >= NUM_WIDE_FLOAT:
                doubt |= DOUBT | EXOTIC
                if cls == NUM_HUGE_INT:
                    doubt |= INEXACT
        else:
            i, _ = _literal(d, i)
            if i < 0:
                return -1, 0
        # After a value: separators and closing brackets, until the next value.
        while True:
            if top == 0:
                return i, doubt
            i = _ws(d, i)
            c = d[i]
            opener = stack[top - 1]
            if c == 44:
                i = _ws(d, i + 1)
                if opener == 123:
                    i, kd, nk = _key(d, i, key_at, key_len, nk)
                    if i < 0:
                        return -1, 0
                    doubt |= kd
                break
            if c == 125 and opener == 123:
                if _repeats(d, key_at, key_len, bases[top - 1], nk):
                    doubt |= DOUBT | EXOTIC
                nk = bases[top - 1]
            elif not (c == 93 and opener == 91):
                return -1, 0
            top -= 1
            i += 1


@njit(cache=True)
def _field_of(d: Any, at: int, n: int, names: Any, offsets: Any, first: int) -> int:
    """The field whose name is ``d[at:at + n]``, trying ``first`` first (keys mostly come in
    the definition's order), or -1."""
    count = len(offsets) - 1
    for t in range(count):
        f = first + t
        if f >= count:
            f -= count
        a = offsets[f]
        if offsets[f + 1] - a == n:
            same = True
            for k in range(n):
                if d[at + k] != names[a + k]:
                    same = False
                    break
            if same:
                return f
    return -1


@njit(cache=True)
def _record(d: Any, i: int, names: Any, offsets: Any, kinds: Any, flags: Any,
            required: int, key_at: Any, key_len: Any, bases: Any, stack: Any,
            status: Any, row: int, events: Any, nev: int) -> tuple[int, int, int, int]:
    """One record at ``i``: (the position after it or -1; its verdict bits; the fields
    whose one value was found valid, a bit each; the events recorded, this record's added
    to the first ``nev``). Unless the verdict has INEXACT, ``status[row]`` (all OK on
    entry) and its events say exactly what the precise checker finds wrong."""
    first_event = nev
    if d[i] != 123:
        i, inner = _any(d, i, key_at, key_len, bases, stack, 0)
        return i, inner | DOUBT | NOT_OBJECT, 0, nev
    i = _ws(d, i + 1)
    seen = 0
    verified = 0
    doubt = 0
    expect = 0
    # Undeclared keys, recorded from key_at[0] (a repeat makes the record exotic).
    extra = 0
    repeated = 0
    capacity = len(events)
    if d[i] == 125:
        i += 1
        doubt = DOUBT
    else:
        while True:
            if d[i] != 34:
                return -1, 0, 0, nev
            j, sflags = _string(d, i)
            if j < 0:
                return -1, 0, 0, nev
            field = -1
            if sflags != 0:
                # Escaped or too long: compared with nothing, it might repeat a key (or be
                # a declared one, escaped).
                doubt |= EXOTIC | INEXACT
            else:
                field = _field_of(d, i + 1, j - i - 2, names, offsets, expect)
                if field < 0 and extra < MAX_KEYS // 2:
                    key_at[extra] = i + 1
                    key_len[extra] = j - i - 2
                    extra += 1
                    if nev < capacity:
                        events[nev, 0] = EVENT_EXTRA
                        events[nev, 1] = i + 1
                        events[nev, 2] = j - i - 2
                        nev += 1
                    else:
                        doubt |= INEXACT
                elif field < 0:
                    doubt |= EXOTIC | INEXACT
            j = _ws(d, j)
            if d[j] != 58:
                return -1, 0, 0, nev
            i = _ws(d, j + 1)
            c = d[i]
            ok = False
            inner = 0
            if field >= 0:
                kind = kinds[field]
                # What the precise checker says of this value (a value of no type the
                # field takes: WRONG_TYPE, whatever it holds).
                state = WRONG_TYPE
                if c == 110 and (flags[field] & NULLABLE) and kind != KIND_CONTEXT:
                    i, lit = _literal(d, i)
                    ok = lit == 2
                    state = OK
                elif c == 34 and kind in (KIND_STRING, KIND_TIMESTAMP):
                    j, sflags = _string(d, i)
                    if kind == KIND_STRING:
                        ok = j >= 0 and sflags & 2 == 0
                        # Too long in bytes may still be short enough in characters.
                        state = OK if ok else UNSURE
                    elif j >= 0 and sflags == 0:
                        state = _timestamp(d, i + 1, j - 1)
                        ok = state == OK
                    else:
                        state = UNSURE  # escaped: it may mean a valid one
                    i = j
                elif (c == 45 or 48 <= c <= 57) and kind in (KIND_NUMBER, KIND_INTEGER):
                    s = i
                    i, cls = _number(d, i)
                    ok = cls == NUM_INT or (cls == NUM_FLOAT and kind == KIND_NUMBER)
                    state = OK if ok else UNSURE
                    if cls >= NUM_WIDE_FLOAT:
                        inner = EXOTIC
                        if cls == NUM_WIDE_INT and i >= 0:
                            state = TOO_LARGE if _beyond_int64(d, s, i) else OK
                elif (c == 116 or c == 102) and kind == KIND_BOOLEAN:
                    i, lit = _literal(d, i)
                    ok = lit == 1
                    state = OK
                elif c == 123 and kind == KIND_CONTEXT:
                    i, inner = _any(d, i, key_at, key_len, bases, stack, extra)
                    ok = inner == 0
                    state = OK if ok else UNSURE  # only a walk finds what is wrong
                else:
                    i, inner = _any(d, i, key_at, key_len, bases, stack, extra)
                bit = 1 << field
                if state == UNSURE:
                    doubt |= INEXACT
                elif state != OK or seen & bit:
                    # (A repeated key's last value is the one checked.)
                    status[row, field] = state
                if seen & bit:
                    doubt |= DOUBT | EXOTIC
                    if not repeated & bit:
                        repeated |= bit
                        if nev < capacity:
                            events[nev, 0] = EVENT_REPEAT
                            events[nev, 1] = field
                            nev += 1
                        else:
                            doubt |= INEXACT
                elif ok:
                    verified |= bit
                seen |= bit
                expect = field + 1
            else:
                i, inner = _any(d, i, key_at, key_len, bases, stack, extra)
            if i < 0:
                return -1, 0, 0, nev
            doubt |= inner
            if not ok:
                doubt |= DOUBT
            i = _ws(d, i)
            c = d[i]
            if c == 44:
                i = _ws(d, i + 1)
            elif c == 125:
                i += 1
                break
            else:
                return -1, 0, 0, nev
    if seen & required != required:
        doubt |= DOUBT
        for f in range(len(kinds)):
            if (required >> f) & 1 and not (seen >> f) & 1:
                status[row, f] = MISSING
    if extra > 1 and _repeats(d, key_at, key_len, 0, extra):
        doubt |= EXOTIC | INEXACT
    if doubt & INEXACT:
        nev = first_event
    return i, doubt, verified, nev


@njit(cache=True)
def scan_body(body: Any, names: Any, offsets: Any, kinds: Any, flags: Any, required: int,
              capacity: int) -> tuple[int, int, Any, Any, Any, Any, Any, Any, Any]:
    """Scan ``body``: (the number of records, or -1 when the body gets no verdict; how
    many are doubtful; each record's start and end offsets, verdict bits and fields found
    valid; each record's status row, the events, and where each record's events end)."""
    # A copy ending in a 0 byte, which stops every loop below: no bounds checks needed.
    d = np.empty(len(body) + 1, np.uint8)
    d[:-1] = body
    d[-1] = 0
    starts = np.empty(capacity, np.int64)
    ends = np.empty(capacity, np.int64)
    doubtful = np.zeros(capacity, np.uint8)
    verified = np.zeros(capacity, np.int64)
    status = np.zeros((capacity, len(kinds)), np.uint8)
    # Room for two events a record on average; a record past it is INEXACT.
    events = np.empty((2 * capacity + 64, 3), np.int64)
    event_ends = np.zeros(capacity, np.int64)
    key_at = np.empty(MAX_KEYS, np.int64)
    key_len = np.empty(MAX_KEYS, np.int64)
    bases = np.empty(MAX_NEST, np.int64)
    stack = np.empty(MAX_NEST, np.uint8)
    end = len(d) - 1
    nev = 0
    i = _ws(d, 0)
    if d[i] != 91:
        return -1, 0, starts, ends, doubtful, verified, status, events, event_ends
    i = _ws(d, i + 1)
    if d[i] == 93:
        return -1, 0, starts, ends, doubtful, verified, status, events, event_ends
    count = 0
    while True:
        if count >= capacity:
            return -1, 0, starts, ends, doubtful, verified, status, events, event_ends
        starts[count] = i
        i, doubt, valid, nev = _record(d, i, names, offsets, kinds, flags, required, key_at,
                                       key_len, bases, stack, status, count, events, nev)
        if i < 0:
            return -1, 0, starts, ends, doubtful, verified, status, events, event_ends
        ends[count] = i
        doubtful[count] = doubt
        verified[count] = valid
        event_ends[count] = nev
        count += 1
        i = _ws(d, i)
        if d[i] == 44:
            i = _ws(d, i + 1)
        elif d[i] == 93:
            if _ws(d, i + 1) != end:
                return -1, 0, starts, ends, doubtful, verified, status, events, event_ends
            return count, int(np.count_nonzero(doubtful[:count])), starts, ends, doubtful, \
                verified, status, events, event_ends
        else:
            return -1, 0, starts, ends, doubtful, verified, status, events, event_ends


class Scan:
    """A body's records: record k is ``body[starts[k]:ends[k]]``. ``doubtful``: the
    positions of the records the precise checker must look at (the others are valid), of
    which ``exotic`` must be read by Python's parser; ``verified[k]``: the fields of record
    k whose value was found valid (bit k of field k of :attr:`Scanner.names`). Of the
    doubtful records, ``exact`` are those whose errors :class:`ExactErrors` can tell from
    their ``verdicts``, ``status`` rows and events (``events[event_ends[k - 1]:
    event_ends[k]]``, from 0 for the first record), ``inexact`` the others."""

    __slots__ = ("count", "doubtful", "ends", "event_ends", "events", "exact", "exotic",
                 "inexact", "starts", "status", "verdicts", "verified")

    def __init__(self, count: int, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64],
                 verdicts: npt.NDArray[np.uint8], verified: npt.NDArray[np.int64],
                 status: npt.NDArray[np.uint8], events: npt.NDArray[np.int64],
                 event_ends: npt.NDArray[np.int64], doubts: int) -> None:
        self.count = count
        self.starts = starts
        self.ends = ends
        self.verified = verified
        self.verdicts = verdicts = verdicts[:count]
        self.status = status
        self.events = events
        self.event_ends = event_ends
        self.doubtful: list[int] = []
        self.exotic: list[int] = []
        self.exact: list[int] = []
        self.inexact: list[int] = []
        if doubts and count <= 64:
            # Few records (the single-record endpoint): Python is quicker than numpy.
            for k, verdict in enumerate(verdicts.tolist()):
                if verdict:
                    self.doubtful.append(k)
                    (self.inexact if verdict & INEXACT else self.exact).append(k)
                    if verdict & EXOTIC:
                        self.exotic.append(k)
        elif doubts:
            self.doubtful = np.flatnonzero(verdicts).tolist()
            self.exotic = np.flatnonzero(verdicts & EXOTIC).tolist()
            inexact = (verdicts & INEXACT) != 0
            self.inexact = np.flatnonzero(inexact).tolist()
            self.exact = np.flatnonzero((verdicts != 0) & ~inexact).tolist()


class Scanner:
    """The scanner's table for one definition (see the module docstring)."""

    def __init__(self, names: list[str], kinds: list[int], flags: list[int],
                 required: list[bool]) -> None:
        encoded = [n.encode() for n in names]
        self.field_names = names
        # (bit, name) of the timestamp fields: their verified values need no check again.
        self.timestamp_bits = [(1 << k, n) for k, n in enumerate(names)
                               if kinds[k] == KIND_TIMESTAMP]
        self.names = np.frombuffer(b"".join(encoded) or b"\0", np.uint8).copy()
        self.offsets = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
        self.kinds = np.array(kinds, np.int8)
        self.flags = np.array(flags, np.int8)
        self.required = sum(1 << k for k, r in enumerate(required) if r)

    def scan(self, body: bytes, max_records: int) -> Scan | None:
        """The records of ``body`` and which are doubtful, or None when the scanner cannot
        read the body (it is not a JSON array of 1 to ``max_records`` values it can
        follow: the other path finds out why)."""
        if max_records < 1:
            return None  # the other path says why no body can pass
        count, doubts, starts, ends, verdicts, verified, status, events, event_ends = \
            scan_body(np.frombuffer(body, np.uint8), self.names, self.offsets, self.kinds,
                      self.flags, self.required, max_records)
        if count < 0:
            return None
        return Scan(count, starts, ends, verdicts, verified, status, events, event_ends,
                    doubts)


class _NotExact(Exception):
    """The checker's errors for a field cannot be told apart (see :func:`exact_errors`)."""


def _one(errors: list[FieldError], field: str, code: str | None = None) -> FieldError:
    """The one error in ``errors``, which must be about ``field`` (and of ``code``)."""
    if len(errors) != 1 or errors[0].field != field or code not in (None, errors[0].code):
        raise _NotExact(field)
    return errors[0]


# A valid value of each kind, for the records exact_errors asks the checker about.
_VALID = {KIND_STRING: "", KIND_NUMBER: 0, KIND_INTEGER: 0, KIND_BOOLEAN: False,
          KIND_TIMESTAMP: "2000-01-01T00:00:00Z"}


class ExactErrors:
    """The precise checker's errors of the records a :class:`Scan` describes exactly (not
    INEXACT), without parsing them: per record, its repeated keys, its envelope fields'
    errors, its undeclared keys, then its declared fields' errors (the checker's order),
    at most :data:`MAX_ERRORS_PER_RECORD`. Every message is one the checker wrote: each
    field's error for each status is what ``check`` answered, once, for a record with that
    status in that field (built by :func:`exact_errors`)."""

    def __init__(self, width: int, envelope: int, table: list[tuple[FieldError | None, ...]],
                 repeats: list[FieldError], not_object: FieldError) -> None:
        self.width = width
        self.envelope = envelope
        self.table = table
        self.repeats = repeats
        self.not_object = [not_object]

    def counts(self, scan: Scan, indices: list[int]) -> npt.NDArray[np.int64]:
        """How many errors (at most :data:`MAX_ERRORS_PER_RECORD`) each record of
        ``indices`` (exact ones) has: one a status, one an event, one a non-object."""
        at = np.array(indices, np.intp)
        n: npt.NDArray[np.int64] = np.count_nonzero(scan.status[at], axis=1).astype(np.int64)
        n += scan.event_ends[at]
        n -= _event_starts(scan, at)
        n += (scan.verdicts[at] & NOT_OBJECT) != 0
        np.minimum(n, MAX_ERRORS_PER_RECORD, out=n)
        return n

    def codes(self, body: bytes, scan: Scan, indices: list[int]) -> Counter[str]:
        """How many errors of each code the records of ``indices`` (exact ones) have, each
        record's first :data:`MAX_ERRORS_PER_RECORD`: counted in numpy from their status
        rows and events, but for the few records with more errors than that, whose
        errors are told (to know which are first)."""
        at = np.array(indices, np.intp)
        lows = _event_starts(scan, at)
        highs = scan.event_ends[at]
        not_object = (scan.verdicts[at] & NOT_OBJECT) != 0
        rows = scan.status[at]
        every = np.count_nonzero(rows, axis=1) + (highs - lows) + not_object
        many = every > MAX_ERRORS_PER_RECORD
        tally: Counter[str] = Counter()
        if many.any():
            keep = ~many
            tally.update(e.code for errs in self.errors(
                body, scan, at[many].tolist()) for e in errs)
            lows, highs, not_object, rows = lows[keep], highs[keep], not_object[keep], \
                rows[keep]
        width = self.width
        by_status = np.bincount((rows.astype(np.intp) + np.arange(width) * STATUSES).ravel(),
                                minlength=width * STATUSES)
        for flat, n in zip(np.flatnonzero(by_status).tolist(),
                           by_status[by_status != 0].tolist(), strict=True):
            k, state = divmod(flat, STATUSES)
            if state:
                error = self.table[k][state]
                assert error is not None
                tally[error.code] += n
        if len(lows) and (highs != lows).any():
            # The events inside the records' ranges: +1 at each start, -1 at each end.
            edges = np.zeros(int(highs.max()) + 1, np.intp)
            np.add.at(edges, lows, 1)
            np.add.at(edges, highs, -1)
            inside = np.cumsum(edges[:-1]) > 0
            kinds = np.bincount(scan.events[:len(inside), 0][inside], minlength=2)
            if kinds[EVENT_REPEAT]:
                tally[DUPLICATE_FIELD] += int(kinds[EVENT_REPEAT])
            if kinds[EVENT_EXTRA]:
                tally[EXTRA_FIELD] += int(kinds[EVENT_EXTRA])
        if not_object.any():
            tally[self.not_object[0].code] += int(np.count_nonzero(not_object))
        return tally

    def errors(self, body: bytes, scan: Scan, indices: list[int]) -> list[list[FieldError]]:
        """The errors of each record of ``indices`` (exact ones). Records with the same
        status row and no events share one list (read-only)."""
        if not indices:
            return []
        at = np.array(indices, np.intp)
        width = self.width
        rows = scan.status[at]
        # The distinct rows, found in numpy (a bad release repeats a few of them).
        if width <= 8:
            padded = np.zeros((len(at), 8), np.uint8)
            padded[:, :width] = rows
            keys: npt.NDArray[Any] = padded.view(np.uint64).ravel()
        else:
            keys = np.ascontiguousarray(rows).view(np.dtype((np.void, width))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        parts = [self._row(rows[j].tobytes()) for j in first.tolist()]
        whole = [p[0] for p in parts]
        which = inverse.ravel().tolist()
        out = [whole[u] for u in which]
        lows = _event_starts(scan, at)
        highs = scan.event_ends[at]
        not_object = (scan.verdicts[at] & NOT_OBJECT) != 0
        special = np.flatnonzero((lows != highs) | not_object)
        if not len(special):
            return out
        # The records with events or not objects, one by one (events as Python lists).
        events = scan.events[:int(highs.max())].tolist()
        for j, lo, hi, odd in zip(special.tolist(), lows[special].tolist(),
                                  highs[special].tolist(), not_object[special].tolist(),
                                  strict=True):
            if odd:
                out[j] = self.not_object
                continue
            repeats: list[FieldError] = []
            extras: list[FieldError] = []
            for kind, a, b in events[lo:hi]:
                if kind == EVENT_REPEAT:
                    repeats.append(self.repeats[a])
                else:
                    extras.append(extra_field(body[a:a + b].decode()))
            _, head, tail = parts[which[j]]
            out[j] = (repeats + head + extras + tail)[:MAX_ERRORS_PER_RECORD]
        return out

    def _row(self, row: bytes) -> tuple[list[FieldError], list[FieldError], list[FieldError]]:
        """A status row's errors: (all of them, capped; the envelope's; the declared
        fields')."""
        table = self.table
        errs = [table[k][s] for k, s in enumerate(row) if s]
        head = [table[k][s] for k, s in enumerate(row[:self.envelope]) if s]
        tail = errs[len(head):]
        return errs[:MAX_ERRORS_PER_RECORD], head, tail  # type: ignore[return-value]


def _event_starts(scan: Scan, at: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
    """Where the events of the records ``at`` start."""
    before = scan.event_ends[np.maximum(at - 1, 0)]
    before[at == 0] = 0
    return before


def exact_errors(scanner: Scanner, envelope: int, check: Callable[..., list[FieldError]],
                 ) -> ExactErrors | None:
    """The :class:`ExactErrors` of ``scanner``'s definition, whose precise record check is
    ``check`` (``envelope``: how many of the scanner's first fields are the Loguro
    envelope's): each field's errors are what ``check`` says of a valid record with that
    one field missing, of a wrong type, and so on. None when that does not give one error
    each (two names alike in their first 200 characters)."""
    names = scanner.field_names
    kinds = scanner.kinds.tolist()
    required = scanner.required
    valid = {name: {} if kind == KIND_CONTEXT else _VALID[kind]
             for name, kind in zip(names, kinds, strict=True)}
    if check(valid):  # pragma: no cover - every value above is valid for its kind
        return None
    try:
        table: list[tuple[FieldError | None, ...]] = []
        repeats: list[FieldError] = []
        for k, name in enumerate(names):
            shown = clip(name)
            row: list[FieldError | None] = [None] * STATUSES
            if (required >> k) & 1:
                row[MISSING] = _one(check({n: x for n, x in valid.items() if n != name}),
                                    shown)
            row[WRONG_TYPE] = _one(check({**valid, name: []}), shown)
            if kinds[k] == KIND_TIMESTAMP:
                row[BAD_TIMESTAMP] = _one(check({**valid, name: "x"}), shown)
            if kinds[k] in (KIND_NUMBER, KIND_INTEGER):
                row[TOO_LARGE] = _one(check({**valid, name: 2**63}), shown)
            table.append(tuple(row))
            repeats.append(_one(check(pairs_hook([*valid.items(), (name, valid[name])])),
                                shown, DUPLICATE_FIELD))
        not_object = check(0)
    except _NotExact:
        return None
    if len(not_object) != 1:  # pragma: no cover - the checker's rule for a non-object
        return None
    return ExactErrors(len(names), envelope, table, repeats, not_object[0])


def _encodable(name: str) -> bool:
    """Whether ``name`` has a UTF-8 form (no lone surrogate)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def build_scanner(fields: dict[str, dict[str, Any]], loguro: bool = True) -> Scanner | None:
    """The scanner of a normalized definition's record ``fields`` (see
    :func:`validator.definition.record_fields`; ``loguro``: records also carry
    ``timestamp`` and ``context``), or None when a field needs more than the scanner checks
    (bounds, patterns, enums, formats but date-time, arrays, objects): such definitions
    take the msgspec and precise paths."""
    if len(fields) + 2 > MAX_FIELDS:
        return None
    names = ["timestamp", "context"] if loguro else []
    kinds = [KIND_TIMESTAMP, KIND_CONTEXT] if loguro else []
    flags = [0, 0] if loguro else []
    required = [True, True] if loguro else []
    for name, decl in fields.items():
        if not _encodable(name):
            return None
        # A name JSON must escape never matches a raw key: its records are doubtful.
        extra = set(decl) - _PLAIN_KEYS
        if extra - {"format"} or decl.get("format", "date-time") != "date-time":
            return None
        scalar = scalar_type(decl)
        if scalar is None:
            return None
        kind = _KINDS[scalar[0]]
        nullable = scalar[1]
        if "format" in decl:
            if kind != KIND_STRING:
                return None
            kind = KIND_TIMESTAMP
        names.append(name)
        kinds.append(kind)
        flags.append(NULLABLE if nullable else 0)
        required.append(decl.get("required") is not False)
    return Scanner(names, kinds, flags, required)


def _warm() -> None:
    """Compile the scanner (or load it from numba's cache, next to this file) at import,
    so that no request waits for it."""
    Scanner(["timestamp", "context"], [KIND_TIMESTAMP, KIND_CONTEXT], [0, 0],
            [True, True]).scan(b'[{"timestamp":"2026-01-01T00:00:00Z","context":'
                               b'{"a":[1,-1.5e3,null,true,"\\u00e9"]}}]', 1)


_warm()

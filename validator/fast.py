"""The all-valid fast path: one msgspec decode of the whole batch into typed Structs.

A definition whose every field msgspec can check exactly (scalar types, nullable, optional,
length and numeric bounds) or in bulk after it (patterns) gets a Struct type; the whole body
is decoded as ``list[Struct]`` in C. What msgspec does not check is checked after, in bulk:

* patterns run on RE2 (:mod:`validator.ecma_regex`), never on msgspec's own ``pattern``,
  which is Python's backtracking ``re``;
* timestamps are decoded as ``str`` (msgspec's own datetime parser accepts ``+0200`` and a
  space separator): their digit shapes are checked once per distinct shape, then msgspec
  decodes them all as aware datetimes in one call, which checks the calendar. On the
  precise path (``failing_times``) the few values of another shape than the usual one are
  located with a replace and a split (``_odd_shapes``), and a run of one shape in which
  msgspec finds a bad date is checked whole in numpy (:mod:`validator.stamps`) instead of
  resuming msgspec after every bad value;
* duplicate keys (msgspec keeps the last one silently) are found by counting ``"``: with no
  backslash in the body every string adds exactly two quotes, so the body has as many quotes
  as the decoded records re-encoded only if no key was repeated.

Any doubt sends the body to the precise path, which is always right; the fast path only has
to never accept what the precise path rejects. On that path the same checks run per record
position (``failing_times``, ``duplicate_suspects``; with flat contexts the quote counts of
every record and the expected ones are compared in numpy) so that only the records they
fail are checked one by one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import accumulate, repeat
from operator import attrgetter, ne
from typing import Annotated, Any, Literal, NewType, Union

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import UNSET, Meta, UnsetType

from validator.checker import MAX_STRING
from validator.definition import INT64_MAX, INT64_MIN, scalar_type
from validator.ecma_regex import EcmaPattern, compile_pattern
from validator.formats import is_date_time
from validator.quotes import part_quotes
from validator.stamps import MIN_VALUES, calendar_failures
from validator.stamps import SHAPE_RE as _SHAPE_RE
from validator.stamps import SHAPE_TABLE as _SHAPE_TABLE

Str = Annotated[str, Meta(max_length=MAX_STRING)]
Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
FLOAT_MAX = 1.7976931348623157e308
Float = Annotated[float, Meta(ge=-FLOAT_MAX, le=FLOAT_MAX)]
# msgspec expands a type per use, so a depth-limited JSON type costs 2**depth: context is
# typed this deep on the fast path, deeper contexts take the precise path.
CONTEXT_FAST_DEPTH = 6


# Built at run time, so typed as Any; a NewType per level keeps typing's hashing linear.
_new_type: Any = NewType
_union: Any = Union
_list: Any = list
_dict: Any = dict
_literal: Any = Literal


def _json_type(depth: int) -> Any:
    t = _new_type("Json0", _union[Str, Int64, Float, bool, None])
    for k in range(depth):
        t = _new_type(f"Json{k + 1}", _union[Str, Int64, Float, bool, _list[t],
                                             _dict[Str, t], None])
    return t


Context: Any = dict[Str, _json_type(CONTEXT_FAST_DEPTH)]  # type: ignore[misc]
FlatContext: Any = dict[Str, Str]
AwareDateTimes = msgspec.json.Decoder(list[Annotated[datetime, Meta(tz=True)]])
_ENCODER = msgspec.json.Encoder()
# The element a msgspec ValidationError names, in a list we encoded ourselves.
_AT_INDEX = re.compile(r" - at `\$\[([0-9]+)\]`\Z")
# Records per quote count in FastPath.duplicate_suspects.
_CHUNK = 16
_GOOD_TIMESTAMP = "2000-01-01T00:00:00Z"
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                  RecursionError, ValueError)
_ALLOWED = {"type", "description", "required", "minLength", "maxLength", "pattern",
            "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "format"}


def decode_each(decode: Callable[[Any], Any], items: list[Any]) -> tuple[list[Any], list[int]]:
    """``decode`` each item: (the results of those that decoded, in order; the indices of
    those that raised). The loop runs in C (``list.extend`` over ``map``): an exception
    stops it after the items before it were kept, and the shared iterator resumes after the
    failing item, so Python only runs once per failure."""
    it = iter(items)
    out: list[Any] = []
    bad: list[int] = []
    while True:
        try:
            out.extend(map(decode, it))
            break
        except _DECODE_ERRORS:
            bad.append(len(out) + len(bad))
    if len(out) + len(bad) != len(items):  # pragma: no cover - CPython keeps partial extends
        out, bad = [], []
        for i, item in enumerate(items):
            try:
                out.append(decode(item))
            except _DECODE_ERRORS:
                bad.append(i)
    return out, bad


def _true_positions(flags: list[bool]) -> list[int]:
    """Indices of the true items of ``flags`` (a scan in C per hit)."""
    out: list[int] = []
    if True in flags:
        i = flags.index(True)
        while True:
            out.append(i)
            try:
                i = flags.index(True, i + 1)
            except ValueError:
                break
    return out


def _positions(items: list[bytes], wanted: set[bytes]) -> list[int]:
    """Sorted positions of the ``items`` in ``wanted`` (a few: one C scan each)."""
    if len(wanted) > 4:
        return _true_positions(list(map(wanted.__contains__, items)))
    out: list[int] = []
    for w in wanted:
        i = -1
        try:
            while True:
                i = items.index(w, i + 1)
                out.append(i)
        except ValueError:
            pass
    return sorted(out)


def _calendar_failures(values: list[str], encoded: bytes,
                       uniform: Sequence[tuple[int, int, bytes, bytes]] = ()) -> list[int]:
    """Positions of ``values`` (``encoded``: their JSON array, each value plain ASCII with
    nothing escaped) that msgspec does not decode as an aware datetime. One bulk decode;
    after a failure at element k the decode resumes at k + 1 on the same buffer (the comma
    before it becomes ``[``). ``uniform``: runs of values of one timestamp shape (start,
    end, their JSON array, the shape): a failure in one has the whole run checked in numpy
    (:func:`validator.stamps.calendar_failures`, no cost per bad value) and the decode
    resume after it."""
    try:
        AwareDateTimes.decode(encoded)
        return []
    except msgspec.ValidationError as exc:
        error = str(exc)
    buf = bytearray(encoded)
    bad: list[int] = []
    base = 0
    pos = 0  # of the '[' before element ``base``
    with memoryview(buf) as view:
        while True:
            m = _AT_INDEX.search(error)
            k = base + int(m.group(1)) if m else -1
            if not base <= k < len(values):
                # Unexpected message: check the rest one value at a time.
                return bad + [base + j for j, v in enumerate(values[base:])
                              if not is_date_time(v)]
            run = next((r for r in uniform if r[0] <= k < r[1]), None)
            if run is None:
                bad.append(k)
                end = k + 1
            else:
                start, end, run_encoded, shape = run
                bad.extend(start + j for j in calendar_failures(run_encoded, end - start,
                                                                shape) if start + j >= k)
            # Element j takes len + 2 bytes and a comma.
            pos += sum(map(len, values[base:end])) + 3 * (end - base)
            base = end
            if base >= len(values):
                break
            buf[pos] = 0x5B  # '['
            try:
                AwareDateTimes.decode(view[pos:])
                break
            except msgspec.ValidationError as exc:
                error = str(exc)
    return bad


def _uniform_shape(translated: bytes, n: int) -> bytes | None:
    """The timestamp shape ``translated`` (the JSON array of ``n`` strings, digits made
    ``9``) holds ``n`` times, if it does (one comparison instead of a split and a set)."""
    end = translated.find(b'"', 2)
    shape = translated[2:end]
    if end > 2 and _SHAPE_RE.match(shape) is not None and translated == (
            b'["' + (shape + b'","') * (n - 1) + shape + b'"]'):
        return shape
    return None


def _odd_shapes(translated: bytes, n: int) -> tuple[list[int], list[bytes]] | None:
    """The positions and shapes of the values whose shape is not the first value's, in
    ``translated`` (the JSON array of ``n`` strings, digits made ``9``, no backslash), or
    None when that cannot be told this way.

    Without a backslash every ``"`` is a value's delimiter, so removing each ``"<shape>"``
    removes whole values only and leaves the separating commas and the odd values: split on
    ``"``, the pieces alternate commas and odd values, and an odd value's position is the
    number of commas before it outside odd values (a comma inside one is not counted). A
    few C calls however many values share the usual shape, instead of a split and a set.
    """
    end = translated.find(b'"', 2)
    if end <= 2:
        return None
    shape = translated[1:end + 1]
    pieces = translated[1:-1].replace(shape, b"").split(b'"')
    at = 0
    positions: list[int] = []
    for commas in pieces[:-1:2]:
        at += len(commas)
        positions.append(at)
    # What the argument above guarantees, checked (cheap, and a wrong position would let
    # a bad value through).
    if len(pieces) % 2 == 0 or at + len(pieces[-1]) != n - 1 or b"".join(
            pieces[::2]).strip(b","):  # pragma: no cover
        return None
    return positions, pieces[1::2]


def _shape_failures(values: list[str]) -> list[int]:
    """Sorted positions of the ``values`` whose shape is not a timestamp's."""
    translated = _ENCODER.encode(values).translate(_SHAPE_TABLE)
    if _uniform_shape(translated, len(values)) is not None:
        return []
    return _odd_failures(translated, values)


def _odd_failures(translated: bytes, values: list[str]) -> list[int]:
    """:func:`_shape_failures` of ``values`` whose shapes are not all one timestamp shape
    (``translated``: their JSON array, digits made ``9``)."""
    end = translated.find(b'"', 2)
    if b"\\" not in translated and _SHAPE_RE.match(translated[2:end]):
        odd = _odd_shapes(translated, len(values))
        if odd is not None and len(odd[0]) * 4 <= len(values):
            return [j for j, s in zip(*odd, strict=True) if not _SHAPE_RE.match(s)]
    shapes = translated[2:-2].split(b'","')
    if len(shapes) != len(values):  # pragma: no cover - a value cannot hold '","' unescaped
        return [j for j, v in enumerate(values) if not is_date_time(v)]
    bad_shapes = {s for s in set(shapes) if not _SHAPE_RE.match(s)}
    return _positions(shapes, bad_shapes) if bad_shapes else []


def failing_times(values: list[str], groups: Sequence[int] = ()) -> list[int]:
    """Sorted positions of the ``values`` that may not be valid date-times: every value
    not listed passes :func:`validator.formats.is_date_time`, and every value
    :meth:`FastPath.timestamps_ok` would not accept is listed. ``groups``: the sizes of
    consecutive runs of values of one field (the rest of the values are one run): the
    values of one field are alike, their shapes are compared run by run (a run of one
    shape takes one comparison), then one msgspec decode checks the calendar."""
    if not values:
        return []
    dropped: list[int] = []
    parts: list[bytes] = []
    uniform: list[tuple[int, int, bytes, bytes]] = []
    lo = 0
    for size in [*groups, len(values) - sum(groups)]:
        if size <= 0:
            continue
        part = _ENCODER.encode(values[lo:lo + size])
        translated = part.translate(_SHAPE_TABLE)
        shape = _uniform_shape(translated, size)
        if shape is None:
            dropped.extend(lo + j for j in _odd_failures(translated, values[lo:lo + size]))
        elif size >= MIN_VALUES:
            uniform.append((lo, lo + size, part, shape))
        parts.append(part)
        lo += size
    encoded = parts[0] if len(parts) == 1 else b"[" + b",".join(
        [p[1:-1] for p in parts]) + b"]"
    if not dropped:  # then every value is plain ASCII
        return _calendar_failures(values, encoded, uniform)
    # The values of a bad shape are bad whatever msgspec makes of them.
    if b"\\" in encoded or not encoded.isascii():
        # Something escaped or not ASCII (so of a bad shape): stand-ins keep the offsets.
        values = values.copy()
        for d in dropped:
            values[d] = _GOOD_TIMESTAMP
        encoded = _ENCODER.encode(values)
    return sorted({*dropped, *_calendar_failures(values, encoded, uniform)})


def _representable(x: Any) -> bool:
    """A bound msgspec compares exactly as Python does: ints, and floats equal to an int or
    exactly a double."""
    return isinstance(x, int) or (isinstance(x, float) and math.isfinite(x))


def _int_meta(decl: dict[str, Any]) -> Meta | None:
    lo, hi = INT64_MIN, INT64_MAX
    if "minimum" in decl:
        lo = max(lo, math.ceil(decl["minimum"]))
    if "exclusiveMinimum" in decl:
        lo = max(lo, math.floor(decl["exclusiveMinimum"]) + 1)
    if "maximum" in decl:
        hi = min(hi, math.floor(decl["maximum"]))
    if "exclusiveMaximum" in decl:
        hi = min(hi, math.ceil(decl["exclusiveMaximum"]) - 1)
    if lo > hi:
        return None
    return Meta(ge=lo, le=hi)


def _float_meta(decl: dict[str, Any]) -> Meta | None:
    kw: dict[str, float] = {}
    for key, name in (("minimum", "ge"), ("maximum", "le"), ("exclusiveMinimum", "gt"),
                      ("exclusiveMaximum", "lt")):
        if key in decl:
            b = decl[key]
            if float(b) != b:  # an int a double cannot hold: compare exactly elsewhere
                return None
            kw[name] = float(b)
    kw.setdefault("ge", -FLOAT_MAX)
    kw.setdefault("le", FLOAT_MAX)
    if "gt" in kw:
        del kw["ge"]
    if "lt" in kw:
        del kw["le"]
    meta: Any = Meta
    return meta(**kw)  # type: ignore[no-any-return]


def _nullable(decl: dict[str, Any], kind: str) -> bool | None:
    """Whether ``decl`` is of type ``kind`` alone (False) or with ``"null"`` (True); None
    for any other type."""
    t = decl.get("type")
    kinds = [t] if isinstance(t, str) else list(t or [])
    if kinds in ([kind], [kind, "null"], ["null", kind]):
        return "null" in kinds
    return None


def _special_type(decl: dict[str, Any]) -> Any:
    """The msgspec type of a string enum (a ``Literal``) or an object of undeclared members
    only: free (``additionalProperties: true``, typed as ``context`` is) or of a plain
    declared type (``additionalProperties: {"type": "string"}``: a ``dict``); None for any
    other field. These decode exactly as the precise checker decides: the members' limits
    are those of :data:`Str`, ``Int64`` and ``Float``, a repeated key is caught by the
    quote count (:meth:`FastPath.no_duplicates`), a value of another shape fails the
    decode."""
    base: Any = None
    if "enum" in decl:
        nullable = _nullable(decl, "string")
        values = decl["enum"]
        if nullable is None or set(decl) - {"type", "description", "required", "enum"} or \
                not values or not all(type(v) is str and len(v) <= MAX_STRING for v in values):
            return None
        base = _literal[tuple(dict.fromkeys(values))]
    else:
        nullable = _nullable(decl, "object")
        additional = decl.get("additionalProperties")
        if nullable is None or set(decl) - {"type", "description", "required",
                                            "additionalProperties"}:
            return None
        if additional is True:
            base = Context
        elif isinstance(additional, dict) and not set(additional) & {"pattern", "format"}:
            member = _field_type({**additional, "required": True})
            if member is None or member[1]:  # timestamps are checked in bulk by field only
                return None
            base = _dict[Str, member[0]]
        else:
            return None
    return Union[base, None] if nullable else base  # noqa: UP007


def _field_type(decl: dict[str, Any]) -> tuple[Any, bool] | None:
    """(msgspec type, is a timestamp) of a field, or None when msgspec cannot check it
    exactly."""
    if "enum" in decl or "additionalProperties" in decl:
        special = _special_type(decl)
        return None if special is None else (special, False)
    if set(decl) - _ALLOWED:
        return None
    scalar = scalar_type(decl)
    if scalar is None:
        return None
    kind, nullable = scalar
    fmt = decl.get("format")
    timestamp = kind == "timestamp" or fmt == "date-time"
    if fmt is not None and fmt != "date-time":
        return None
    base: Any
    if kind in ("string", "timestamp"):
        str_kw: dict[str, Any] = {"max_length": min(decl.get("maxLength", MAX_STRING),
                                                     MAX_STRING)}
        if "minLength" in decl:
            str_kw["min_length"] = decl["minLength"]
        base = Annotated[str, Meta(**str_kw)]
    elif kind == "boolean":
        base = bool
    else:
        bounds = [decl[k] for k in ("minimum", "maximum", "exclusiveMinimum",
                                    "exclusiveMaximum") if k in decl]
        if not all(_representable(b) for b in bounds):
            return None
        im = _int_meta(decl)
        if im is None:
            return None
        if kind == "integer":
            base = Annotated[int, im]
        else:
            fm = _float_meta(decl)
            if fm is None:
                return None
            base = Union[Annotated[int, im], Annotated[float, fm]]  # noqa: UP007
    if nullable:
        base = Union[base, None]  # noqa: UP007
    return base, timestamp


class FastPath:
    """A definition's typed batch decoder and the bulk checks that complete it."""

    def __init__(self, struct: type[msgspec.Struct], flat_struct: type[msgspec.Struct],
                 timestamp_attrs: list[str], timestamp_names: list[str],
                 optional_timestamps: bool, fixed_quotes: int | None,
                 patterns: list[tuple[str, EcmaPattern]], has_context: bool = True) -> None:
        self.struct = struct
        self.batch = msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
        self.one = msgspec.json.Decoder(struct)
        # The same record with a flat context (string values only), the usual shape: it
        # decodes faster, and its quotes can be predicted from the context's size.
        self.one_flat = msgspec.json.Decoder(flat_struct)
        self.getters = [attrgetter(a) for a in timestamp_attrs]
        self.timestamp_names = timestamp_names
        self.optional_timestamps = optional_timestamps
        # Quotes each record adds besides its context when no field is optional or nullable.
        self.fixed_quotes = fixed_quotes
        # Records without the Loguro envelope have no context: every record's is empty, so
        # the quote counts below need no case of their own.
        self.has_context = has_context
        self.context: Callable[[Any], Any] = attrgetter("c") if has_context else _no_context
        # (getter, compiled pattern) of each field with a pattern, checked after the decode
        self.patterns = [(attrgetter(a), p) for a, p in patterns]

    def pattern_failures(self, records: list[Any]) -> list[int]:
        """Sorted positions of the typed ``records`` with a string that does not match its
        field's pattern (absent and null values have nothing to match)."""
        bad: set[int] = set()
        for get, pattern in self.patterns:
            search = pattern.search
            bad.update(j for j, v in enumerate(map(get, records))
                       if type(v) is str and not search(v))
        return sorted(bad)

    def timestamps_ok(self, records: list[Any]) -> bool:
        """Every timestamp of ``records`` is a strict RFC 3339 date-time (leap seconds are
        left to the precise path). Field by field: the values of one field mostly share
        one shape, which one comparison then confirms."""
        for get in self.getters:
            values: list[Any] = list(map(get, records))
            if self.optional_timestamps:
                values = [v for v in values if type(v) is str]
            if not values:
                continue
            encoded = _ENCODER.encode(values)
            translated = encoded.translate(_SHAPE_TABLE)
            if _uniform_shape(translated, len(values)) is None:
                # One shape per distinct digit pattern: '9999-99-99T99:99:99Z' and the like.
                shapes = set(translated[2:-2].split(b'","'))
                if not all(_SHAPE_RE.match(s) for s in shapes):
                    return False
            try:
                AwareDateTimes.decode(encoded)
            except msgspec.ValidationError:
                return False
        return True

    def timestamp_values(self, records: list[Any]) -> list[str]:
        """The timestamps of typed ``records``, field by field: value ``j`` is of record
        ``j % len(records)`` (absent or null ones stand in as a valid timestamp)."""
        values: list[Any] = []
        for get in self.getters:
            values.extend(map(get, records))
        if self.optional_timestamps:
            values = [v if type(v) is str else _GOOD_TIMESTAMP for v in values]
        return values

    def dict_timestamp_values(self, records: list[Any]) -> list[str]:
        """The string timestamps of decoded (dict) ``records``."""
        return [v for field in self.dict_timestamp_fields(records) for v in field]

    def dict_timestamp_fields(self, records: list[Any]) -> list[list[str]]:
        """The string timestamps of decoded (dict) ``records``, one list per timestamp
        field (values of one field share a shape: see :func:`failing_times`)."""
        dicts = [r for r in records if type(r) is dict]
        return [[v for r in dicts if type(v := r.get(name)) is str]
                for name in self.timestamp_names]

    def valid_times(self, records: list[Any]) -> set[str]:
        """The timestamp values of decoded (dict) ``records`` that :meth:`timestamps_ok`
        accepts: known valid, the precise checker need not look at them again."""
        values = self.dict_timestamp_values(records)
        bad = {values[j] for j in failing_times(values)}
        return {v for v in values if v not in bad}

    def decode_records(self, raws: list[Any]) -> tuple[list[Any], list[int], bool]:
        """Each raw record through the typed decoder: (the records that decoded, in order;
        the positions of those that did not; whether the flat-context decoder was used, so
        every decoded record's context holds strings only). A record that fails only for
        a nested context counts as not decoded; when many do, every record is decoded
        with the general decoder instead."""
        one = self.one.decode
        if self.fixed_quotes is not None and not self.has_context:
            good, bad = decode_each(one, raws)
            return good, bad, True
        if self.fixed_quotes is not None and self._flat_contexts(raws):
            good, bad = decode_each(self.one_flat.decode, raws)
            if len(bad) * 4 <= len(raws) or not decode_each(one, [raws[i] for i in bad])[0]:
                return good, bad, True
        good, bad = decode_each(one, raws)
        return good, bad, False

    def _flat_contexts(self, raws: list[Any]) -> bool:
        """Whether the first record the general decoder accepts has a flat context (then
        most records of the batch likely have one)."""
        for raw in raws[:8]:
            try:
                self.one.decode(raw)
            except _DECODE_ERRORS:
                continue
            try:
                self.one_flat.decode(raw)
            except _DECODE_ERRORS:
                return False
            return True
        return False

    def flat_duplicate_suspects(self, raws: list[Any], good_at: npt.NDArray[np.intp],
                                records: list[Any]) -> list[int]:
        """:meth:`duplicate_suspects` of the records ``raws[good_at[j]]``, decoded with flat
        contexts as ``records[j]``: a flat context of k keys re-encodes with 4k quotes, so
        each record's quotes are known without encoding anything; raw quotes are counted
        per record in numpy (over all ``raws``: one join, no list of the good ones), and
        compared there."""
        joined = b"".join(raws)
        fixed = self.fixed_quotes
        if b"\\" in joined or fixed is None:
            return self._duplicate_suspects_each([raws[i] for i in good_at.tolist()], records)
        raw = part_quotes(raws, joined)[good_at]
        want = np.fromiter(map(len, map(self.context, records)), np.intp, len(records))
        want *= 4
        want += fixed
        suspects: list[int] = np.flatnonzero(raw != want).tolist()
        return suspects

    def duplicate_suspects(self, raws: list[Any], records: list[Any]) -> list[int]:
        """Positions of the records whose raw JSON (``raws``, aligned with ``records``) may
        repeat a key: the quote count of :meth:`no_duplicates`, per chunk of records and
        then per record in the chunks that do not add up."""
        joined = b"".join(raws)
        fixed = self.fixed_quotes
        if b"\\" in joined or fixed is None:
            return self._duplicate_suspects_each(raws, records)
        ends = [0, *accumulate(map(len, raws))]
        contexts = list(map(self.context, records))
        count = joined.count
        encode = _ENCODER.encode

        def excess(a: int, b: int) -> int:
            # Quotes of records a..b-1 beyond those of their decoded values: never
            # negative, zero unless one of them repeats a key.
            return count(b'"', ends[a], ends[b]) - fixed * (b - a) - encode(
                contexts[a:b]).count(b'"')

        n = len(records)
        pending = [(a, b, d) for a in range(0, n, _CHUNK)
                   for b in (min(a + _CHUNK, n),) for d in (excess(a, b),) if d]
        suspects: list[int] = []
        while pending:  # halve each range that does not add up (the right half by difference)
            a, b, d = pending.pop()
            if b - a == 1:
                suspects.append(a)
                continue
            m = (a + b) // 2
            left = excess(a, m)
            if left:
                pending.append((a, m, left))
            if d - left:
                pending.append((m, b, d - left))
        return sorted(suspects)

    def _duplicate_suspects_each(self, raws: list[Any], records: list[Any]) -> list[int]:
        blobs = list(map(bytes, raws))
        raw_quotes = list(map(bytes.count, blobs, repeat(b'"')))
        fixed = self.fixed_quotes
        encoder: Iterable[bytes]
        if fixed is not None:
            encoder = map(_ENCODER.encode, map(self.context, records))
            want = [fixed + q for q in map(bytes.count, encoder, repeat(b'"'))]
        else:
            encoder = map(_ENCODER.encode, records)
            want = list(map(bytes.count, encoder, repeat(b'"')))
        suspects = set(_true_positions(list(map(ne, raw_quotes, want))))
        if b"\\" in b"".join(blobs):
            # A backslash: ``\\u0022`` hides a quote, and escaped quotes in fields are not in
            # ``fixed_quotes``: such records are counted against their full re-encoding.
            for j, blob in enumerate(blobs):
                if b"\\" in blob:
                    if b"\\u0022" not in blob and raw_quotes[j] == _ENCODER.encode(
                            records[j]).count(b'"'):
                        suspects.discard(j)
                    else:
                        suspects.add(j)
        return sorted(suspects)

    def no_duplicates(self, body: bytes, records: list[Any]) -> bool:
        """No object in ``body`` repeats a key (see the module docstring)."""
        raw_quotes = body.count(b'"')
        if b"\\" not in body and self.fixed_quotes is not None:
            contexts = _ENCODER.encode(list(map(self.context, records)))
            return raw_quotes == self.fixed_quotes * len(records) + contexts.count(b'"')
        if b"\\u0022" in body:
            return False
        return raw_quotes == _ENCODER.encode(records).count(b'"')


def _no_context(record: Any) -> tuple[()]:
    """The context of a record without the Loguro envelope: nothing."""
    return ()


def build(fields: dict[str, dict[str, Any]], loguro: bool = True) -> FastPath | None:
    """The fast path of a normalized definition's record ``fields`` (see
    :func:`validator.definition.record_fields`; ``loguro``: records also carry
    ``timestamp`` and ``context``), or None if it has none."""
    spec: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    timestamp_attrs: list[str] = []
    fixed: int | None = 0
    if loguro:
        spec = [("t", Str, msgspec.NODEFAULT), ("c", Context, msgspec.NODEFAULT)]
        rename = {"t": "timestamp", "c": "context"}
        timestamp_attrs = ["t"]
        fixed = 2 * 2 + 2  # keys timestamp, context; the timestamp's value
    patterns: list[tuple[str, EcmaPattern]] = []
    optional_ts = False
    for i, (name, decl) in enumerate(fields.items()):
        typed = _field_type(decl)
        if typed is None:
            return None
        tp, is_ts = typed
        attr = f"f{i}"
        rename[attr] = name
        if "pattern" in decl:
            patterns.append((attr, compile_pattern(decl["pattern"])))
        nullable = "null" in (decl["type"] if isinstance(decl["type"], list) else [])
        if decl["required"] is not False:
            spec.append((attr, tp, msgspec.NODEFAULT))
        else:
            spec.append((attr, Union[tp, UnsetType], UNSET))  # noqa: UP007
        if is_ts:
            timestamp_attrs.append(attr)
            optional_ts = optional_ts or nullable or decl["required"] is False
        if fixed is not None:
            if nullable or decl["required"] is False:
                fixed = None
            elif "additionalProperties" in decl:
                fixed = None  # an object: its members' quotes vary
            else:
                kinds = decl["type"] if isinstance(decl["type"], list) else [decl["type"]]
                fixed += 2 + (2 if kinds[0] in ("string", "timestamp") else 0)
    fields_spec = [(a, t) if d is msgspec.NODEFAULT else (a, t, d) for a, t, d in spec]
    flat_spec = [(a, FlatContext, *rest) if a == "c" else (a, t, *rest)
                 for a, t, *rest in fields_spec]
    try:
        struct = msgspec.defstruct("Record", fields_spec, rename=rename,
                                   forbid_unknown_fields=True, gc=False, kw_only=True)
        flat = msgspec.defstruct("FlatRecord", flat_spec, rename=rename,
                                 forbid_unknown_fields=True, gc=False, kw_only=True)
    except (ValueError, UnicodeEncodeError):
        # msgspec refuses field names with '"', '\\', control characters or lone
        # surrogates: such definitions take the precise path.
        return None
    return FastPath(struct, flat, timestamp_attrs, [rename[a] for a in timestamp_attrs],
                    optional_ts, fixed, patterns, loguro)

"""``compile_dataset``: a definition in, a :class:`CompiledDataset` out.

``validate_batch`` is the service's hot path. For a definition of plain scalar fields (the
seed's form) the record scanner (:mod:`validator.scan`, machine code) reads the whole body
once and names the records that may be invalid; only those are parsed and checked by the
precise checker, so a valid record never becomes a Python object. A body the scanner cannot
read, and every body of a richer definition, first tries the fast path (one typed msgspec
decode of the whole body plus bulk checks, see :mod:`validator.fast`). If that fails for
any reason, the precise path finds out exactly what is wrong: body-level problems raise
:class:`BodyError`; otherwise the body is split into raw records, each is tried on the typed
single-record decoder (in one C loop, see :func:`validator.fast.decode_each`), the bulk
checks run on the records that pass and name the ones they fail, and only the records that
failed something are parsed and checked field by field: valid records never reach the
precise checker.

Invalid records mostly do not either: of the records the scanner doubts, those it could
describe exactly get the checker's errors from that description
(:class:`validator.scan.ExactErrors`), without a parse. Only a bounded number of errors is
listed (:data:`MAX_BATCH_ERRORS`, what a 400 shows); past it a described record costs a
count, not a list. ``validate_batch(..., all_errors=True)`` also keeps every failing
record's errors, for a policy that sets the invalid records aside
(:meth:`BatchResult.failures`) and admits the valid ones
(:meth:`BatchResult.valid_payload`).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

import msgspec
import numpy as np
from msgspec import to_builtins

from validator import errors as E
from validator.checker import MAX_ERRORS_PER_RECORD, compile_record, pairs_hook
from validator.definition import (
    DEFAULT_ENVELOPE,
    envelope_of,
    normalize,
    record_fields,
    record_schema,
)
from validator.errors import BodyError, FieldError, RecordError
from validator.fast import FastPath, build, failing_times

# The record scanner needs numba, whose LLVM costs a process about 110 MB of memory:
# STRICTGATE_SCANNER=0 leaves it out (every body then takes the msgspec and precise paths).
SCANNER_ENABLED = os.environ.get("STRICTGATE_SCANNER", "").strip().lower() not in (
    "0", "false", "no", "off")
if SCANNER_ENABLED:
    from validator.scan import ExactErrors, Scan, Scanner, build_scanner, exact_errors

# At most this many record errors are listed in a BatchResult (error_count, failed_records
# and error_codes count them all): what a 400 answer shows
# (strictgate.ingest.answers.MAX_ERRORS_PER_RESPONSE). Listing more only cost time: a body
# of 1000 failing records spent more on the list than on finding the errors.
MAX_BATCH_ERRORS = 100
DEFAULT_MAX_RECORDS = 1000
# Below this many records the scanner described, checking them is cheaper than the numpy
# calls that turn descriptions into errors (about 0.1 ms whatever their number).
MIN_DESCRIBED = 24
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
# Records with at most this many '[' and '{' cannot reach Python's recursion limit.
_SHALLOW = 64
_WS = b" \t\r\n"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                  RecursionError, ValueError)

EMPTY_BATCH = "Batch body must be a non-empty array"
NOT_OBJECT = "Payload must be an object"


class RecordFailure(NamedTuple):
    """A failing record of a batch: its ``index``, the ``record`` as sent (its bytes in the
    body) and its ``errors`` (at most 20)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the API name
    record: bytes
    errors: list[FieldError]


# The bytes of the records at some indices of a body, as sent.
RawRecords = Callable[[list[int]], list[bytes]]


@dataclass
class BatchResult:
    """The verdict on one body.

    ``count``: records in the body. ``ok``: all valid. ``errors``: every error of every
    failing record (at most 20 per record), in record order, capped at
    :data:`MAX_BATCH_ERRORS`; ``error_count``: how many there were before that cap;
    ``error_codes``: how many of each code (they add up to ``error_count``);
    ``failed_records``: how many records failed. ``payload``: the records as one compact
    JSON array (the body with its line breaks removed: each record is one line), only
    meaningful when ``ok``. ``complete`` (``validate_batch(..., all_errors=True)``):
    :meth:`failures` has every failing record with all its errors.
    """

    count: int
    errors: list[RecordError] = field(default_factory=list)
    error_count: int = 0
    failed_records: int = 0
    payload: bytes = b"[]"
    complete: bool = False
    error_codes: dict[str, int] = field(default_factory=dict)
    # With complete: each failing record's index and errors, in order (lists shared
    # between records: read-only).
    failed: list[tuple[int, list[FieldError]]] = field(default_factory=list, repr=False)
    raw: RawRecords | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """No record failed."""
        return self.error_count == 0

    def failures(self) -> list[RecordFailure]:
        """Every failing record, in order: what a quarantine keeps. Needs a ``complete``
        result (else only the records the capped ``errors`` reach would be known)."""
        if not self.complete:
            raise ValueError("failures() needs validate_batch(..., all_errors=True)")
        if not self.failed:
            return []
        assert self.raw is not None
        records = self.raw([k for k, _ in self.failed])
        new = tuple.__new__
        return [new(RecordFailure, (k, record, errs))
                for (k, errs), record in zip(self.failed, records, strict=True)]

    def valid_payload(self) -> tuple[int, bytes]:
        """The valid records: how many, and them as one compact JSON array (each record one
        line, as ``payload``): what a quarantine admits. Needs a ``complete`` result."""
        if not self.complete:
            raise ValueError("valid_payload() needs validate_batch(..., all_errors=True)")
        if not self.failed:
            return self.count, self.payload
        assert self.raw is not None
        failed = {k for k, _ in self.failed}
        kept = self.raw([k for k in range(self.count) if k not in failed])
        return len(kept), _compact(b"[" + b",".join(kept) + b"]")

    @property
    def records(self) -> list[Any]:
        """The decoded records (decoded on demand: the hot path never needs them)."""
        out: list[Any] = _ANY.decode(self.payload)
        return out


def _compact(body: bytes) -> bytes:
    # Raw line breaks can only be whitespace between tokens in valid JSON (inside strings
    # they must be escaped), so dropping them keeps the meaning and makes each record one
    # line for the JSON Lines sink.
    if b"\n" in body or b"\r" in body:
        return body.translate(None, b"\r\n")
    return body


def _parse_precise(raw: bytes) -> Any:
    """A record with Python's parser: repeated keys remembered, big ints and 1e999 kept
    (so the checker can name the field), NaN/Infinity refused."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs_hook,
                          parse_constant=refuse)
    except RecursionError:
        raise BodyError("too_deep", "JSON body nested too deeply", 400,
                        "nesting exceeds the parser's limit") from None
    except UnicodeDecodeError as exc:
        raise E.invalid_json("invalid_utf8", str(exc)) from None
    except ValueError as exc:
        raise E.invalid_json("invalid_json", str(exc)) from None


def _parse_precise_all(blobs: list[bytes]) -> list[Any]:
    """:func:`_parse_precise` of each of ``blobs`` (JSON values), in one call when that
    raises nothing (else one by one, for the same error)."""
    if len(blobs) > 1:
        def refuse(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")
        try:
            values = json.loads((b"[" + b",".join(blobs) + b"]").decode("utf-8"),
                                object_pairs_hook=pairs_hook, parse_constant=refuse)
        except (RecursionError, ValueError):
            pass
        else:
            if type(values) is list and len(values) == len(blobs):
                return values
    return [_parse_precise(blob) for blob in blobs]


def _parse(raw: bytes) -> Any:
    """:func:`_parse_precise`'s value, from msgspec when that is sure to be the same: no
    backslash (so no escapes, lone surrogates or hidden quotes), shallow, and as many
    quotes in ``raw`` as in the value re-encoded (a repeated key would lose its quotes).
    msgspec refuses what Python's parser accepts differently (NaN, 1e999): those and all
    other records take the precise parser."""
    if b"\\" not in raw and raw.count(b"[") + raw.count(b"{") <= _SHALLOW:
        try:
            value = _ANY.decode(raw)
            same = raw.count(b'"') == _ENCODER.encode(value).count(b'"')
        except (*_DECODE_ERRORS, msgspec.EncodeError, TypeError, OverflowError):
            same = False
        if same:
            return value
    return _parse_precise(raw)


def _parse_all(blobs: list[bytes]) -> list[Any]:
    """:func:`_parse` of each of ``blobs`` (JSON values), in one msgspec call when the same
    conditions hold for all of them: per record, re-encoding never adds quotes, so equal
    totals mean equal counts record by record."""
    if len(blobs) > 1:
        joined = b"[" + b",".join(blobs) + b"]"
        # Each record's '[' and '{' are at most the most '[' of one plus the most '{'.
        if b"\\" not in joined and max(map(bytes.count, blobs, repeat(b"["))) + max(
                map(bytes.count, blobs, repeat(b"{"))) <= _SHALLOW:
            try:
                values: list[Any] = _ANY.decode(joined)
                same = joined.count(b'"') == _ENCODER.encode(values).count(b'"')
            except (*_DECODE_ERRORS, msgspec.EncodeError, TypeError, OverflowError):
                same = False
            if same and len(values) == len(blobs):
                return values
    return [_parse(blob) for blob in blobs]


def _decode_all(blobs: list[bytes]) -> list[Any]:
    """JSON values the scanner read and found plain (no repeated or escaped key, no
    number out of range, not deep), decoded by msgspec in one call: for them it gives what
    :func:`_parse_precise` gives."""
    if not blobs:
        return []
    try:
        values: list[Any] = _ANY.decode(b"[" + b",".join(blobs) + b"]")
    except _DECODE_ERRORS:  # pragma: no cover - the scanner read them; never a 500 anyway
        return [_parse(blob) for blob in blobs]
    return values


def _listing(failed: list[tuple[int, list[FieldError]]]) -> list[RecordError]:
    """The errors of the ``failed`` records (index, errors) as one list, cut at
    :data:`MAX_BATCH_ERRORS`."""
    # tuple.__new__ makes a NamedTuple without its Python-level __new__ or _make.
    new = tuple.__new__
    errors: list[RecordError] = []
    append = errors.append
    for index, errs in failed:
        if len(errors) >= MAX_BATCH_ERRORS:
            break
        if len(errs) == 1:  # the usual case
            append(new(RecordError, (index, *errs[0])))
        else:
            errors.extend([new(RecordError, (index, *e)) for e in errs])
    # The records' errors were added whole: cut at the cap.
    del errors[MAX_BATCH_ERRORS:]
    return errors


def _body_error(body: bytes, exc: BaseException) -> BodyError:
    """Name what is wrong with a body msgspec could not even split into elements."""
    if isinstance(exc, RecursionError):
        return BodyError("too_deep", "JSON body nested too deeply", 400,
                         "nesting exceeds the parser's limit")
    if isinstance(exc, UnicodeDecodeError):
        return E.invalid_json("invalid_utf8", str(exc))
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.loads(body)
        except (ValueError, RecursionError):
            pass
        else:
            return E.invalid_json("lone_surrogate", "a \\u escape is an unpaired surrogate")
    return E.invalid_json("invalid_json", str(exc))


class CompiledDataset:
    """A compiled dataset definition: ``validate`` one decoded record, or validate a whole
    request body with ``validate_batch`` / ``validate_one``."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition: dict[str, Any] = normalize(definition)
        self.json_schema: dict[str, Any] = record_schema(self.definition)
        self.envelope: str = envelope_of(self.definition)
        """``loguro``, ``none`` or ``event`` (see :mod:`validator.definition`): the caller
        completes the valid records of an ``event`` dataset with their ids and timestamps
        (:func:`strictgate.ingest.event_records.complete_events`)."""
        fields = record_fields(self.definition)
        loguro = self.envelope == DEFAULT_ENVELOPE
        self._check = compile_record(fields, loguro)
        self._fast: FastPath | None = build(fields, loguro)
        self._scanner: Scanner | None = build_scanner(
            fields, loguro) if SCANNER_ENABLED else None
        self._exact: ExactErrors | None = exact_errors(
            self._scanner, 2 if loguro else 0, self._check) if self._scanner else None

    @property
    def has_fast_path(self) -> bool:
        """Whether whole batches can be decoded and checked in C."""
        return self._fast is not None

    def validate(self, record: object) -> list[FieldError]:
        """Every error of one decoded record (at most 20), the seed's message first; [] when
        valid."""
        return self._check(record)

    def validate_batch(self, body: bytes, *, max_records: int = DEFAULT_MAX_RECORDS,
                       all_errors: bool = False) -> BatchResult:
        """Parse a JSON array body and validate every record. Raises :class:`BodyError` for
        a body that is not a non-empty array of at most ``max_records`` elements.
        ``all_errors``: keep every failing record's errors (not only the first
        :data:`MAX_BATCH_ERRORS`), for :meth:`BatchResult.failures`."""
        scanner = self._scanner
        if scanner is not None:
            scan = scanner.scan(body, max_records)
            if scan is not None:
                if not scan.doubtful:
                    return BatchResult(scan.count, payload=_compact(body),
                                       complete=all_errors)
                return self._scanned_batch(body, scan, all_errors)
        fast = self._fast
        if fast is not None:
            try:
                records = fast.batch.decode(body)
            except _DECODE_ERRORS:
                pass
            else:
                n = len(records)
                if 0 < n <= max_records and fast.timestamps_ok(records) and \
                        not fast.pattern_failures(records) and \
                        fast.no_duplicates(body, records):
                    return BatchResult(n, payload=_compact(body), complete=all_errors)
        return self._precise_batch(body, max_records, all_errors)

    def validate_one(self, body: bytes, *, all_errors: bool = False) -> BatchResult:
        """Validate a body that must be one JSON object (the single-record endpoint);
        ``all_errors`` as for :meth:`validate_batch`."""
        if body.lstrip(_WS)[:1] == b"{":
            try:
                result = self.validate_batch(b"[" + body + b"]", max_records=1,
                                             all_errors=all_errors)
            except BodyError as exc:
                if exc.code in ("empty_batch", "too_many_records", "not_an_array"):
                    raise E.invalid_json("invalid_json", "not one JSON value") from None
                raise
            return result
        try:
            _ANY.decode(body)
        except _DECODE_ERRORS as exc:
            raise _body_error(body, exc) from None
        raise BodyError("not_an_object", NOT_OBJECT)

    def _precise_batch(self, body: bytes, max_records: int, all_errors: bool = False,
                       ) -> BatchResult:
        try:
            # ASCII is UTF-8: a scan, no 200 KB string to build and free.
            body.isascii() or body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise E.invalid_json("invalid_utf8", str(exc)) from None
        try:
            raws = _RAW_LIST.decode(body)
        except msgspec.ValidationError:
            # Valid JSON, not an array (msgspec says "Expected `array`").
            try:
                _ANY.decode(body)
            except _DECODE_ERRORS as exc:
                raise _body_error(body, exc) from None
            raise BodyError("not_an_array", EMPTY_BATCH) from None
        except _DECODE_ERRORS as exc:
            raise _body_error(body, exc) from None
        n = len(raws)
        if n == 0:
            raise BodyError("empty_batch", EMPTY_BATCH)
        if n > max_records:
            raise BodyError("too_many_records",
                            f"Too many records in batch (at most {max_records})", 413,
                            f"{n} records")
        result = self._result(body, n, self._failing_records(raws), all_errors)
        result.raw = lambda indices: [bytes(raws[k]) for k in indices]
        return result

    def _scanned_batch(self, body: bytes, scan: Scan, all_errors: bool) -> BatchResult:
        """The result of a body the scanner read. Its doubtful records the scanner described
        exactly get their errors from :class:`ExactErrors`, only as many as are listed
        (the others a count); the rest are parsed (by msgspec, but those with repeated or
        escaped keys or out-of-range numbers, which take Python's parser) and checked,
        their timestamps the scanner found valid not again."""
        exact = self._exact
        checked, described = (scan.inexact, scan.exact) if exact is not None and len(
            scan.exact) >= MIN_DESCRIBED else (scan.doubtful, [])
        failures = self._check_scanned(body, scan, checked) if checked else {}
        starts, ends = scan.starts, scan.ends

        def raw(indices: list[int]) -> list[bytes]:
            at = np.asarray(indices, np.intp)
            return list(map(body.__getitem__, map(slice, starts[at].tolist(),
                                                  ends[at].tolist())))

        if not described:
            result = self._result(body, scan.count, failures, all_errors)
        else:
            assert exact is not None
            result = self._described_result(body, scan, exact, described, failures,
                                            all_errors)
        result.raw = raw
        return result

    def _check_scanned(self, body: bytes, scan: Scan, checked: list[int],
                       ) -> dict[int, list[FieldError]]:
        """Errors by record index of the ``checked`` records of a scanned body, parsed and
        run through the precise checker."""
        scanner = self._scanner
        assert scanner is not None
        starts, ends, verified = scan.starts, scan.ends, scan.verified
        exotic = set(scan.exotic).intersection(checked) if scan.exotic else set()
        plain = [i for i in checked if i not in exotic] if exotic else checked
        records = _decode_all([body[starts[i]:ends[i]] for i in plain])
        valid_times: set[str] = set()
        for bit, name in scanner.timestamp_bits:
            valid_times.update(record[name] for i, record in zip(plain, records, strict=True)
                               if verified[i] & bit)
        indices = plain
        if exotic:
            odd = sorted(exotic)
            indices = [*plain, *odd]
            records += _parse_precise_all([body[starts[i]:ends[i]] for i in odd])
        return self._check_each(indices, records, valid_times)

    @staticmethod
    def _described_result(body: bytes, scan: Scan, exact: ExactErrors, described: list[int],
                          failures: dict[int, list[FieldError]], all_errors: bool,
                          ) -> BatchResult:
        """The verdict on a scanned body whose ``described`` records the scanner described
        exactly, the others' errors being ``failures``: the errors of the records listed
        (all, or up to :data:`MAX_BATCH_ERRORS`), the counts of all."""
        counts = exact.counts(scan, described)
        failing = np.flatnonzero(counts)
        order: list[int] = np.asarray(described)[failing].tolist()
        sizes: list[int] = counts[failing].tolist()
        error_count = sum(sizes) + sum(map(len, failures.values()))
        failed_records = len(order) + len(failures)
        codes = exact.codes(body, scan, order) if order else Counter()
        codes.update(e.code for errs in failures.values() for e in errs)
        if failures:
            size_of = dict(zip(order, sizes, strict=True))
            size_of.update((k, len(v)) for k, v in failures.items())
            order = sorted(size_of)
            sizes = [size_of[k] for k in order]
        if not all_errors:
            # Records whose errors start before the cap are told (listed, then cut).
            total = 0
            for m, size in enumerate(sizes):
                if total >= MAX_BATCH_ERRORS:
                    del order[m:]
                    break
                total += size
        wanted = [k for k in order if k not in failures] if failures else order
        told = iter(exact.errors(body, scan, wanted))
        listed = [(k, failures[k] if k in failures else next(told)) for k in order] \
            if failures else list(zip(order, told, strict=True))
        result = BatchResult(scan.count, _listing(listed), error_count, failed_records,
                             _compact(body), all_errors, dict(codes))
        if all_errors:
            result.failed = listed
        return result

    @staticmethod
    def _result(body: bytes, n: int, failures: dict[int, list[FieldError]],
                all_errors: bool = False) -> BatchResult:
        """The verdict on a body of ``n`` records with these record ``failures``."""
        listed = sorted(failures.items())
        result = BatchResult(n, payload=_compact(body), complete=all_errors)
        result.error_count = sum(map(len, failures.values()))
        result.error_codes = dict(Counter(e.code for errs in failures.values() for e in errs))
        result.failed_records = len(failures)
        if not all_errors:
            # Records whose errors start before the cap (cut at it below).
            total = 0
            for m, (_, errs) in enumerate(listed):
                if total >= MAX_BATCH_ERRORS:
                    del listed[m:]
                    break
                total += len(errs)
        result.errors = _listing(listed)
        if all_errors:
            result.failed = listed
        return result

    def _failing_records(self, raws: list[msgspec.Raw]) -> dict[int, list[FieldError]]:
        """Errors by record index. Records that pass the typed decoder and the bulk checks
        are valid; only the others are parsed and checked field by field (which may also
        find them valid: the fast path is conservative)."""
        fast = self._fast
        if fast is None:
            doubtful = list(range(len(raws)))
            parsed = [_parse(bytes(raw)) for raw in raws]
            valid_times: Collection[str] = ()
        else:
            good, doubtful, flat = fast.decode_records(raws)
            parsed = _parse_all([bytes(raws[i]) for i in doubtful])
            if good:
                valid_times = self._recheck_good(raws, good, doubtful, parsed, flat)
            else:
                valid_times = fast.valid_times(parsed)
        return self._check_each(doubtful, parsed, valid_times)

    def _check_each(self, indices: list[int], records: list[Any],
                    valid_times: Collection[str]) -> dict[int, list[FieldError]]:
        """Errors by record index of ``records`` (record k is at ``indices[k]``) through the
        precise checker (``valid_times``: timestamps known valid)."""
        check = self._check
        failures: dict[int, list[FieldError]] = {}
        for i, record in zip(indices, records, strict=True):
            errs = check(record, valid_times)
            if errs:
                failures[i] = errs[:MAX_ERRORS_PER_RECORD]
        return failures

    def _recheck_good(self, raws: list[msgspec.Raw], good: list[Any], doubtful: list[int],
                      parsed: list[Any], flat: bool) -> set[str]:
        """The bulk checks on the ``good`` records (those of ``raws`` not in ``doubtful``,
        which ``parsed`` holds decoded; ``flat``: decoded with flat contexts): the records
        they fail join ``doubtful`` and ``parsed``. Returns the timestamps of all those
        records known valid."""
        fast = self._fast
        assert fast is not None
        # Positions of the good records among all.
        is_good = np.ones(len(raws), np.bool_)
        is_good[doubtful] = False
        good_at = np.flatnonzero(is_good)
        # One timestamp check for the good records' values and the parsed records' ones,
        # field by field (values of one field mostly share one shape).
        n = len(good)
        values = fast.timestamp_values(good)
        other_fields = fast.dict_timestamp_fields(parsed)
        others = [v for field in other_fields for v in field]
        every = values + others
        failing = failing_times(every, [n] * (len(values) // n) + list(map(len, other_fields)))
        bad = {every[j] for j in failing}
        flagged = {j % n for j in failing if j < len(values)}
        flagged.update(fast.pattern_failures(good))
        if flat:
            suspects = set(fast.flat_duplicate_suspects(raws, good_at, good))
        else:
            suspects = set(fast.duplicate_suspects([raws[i] for i in good_at.tolist()], good))
        known = {v for v in others if v not in bad}
        # Likely a repeated key: straight to Python's parser.
        repeated = iter(_parse_precise_all([bytes(raws[good_at[j]]) for j in sorted(suspects)]))
        for j in sorted(flagged | suspects):
            doubtful.append(int(good_at[j]))
            if j in suspects:
                parsed.append(next(repeated))
            else:
                # Typed and no key repeated: the typed record is the parsed one (but for
                # the order of its keys, which only matters for extra or repeated keys).
                parsed.append(to_builtins(good[j]))
            known.update(v for v in values[j::n] if v not in bad)
        return known


def compile_dataset(definition: dict[str, Any]) -> CompiledDataset:
    """Compile a dataset definition (the seed's ``{"fields": {...}}`` form or the object form
    of fields); raises :class:`DefinitionError` listing every problem."""
    return CompiledDataset(definition)

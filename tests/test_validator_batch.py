"""validate_batch / validate_one: body errors, fast and precise paths agree, payload, caps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from validator import BodyError, RecordError, compile_dataset
from validator.compiled import MAX_BATCH_ERRORS

ROOT = Path(__file__).resolve().parent.parent
SEED = compile_dataset(json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text()))
REC = {"timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
       "country": "RO", "plan": "pro", "amount": 20, "active": True,
       "signup_at": "2026-06-01T08:00:00Z"}


def batch(*records: Any) -> bytes:
    return orjson.dumps(list(records))


def body_error(body: bytes, single: bool = False) -> BodyError:
    with pytest.raises(BodyError) as info:
        SEED.validate_one(body) if single else SEED.validate_batch(body)
    return info.value


def test_seed_batch_example_valid_payload_is_array_of_objects() -> None:
    pretty = json.dumps([REC, {**REC, "country": "US", "amount": 5, "active": False}],
                        indent=2).encode()
    result = SEED.validate_batch(pretty)
    assert result.ok and result.count == 2 and result.errors == []
    assert b"\n" not in result.payload
    raws = msgspec.json.decode(result.payload, type=list[msgspec.Raw])
    assert all(bytes(r).rstrip().endswith(b"}") for r in raws)
    assert result.records == json.loads(pretty)


def test_fast_path_exists_for_seed() -> None:
    assert SEED.has_fast_path


@pytest.mark.parametrize(("body", "code", "message"), [
    (b"", "invalid_json", "Invalid JSON body"),
    (b"[1,", "invalid_json", "Invalid JSON body"),
    (b"[NaN]", "invalid_json", "Invalid JSON body"),
    (b"[Infinity]", "invalid_json", "Invalid JSON body"),
    (b'[{"a":"\xff"}]', "invalid_utf8", "Invalid JSON body"),
    (b'[{"a":"\\ud800"}]', "lone_surrogate", "Invalid JSON body"),
    (b"[]", "empty_batch", "Batch body must be a non-empty array"),
    (b"{}", "not_an_array", "Batch body must be a non-empty array"),
    (b"5", "not_an_array", "Batch body must be a non-empty array"),
    (b"[" * 5000 + b"]" * 5000, "too_deep", "JSON body nested too deeply"),
])
def test_body_errors(body: bytes, code: str, message: str) -> None:
    err = body_error(body)
    assert (err.code, err.message, err.status) == (code, message, 400)


def test_too_many_records_is_413() -> None:
    with pytest.raises(BodyError) as info:
        SEED.validate_batch(batch(REC, REC, REC), max_records=2)
    assert (info.value.code, info.value.status) == ("too_many_records", 413)


@pytest.mark.parametrize(("body", "code", "message"), [
    (b"[]", "not_an_object", "Payload must be an object"),
    (b'"x"', "not_an_object", "Payload must be an object"),
    (b"{", "invalid_json", "Invalid JSON body"),
    (b"{} {}", "invalid_json", "Invalid JSON body"),
    (b"{}, {}", "invalid_json", "Invalid JSON body"),
])
def test_single_body_errors(body: bytes, code: str, message: str) -> None:
    err = body_error(body, single=True)
    assert (err.code, err.message) == (code, message)


def test_single_record() -> None:
    result = SEED.validate_one(orjson.dumps(REC))
    assert result.ok and result.count == 1
    assert json.loads(result.payload) == [REC]
    bad = SEED.validate_one(orjson.dumps({**REC, "amount": "12.5"}))
    assert bad.errors == [
        RecordError(0, "invalid_number", "amount", "Invalid number field: amount")]


def test_record_errors_name_index_and_field() -> None:
    result = SEED.validate_batch(batch(REC, {**REC, "active": 1}, REC, {**REC, "extra": 1}))
    assert not result.ok
    assert result.errors == [
        RecordError(1, "invalid_boolean", "active", "Invalid boolean field: active"),
        RecordError(3, "extra_field", "extra", "Extra field: extra")]
    assert result.error_count == 2 and result.failed_records == 2


def test_duplicate_keys_rejected_everywhere() -> None:
    top = b'[{"timestamp":"2026-06-10T11:00:00Z","context":{},"country":"RO","country":"US",' \
          b'"plan":"pro","amount":1,"active":true,"signup_at":"2026-06-01T08:00:00Z"}]'
    result = SEED.validate_batch(top)
    assert result.errors == [RecordError(0, "duplicate_field", "country",
                                         "Duplicate field: country")]
    nested = orjson.dumps([REC]).replace(b'"source":', b'"k":1,"k":2,"source":')
    assert SEED.validate_batch(nested).errors[0][1:3] == ("duplicate_field", "context.k")
    escaped = orjson.dumps([REC]).replace(b'"plan":"pro"', b'"plan":"pro","pl\\u0061n":"x"')
    assert SEED.validate_batch(escaped).errors[0][1:3] == ("duplicate_field", "plan")


def test_huge_numbers_name_the_field() -> None:
    body = orjson.dumps([REC]).replace(b'"amount":20', b'"amount":1' + b"0" * 30)
    assert SEED.validate_batch(body).errors[0][1:3] == ("integer_too_large", "amount")
    body = orjson.dumps([REC]).replace(b'"amount":20', b'"amount":1e999')
    assert SEED.validate_batch(body).errors[0][1:3] == ("number_not_finite", "amount")
    body = orjson.dumps([REC]).replace(b'"source"', b'"n":123456789012345678901234,"source"')
    assert SEED.validate_batch(body).errors[0][1:3] == ("integer_too_large", "context.n")


def test_deep_context_within_json_limit() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    result = SEED.validate_batch(batch({**REC, "context": {"d": deep}}))
    assert result.errors[0][1] == "too_deep"


@pytest.mark.parametrize("stamp", ["1998-12-31T23:59:60Z", "1963-06-19t08:30:06.283185z",
                                   "2026-06-10T12:00:00.123456789+02:00"])
def test_conservative_fast_path_still_accepts(stamp: str) -> None:
    assert SEED.validate_batch(batch({**REC, "signup_at": stamp})).ok


@pytest.mark.parametrize("stamp", ["2026-06-10T10:00:00+0200", "2026-06-10 10:00:00Z",
                                   "2026-02-30T10:00:00Z", "1998-12-31T22:59:60Z"])
def test_fast_path_never_accepts_bad_timestamps(stamp: str) -> None:
    result = SEED.validate_batch(batch(REC, {**REC, "signup_at": stamp}))
    assert result.errors == [RecordError(1, "invalid_timestamp", "signup_at",
                                         "Invalid timestamp field: signup_at")]


def test_integral_float_in_integer_field_valid_on_both_paths() -> None:
    v = compile_dataset({"fields": {"qty": "integer"}})
    base = {"timestamp": "2026-06-10T10:00:00Z", "context": {}}
    assert v.validate_batch(batch({**base, "qty": 2.0})).ok
    assert v.validate_batch(batch({**base, "qty": True})).errors[0][1] == "invalid_integer"


def test_optional_and_nullable_fields_on_fast_path() -> None:
    v = compile_dataset({"fields": {"a": {"type": ["string", "null"]},
                                    "b": {"type": "timestamp", "required": False}}})
    assert v.has_fast_path
    base = {"timestamp": "2026-06-10T10:00:00Z", "context": {}}
    assert v.validate_batch(batch({**base, "a": None}, {**base, "a": "x",
                                                         "b": "2026-06-10T10:00:00Z"})).ok
    dup = b'[{"timestamp":"2026-06-10T10:00:00Z","context":{},"a":"x","a":null}]'
    assert v.validate_batch(dup).errors[0][1] == "duplicate_field"


def test_fast_and_precise_paths_agree_with_validate() -> None:
    """Every record's batch errors equal validate() on the decoded record."""
    variants = [REC, {**REC, "amount": "1"}, {**REC, "context": None}, {**REC, "x": 1},
                {k: v for k, v in REC.items() if k != "plan"}, {**REC, "timestamp": 1},
                {**REC, "amount": 1.5, "active": False}]
    result = SEED.validate_batch(batch(*variants))
    for i, rec in enumerate(variants):
        got = [e[1:] for e in result.errors if e.index == i]
        assert got == [tuple(e) for e in SEED.validate(rec)]


def test_errors_capped_error_count_complete() -> None:
    bad = {**REC, **{f"x{i}": i for i in range(25)}}
    result = SEED.validate_batch(batch(*[bad] * 100))
    assert result.failed_records == 100
    assert result.error_count == 100 * 20
    assert len(result.errors) == MAX_BATCH_ERRORS
    assert result.errors[0] == RecordError(0, "extra_field", "x0", "Extra field: x0")


def test_a_failing_batch_leaves_no_cyclic_garbage() -> None:
    """The failing path must not keep exceptions (traceback -> frame -> exception cycles):
    the service would pay for them in GC pauses on every bad batch."""
    import gc

    good = {"timestamp": "2026-06-10T10:58:00Z", "context": {}, "country": "RO", "plan": "pro",
            "amount": 1, "active": True, "signup_at": "2026-06-01T08:00:00Z"}
    bad_calendar = {**good, "signup_at": "2026-02-30T08:00:00Z"}
    body = batch(*([good] * 20 + [bad_calendar, {**good, "amount": "x"}]) * 5)
    SEED.validate_batch(body)  # warm caches
    gc.collect()
    gc.disable()
    try:
        result = SEED.validate_batch(body)
        assert not result.ok
        assert gc.collect() == 0
    finally:
        gc.enable()


def _raws(body: bytes) -> list[msgspec.Raw]:
    return msgspec.json.decode(body, type=list[msgspec.Raw])


def test_flat_contexts_take_the_flat_decoder_and_nested_ones_stay_exact() -> None:
    """The precise path decodes with the flat-context record type when the batch's first
    decodable record has a flat context; a nested context then fails that decoder and is
    judged by the precise checker: valid stays valid, a repeated key inside it is found."""
    fast = SEED._fast
    assert fast is not None
    nested = {**REC, "context": {"source": "x", "attempt": 3, "tags": ["a", "b"]}}
    records = [REC, {**REC, "amount": "1"}, nested, REC, REC, REC, REC, REC]
    body = batch(*records)
    # the repeated keys: one in a flat context, one in a nested context, one at top level
    body = body.replace(b'"attempt":3', b'"attempt":3,"attempt":4', 1)
    flat_dup = orjson.dumps(REC).replace(b'"source":', b'"k":"1","k":"2","source":')
    top_dup = orjson.dumps(REC).replace(b'"plan":', b'"plan":"x","plan":')
    body = body[:-1] + b"," + flat_dup + b"," + top_dup + b"]"
    good, bad, flat = fast.decode_records(_raws(body))
    assert flat and bad == [1, 2] and len(good) == 8
    result = SEED.validate_batch(body)
    assert [e[:3] for e in result.errors] == [
        (1, "invalid_number", "amount"), (2, "duplicate_field", "context.attempt"),
        (8, "duplicate_field", "context.k"), (9, "duplicate_field", "plan")]
    # without the repeated key the nested record is valid
    assert [e.index for e in SEED.validate_batch(batch(*records)).errors] == [1]


def test_mostly_nested_contexts_use_the_general_decoder() -> None:
    fast = SEED._fast
    assert fast is not None
    nested = {**REC, "context": {"n": 1}}
    body = batch(REC, *[nested] * 5, {**REC, "active": "yes"})
    good, bad, flat = fast.decode_records(_raws(body))
    assert not flat and bad == [6] and len(good) == 6
    result = SEED.validate_batch(body)
    assert [e[:3] for e in result.errors] == [(6, "invalid_boolean", "active")]
    # a first record with a nested context picks the general decoder at once
    assert not fast.decode_records(_raws(batch(nested, REC)))[2]


def _stamps(n: int) -> list[str]:
    return [f"2026-06-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z"
            for i in range(n)]


def test_odd_shapes_are_located_by_position_even_with_commas_inside() -> None:
    """The shape check of a field whose values are not all of one shape names exactly the
    values of a bad shape: a comma inside an odd value does not shift the positions after
    it, and an odd value of a valid shape is not reported."""
    from validator.fast import _odd_shapes, _shape_failures

    values = _stamps(40)
    odd = {3: "a,b", 4: "2026-06-10T10:00:00+0200", 17: ",,,", 18: "2026-06-10T10:00:00.5Z",
           39: "x"}
    for j, v in odd.items():
        values[j] = v
    assert _shape_failures(values) == [3, 4, 17, 39]
    translated = orjson.dumps(values).translate(bytes.maketrans(b"0123456789", b"9" * 10))
    located = _odd_shapes(translated, len(values))
    assert located is not None and located[0] == sorted(odd)


def test_uniform_run_calendar_is_checked_in_numpy_exactly() -> None:
    """A large run of one shape with calendar failures: the numpy check finds every bad
    value (and only those, but for a leap second, which it leaves to the precise path)."""
    from validator.fast import failing_times
    from validator.formats import is_date_time
    from validator.stamps import MIN_VALUES, calendar_failures

    for base, bad in [
        (_stamps(200), ["2026-02-30T10:00:00Z", "2026-13-01T10:00:00Z", "2026-04-31T00:00:00Z",
                        "2026-00-10T10:00:00Z", "2026-06-00T10:00:00Z", "2026-06-10T24:00:00Z",
                        "2026-06-10T10:60:00Z", "2026-06-10T10:00:61Z", "2023-02-29T10:00:00Z",
                        "1900-02-29T10:00:00Z", "2026-06-10T10:00:60Z"]),
        ([f"2026-05-{1 + i % 28:02d}T08:00:00.{i % 1000:03d}+02:00" for i in range(100)],
         ["2026-05-01T08:00:00.000+24:00", "2026-05-01T08:00:00.000+02:60",
          "2026-05-01T23:59:60.000-00:01"]),
    ]:
        values = list(base)
        values[7:7] = bad
        values += ["2000-02-29T10:00:00Z" if values[0].endswith("Z") else
                   "2000-02-29T10:00:00.000+02:00"]
        want = [j for j, v in enumerate(values) if not is_date_time(v) or v[17:19] == "60"]
        assert len(values) >= MIN_VALUES
        encoded = orjson.dumps(values)
        shape = values[0].encode().translate(bytes.maketrans(b"0123456789", b"9" * 10))
        assert calendar_failures(encoded, len(values), shape) == want
        assert failing_times(values) == want
        assert failing_times(values + _stamps(70), [len(values)]) == want


def test_duplicate_suspects_are_positions_among_the_good_records() -> None:
    """The quote counts of the flat-context path run over every raw record; the suspects
    are named by position among the decoded (good) records."""
    import numpy as np

    fast = SEED._fast
    assert fast is not None
    dup = orjson.dumps(REC).replace(b'"plan":', b'"plan":"x","plan":')
    records = [orjson.dumps(r) for r in [REC, {**REC, "amount": "1"}, REC, REC]]
    body = b"[" + b",".join([*records[:3], dup, records[3], dup]) + b"]"
    raws = _raws(body)
    good, bad, flat = fast.decode_records(raws)
    assert flat and bad == [1]
    good_at = np.array([0, 2, 3, 4, 5])
    assert fast.flat_duplicate_suspects(raws, good_at, good) == [2, 4]
    assert [e[:3] for e in SEED.validate_batch(body).errors] == [
        (1, "invalid_number", "amount"), (3, "duplicate_field", "plan"),
        (5, "duplicate_field", "plan")]


def test_record_errors_past_twenty_are_cut_in_order() -> None:
    """Type-only fields are checked inline without counting errors: the first 20 are still
    the ones in definition order, and the batch counts 20 for the record."""
    v = compile_dataset({"fields": {f"f{i:02d}": "string" for i in range(30)}})
    rec = {"timestamp": "2026-06-10T10:00:00Z", "context": {},
           **{f"f{i:02d}": i for i in range(30)}}
    errors = v.validate(rec)
    assert [e.field for e in errors] == [f"f{i:02d}" for i in range(20)]
    result = v.validate_batch(batch(rec, {**rec, "f00": "ok"}))
    assert result.error_count == 40 and result.failed_records == 2
    assert [e.field for e in result.errors if e.index == 1][-1] == "f20"


def test_non_ascii_body_is_checked_as_utf8() -> None:
    assert SEED.validate_batch(batch({**REC, "context": {"city": "Brașov"}})).ok
    assert body_error(b'[{"a":"\xc3"}]').code == "invalid_utf8"

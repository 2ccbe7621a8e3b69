"""``complete_events``: the server's id (and receipt time when absent) spliced into every
validated event record, without changing one byte of what the client sent."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from strictgate.ingest.event_records import complete_events, new_ids
from validator import compile_dataset
from validator.checker import DupDict, pairs_hook

RECEIVED_AT = "2026-12-07T12:49:11.265Z"
STAMP = b',"timestamp":"' + RECEIVED_AT.encode() + b'"'
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def unsplice(out: bytes, ids: list[str]) -> bytes:
    """``out`` with every member :func:`complete_events` adds taken out again."""
    for i in ids:
        member = b'"id":' + json.dumps(i).encode()
        assert out.count(member) == 1
        at = out.index(member)
        # with its leading comma, unless the record was empty
        start = at - 1 if out[at - 1:at] == b"," else at
        out = out[:start] + out[at + len(member):]
    # each stamp follows an id member: none can hide in a client's string (the received_at
    # text does not occur in the generated bodies)
    return out.replace(STAMP, b"").replace(STAMP[1:], b"")


def check(payload: bytes, ids: list[str] | None = None) -> tuple[bytes, list[str]]:
    """Run ``complete_events`` and check everything it promises."""
    before: list[dict[str, Any]] = json.loads(payload)
    out, assigned = complete_events(payload, RECEIVED_AT, ids)
    assert len(assigned) == len(before)
    if ids is None:
        assert all(UUID4.match(i) for i in assigned)
        assert len(set(assigned)) == len(assigned)
    else:
        assert assigned == ids
    after = json.loads(out, object_pairs_hook=pairs_hook)
    assert not any(type(r) is DupDict for r in after), "a key was added twice"
    for record, completed, i in zip(before, after, assigned, strict=True):
        expected = {**record, "id": i}
        if "timestamp" not in record:
            expected["timestamp"] = RECEIVED_AT
        assert completed == expected
        assert list(completed)[:len(record)] == list(record)  # appended after the record's
    # byte for byte what was sent, but for the added members
    assert unsplice(out, assigned) == payload
    return out, assigned


def test_the_seed_examples_get_an_id_and_the_receipt_time() -> None:
    body = (b'[{"service":"billing-service","level":"error","message":"Payment failed"},'
            b'{"service":"billing-service","level":"warn","message":"Retry attempt 3",'
            b'"timestamp":"2026-06-10T10:58:00+02:00"}]')
    out, ids = check(body)
    assert out == (
        b'[{"service":"billing-service","level":"error","message":"Payment failed","id":"'
        + ids[0].encode() + b'"' + STAMP + b'},{"service":"billing-service","level":"warn",'
        b'"message":"Retry attempt 3","timestamp":"2026-06-10T10:58:00+02:00","id":"'
        + ids[1].encode() + b'"}]')


@pytest.mark.parametrize("body", [
    b"[{}]", b"[{ }]", b"[ {\t } , {} ]", b'[{},{"a":1},{ }]', b'[{"a":{}}, {}]',
])
def test_empty_records_take_no_leading_comma(body: bytes) -> None:
    check(body)


@pytest.mark.parametrize(("body", "stamped"), [
    # only a top-level key counts: not one in a nested object, nor a string's text
    (b'[{"a":{"timestamp":"2026-01-01T00:00:00Z"}}]', False),
    (b'[{"a":"timestamp","b":["timestamp"]}]', False),
    (b'[{"a":"\\"timestamp\\":1"}]', False),
    (b'[{"timestamp":"2026-01-01T00:00:00Z"}]', True),
    # an escaped spelling of the key is the key
    (b'[{"\\u0074imestamp":"2026-01-01T00:00:00Z"}]', True),
    (b'[{"timestamp" : "2026-01-01T00:00:00Z" , "x": {"timestamp": 1}}]', True),
    (b'[{"timestampx":1,"xtimestamp":2}]', False),
])
def test_only_a_top_level_timestamp_key_counts(body: bytes, stamped: bool) -> None:
    out, _ = check(body)
    assert (STAMP in out) is not stamped


def test_whitespace_between_and_inside_records_is_kept() -> None:
    body = b' [ {"a" : 1 ,\t"b":[1, 2] }\t,\n{"c":"}"} , {"d":"{"}]  '
    check(body)


def test_uneven_separators_and_many_records() -> None:
    # more records than the per-record path handles, separated alike and not alike
    alike = b"[" + b",".join(b'{"n":%d}' % i for i in range(40)) + b"]"
    check(alike)
    uneven = b"[" + b"".join((b"," + b" " * (i % 3) if i else b"") + b'{"n":%d,"s":"},{"}' % i
                             for i in range(40)) + b"]"
    check(uneven)
    # nested objects whose closing braces could pass for a record's end
    tricky = b"[" + b", ".join(b'{"o":{"p":{}},"q":[{},{}]}' for _ in range(40)) + b"]"
    check(tricky)


def test_given_ids_are_used_in_order_and_escaped() -> None:
    out, ids = check(b'[{"a":1},{}]', ["first", 'quo"te'])
    assert ids == ["first", 'quo"te']
    assert b'"id":"quo\\"te"' in out


def test_given_ids_must_match_the_records() -> None:
    with pytest.raises(ValueError, match="2 ids for 1 records"):
        complete_events(b'[{"a":1}]', RECEIVED_AT, ["a", "b"])


@pytest.mark.parametrize("body", [b'{"a":1}', b"[1]", b"[", b'[{"a":1},"x"]'])
def test_not_an_array_of_objects_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        complete_events(body, RECEIVED_AT)


def test_random_ids_are_version_4_uuids_and_distinct() -> None:
    for n in (1, 15, 16, 1000):
        ids = new_ids(n)
        assert len(ids) == n == len(set(ids))
        assert all(UUID4.match(i) and str(uuid.UUID(i)) == i for i in ids)


def test_payload_of_the_validator_is_completed() -> None:
    # what the core hands over: BatchResult.payload of a built-in event dataset
    logs = compile_dataset(schemas.builtin("logs"))
    body = (b'[\r\n {"service": "api-gateway", "level": "error",\r\n'
            b'  "message": "Upstream timeout", "metadata": {"region": "us-east-1"}},\n'
            b' {"service": "api", "level": "info", "message": "ok",'
            b' "timestamp": "2026-06-10T10:58:00.5Z"}\n]')
    result = logs.validate_batch(body)
    assert result.ok
    out, ids = check(result.payload)
    # completed records are valid records of the dataset, but for the server's id
    for record in json.loads(out):
        assert record.pop("id") in ids
        assert logs.validate(record) == []


JSON_KEYS = st.text(st.characters(codec="utf-8"), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["timestamp", '"timestamp":', "}", "{", ",", "\\"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        JSON_KEYS | st.just("timestamp"), inner, max_size=4),
    max_leaves=12)
RECORDS = st.lists(st.dictionaries(JSON_KEYS.filter(lambda k: k != "id")  # never valid
                                   | st.sampled_from(["timestamp", "id_", ""]),
                                   JSON_VALUES, max_size=5), min_size=1, max_size=40)


def _spelled(records: list[dict[str, Any]], data: st.DataObject) -> bytes:
    """``records`` as a JSON array with drawn spacing, key escapes and ASCII choice."""
    draw = data.draw
    ascii_only = draw(st.booleans())
    gap = draw(st.sampled_from(["", " ", "\t", "  "]))
    parts = []
    for record in records:
        members = []
        for key, value in record.items():
            spelled = json.dumps(key, ensure_ascii=ascii_only)
            if key == "timestamp" and draw(st.booleans()):
                spelled = '"\\u0074imestamp"'
            colon = draw(st.sampled_from([":", ": ", " : "]))
            members.append(spelled + colon + json.dumps(value, ensure_ascii=ascii_only))
        inner = draw(st.sampled_from([",", ", ", " ,\t"])).join(members)
        pad = draw(st.sampled_from(["", " ", "\t"])) if not members else ""
        parts.append("{" + pad + inner + "}")
    separator = draw(st.sampled_from([",", ", ", " , "])) if draw(st.booleans()) else None
    if separator is None:
        body = "".join((draw(st.sampled_from([",", ", ", " ,"])) if i else "") + p
                       for i, p in enumerate(parts))
    else:
        body = separator.join(parts)
    return (gap + "[" + gap + body + gap + "]" + gap).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_completed_records_are_the_sent_bytes_plus_id_and_time(data: st.DataObject) -> None:
    records = data.draw(RECORDS)
    payload = _spelled(records, data)
    assert RECEIVED_AT.encode() not in payload
    check(payload)

"""The queue entry, the contract between API and worker processes: what admission stores
is what the worker reads, entries queued by the previous release still read, the optional
event type, events, quarantined records, replay time and replayed rows are stored only when
set, and a malformed entry is refused with the field it lacks."""

from __future__ import annotations

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from quota.admission import Admitted, QuotaService
from strictgate.context import utc_now
from strictgate.queue_entry import (
    EVENT_TYPE_MAX_CHARS,
    FIELD_NAMES,
    OPTIONAL_FIELD_NAMES,
    MalformedEntryError,
    QuarantineError,
    QuarantineItem,
    QueuedEvent,
    QueueEntry,
    check_event_count,
    check_replay_count,
    decode_events,
    decode_quarantine,
    decode_replay_of,
    encode_events,
    event_time_problem,
    event_type_problem,
)

ENTRY = QueueEntry(
    records=b'[{"timestamp":"2026-06-10T10:58:00Z","context":{},"amount":42.5}]',
    trace_id="req_123", dataset_version=7, received_at="2026-06-10T10:58:01.234Z",
    project_id="demo", dataset_id="13", user_id="alice",
)

# An entry exactly as the release before the typed entry queued it (the handler's dict).
PREVIOUS_RELEASE = {
    "records": ENTRY.records, "trace_id": "req_123", "dataset_version": "7",
    "received_at": "2026-06-10T10:58:01.234Z", "project_id": "demo", "dataset_id": "13",
    "user_id": "alice",
}


def _stored(client: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(stream)]


def test_fields_round_trip_through_a_stream(sync_redis: redis.Redis) -> None:
    sync_redis.xadd("s", ENTRY.to_fields())  # type: ignore[arg-type]
    [fields] = _stored(sync_redis, "s")
    assert list(fields) == [name.encode() for name in FIELD_NAMES]
    assert QueueEntry.from_fields(fields) == ENTRY


def test_an_entry_of_the_previous_release_reads_and_is_stored_byte_for_byte_alike(
    sync_redis: redis.Redis,
) -> None:
    sync_redis.xadd("old", PREVIOUS_RELEASE)  # type: ignore[arg-type]
    sync_redis.xadd("new", ENTRY.to_fields())  # type: ignore[arg-type]
    [old], [new] = _stored(sync_redis, "old"), _stored(sync_redis, "new")
    assert old == new
    assert QueueEntry.from_fields(old) == ENTRY
    # extra fields (a dead-letter copy carries its reason) do not stop it from reading
    assert QueueEntry.from_fields({**old, b"dead_reason": b"x"}) == ENTRY


def test_version_0_a_built_in_definition_reads() -> None:
    built_in = QueueEntry.from_fields({**_fields(), b"dataset_version": b"0"})
    assert built_in.dataset_version == 0


async def test_admission_stores_the_entry_s_fields(sync_redis: redis.Redis,
                                                   aredis: aioredis.Redis) -> None:
    svc = QuotaService(aredis, default_limit=-1, deadline_s=2.0, clock=utc_now)
    result = await svc.admit(ENTRY, count=1, idempotency_key=None, request_digest="")
    assert isinstance(result, Admitted)
    stream = keys.queue_key("alice", "demo", "13")
    [(entry_id, fields)] = sync_redis.xrange(stream)
    assert entry_id.decode() == result.entry_id
    assert fields == {k.encode(): v if isinstance(v, bytes) else v.encode()
                      for k, v in PREVIOUS_RELEASE.items()}
    assert QueueEntry.from_fields(fields) == ENTRY


def _fields(**changes: bytes | None) -> dict[bytes, bytes]:
    fields = {k.encode(): v.encode() if isinstance(v, str) else v
              for k, v in PREVIOUS_RELEASE.items()}
    for name, value in changes.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value
    return fields


@pytest.mark.parametrize(("changes", "field", "problem"), [
    ({"records": None}, "records", "missing"),
    ({"user_id": None}, "user_id", "missing"),
    ({"trace_id": b"\xff\xfe"}, "trace_id", "not UTF-8"),
    ({"dataset_version": b"x"}, "dataset_version", "not a version number: 'x'"),
    ({"dataset_version": b"-1"}, "dataset_version", "not a version number"),
    ({"dataset_version": b"9" * 40}, "dataset_version", "not a version number"),
    ({"received_at": b"yesterday"}, "received_at", "not an RFC 3339 UTC time"),
    ({"received_at": b"2026-06-10T10:58:01.234"}, "received_at", "ending in Z"),
    ({"received_at": b"2026-06-10T10:58:01.234+02:00"}, "received_at", "ending in Z"),
    ({"received_at": b"2026-13-10T10:58:01.234Z"}, "received_at", "not an RFC 3339"),
])
def test_a_malformed_entry_is_refused_naming_the_field(
    changes: dict[str, bytes | None], field: str, problem: str,
) -> None:
    with pytest.raises(MalformedEntryError) as caught:
        QueueEntry.from_fields(_fields(**changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"queue entry field {field}: ")
    assert problem in str(caught.value)
    # the worker's poison handling catches ValueError
    assert isinstance(caught.value, ValueError)


def test_the_refusal_quotes_a_long_value_only_in_part() -> None:
    with pytest.raises(MalformedEntryError) as caught:
        QueueEntry.from_fields(_fields(received_at=b"x" * 10_000))
    assert len(str(caught.value)) < 200


async def test_a_value_of_the_wrong_type_is_refused_not_queued_as_its_repr(
    aredis: aioredis.Redis,
) -> None:
    svc = QuotaService(aredis, default_limit=-1, deadline_s=2.0, clock=utc_now)
    wrong = msgspec.structs.replace(ENTRY, records=(ENTRY.records, ["id"]))
    with pytest.raises(TypeError, match="tuple"):
        await svc.admit(wrong, count=1, idempotency_key=None, request_digest="")
    assert await aredis.dbsize() == 0


# --- event_type: the job name of an OrcaSheets request, stored only when set ---------------

WITH_EVENT_TYPE = msgspec.structs.replace(ENTRY, event_type="ecommerce_backfill_2026_05")


def test_an_event_type_is_stored_after_the_other_fields_and_reads_back(
    sync_redis: redis.Redis,
) -> None:
    sync_redis.xadd("s", WITH_EVENT_TYPE.to_fields())  # type: ignore[arg-type]
    [fields] = _stored(sync_redis, "s")
    assert list(fields) == [name.encode() for name in (*FIELD_NAMES, "event_type")]
    assert fields[b"event_type"] == b"ecommerce_backfill_2026_05"
    assert QueueEntry.from_fields(fields) == WITH_EVENT_TYPE
    # without one, nothing is stored for it and it reads back as None
    assert b"event_type" not in ENTRY.to_fields()
    assert QueueEntry.from_fields(_fields()).event_type is None


@pytest.mark.parametrize("value", [
    "ecommerce_sync", "x", "Nightly sync (EU) — café", "日次同期", "a" * EVENT_TYPE_MAX_CHARS,
])
def test_visible_event_types_of_at_most_200_characters_are_taken(value: str) -> None:
    assert event_type_problem(value) is None
    entry = msgspec.structs.replace(ENTRY, event_type=value)
    assert QueueEntry.from_fields(_fields(event_type=value.encode())) == entry
    assert entry.to_args()[-2:] == ("event_type", value)


@pytest.mark.parametrize(("value", "problem"), [
    ("", "must not be empty"), ("   ", "must not be empty"),
    ("a" * (EVENT_TYPE_MAX_CHARS + 1), "at most 200 characters"),
    ("sync\n", "visible text"), ("tab\there", "visible text"), ("nul\x00", "visible text"),
    ("zero\u200bwidth", "visible text"), ("line\u2028sep", "visible text"),
    ("bidi\u202e", "visible text"), ("nbsp\u00a0", "visible text"),
])
def test_an_invisible_empty_or_long_event_type_is_refused_on_both_sides(
    value: str, problem: str,
) -> None:
    assert problem in (event_type_problem(value) or "")
    # never queued: to_args (what admission sends) refuses it
    with pytest.raises(ValueError, match=problem):
        msgspec.structs.replace(ENTRY, event_type=value).to_args()
    # and a worker refuses it in a stream, naming the field, without quoting the value
    with pytest.raises(MalformedEntryError) as caught:
        QueueEntry.from_fields(_fields(event_type=value.encode()))
    assert caught.value.field == "event_type" and problem in str(caught.value)
    assert len(str(caught.value)) < 120


def test_an_event_type_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(MalformedEntryError, match="event_type: not UTF-8"):
        QueueEntry.from_fields(_fields(event_type=b"\xff"))


async def test_admission_stores_the_event_type(sync_redis: redis.Redis,
                                               aredis: aioredis.Redis) -> None:
    svc = QuotaService(aredis, default_limit=-1, deadline_s=2.0, clock=utc_now)
    result = await svc.admit(WITH_EVENT_TYPE, count=1, idempotency_key=None,
                             request_digest="")
    assert isinstance(result, Admitted)
    [(_, fields)] = sync_redis.xrange(keys.queue_key("alice", "demo", "13"))
    assert QueueEntry.from_fields(fields) == WITH_EVENT_TYPE
    bad = msgspec.structs.replace(ENTRY, event_type="\x1b[31m")
    with pytest.raises(ValueError, match="event_type"):
        await svc.admit(bad, count=1, idempotency_key=None, request_digest="")
    assert sync_redis.xlen(keys.queue_key("alice", "demo", "13")) == 1


# --- events: per-record id, source and time (OneSight), stored only when set ---------------

EVENTS = [QueuedEvent("loc_20260412_001", "virtual_store_server", "2026-04-12T10:30:00Z")]
WITH_EVENTS = msgspec.structs.replace(ENTRY, events=encode_events(EVENTS))


def test_events_are_stored_last_only_when_set_and_read_back(sync_redis: redis.Redis) -> None:
    both = msgspec.structs.replace(WITH_EVENTS, event_type="job")
    sync_redis.xadd("s", WITH_EVENTS.to_fields())  # type: ignore[arg-type]
    sync_redis.xadd("s", both.to_fields())  # type: ignore[arg-type]
    [alone, with_type] = _stored(sync_redis, "s")
    assert list(alone) == [name.encode() for name in (*FIELD_NAMES, "events")]
    assert list(with_type) == [name.encode() for name in (*FIELD_NAMES, "event_type", "events")]
    assert alone[b"events"] == (b'[{"id":"loc_20260412_001","source":"virtual_store_server",'
                                b'"time":"2026-04-12T10:30:00Z"}]')
    assert QueueEntry.from_fields(alone) == WITH_EVENTS
    assert QueueEntry.from_fields(with_type) == both
    assert decode_events(alone[b"events"]) == EVENTS
    # without them nothing is stored (an entry of another dialect is what it was)
    assert b"events" not in ENTRY.to_fields() and QueueEntry.from_fields(_fields()).events is None


@pytest.mark.parametrize("time", [
    "2026-04-12T10:30:00Z", "2026-04-12t10:30:00z", "2026-04-12T10:30:00.123456789+09:00",
    "2016-12-31T23:59:60Z", "2017-01-01T08:59:60+09:00", "2024-02-29T00:00:00-00:30",
    "0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59.999999Z",
])
def test_event_times_that_are_rfc_3339_date_times_are_taken(time: str) -> None:
    assert event_time_problem(time) is None
    value = encode_events([QueuedEvent("a", None, time), QueuedEvent("b", "s", time)])
    assert decode_events(value)[1] == QueuedEvent("b", "s", time)
    assert QueueEntry.from_fields(_fields(events=value)).events == value


@pytest.mark.parametrize(("value", "problem"), [
    (b'{"id": "a"}', "Expected `array`, got `object`"),
    (b"[1]", "Expected `object`, got `int` - at `$[0]`"),
    (b'[{"id": 1, "source": null, "time": "2026-04-12T10:30:00Z"}]', "at `$[0].id`"),
    (b'[{"id": "a", "time": "2026-04-12T10:30:00Z"}]', "missing required field `source`"),
    (b'[{"id": "a", "source": 7, "time": "2026-04-12T10:30:00Z"}]', "at `$[0].source`"),
    (b'[{"id": "a", "source": null}]', "missing required field `time`"),
    (b'[{"id": "a", "source": null, "time": "2026-04-12T10:30:00"}]', "date-time (at $[0].time)"),
    (b'[{"id": "a", "source": null, "time": "2026-04-12 10:30:00Z"}]', "RFC 3339"),
    (b'[{"id": "a", "source": null, "time": "2026-02-30T10:30:00Z"}]', "RFC 3339"),
    (b'[{"id": "a", "source": null, "time": "2026-04-12T22:59:60Z"}]', "RFC 3339"),
    (b'[{"id": "a", "source": null, "time": "2026-04-12T10:30:00+0900"}]', "RFC 3339"),
    (b'[{"id": "a", "source": null, "time": "0000-01-01T00:00:00Z"}]', "years 1 to 9999"),
    (b'[{"id": "a", "source": null, "time": "9999-12-31T23:59:60Z"}]', "years 1 to 9999"),
    (b'[{"id": "a", "source": null, "time": "0001-01-01T00:00:00+01:00"}]', "years 1 to 9999"),
    (b"[", "truncated"), (b"\xff", "malformed"),
])
def test_malformed_events_are_refused_on_both_sides(value: bytes, problem: str) -> None:
    with pytest.raises(MalformedEntryError) as caught:
        QueueEntry.from_fields(_fields(events=value))
    assert caught.value.field == "events" and problem in str(caught.value)
    assert len(str(caught.value)) < 200
    # never queued either
    with pytest.raises(ValueError, match="events"):
        msgspec.structs.replace(ENTRY, events=value).to_args()


def test_the_count_of_events_must_be_the_count_of_records() -> None:
    check_event_count(WITH_EVENTS.events or b"", 1)
    check_event_count(EVENTS, 1)
    with pytest.raises(MalformedEntryError, match="holds 1 events for 2 records"):
        check_event_count(WITH_EVENTS.events or b"", 2)
    with pytest.raises(MalformedEntryError, match="holds 0 events for 1 records"):
        check_event_count(b"[]", 1)
    with pytest.raises(MalformedEntryError, match="events: not a JSON array"):
        check_event_count(b"{}", 1)


# --- quarantine, replayed_at, replay_of: stored only when set ----------------------------

QUARANTINE = (b'[{"index": 1, "record": "{\\"amount\\": \\"x\\"}", "errors": [{"code":'
              b' "invalid_type", "field": "amount", "message": "m"}]}, {"index": 3, "record":'
              b' "5", "errors": [], "event": {"id": "e", "source": null, "time":'
              b' "2026-04-12T10:30:00Z"}, "later": true}]')
REPLAY_OF = b'[["alice/1781000000000-0", 0]]'
QUARANTINED = msgspec.structs.replace(ENTRY, records=b"[]", quarantine=QUARANTINE)
REPLAYED = msgspec.structs.replace(ENTRY, replayed_at="2026-07-01T08:00:00.000Z",
                                   replay_of=REPLAY_OF)


def test_quarantine_and_replay_fields_are_stored_last_only_when_set_and_read_back(
    sync_redis: redis.Redis,
) -> None:
    every = msgspec.structs.replace(REPLAYED, event_type="job", events=WITH_EVENTS.events,
                                    quarantine=QUARANTINE, merge_key="id")
    for entry in (QUARANTINED, REPLAYED, every):
        sync_redis.xadd("s", entry.to_fields())  # type: ignore[arg-type]
    quarantined, replayed, stored = _stored(sync_redis, "s")
    assert list(quarantined) == [name.encode() for name in (*FIELD_NAMES, "quarantine")]
    assert list(replayed) == [name.encode()
                              for name in (*FIELD_NAMES, "replayed_at", "replay_of")]
    assert list(stored) == [name.encode() for name in (*FIELD_NAMES, *OPTIONAL_FIELD_NAMES)]
    assert quarantined[b"quarantine"] == QUARANTINE and quarantined[b"records"] == b"[]"
    assert QueueEntry.from_fields(quarantined) == QUARANTINED
    assert QueueEntry.from_fields(replayed) == REPLAYED
    assert QueueEntry.from_fields(stored) == every
    assert decode_quarantine(QUARANTINE) == [
        QuarantineItem(1, '{"amount": "x"}',
                       [QuarantineError("invalid_type", "amount", "m")]),
        QuarantineItem(3, "5", [], QueuedEvent("e", None, "2026-04-12T10:30:00Z"))]
    assert decode_replay_of(REPLAY_OF) == [("alice/1781000000000-0", 0)]
    # without them nothing is stored
    plain = QueueEntry.from_fields(_fields())
    assert (plain.quarantine, plain.replayed_at, plain.replay_of) == (None, None, None)
    assert not {"quarantine", "replayed_at", "replay_of"} & set(ENTRY.to_fields())


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("quarantine", b'{"index": 1}', "Expected `array`, got `object`"),
    ("quarantine", b'[{"index": "1", "record": "{}", "errors": []}]', "at `$[0].index`"),
    ("quarantine", b'[{"index": 1, "record": {}, "errors": []}]', "at `$[0].record`"),
    ("quarantine", b'[{"index": 1, "record": "{}"}]', "missing required field `errors`"),
    ("quarantine", b'[{"index": 1, "record": "{}", "errors": [{"code": "c"}]}]',
     "missing required field `field`"),
    ("quarantine", b'[{"index": 1, "record": "{}", "errors": [], "event": {"id": "a",'
                   b' "source": null, "time": "yesterday"}}]', "date-time (at $[0].event.time)"),
    ("quarantine", b"[", "truncated"),
    ("replayed_at", b"2026-07-01 08:00:00", "not an RFC 3339 UTC time ending in Z"),
    ("replayed_at", b"2026-07-01T08:00:00+02:00", "ending in Z"),
    ("replayed_at", b"\xff", "not UTF-8"),
    ("replay_of", b'[["u/1-0"]]', "at `$[0]`"),
    ("replay_of", b'[["u/1-0", "0"]]', "at `$[0][1]`"),
    ("replay_of", b'[[1, 0]]', "at `$[0][0]`"),
    ("replay_of", b'{"u/1-0": 0}', "Expected `array`, got `object`"),
])
def test_malformed_quarantine_and_replay_fields_are_refused_on_both_sides(
    name: str, value: bytes, problem: str,
) -> None:
    with pytest.raises(MalformedEntryError) as caught:
        QueueEntry.from_fields(_fields(**{name: value}))
    assert caught.value.field == name and problem in str(caught.value)
    assert len(str(caught.value)) < 200
    if name == "replayed_at" and problem == "not UTF-8":
        return
    stored = value.decode() if name == "replayed_at" else value
    with pytest.raises(ValueError, match=name):
        msgspec.structs.replace(ENTRY, **{name: stored}).to_args()


def test_replay_of_must_name_one_row_per_record() -> None:
    check_replay_count(REPLAY_OF, 1)
    check_replay_count([("a", 0), ("a", 1)], 2)
    check_replay_count(b"[]", 0)
    with pytest.raises(MalformedEntryError, match="replay_of: names 1 rows for 2 records"):
        check_replay_count(REPLAY_OF, 2)
    with pytest.raises(MalformedEntryError, match="replay_of: not a JSON array"):
        check_replay_count(b"{}", 1)

"""The queue entry, the contract between API and worker processes: what admission stores
is what the worker reads, entries queued by the previous release still read, the optional
event type is stored only when set, and a malformed entry is refused with the field it
lacks."""

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
    QueueEntry,
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
    with pytest.raises(TypeError, match="cannot send a tuple"):
        await svc.admit(wrong, count=1, idempotency_key=None, request_digest="")
    assert await aredis.dbsize() == 0


# --- event_type: the job name of an OrcaSheets request, stored only when set ---------------

WITH_EVENT_TYPE = msgspec.structs.replace(ENTRY, event_type="ecommerce_backfill_2026_05")


def test_an_event_type_is_stored_after_the_other_fields_and_reads_back(
    sync_redis: redis.Redis,
) -> None:
    sync_redis.xadd("s", WITH_EVENT_TYPE.to_fields())  # type: ignore[arg-type]
    [fields] = _stored(sync_redis, "s")
    assert list(fields) == [name.encode() for name in (*FIELD_NAMES, *OPTIONAL_FIELD_NAMES)]
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

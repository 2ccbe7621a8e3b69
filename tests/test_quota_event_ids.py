"""Client event ids decided in the admission script against a real Redis: an id accepted in a
project is acknowledged again but neither counted nor queued, under concurrent resends too,
for as long as its window lasts; a refused admission remembers nothing.

The callers here drive :meth:`QuotaService.admit_many` as the OneSight dialect does: on
:class:`EventsSeen` they drop the events named and admit the others again."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from typing import cast

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from quota import keys
from quota.admission import (
    EVENT_WINDOW_S,
    MAX_EVENT_KEYS,
    Admitted,
    Duplicate,
    EventsSeen,
    QueueFull,
    QuotaExceeded,
    QuotaService,
    idempotency_digest,
)
from strictgate.queue_entry import QueueEntry
from tests.test_quota_admission import FIXED, service, this_month

Event = tuple[str, str | None]
"""(dataset id, client event id or None) of one event of a request."""


def records_of(events: Sequence[Event]) -> bytes:
    """The records of ``events``, each naming its id (so the queue shows which were taken)."""
    return json.dumps([{"event_id": event_id, "n": 1} for _, event_id in events]).encode()


def entries_for(events: Sequence[Event]) -> tuple[list[QueueEntry], list[int]]:
    """One entry per dataset, in first-seen order, and its record count."""
    by_dataset: dict[str, list[Event]] = {}
    for event in events:
        by_dataset.setdefault(event[0], []).append(event)
    entries = [QueueEntry(records=records_of(group), trace_id="t-1", dataset_version=1,
                          received_at="2031-06-15T12:00:00.000Z", project_id="p1",
                          dataset_id=dataset, user_id="u1")
               for dataset, group in by_dataset.items()]
    return entries, [len(group) for group in by_dataset.values()]


def event_key(event_id: str, project_id: str = "p1", user_id: str = "u1") -> str:
    """The key remembering ``event_id`` in ``project_id``."""
    return keys.event_id_key(user_id, project_id, event_id)


async def admit_once(svc: QuotaService, events: Sequence[Event], *, key: str | None = None,
                     digest: str = "", window: int = EVENT_WINDOW_S) -> object:
    """One call of the script for ``events`` (no retry round)."""
    entries, counts = entries_for(events)
    return await svc.admit_many(
        entries, counts=counts, idempotency_key=key, request_digest=digest,
        event_keys=[event_key(i) for _, i in events if i is not None],
        event_window_s=window, user_id="u1", project_id="p1")


async def admit_request(svc: QuotaService, events: Sequence[Event], *,
                        key: str | None = None, digest: str = "",
                        window: int = EVENT_WINDOW_S) -> tuple[object, int]:
    """Admit a request's events as the dialect does (the optimistic loop): the outcome and
    how many events it dropped as seen before."""
    left = list(events)
    rounds = 0
    while True:
        rounds += 1
        assert rounds <= len(events) + 1, "each round must drop at least one event"
        outcome = await admit_once(svc, left, key=key, digest=digest, window=window)
        if not isinstance(outcome, EventsSeen):
            return outcome, len(events) - len(left)
        with_ids = [event for event in left if event[1] is not None]
        seen = {with_ids[position] for position in outcome.positions}
        assert seen, "EventsSeen names at least one event"
        left = [event for event in left if event not in seen]


async def dump(client: aioredis.Redis) -> dict[object, object]:
    """Every key and its serialized value (a change anywhere shows)."""
    return {name: await client.dump(name) for name in sorted(await client.keys("*"))}


async def queued_ids(client: aioredis.Redis, *datasets: str) -> list[str | None]:
    """The event ids of every record queued for ``datasets``, in queue order."""
    found: list[str | None] = []
    for dataset in datasets:
        entries = await client.xrange(keys.queue_key("u1", "p1", dataset))
        for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            found += [r["event_id"] for r in json.loads(fields[b"records"])]
    return found


async def usage(client: aioredis.Redis) -> bytes | None:
    """This month's ``usage_total`` of u1."""
    return cast(bytes | None, await client.get(keys.usage_total_key("u1", this_month())))


# --- keys -------------------------------------------------------------------------------------

def test_event_key_is_a_bounded_digest_under_the_user_s_tag() -> None:
    assert keys.event_id_key("u1", "p1", "loc_20260412_001") == (
        "evid:{u1}:p1:SkLh2hbqeH8Hegc71jQO5A")
    assert keys.event_id_key("u1", "p2", "loc_20260412_001") == (
        "evid:{u1}:p2:SkLh2hbqeH8Hegc71jQO5A")
    assert keys.event_id_key("u1", "p1", "") == "evid:{u1}:p1:yuZpQdnvvUBOTYh1jqZ2cA"
    raw = hashlib.blake2b(b"loc_20260412_001", digest_size=16).digest()
    assert base64.urlsafe_b64encode(raw) == b"SkLh2hbqeH8Hegc71jQO5A=="
    # whatever the client sends, the name has the same size and one hash tag
    for event_id in ("x" * 1_000_000, "ü\ud800:{u2}", "loc_20260412_002"):
        name = keys.event_id_key("u1", "p1", event_id)
        assert len(name) == len("evid:{u1}:p1:") + keys.EVENT_ID_DIGEST_CHARS
        assert name.startswith(keys.event_id_key_prefix("u1", "p1"))
        assert key_slot(name.encode()) == key_slot(keys.quota_limit_key("u1").encode())
    assert keys.event_id_keys("u1", "p1", ["loc_20260412_001", ""]) == [
        keys.event_id_key("u1", "p1", "loc_20260412_001"), keys.event_id_key("u1", "p1", "")]
    with pytest.raises(keys.InvalidIdError):
        keys.event_id_keys("u1", "p:1", [])
    with pytest.raises(keys.InvalidIdError):
        keys.event_id_key("u:1", "p1", "x")
    with pytest.raises(keys.InvalidIdError):
        keys.event_id_key("u1", "p}1", "x")


# --- admission --------------------------------------------------------------------------------

async def test_new_ids_are_admitted_and_remembered_for_the_window(
    aredis: aioredis.Redis,
) -> None:
    svc = service(aredis, default_limit=100)
    events: list[Event] = [("orders", "a"), ("users", "b"), ("orders", "c")]
    result = await admit_once(svc, events, window=3600)
    assert isinstance(result, Admitted)
    assert (result.used, result.remaining, len(result.entry_ids)) == (3, 97, 2)
    assert await usage(aredis) == b"3"
    for event_id in "abc":
        assert await aredis.get(event_key(event_id)) == b"1"
        assert 3590 <= await aredis.ttl(event_key(event_id)) <= 3600
    assert await queued_ids(aredis, "orders", "users") == ["a", "c", "b"]
    # one entry with ids goes through the same script: its id is remembered as well
    single = await admit_once(svc, [("orders", "d")])
    assert isinstance(single, Admitted) and single.used == 4
    assert EVENT_WINDOW_S - 10 <= await aredis.ttl(event_key("d")) <= EVENT_WINDOW_S


async def test_a_resend_names_the_ids_seen_and_changes_nothing(aredis: aioredis.Redis) -> None:
    svc = service(aredis, default_limit=100)
    assert isinstance(await admit_once(svc, [("orders", "a"), ("users", "b")]), Admitted)
    before = await dump(aredis)
    resend: list[Event] = [("orders", "x"), ("orders", "b"), ("users", "y"), ("users", "a")]
    seen = await admit_once(svc, resend, key="req-2", digest="d2")
    # positions are in the event keys given: x, b, y, a (entries_for keeps that order)
    assert seen == EventsSeen(positions=(1, 3))
    assert await dump(aredis) == before  # usage, queues, counters; x, y and req-2 unstored
    assert await aredis.exists(event_key("x"), event_key("y")) == 0


async def test_a_mixed_request_admits_only_its_new_events(aredis: aioredis.Redis) -> None:
    svc = service(aredis, default_limit=100)
    assert isinstance(await admit_once(svc, [("orders", "a"), ("users", "b")]), Admitted)
    events: list[Event] = [("orders", "a"), ("users", "x"), ("users", None), ("orders", "b")]
    result, dropped = await admit_request(svc, events)
    assert isinstance(result, Admitted) and dropped == 2
    assert result.used == 4
    assert await queued_ids(aredis, "orders", "users") == ["a", "b", "x", None]
    assert await aredis.get(keys.queued_records_key(keys.queue_key("u1", "p1", "users"))) == b"3"
    assert await aredis.get(event_key("x")) == b"1"


async def test_a_request_of_seen_events_only_answers_the_quota_and_stores_its_record(
    aredis: aioredis.Redis,
) -> None:
    svc = service(aredis, default_limit=100)
    assert isinstance(await admit_once(svc, [("orders", "a"), ("users", "b")]), Admitted)
    queues_before = await queued_ids(aredis, "orders", "users")
    result, dropped = await admit_request(svc, [("users", "b"), ("orders", "a")],
                                          key="req-9", digest="d9")
    assert dropped == 2 and isinstance(result, Admitted)
    assert (result.used, result.limit, result.remaining) == (2, 100, 98)
    assert (result.entry_id, result.entry_ids) == ("", ())
    assert await usage(aredis) == b"2"
    assert await queued_ids(aredis, "orders", "users") == queues_before
    stored = await aredis.get(keys.idempotency_key("u1", "p1", idempotency_digest("req-9")))
    assert stored == b"d9\n0\n"
    # the replay answers that first outcome, before any event id is looked at
    replay = await admit_once(svc, [("users", "b"), ("orders", "a")], key="req-9", digest="d9")
    assert isinstance(replay, Duplicate)
    assert (replay.count, replay.entry_id, replay.entry_ids, replay.used) == (0, "", (), 2)


async def test_no_entry_writes_no_usage_key_and_is_never_over_quota(
    aredis: aioredis.Redis,
) -> None:
    svc = service(aredis, default_limit=5)
    empty = await svc.admit_many([], counts=[], idempotency_key=None, request_digest="",
                                 user_id="u1", project_id="p1")
    assert isinstance(empty, Admitted) and (empty.used, empty.remaining) == (0, 5)
    assert await aredis.dbsize() == 0
    assert isinstance(await admit_once(svc, [("orders", "a"), ("orders", "b")]), Admitted)
    await svc.set_limit("u1", 1)  # lowered below the month's usage
    result, _ = await admit_request(svc, [("orders", "a"), ("orders", "b")])
    assert isinstance(result, Admitted) and (result.used, result.remaining) == (2, 0)
    assert isinstance(await admit_once(svc, [("orders", "c")]), QuotaExceeded)


async def test_a_replay_answers_its_first_outcome_not_events_seen(
    aredis: aioredis.Redis,
) -> None:
    svc = service(aredis)
    events: list[Event] = [("orders", "a"), ("users", "b")]
    first = await admit_once(svc, events, key="req-1", digest="d1")
    assert isinstance(first, Admitted)
    replay = await admit_once(svc, events, key="req-1", digest="d1")
    assert isinstance(replay, Duplicate)
    assert (replay.count, replay.entry_ids) == (2, first.entry_ids)


async def test_fifty_concurrent_resends_of_the_same_hundred_ids_count_them_once(
    aredis: aioredis.Redis,
) -> None:
    svc = service(aredis)
    events: list[Event] = [(f"d{i % 3}", f"evt-{i}") for i in range(100)]
    results = await asyncio.gather(*(admit_request(svc, events) for _ in range(50)))
    assert all(isinstance(outcome, Admitted) for outcome, _ in results)
    assert sum(100 - dropped for _, dropped in results) == 100
    assert await usage(aredis) == b"100"
    assert await aredis.get(keys.usage_delta_key("u1", this_month())) == b"100"
    queued = await queued_ids(aredis, "d0", "d1", "d2")
    assert sorted(queued) == sorted(f"evt-{i}" for i in range(100))  # type: ignore[type-var]
    counters = [int(await aredis.get(keys.queued_records_key(keys.queue_key("u1", "p1", d)))
                    or 0) for d in ("d0", "d1", "d2")]
    assert counters == [34, 33, 33]


async def test_an_id_is_admitted_again_once_its_window_has_passed(
    aredis: aioredis.Redis,
) -> None:
    svc = service(aredis)
    assert isinstance(await admit_once(svc, [("orders", "a")], window=1), Admitted)
    assert isinstance(await admit_once(svc, [("orders", "a")], window=1), EventsSeen)
    await asyncio.sleep(1.2)
    again = await admit_once(svc, [("orders", "a")], window=1)
    assert isinstance(again, Admitted) and again.used == 2
    assert await queued_ids(aredis, "orders") == ["a", "a"]


async def test_a_refused_admission_remembers_no_id(aredis: aioredis.Redis) -> None:
    svc = QuotaService(aredis, default_limit=3, deadline_s=2.0, clock=lambda: FIXED,
                       max_queue_records=10)
    refused = await admit_once(svc, [("orders", "a"), ("users", "b"), ("users", "c"),
                                     ("orders", "d")])
    assert isinstance(refused, QuotaExceeded) and refused.requested == 4
    assert await aredis.dbsize() == 0
    await svc.set_limit("u1", -1)
    assert isinstance(await admit_once(svc, [("orders", f"q{i}") for i in range(9)]), Admitted)
    full = await admit_once(svc, [("users", "e"), ("orders", "f"), ("orders", "g")])
    assert isinstance(full, QueueFull) and full.dataset_id == "orders"
    assert await aredis.exists(event_key("e"), event_key("f"), event_key("g")) == 0
    # the ids of a refused request are new when it is sent again
    assert isinstance(await admit_once(svc, [("users", "e"), ("users", "f")]), Admitted)


async def test_bad_event_arguments_are_refused_before_redis(aredis: aioredis.Redis) -> None:
    svc = service(aredis)
    entries, counts = entries_for([("orders", "a")])
    other_user = [msgspec.structs.replace(entries[0], user_id="u2")]
    good = event_key("a")
    for bad in [
        {"event_keys": [good, good]},
        {"event_keys": [event_key("a", user_id="u2")]},
        {"event_keys": [event_key("a", project_id="p2")]},
        {"event_keys": ["evid:{u1}:p1:short"]},
        {"event_keys": [good + "x"]},
        {"event_keys": "evid:{u1}:p1:SkLh2hbqeH8Hegc71jQO5A"},
        {"event_keys": [event_key(f"e{i}") for i in range(MAX_EVENT_KEYS + 1)]},
        {"event_keys": [good], "event_window_s": 0},
        {"event_keys": [good], "event_window_s": True},
        {"event_keys": [good], "event_window_s": 1.5},
        {"user_id": "u2"},
        {"project_id": "p2"},
    ]:
        with pytest.raises(ValueError):
            await svc.admit_many(entries, counts=counts, idempotency_key=None,
                                 request_digest="", **bad)  # type: ignore[arg-type]
    for entries_, counts_, owner in [
        ([], [], {}), ([], [], {"user_id": "u1"}), ([], [1], {"user_id": "u1",
                                                            "project_id": "p1"}),
        (other_user, [1], {"user_id": "u1"}), ([], [], {"user_id": "u 1", "project_id": "p1"}),
    ]:
        with pytest.raises(ValueError):
            await svc.admit_many(entries_, counts=counts_, idempotency_key=None,
                                 request_digest="", **owner)  # type: ignore[arg-type]
    assert await aredis.dbsize() == 0

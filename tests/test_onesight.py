"""The OneSight data API (``/api/openapi/v1/data/events``) end to end on a real Redis and a
real lake: the docs' example body and its three event types, every body rule, per-event
idempotency (within a request, across requests, across two API instances, under concurrent
resends, window expiry), quota, and the GET query with each parameter and its pages."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from quota import keys
from strictgate.dialects.onesight import MAX_EVENTS, PATH
from strictgate.lake.engine import LakeConfig
from strictgate.worker.lake_sink import LakeWorker
from tests.ingest_fixtures import Service, start_service
from tests.redis_mode import async_client

UWB = {"event_type": "uwb_location", "event_id": "loc_20260412_001",
       "source": "virtual_store_server", "payload": {
           "customer_id": "cust_123", "position": {"x": 12.5, "y": 8.3, "z": 1.2},
           "zone": "produce_section", "timestamp": "2026-04-12T10:30:00Z"}}
SEED_BODY = {"events": [UWB]}
# the three event types of the docs, as they give them (no event_id, no source)
UWB_EXAMPLE = {"event_type": "uwb_location", "payload": {
    "customer_id": "cust_123", "position": {"x": 12.5, "y": 8.3}, "zone": "electronics",
    "timestamp": "2026-04-12T10:30:00Z"}}
POS_EXAMPLE = {"event_type": "pos_transaction", "payload": {
    "transaction_id": "TXN001", "items": [{"sku": "A001", "qty": 1, "price": 298}],
    "total": 298, "timestamp": "2026-04-12T10:35:00Z"}}
ZONE_EXAMPLE = {"event_type": "zone_trigger", "payload": {
    "customer_id": "cust_123", "zone": "deli_section", "trigger_type": "enter",
    "timestamp": "2026-04-12T10:32:00Z"}}
ZONE_DEFINITION = {"envelope": "none", "fields": {
    "customer_id": "string", "zone": "string", "trigger_type": "string",
    "timestamp": {"type": "timestamp", "required": False}}}


def send(svc: Service, key: str, body: Any, **headers: str) -> Any:
    """POST events as a OneSight client does."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return svc.client.post(PATH, content=raw, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})


def query(svc: Service, key: str, params: str = "") -> Any:
    """GET events."""
    return svc.client.get(f"{PATH}?{params}" if params else PATH,
                          headers={"Authorization": f"Bearer {key}"})


def walk(svc: Service, key: str, params: str) -> list[dict[str, Any]]:
    """Every event of a query, page by page."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = query(svc, key, params + (f"&cursor={cursor}" if cursor else ""))
        assert page.status_code == 200, page.text
        data = page.json()["data"]
        events += data["events"]
        cursor = data["next_cursor"]
        if cursor is None:
            return events


def drain_lake(svc: Service) -> int:
    """Run a lake worker until the queues are empty; the queue entries it wrote."""

    async def run() -> int:
        client = async_client(svc.redis_url)
        worker = LakeWorker(client, LakeConfig.local(svc.data_dir.resolve()),
                            reclaim_idle_ms=0)
        try:
            return await worker.drain()
        finally:
            worker.close()
            await client.aclose()

    return asyncio.run(run())


def usage(sync_redis: redis.Redis, user: str = "u1") -> int:
    raw = sync_redis.get(keys.usage_total_key(user, keys.period_of(datetime.now(UTC))))
    return int(raw) if raw else 0  # type: ignore[arg-type]


def queued(sync_redis: redis.Redis) -> int:
    """Records admitted to the queues and not written yet."""
    return sum(int(sync_redis.get(k) or 0)  # type: ignore[arg-type]
               for k in sync_redis.scan_iter(match="queued:*"))


def infer(svc: Service, project: str = "p1") -> None:
    r = svc.admin("PUT", f"/admin/projects/{project}/settings",
                  json={"unknown_datasets": "infer"})
    assert r.status_code == 200, r.text


@pytest.fixture
def key(svc: Service) -> str:
    """A key of user u1 in project p1, whose event types are inferred."""
    infer(svc)
    return svc.create_key("p1", "u1")


def event(i: int, event_id: str | None = None, **payload: Any) -> dict[str, Any]:
    """A zone_trigger event."""
    body: dict[str, Any] = {"event_type": "zone_trigger", "payload": {
        "customer_id": f"c{i}", "zone": "deli", "trigger_type": "enter", **payload}}
    if event_id is not None:
        body["event_id"] = event_id
    return body


# --- the docs ------------------------------------------------------------------------------

def test_the_docs_body_is_stored_with_its_event_id_and_source(svc: Service, key: str) -> None:
    r = send(svc, key, SEED_BODY, **{"X-Request-Id": "req-onesight-1"})
    assert r.status_code == 202, r.text
    assert r.json() == {"success": True, "data": {
        "received": 1, "event_ids": ["loc_20260412_001"], "duplicates": 0}}
    assert r.headers["X-Request-Id"] == "req-onesight-1"
    drain_lake(svc)
    [found] = walk(svc, key, "event_type=uwb_location")
    assert found["event_type"] == "uwb_location"
    assert found["event_id"] == "loc_20260412_001"
    assert found["source"] == "virtual_store_server"
    assert found["payload"] == UWB["payload"]
    assert found["received_at"].endswith("Z")
    rows = svc.client.get("/datasets/uwb_location/records",
                          headers={"Authorization": f"Bearer {key}"}).json()["records"]
    assert rows[0]["__eventId"] == "loc_20260412_001"
    assert rows[0]["__source"] == "virtual_store_server"
    assert rows[0]["__traceId"] == "req-onesight-1" and rows[0]["__receivedAt"]


def test_the_three_example_event_types_are_inferred_with_nested_types(
        svc: Service, key: str) -> None:
    r = send(svc, key, {"events": [UWB_EXAMPLE, POS_EXAMPLE, ZONE_EXAMPLE]})
    assert r.status_code == 202, r.text
    ids = r.json()["data"]["event_ids"]
    assert len(ids) == 3 and len(set(ids)) == 3 and all(len(i) == 36 for i in ids)
    uwb = svc.admin("GET", "/admin/projects/p1/datasets/uwb_location").json()["definition"]
    assert uwb["envelope"] == "none"
    assert uwb["fields"]["position"]["type"] in ("object", ["object", "null"])
    pos = svc.admin("GET", "/admin/projects/p1/datasets/pos_transaction").json()["definition"]
    assert "array" in pos["fields"]["items"]["type"]
    drain_lake(svc)
    events = walk(svc, key, "")
    # ordered by the payloads' timestamps: 10:30, 10:32, 10:35
    assert [e["event_type"] for e in events] == ["uwb_location", "zone_trigger",
                                                  "pos_transaction"]
    assert [e["payload"] for e in events] == [
        UWB_EXAMPLE["payload"], ZONE_EXAMPLE["payload"], POS_EXAMPLE["payload"]]
    assert [e["event_id"] for e in events] == [ids[0], ids[2], ids[1]]
    assert all(e["source"] is None for e in events)
    # a later pos_transaction breaking the inferred nested type is refused, naming the place
    bad = copy.deepcopy(POS_EXAMPLE)
    bad["payload"]["items"][0]["qty"] = "one"
    r = send(svc, key, {"events": [ZONE_EXAMPLE, bad]})
    assert r.status_code == 400, r.text
    error = r.json()["errors"][0]
    assert error["index"] == 1 and error["field"] == "events[1].payload.items[0].qty"


def test_a_registered_event_type_validates_payloads_all_or_nothing(
        svc: Service, sync_redis: redis.Redis) -> None:
    svc.put_dataset("p1", "zone_trigger", ZONE_DEFINITION)
    key = svc.create_key("p1", "u1")
    body = {"events": [ZONE_EXAMPLE, ZONE_EXAMPLE, {
        "event_type": "zone_trigger", "payload": {**ZONE_EXAMPLE["payload"], "zone": 7}}]}
    r = send(svc, key, body)
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["success"] is False and data["errors"][0]["index"] == 2
    assert data["errors"][0]["field"] == "events[2].payload.zone"
    assert usage(sync_redis) == 0 and queued(sync_redis) == 0
    # an event type nobody registered, under the default policy
    r = send(svc, key, {"events": [{"event_type": "pos_transaction", "payload": {"a": 1}}]})
    assert r.status_code == 400
    assert r.json()["errors"][0] == {
        "index": 0, "code": "dataset_not_found", "field": "events[0].event_type",
        "message": "Dataset schema not found: pos_transaction"}


def test_an_event_type_with_an_envelope_is_refused_clearly(svc: Service) -> None:
    svc.put_dataset("p1", "zone_trigger", {"fields": {"zone": "string"}})
    key = svc.create_key("p1", "u1")
    r = send(svc, key, {"events": [ZONE_EXAMPLE]})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "dataset_not_envelope_free"


# --- body rules ----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "code", "field"), [
    (b"{", 400, "invalid_json", None),
    ({}, 400, "missing_field", "events"),
    ({"events": []}, 400, None, "events"),
    ({"events": {}}, 400, None, "events"),
    ({"events": [1]}, 400, None, "events[0]"),
    ({"events": [{"payload": {"a": 1}}]}, 400, "missing_field", "events[0].event_type"),
    ({"events": [{"event_type": "t"}]}, 400, "missing_field", "events[0].payload"),
    ({"events": [{"event_type": "t", "payload": [1]}]}, 400, None, "events[0].payload"),
    ({"events": [{"event_type": "t", "payload": "x"}]}, 400, None, "events[0].payload"),
    ({"events": [{"event_type": 5, "payload": {}}]}, 400, None, "events[0].event_type"),
    ({"events": [{"event_type": "t", "payload": {}, "extra": 1}]}, 400, None,
     "events[0].extra"),
    ({"events": [{"event_type": "t", "event_id": 7, "payload": {}}]}, 400, None,
     "events[0].event_id"),
    ({"events": [{"event_type": "t", "event_id": "", "payload": {}}]}, 400, None,
     "events[0].event_id"),
    ({"events": [{"event_type": "t", "event_id": "x" * 257, "payload": {}}]}, 400, None,
     "events[0].event_id"),
    ({"events": [{"event_type": "t", "source": "s" * 257, "payload": {}}]}, 400, None,
     "events[0].source"),
    ({"events": [{"event_type": "bad type", "payload": {"a": 1}}]}, 400,
     "invalid_event_type", "events[0].event_type"),
    ({"events": [], "more": 1}, 400, None, None),
])
def test_each_body_rule_is_a_clear_error(svc: Service, key: str, sync_redis: redis.Redis,
                                         body: Any, status: int, code: str | None,
                                         field: str | None) -> None:
    r = send(svc, key, body)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["success"] is False and data["error"]
    if code is not None:
        assert data["errors"][0]["code"] == code, data
    if field is not None:
        assert field in [e.get("field") for e in data["errors"]], data
    assert usage(sync_redis) == 0 and queued(sync_redis) == 0


def test_a_repeated_member_is_refused(svc: Service, key: str) -> None:
    raw = (b'{"events": [{"event_type": "zone_trigger", "event_type": "pos_transaction",'
           b' "payload": {"zone": "a"}}]}')
    r = send(svc, key, raw)
    assert r.status_code == 400, r.text
    assert "event_type" in r.text


def test_more_than_a_thousand_events_is_a_413(svc: Service, key: str,
                                              sync_redis: redis.Redis) -> None:
    r = send(svc, key, {"events": [event(i) for i in range(MAX_EVENTS + 1)]})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == f"Too many events in one request (at most {MAX_EVENTS})"
    assert usage(sync_redis) == 0
    r = send(svc, key, {"events": [event(i) for i in range(MAX_EVENTS)]})
    assert r.status_code == 202, r.text
    assert r.json()["data"]["received"] == MAX_EVENTS and usage(sync_redis) == MAX_EVENTS


def test_escaped_text_and_null_members_take_the_precise_path(svc: Service, key: str) -> None:
    body = {"events": [{"event_type": "zone_trigger", "event_id": "a\"b\\c", "source": None,
                        "payload": {"customer_id": "q\"uote", "zone": "z",
                                    "trigger_type": "enter"}}]}
    r = send(svc, key, body)
    assert r.status_code == 202, r.text
    assert r.json()["data"]["event_ids"] == ["a\"b\\c"]
    drain_lake(svc)
    [found] = walk(svc, key, "")
    assert found["event_id"] == "a\"b\\c" and found["source"] is None
    assert found["payload"]["customer_id"] == "q\"uote"


# --- per-event idempotency -----------------------------------------------------------------

def test_an_id_repeated_in_one_request_is_stored_once(svc: Service, key: str,
                                                      sync_redis: redis.Redis) -> None:
    r = send(svc, key, {"events": [event(1, "e1"), event(2, "e2"), event(3, "e1"),
                                   {**event(4), "event_type": "pos_transaction",
                                    "event_id": "e2"}]})
    assert r.status_code == 202, r.text
    assert r.json()["data"] == {"received": 4, "event_ids": ["e1", "e2", "e1", "e2"],
                                "duplicates": 2}
    assert usage(sync_redis) == 2
    drain_lake(svc)
    events = walk(svc, key, "")
    assert sorted((e["event_id"], e["payload"]["customer_id"]) for e in events) == [
        ("e1", "c1"), ("e2", "c2")]


def test_a_resend_is_acknowledged_but_neither_counted_nor_stored(
        svc: Service, key: str, sync_redis: redis.Redis) -> None:
    body = {"events": [event(i, f"id-{i}") for i in range(10)]}
    assert send(svc, key, body).json()["data"]["duplicates"] == 0
    r = send(svc, key, body)
    assert r.status_code == 202, r.text
    assert r.json()["data"] == {"received": 10, "event_ids": [f"id-{i}" for i in range(10)],
                                "duplicates": 10}
    assert usage(sync_redis) == 10 and queued(sync_redis) == 10
    # half new, half seen (and ids are per project, whatever the event type)
    mixed = {"events": [{**event(i, f"id-{i}"), "event_type": "pos_transaction"}
                        for i in range(5, 15)]}
    r = send(svc, key, mixed)
    assert r.json()["data"]["duplicates"] == 5
    assert usage(sync_redis) == 15
    drain_lake(svc)
    assert len(walk(svc, key, "")) == 15


def test_ids_are_per_project(svc: Service, key: str, sync_redis: redis.Redis) -> None:
    infer(svc, "p2")
    other = svc.create_key("p2", "u1")
    assert send(svc, key, {"events": [event(1, "shared")]}).json()["data"]["duplicates"] == 0
    assert send(svc, other, {"events": [event(1, "shared")]}).json()["data"][
        "duplicates"] == 0
    assert usage(sync_redis) == 2


def test_resends_across_two_api_instances_are_stored_once(
        data_dir: Path, redis_url: str, sync_redis: redis.Redis, tmp_path: Path) -> None:
    first_gen = start_service(data_dir, redis_url)
    second_gen = start_service(tmp_path / "second", redis_url)
    first, second = next(first_gen), next(second_gen)
    try:
        infer(first)
        key = first.create_key("p1", "u1")
        body = {"events": [event(i, f"x-{i}") for i in range(20)]}
        assert send(first, key, body).json()["data"]["duplicates"] == 0
        assert send(second, key, body).json()["data"]["duplicates"] == 20
        assert usage(sync_redis) == 20 and queued(sync_redis) == 20
    finally:
        for gen in (first_gen, second_gen):
            with pytest.raises(StopIteration):
                next(gen)


def test_fifty_concurrent_resends_of_the_same_hundred_ids_count_and_store_a_hundred(
        svc: Service, key: str, sync_redis: redis.Redis) -> None:
    body = json.dumps({"events": [event(i, f"c-{i}") for i in range(100)]}).encode()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: send(svc, key, body), range(50)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers][:3]
    assert sum(100 - a.json()["data"]["duplicates"] for a in answers) == 100
    assert usage(sync_redis) == 100 and queued(sync_redis) == 100
    drain_lake(svc)
    stored = walk(svc, key, "limit=1000")
    assert sorted(e["event_id"] for e in stored) == sorted(f"c-{i}" for i in range(100))


@pytest.fixture
def short_window(data_dir: Path, redis_url: str, sync_redis: redis.Redis
                 ) -> Iterator[Service]:
    """The app remembering event ids for one second."""
    yield from start_service(data_dir, redis_url, STRICTGATE_EVENT_ID_WINDOW_S="1")


def test_an_id_is_new_again_once_its_window_passed(short_window: Service,
                                                   sync_redis: redis.Redis) -> None:
    infer(short_window)
    key = short_window.create_key("p1", "u1")
    body = {"events": [event(1, "w-1")]}
    assert send(short_window, key, body).json()["data"]["duplicates"] == 0
    assert send(short_window, key, body).json()["data"]["duplicates"] == 1
    ttl = sync_redis.ttl(keys.event_id_key("u1", "p1", "w-1"))
    assert 0 < int(ttl) <= 1  # type: ignore[arg-type]
    time.sleep(2.1)
    assert send(short_window, key, body).json()["data"]["duplicates"] == 0
    assert usage(sync_redis) == 2


def test_over_quota_nothing_is_remembered(svc: Service, key: str,
                                          sync_redis: redis.Redis) -> None:
    assert svc.admin("PUT", "/admin/users/u1/quota",
                     json={"monthly_limit": 3}).status_code == 200
    body = {"events": [event(i, f"q-{i}") for i in range(4)]}
    r = send(svc, key, body)
    assert r.status_code == 429, r.text
    assert usage(sync_redis) == 0 and queued(sync_redis) == 0
    # the three new ones fit once one of them is a resend of an accepted id
    assert send(svc, key, {"events": [event(0, "q-0")]}).status_code == 202
    r = send(svc, key, body)
    assert r.status_code == 429  # q-1..q-3 are new: 1 + 3 > 3
    r = send(svc, key, {"events": [event(i, f"q-{i}") for i in range(3)]})
    assert r.status_code == 202, r.text
    assert r.json()["data"]["duplicates"] == 1 and usage(sync_redis) == 3


def test_an_idempotency_key_replays_the_same_ids(svc: Service, key: str,
                                                 sync_redis: redis.Redis) -> None:
    body = {"events": [event(1), event(2, "given")]}
    first = send(svc, key, body, **{"Idempotency-Key": "k-1"})
    again = send(svc, key, body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # the first answer again, the same ids
    assert first.json()["data"]["event_ids"][1] == "given"
    assert usage(sync_redis) == 2
    other = send(svc, key, {"events": [event(3)]}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 422


# --- the query -----------------------------------------------------------------------------

@pytest.fixture
def stored(svc: Service, key: str) -> str:
    """p1 with 30 zone_trigger events (times 10:00:00..10:00:29 on 2026-04-10..12, one
    without a timestamp) and 5 pos_transaction events on 2026-04-11, in the lake."""
    zone = []
    for i in range(30):
        day = 10 + i % 3
        zone.append(event(i, f"z-{i:02d}", timestamp=f"2026-04-{day}T10:00:{i:02d}Z"))
    zone.append(event(99, "z-now"))  # no timestamp: its time is its receipt
    assert send(svc, key, {"events": zone}).status_code == 202
    pos = [{"event_type": "pos_transaction", "event_id": f"p-{i}", "source": "till-3",
            "payload": {"transaction_id": f"T{i}", "total": i,
                        "timestamp": f"2026-04-11T09:00:0{i}+02:00"}} for i in range(5)]
    assert send(svc, key, {"events": pos}).status_code == 202
    drain_lake(svc)
    return key


def test_events_come_in_event_time_order_across_types_and_pages(svc: Service, stored: str
                                                                ) -> None:
    events = walk(svc, stored, "limit=7")
    assert len(events) == 36
    assert len({e["event_id"] for e in events}) == 36
    # pos_transaction at 07:00Z on the 11th comes before the 11th's zone triggers
    ids = [e["event_id"] for e in events]
    assert ids[:10] == [f"z-{i:02d}" for i in range(0, 30, 3)]
    assert ids[10:15] == [f"p-{i}" for i in range(5)]
    assert ids[-1] == "z-now"
    assert events[10]["source"] == "till-3" and events[10]["event_type"] == "pos_transaction"
    assert set(events[0]) == {"event_type", "event_id", "source", "payload", "received_at"}


def test_each_query_parameter(svc: Service, stored: str) -> None:
    zone = walk(svc, stored, "event_type=zone_trigger")
    assert len(zone) == 31 and {e["event_type"] for e in zone} == {"zone_trigger"}
    day = walk(svc, stored, "from=2026-04-11&to=2026-04-11")
    assert sorted(e["event_id"] for e in day) == sorted(
        [f"z-{i:02d}" for i in range(1, 30, 3)] + [f"p-{i}" for i in range(5)])
    two_days = walk(svc, stored, "event_type=zone_trigger&from=2026-04-10&to=2026-04-11")
    assert len(two_days) == 20
    instants = walk(svc, stored, "from=2026-04-12T10:00:20Z&to=2026-04-12T10:00:27Z")
    assert [e["event_id"] for e in instants] == ["z-20", "z-23", "z-26"]
    first = query(svc, stored, "limit=1").json()["data"]
    assert len(first["events"]) == 1 and first["next_cursor"]
    default = query(svc, stored, "").json()["data"]
    assert len(default["events"]) == 36 and default["next_cursor"] is None


@pytest.mark.parametrize(("params", "param"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=x", "limit"),
    ("from=yesterday", "from"), ("to=2026-13-01", "to"),
    ("from=2026-04-12&to=2026-04-11", "to"), ("cursor=forged", "cursor"),
    ("event_type=bad%20type", "event_type"), ("event_type=a&event_type=b", "event_type"),
    ("colour=red", "colour"),
])
def test_a_bad_query_parameter_is_a_400_naming_it(svc: Service, stored: str, params: str,
                                                  param: str) -> None:
    r = query(svc, stored, params)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == param, r.text


def test_a_cursor_belongs_to_its_event_type_filter(svc: Service, stored: str) -> None:
    cursor = query(svc, stored, "event_type=zone_trigger&limit=2").json()["data"]["next_cursor"]
    r = query(svc, stored, f"event_type=pos_transaction&cursor={cursor}")
    assert r.status_code == 400 and "cursor" in r.text


def test_an_unknown_event_type_is_a_404(svc: Service, stored: str) -> None:
    r = query(svc, stored, "event_type=never_sent")
    assert r.status_code == 404


def test_another_project_cannot_read_the_events(svc: Service, stored: str) -> None:
    infer(svc, "p2")
    other = svc.create_key("p2", "u2")
    assert walk(svc, other, "") == []
    assert query(svc, other, "event_type=zone_trigger").status_code == 404
    cursor = query(svc, stored, "limit=2").json()["data"]["next_cursor"]
    r = query(svc, other, f"cursor={cursor}")
    assert r.status_code == 400
    assert query(svc, "not-a-key", "").status_code == 401
    assert svc.client.get(PATH).status_code == 401

"""The ``on_invalid`` policy at the door, over HTTP on a real Redis, for every dialect: under
``reject`` a bad record refuses the request; under ``quarantine`` the good records are
admitted and counted, the bad ones travel with their errors in the same queue entry, the
answer says how many of each, an Idempotency-Key replays the same split, and the quota
counts admitted records only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from quota import keys
from strictgate.queue_entry import QueueEntry
from tests.ingest_fixtures import SEED_DEFINITION, SEED_SINGLE, Service
from tests.test_dry_run import ROUTES, Route, _ready, _send


@pytest.fixture(params=ROUTES, ids=lambda r: r.dialect)
def route(request: pytest.FixtureRequest) -> Route:
    """One dialect's batch route."""
    return request.param  # type: ignore[no-any-return]


def _quarantine(svc: Service, dataset: str) -> None:
    r = svc.admin("PUT", f"/admin/projects/p1/datasets/{dataset}/settings",
                  json={"on_invalid": "quarantine"})
    assert r.status_code == 200, r.text


def _used(sync_redis: redis.Redis) -> int:
    raw = sync_redis.get(keys.usage_total_key("u1", keys.period_of(datetime.now(UTC))))
    return int(raw) if raw else 0  # type: ignore[arg-type]


def _entries(sync_redis: redis.Redis) -> list[QueueEntry]:
    found = []
    for stream in sorted(sync_redis.scan_iter(match="queue:*")):
        for _, fields in sync_redis.xrange(stream):  # type: ignore[union-attr]
            found.append(QueueEntry.from_fields(fields))
    return found


def _summary(answer: dict[str, Any]) -> dict[str, Any]:
    """The quarantine part of a 2xx, wherever the dialect puts it (Definite's answer says
    it in its own words: ``rejected_rows``, and a warning for errors left out)."""
    if "rejected_rows" in answer:
        omitted = [int(w.split()[0]) for w in answer["warnings"] if w.endswith("not listed")]
        return {"quarantined": answer["rejected_rows"], "errors": answer["errors"],
                "errors_omitted": sum(omitted)}
    return answer.get("data", answer)  # type: ignore[no-any-return]


def test_reject_refuses_the_whole_request(svc: Service, sync_redis: redis.Redis,
                                          route: Route) -> None:
    key = _ready(svc)
    r = _send(svc, route, key, route.body(5, 2), "")
    assert r.status_code == 400, r.text
    assert _used(sync_redis) == 0 and _entries(sync_redis) == []


def test_quarantine_admits_the_good_and_keeps_the_bad(svc: Service, sync_redis: redis.Redis,
                                                      route: Route) -> None:
    key = _ready(svc)
    _quarantine(svc, route.dataset)
    r = _send(svc, route, key, route.body(5, 2), "")
    assert r.status_code == route.ok, r.text
    summary = _summary(r.json())
    assert summary["quarantined"] == 2 and summary["errors_omitted"] == 0
    assert {e["index"] for e in summary["errors"]} == {0, 1}
    assert all(e["code"] and e["message"] and "field" in e for e in summary["errors"])
    assert _used(sync_redis) == 3
    [entry] = _entries(sync_redis)
    assert len(orjson.loads(entry.records)) == 3
    assert entry.quarantine is not None
    items = orjson.loads(entry.quarantine)
    assert [item["index"] for item in items] == [0, 1]
    sent = route.body(5, 2)
    first = sent[0] if isinstance(sent, list) else (
        sent["records"][0]["metric_value"] if "records" in sent
        else sent["data"][0] if "data" in sent else sent["events"][0]["payload"])
    assert orjson.loads(items[0]["record"]) == first
    assert all(item["errors"] for item in items)


def test_an_idempotency_key_replays_the_same_split(svc: Service, sync_redis: redis.Redis,
                                                   route: Route) -> None:
    key = _ready(svc)
    _quarantine(svc, route.dataset)
    value = key if route.auth == "x-api-key" else f"Bearer {key}"
    headers = {route.auth: value, "Content-Type": "application/json",
               "Idempotency-Key": "split-1"}
    body = orjson.dumps(route.body(4, 1))
    first = svc.client.post(route.path, content=body, headers=headers)
    again = svc.client.post(route.path, content=body, headers=headers)
    assert first.status_code == again.status_code == route.ok, first.text
    assert again.headers["Idempotent-Replayed"] == "true"
    if route.dialect != "operyn":  # Operyn's batch answer has no ids to compare
        # Definite's request_id names the HTTP request itself
        assert {**again.json(), "request_id": ""} == {**first.json(), "request_id": ""}
    assert _summary(again.json())["quarantined"] == 1
    assert _used(sync_redis) == 3 and len(_entries(sync_redis)) == 1


def test_the_quota_counts_admitted_records_only(svc: Service, sync_redis: redis.Redis,
                                                route: Route) -> None:
    key = _ready(svc)
    _quarantine(svc, route.dataset)
    assert svc.admin("PUT", "/admin/users/u1/quota",
                     json={"monthly_limit": 3}).status_code == 200
    r = _send(svc, route, key, route.body(6, 3), "")
    assert r.status_code == route.ok, r.text
    assert _used(sync_redis) == 3
    # the valid records of the next request do not fit: a 429, and nothing of it is kept
    r = _send(svc, route, key, route.body(2, 1), "")
    assert r.status_code == 429, r.text
    assert len(_entries(sync_redis)) == 1


def test_a_request_of_bad_records_only_is_all_quarantined(
        svc: Service, sync_redis: redis.Redis, route: Route) -> None:
    key = _ready(svc)
    _quarantine(svc, route.dataset)
    r = _send(svc, route, key, route.body(2, 2), "")
    assert r.status_code == route.ok, r.text
    assert _summary(r.json())["quarantined"] == 2
    assert _used(sync_redis) == 0
    [entry] = _entries(sync_redis)
    assert entry.records == b"[]" and entry.quarantine is not None


def test_a_single_bad_record_is_answered_as_quarantined(svc: Service,
                                                        sync_redis: redis.Redis) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    key = svc.create_key("p1", "u1")
    _quarantine(svc, "13")
    r = svc.post("/datasets/13", key, {**SEED_SINGLE, "amount": "lots"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["success"] is True and body["status"] == "quarantined"
    assert body["quarantined"] == 1 and body["errors"][0]["field"] == "amount"
    assert "index" in body["errors"][0]
    good = svc.post("/datasets/13", key, SEED_SINGLE)
    assert good.json() == {"success": True, "status": "queued"}
    operyn = svc.client.post("/events/logs", content=b'{"service": "a", "level": "x",'
                             b' "message": "m"}', headers={
                                 "x-api-key": key, "Content-Type": "application/json"})
    assert operyn.status_code == 400, operyn.text  # logs: reject (the default)

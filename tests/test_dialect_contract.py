"""What every dialect owes its users, checked the same way over each one: auth, quota
headers, idempotency, the request id, metrics, the access log, 413/415, the OpenAPI entry,
and that every route of :data:`strictgate.dialects.INGEST_ROUTES` takes the fast lane and
the router alike."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from strictgate.dialects import DIALECTS, INGEST_ROUTES
from strictgate.ingest.front import match
from tests.ingest_fixtures import SEED_DEFINITION, SEED_SINGLE, Service, start_service

OPERYN_LOG = {"service": "api-gateway", "level": "info", "message": "hello"}
ORCA_ROW = {"order_id": "1001", "amount": 49.99, "status": "shipped"}
ORCA_DEFINITION = {"envelope": "none",
                   "fields": {"order_id": "string", "amount": "number", "status": "string"}}


@dataclass(frozen=True)
class Case:
    """How to speak one dialect: a route for one record and a batch route, the body of
    one record and of ``n``, how a key is sent, where the records go."""

    dialect: str
    one: str
    batch: str
    one_body: Callable[[], Any]
    batch_body: Callable[[int], Any]
    auth: Callable[[str], dict[str, str]]
    setup: Callable[[Service], None]
    dataset: str
    ok: int = 202
    """The status of an accepted request."""
    per_request: tuple[str, ...] = ()
    """Answer members that name the HTTP request itself, so differ on a replay."""


ZONE_EVENT = {"event_type": "zone_trigger",
              "payload": {"customer_id": "c1", "zone": "deli", "trigger_type": "enter"}}
ZONE_DEFINITION = {"envelope": "none", "fields": {
    "customer_id": "string", "zone": "string", "trigger_type": "string"}}


def _onesight(n: int) -> dict[str, Any]:
    return {"events": [ZONE_EVENT] * n}


def _orca(n: int) -> dict[str, Any]:
    return {"event_type": "contract",
            "records": [{"metric_name": "orders", "metric_value": ORCA_ROW}] * n}


def _definite(n: int) -> dict[str, Any]:
    return {"data": [ORCA_ROW] * n, "config": {"table": "bronze.orders"}}


CASES = [
    Case("loguro", "/datasets/13", "/datasets/13/batch", lambda: SEED_SINGLE,
         lambda n: [SEED_SINGLE] * n, lambda key: {"Authorization": f"Bearer {key}"},
         lambda svc: svc.put_dataset("p1", "13", SEED_DEFINITION), "13"),
    Case("operyn", "/events/logs", "/events/logs/batch", lambda: OPERYN_LOG,
         lambda n: [OPERYN_LOG] * n, lambda key: {"x-api-key": key}, lambda svc: None, "logs"),
    Case("orcasheets", "/v1/logs", "/v1/logs", lambda: _orca(1), _orca,
         lambda key: {"Authorization": f"Bearer {key}"},
         lambda svc: svc.put_dataset("p1", "orders", ORCA_DEFINITION), "orders"),
    Case("onesight", "/api/openapi/v1/data/events", "/api/openapi/v1/data/events",
         lambda: _onesight(1), _onesight, lambda key: {"Authorization": f"Bearer {key}"},
         lambda svc: svc.put_dataset("p1", "zone_trigger", ZONE_DEFINITION), "zone_trigger"),
    Case("definite", "/v2/stream", "/v2/stream",
         lambda: {"data": ORCA_ROW, "config": {"table": "LAKE.bronze.orders"}}, _definite,
         lambda key: {"Authorization": f"Bearer {key}"},
         lambda svc: svc.put_dataset("p1", "bronze.orders", ORCA_DEFINITION), "bronze.orders",
         ok=200, per_request=("request_id",)),
]


def test_every_dialect_has_a_case() -> None:
    assert {case.dialect for case in CASES} == {d.name for d in DIALECTS}


@pytest.fixture(params=CASES, ids=lambda c: c.dialect)
def case(request: pytest.FixtureRequest) -> Case:
    """One dialect's case."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def small(data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> Iterator[Service]:
    """The app with a 4 KB body cap."""
    yield from start_service(data_dir, redis_url, STRICTGATE_MAX_BODY_BYTES="4000")


def _post(svc: Service, path: str, body: Any, headers: dict[str, str]) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return svc.client.post(path, content=raw,
                           headers={"Content-Type": "application/json", **headers})


def _ready(svc: Service, case: Case) -> dict[str, str]:
    case.setup(svc)
    return case.auth(svc.create_key("p1", "u1"))


def _metric(svc: Service, name: str, **labels: str) -> float:
    text = svc.client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def test_no_key_is_401_and_nothing_is_queued(small: Service, case: Case) -> None:
    case.setup(small)
    for path, body in ((case.one, case.one_body()), (case.batch, case.batch_body(1))):
        r = _post(small, path, body, {})
        assert r.status_code == 401, r.text
        assert "X-Request-Id" in r.headers
    assert small.drain() == []


def test_a_key_from_another_project_cannot_write_here(small: Service, case: Case) -> None:
    _ready(small, case)
    other = case.auth(small.create_key("p2", "u2"))
    r = _post(small, case.one, case.one_body(), other)
    if case.dialect == "operyn":
        # every project has its own built-in datasets: it lands in p2's, never in p1's
        assert r.status_code == 202
        assert r.headers["X-Quota-Limit"] == "-1"
    elif case.dialect in ("orcasheets", "onesight"):
        assert r.status_code == 400  # p2 has no such table (policy: reject)
        assert r.json()["errors"][0]["code"] == "dataset_not_found"
    else:
        assert r.status_code == 404
    written = small.drain()
    assert all(line.get("__traceId") == r.headers["X-Request-Id"] for line in written)


def test_202_carries_quota_headers_and_request_id(small: Service, case: Case) -> None:
    headers = _ready(small, case)
    r = _post(small, case.one, case.one_body(), {**headers, "X-Request-Id": "req-contract-1"})
    assert r.status_code == case.ok, r.text
    assert r.headers["X-Request-Id"] == "req-contract-1"
    assert r.headers["X-Quota-Limit"] == "-1"
    assert r.headers["X-Quota-Remaining"] == "-1"
    assert re.fullmatch(r"\d{4}-\d\d-01T00:00:00Z", r.headers["X-Quota-Reset"])
    r = _post(small, case.batch, case.batch_body(2), headers)
    assert r.status_code == case.ok, r.text
    [line, *_] = small.drain()
    assert line["__traceId"] == "req-contract-1"


def test_idempotent_retry_is_replayed_and_counted_once(small: Service, case: Case) -> None:
    headers = {**_ready(small, case), "Idempotency-Key": "contract-1"}
    first = _post(small, case.batch, case.batch_body(3), headers)
    again = _post(small, case.batch, case.batch_body(3), headers)
    assert first.status_code == again.status_code == case.ok

    def same(answer: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in answer.items() if k not in case.per_request}

    assert same(first.json()) == same(again.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _post(small, case.batch, case.batch_body(2), headers).status_code == 422
    assert len(small.drain()) == 3
    assert small.admin("GET", "/admin/users/u1/usage").json()["used"] == 3


def test_requests_and_records_are_counted_in_metrics(small: Service, case: Case) -> None:
    headers = _ready(small, case)
    found = match(case.batch)
    assert found is not None
    template = found[0].path  # requests are counted by route template
    assert _post(small, case.batch, case.batch_body(2), headers).status_code == case.ok
    assert _post(small, case.batch, {"not": "an array"}, headers).status_code == 400
    assert _metric(small, "strictgate_requests_total", route=template,
                   status=str(case.ok)) == 1
    assert _metric(small, "strictgate_requests_total", route=template, status="400") == 1
    assert _metric(small, "strictgate_records_accepted_total", project="p1",
                   dataset=case.dataset) == 2


def test_one_access_line_per_request(small: Service, case: Case,
                                     caplog: pytest.LogCaptureFixture) -> None:
    headers = _ready(small, case)
    with caplog.at_level(logging.INFO, logger="strictgate.access"):
        _post(small, case.one, case.one_body(), {**headers, "X-Request-Id": "req-log"})
        _post(small, case.one, case.one_body(), {})
    lines = [json.loads(rec.getMessage()) for rec in caplog.records
             if rec.name == "strictgate.access"]
    assert [(line["path"], line["status"]) for line in lines] == [(case.one, case.ok),
                                                                   (case.one, 401)]
    assert lines[0]["request_id"] == "req-log" and lines[0]["records"] == 1
    key = headers.get("x-api-key") or headers["Authorization"].split()[1]
    assert key not in caplog.text


def test_413_and_415(small: Service, case: Case) -> None:
    headers = _ready(small, case)
    r = _post(small, case.batch, case.batch_body(100), headers)
    assert r.status_code == 413, r.text
    r = small.client.post(case.one, content=json.dumps(case.one_body()).encode(),
                          headers={**headers, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert small.drain() == []


def test_openapi_documents_the_routes(small: Service, case: Case) -> None:
    paths = small.client.get("/openapi.json").json()["paths"]
    for route in INGEST_ROUTES:
        if route.dialect.name == case.dialect:
            assert "post" in paths[route.path], route.path


@pytest.mark.parametrize("route", INGEST_ROUTES, ids=lambda r: r.path)
def test_every_route_takes_the_fast_lane_and_the_router_alike(
    small: Service, route: Any,
) -> None:
    concrete = route.path.replace("{dataset_id}", "13")
    found = match(concrete)
    assert found is not None and found[0] is route
    direct = _post(small, concrete, {}, {})
    # under a root_path the fast lane steps aside and the router serves the same route,
    # with the same answer in the same dialect (401: no key)
    routed = TestClient(small.client.app, root_path="/sg").post(
        "/sg" + concrete, content=b"{}", headers={"Content-Type": "application/json"})
    assert direct.status_code == routed.status_code == 401
    assert direct.json() == routed.json()

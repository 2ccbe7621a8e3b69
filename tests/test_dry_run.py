"""``?dry_run=true`` on every ingest route of every dialect, over HTTP on a real Redis: the
full verdict on every record in a 200, and nothing counted, queued, stored or inferred."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from quota import keys
from strictgate.dialects import DIALECTS, INGEST_ROUTES
from tests.ingest_fixtures import SEED_DEFINITION, SEED_SINGLE, Service

ROW = {"order_id": "1001", "amount": 49.99, "status": "shipped"}
ROW_DEFINITION = {"envelope": "none",
                  "fields": {"order_id": "string", "amount": "number", "status": "string"}}
BAD_SEED = {**SEED_SINGLE, "amount": "lots", "plan": 7, "extra": 1}
BAD_ROW = {"order_id": 5, "amount": "cheap", "status": "shipped"}
OPERYN_LOG = {"service": "api", "level": "info", "message": "hello"}
BAD_LOG = {"service": "api", "level": "loud", "message": 5}


@dataclass(frozen=True)
class Route:
    """How to send ``n`` records (the first ``bad`` of them invalid) to one route."""

    dialect: str
    path: str
    body: Callable[[int, int], Any]
    auth: str
    dataset: str
    ok: int = 202
    """The status of an accepted request."""


def _loguro(n: int, bad: int) -> Any:
    return [BAD_SEED] * bad + [SEED_SINGLE] * (n - bad)


def _operyn(n: int, bad: int) -> Any:
    return [BAD_LOG] * bad + [OPERYN_LOG] * (n - bad)


def _orca(n: int, bad: int) -> Any:
    rows = [BAD_ROW] * bad + [ROW] * (n - bad)
    return {"event_type": "dry", "records": [
        {"metric_name": "orders", "metric_value": r} for r in rows]}


def _onesight(n: int, bad: int) -> Any:
    rows = [BAD_ROW] * bad + [ROW] * (n - bad)
    return {"events": [{"event_type": "orders", "event_id": f"e{i}", "payload": r}
                       for i, r in enumerate(rows)]}


def _definite(n: int, bad: int) -> Any:
    return {"data": [BAD_ROW] * bad + [ROW] * (n - bad), "config": {"table": "bronze.orders"}}


ROUTES = [
    Route("loguro", "/datasets/13/batch", _loguro, "Authorization", "13"),
    Route("operyn", "/events/logs/batch", _operyn, "x-api-key", "logs"),
    Route("orcasheets", "/v1/logs", _orca, "Authorization", "orders"),
    Route("onesight", "/api/openapi/v1/data/events", _onesight, "Authorization", "orders"),
    Route("definite", "/v2/stream", _definite, "Authorization", "bronze.orders", ok=200),
]


def test_every_dialect_has_a_dry_run_case() -> None:
    assert {r.dialect for r in ROUTES} == {d.name for d in DIALECTS}


@pytest.fixture(params=ROUTES, ids=lambda r: r.dialect)
def route(request: pytest.FixtureRequest) -> Route:
    """One dialect's batch route."""
    return request.param  # type: ignore[no-any-return]


def _ready(svc: Service) -> str:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    svc.put_dataset("p1", "orders", ROW_DEFINITION)
    svc.put_dataset("p1", "bronze.orders", ROW_DEFINITION)
    return svc.create_key("p1", "u1")


def _send(svc: Service, route: Route, key: str, body: Any, query: str = "dry_run=true"
          ) -> Any:
    value = key if route.auth == "x-api-key" else f"Bearer {key}"
    return svc.client.post(f"{route.path}?{query}", content=json.dumps(body).encode(),
                           headers={route.auth: value, "Content-Type": "application/json"})


def _untouched(svc: Service, sync_redis: redis.Redis) -> None:
    """Nothing counted, nothing queued."""
    used = sync_redis.get(keys.usage_total_key("u1", keys.period_of(datetime.now(UTC))))
    assert used is None
    assert list(sync_redis.scan_iter(match="queue:*")) == []
    assert svc.drain() == []


def test_a_valid_body_would_be_accepted(svc: Service, sync_redis: redis.Redis,
                                        route: Route) -> None:
    key = _ready(svc)
    r = _send(svc, route, key, route.body(3, 0), "dry_run=true")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["dry_run"] is True and data["outcome"] == "accepted"
    assert (data["status"], data["records"], data["valid"], data["invalid"]) == (202, 3, 3, 0)
    assert data["admitted"] == 3 and data["errors"] == []
    assert data["quota"] == {"limit": -1, "used": 0, "remaining": -1, "requested": 3}
    assert r.headers["X-Request-Id"]
    _untouched(svc, sync_redis)


def test_every_error_of_every_record_is_listed(svc: Service, sync_redis: redis.Redis,
                                                route: Route) -> None:
    key = _ready(svc)
    r = _send(svc, route, key, route.body(4, 2))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["outcome"] == "rejected" and data["status"] == 400
    assert (data["records"], data["invalid"], data["admitted"]) == (4, 2, 0)
    # both bad records, each with more than its first error
    indexes = [e["index"] for e in data["errors"]]
    assert indexes.count(0) >= 2 and indexes.count(1) >= 2 and set(indexes) == {0, 1}
    assert data["error_count"] == len(data["errors"]) and data["errors_omitted"] == 0
    # the real request answers the 400 the dry run announced
    real = _send(svc, route, key, route.body(4, 2), "dry_run=false")
    assert real.status_code == 400
    _untouched(svc, sync_redis)


def test_over_quota_is_announced(svc: Service, sync_redis: redis.Redis, route: Route) -> None:
    key = _ready(svc)
    assert svc.admin("PUT", "/admin/users/u1/quota",
                     json={"monthly_limit": 2}).status_code == 200
    data = _send(svc, route, key, route.body(3, 0)).json()
    assert data["outcome"] == "quota_exceeded" and data["status"] == 429
    assert data["quota"] == {"limit": 2, "used": 0, "remaining": 2, "requested": 3}
    _untouched(svc, sync_redis)


def test_a_quarantining_dataset_is_announced(svc: Service, sync_redis: redis.Redis,
                                             route: Route) -> None:
    key = _ready(svc)
    r = svc.admin("PUT", f"/admin/projects/p1/datasets/{route.dataset}/settings",
                  json={"on_invalid": "quarantine"})
    assert r.status_code == 200, r.text
    data = _send(svc, route, key, route.body(5, 2)).json()
    assert data["outcome"] == "quarantined" and data["status"] == 202
    assert (data["admitted"], data["quarantined"], data["invalid"]) == (3, 2, 2)
    assert {e["index"] for e in data["errors"]} == {0, 1}
    _untouched(svc, sync_redis)


def test_a_bad_dry_run_value_is_a_400(svc: Service, sync_redis: redis.Redis,
                                      route: Route) -> None:
    key = _ready(svc)
    for query in ("dry_run=yes", "dry_run=true&dry_run=false"):
        r = _send(svc, route, key, route.body(1, 0), query)
        assert r.status_code == 400, r.text
        assert "dry_run" in r.text
    _untouched(svc, sync_redis)


def _required_headers(document: dict[str, Any], path: str) -> set[str]:
    """The headers the OpenAPI document says every 200 of ``path``'s POST carries."""
    declared = document["paths"][path]["post"]["responses"]["200"].get("headers", {})
    required = set()
    for name, header in declared.items():
        if "$ref" in header:
            header = document["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required"):
            required.add(name.lower())
    return required


def test_every_ingest_route_takes_a_dry_run(svc: Service, sync_redis: redis.Redis) -> None:
    """Single-record routes too, and the legacy ones: each answers the verdict, with every
    header the OpenAPI document promises for that 200."""
    key = _ready(svc)
    document = svc.client.get("/openapi.json").json()
    operyn = {"logs": OPERYN_LOG,
              "metrics": {"service": "api", "name": "n", "value": 1.5, "unit": "s"},
              "deployments": {"service": "api", "version": "v1", "environment": "prod"}}
    for ingest in INGEST_ROUTES:
        path = ingest.path.replace("{dataset_id}", "13")
        if ingest.dialect.name in ("orcasheets", "onesight", "definite"):
            body: Any = next(r for r in ROUTES if r.dialect == ingest.dialect.name).body(1, 0)
        else:
            one = operyn[str(ingest.dataset)] if ingest.dialect.name == "operyn" \
                else SEED_SINGLE
            body = [one] if ingest.batch else one
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                   "X-Loguro-Dataset-Id": "13"}
        r = svc.client.post(f"{path}?dry_run=1", content=json.dumps(body).encode(),
                            headers=headers)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["outcome"] == "accepted", (path, r.text)
        assert _required_headers(document, ingest.path) <= set(r.headers), path
    _untouched(svc, sync_redis)


def test_a_dry_run_infers_nothing(svc: Service, sync_redis: redis.Redis) -> None:
    key = svc.create_key("p1", "u1")
    assert svc.admin("PUT", "/admin/projects/p1/settings",
                     json={"unknown_datasets": "infer"}).status_code == 200
    body = {"event_type": "dry", "records": [
        {"metric_name": "fresh", "metric_value": ROW},
        {"metric_name": "fresh", "metric_value": {**ROW, "amount": "x"}}]}
    r = svc.client.post("/v1/logs?dry_run=true", content=json.dumps(body).encode(),
                        headers={"Authorization": f"Bearer {key}",
                                 "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["outcome"] == "rejected"
    assert data["errors"][0]["field"] == "records[1].metric_value.amount"
    assert svc.admin("GET", "/admin/projects/p1/datasets/fresh").status_code == 404
    _untouched(svc, sync_redis)


def test_a_dry_run_needs_a_valid_key(svc: Service, sync_redis: redis.Redis) -> None:
    _ready(svc)
    r = svc.client.post("/datasets/13/batch?dry_run=true", content=b"[{}]",
                        headers={"Authorization": "Bearer nope",
                                 "Content-Type": "application/json"})
    assert r.status_code == 401
    _untouched(svc, sync_redis)

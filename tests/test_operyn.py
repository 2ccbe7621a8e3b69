"""The Operyn ingestion API (``/events/*``) end to end on a real Redis: every curl example of
its docs, every error shape, open mode, the organization check, a tightened built-in
dataset, quota and idempotency; what the worker writes is checked record by record."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.ingest_fixtures import Service, start_service

LOG = {
    "service": "api-gateway",
    "level": "error",
    "message": "Upstream timeout connecting to auth-service",
    "traceId": "abc-123-def",
    "metadata": {"region": "us-east-1", "env": "prod", "team": "platform"},
}
LOG_BATCH = [
    {"service": "billing-service", "level": "error",
     "message": "Payment failed for customer 42"},
    {"service": "billing-service", "level": "warn",
     "message": "Retry attempt 3 for payment gateway"},
]
METRIC = {
    "service": "api-gateway",
    "name": "request_latency_p99",
    "value": 2.34,
    "unit": "seconds",
    "labels": {"region": "us-east-1", "env": "prod", "endpoint": "/api/v1/users"},
}
DEPLOYMENT = {
    "service": "payment-service",
    "version": "v2.0.1",
    "environment": "production",
    "gitHash": "a1b2c3d4",
    "metadata": {"deployedBy": "jenkins", "deployId": "job-123"},
}
UNAUTHORIZED = {"statusCode": 401, "message": "Invalid or missing API key"}
ORG_MISMATCH = {"statusCode": 403, "message": "Organization does not match API key"}


def post(svc: Service, path: str, body: Any, key: str | None = None, **headers: str) -> Any:
    """POST ``body`` as Operyn clients do (``x-api-key``)."""
    hdrs = {"Content-Type": "application/json", **headers}
    if key is not None:
        hdrs["x-api-key"] = key
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return svc.client.post(path, content=raw, headers=hdrs)


@pytest.fixture
def okey(svc: Service) -> str:
    """A key of user u1 in project org_123456789 (no dataset registered)."""
    return svc.create_key("org_123456789", "u1")


def _by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["id"]: line for line in lines}


def _recent(text: str) -> bool:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


# --- the docs' examples ------------------------------------------------------------------

def test_single_log_example(svc: Service, okey: str) -> None:
    r = post(svc, "/events/logs", LOG, okey, **{"x-organization-id": "org_123456789"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"id", "queued"} and body["queued"] is True
    assert uuid.UUID(body["id"]).version in (4, 5)
    assert r.headers["X-Quota-Limit"] == "-1" and "X-Request-Id" in r.headers
    [line] = svc.drain()
    assert line["id"] == body["id"]
    assert {k: line[k] for k in LOG} == LOG
    assert _recent(line["timestamp"])  # the server's time: the event had none
    assert line["__traceId"] == r.headers["X-Request-Id"]


def test_log_batch_example(svc: Service, okey: str) -> None:
    r = post(svc, "/events/logs/batch", LOG_BATCH, okey)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2}
    lines = svc.drain()
    assert [{k: line[k] for k in ("service", "level", "message")} for line in lines] \
        == LOG_BATCH
    assert len({line["id"] for line in lines}) == 2


def test_metric_example_keeps_its_timestamp(svc: Service, okey: str) -> None:
    sent = {**METRIC, "timestamp": "2026-06-10T10:58:00.123456+02:00"}
    r = post(svc, "/events/metrics", sent, okey)
    assert r.status_code == 202, r.text
    [line] = svc.drain()
    assert line["id"] == r.json()["id"]
    assert {k: line[k] for k in sent} == sent


def test_deployment_example(svc: Service, okey: str) -> None:
    r = post(svc, "/events/deployments", DEPLOYMENT, okey)
    assert r.status_code == 202, r.text
    [line] = svc.drain()
    assert {k: line[k] for k in DEPLOYMENT} == DEPLOYMENT
    assert line["id"] == r.json()["id"]


def test_metric_and_deployment_batches(svc: Service, okey: str) -> None:
    assert post(svc, "/events/metrics/batch", [METRIC, METRIC], okey).json() == {"accepted": 2}
    assert post(svc, "/events/deployments/batch", [DEPLOYMENT], okey).json() \
        == {"accepted": 1}
    assert len(svc.drain()) == 3


def test_service_is_trimmed(svc: Service, okey: str) -> None:
    r = post(svc, "/events/logs", {**LOG, "service": "  api-gateway \t"}, okey)
    assert r.status_code == 202, r.text
    [line] = svc.drain()
    assert line["service"] == "api-gateway"


def test_bearer_key_works_too(svc: Service, okey: str) -> None:
    r = svc.post("/events/logs", okey, LOG)
    assert r.status_code == 202, r.text


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"x-api-key": "nope"}, {"x-api-key": ""},
                                     {"Authorization": "Bearer nope"}])
def test_missing_or_invalid_key_is_401_in_operyn_shape(svc: Service, headers: dict[str, str]
                                                       ) -> None:
    r = post(svc, "/events/logs", LOG, **headers)
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED


def test_organization_must_be_the_keys_project(svc: Service, okey: str) -> None:
    r = post(svc, "/events/logs", LOG, okey, **{"x-organization-id": "org_other"})
    assert r.status_code == 403
    assert r.json() == ORG_MISMATCH
    assert svc.drain() == []


@pytest.mark.parametrize(("path", "body", "kind", "field"), [
    ("/events/logs", {**LOG, "level": "verbose"}, "log", "level"),
    ("/events/logs", {k: v for k, v in LOG.items() if k != "message"}, "log", "message"),
    ("/events/metrics", {**METRIC, "value": "2.34"}, "metric", "value"),
    ("/events/metrics", {**METRIC, "labels": {"region": 1}}, "metric", "labels.region"),
    ("/events/deployments", {**DEPLOYMENT, "environment": None}, "deployment", "environment"),
])
def test_invalid_event_is_400_naming_the_first_error(
    svc: Service, okey: str, path: str, body: dict[str, Any], kind: str, field: str,
) -> None:
    r = post(svc, path, body, okey)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["statusCode"] == 400
    assert answer["message"].startswith(f"Invalid {kind} event: {field}")
    assert answer["errors"][0]["field"] == field
    assert answer["errors"][0]["code"]
    assert svc.drain() == []


def test_unknown_field_and_a_sent_id_are_refused(svc: Service, okey: str) -> None:
    for extra in ({"color": "red"}, {"id": str(uuid.uuid4())}):
        r = post(svc, "/events/logs", {**LOG, **extra}, okey)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["field"] == next(iter(extra))
    assert svc.drain() == []


@pytest.mark.parametrize("service", ["", "   ", "\t\n"])
def test_service_empty_after_trimming_is_400(svc: Service, okey: str, service: str) -> None:
    r = post(svc, "/events/logs", {**LOG, "service": service}, okey)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith("Invalid log event: service")


def test_batch_is_all_or_nothing_and_names_the_index(svc: Service, okey: str) -> None:
    bad = [LOG_BATCH[0], {**LOG_BATCH[1], "level": "loud"}]
    r = post(svc, "/events/logs/batch", bad, okey)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["message"].startswith("Invalid log event: [1] level")
    assert answer["errors"][0]["index"] == 1
    assert svc.drain() == []


def test_body_errors_keep_the_shape(svc: Service, okey: str) -> None:
    r = post(svc, "/events/logs", b"{not json", okey)
    assert r.status_code == 400
    assert r.json()["message"].startswith("Invalid log event: ")
    r = svc.client.post("/events/logs", content=b"{}", headers={
        "x-api-key": okey, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert r.json()["statusCode"] == 415 and r.json()["errors"][0]["code"]


# --- open mode -----------------------------------------------------------------------------

@pytest.fixture
def open_svc(data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> Iterator[Service]:
    """The app in open mode for project ``dev``."""
    yield from start_service(data_dir, redis_url, STRICTGATE_OPEN_PROJECT="dev")


def test_open_mode_takes_keyless_events_from_five_services(open_svc: Service) -> None:
    for i in range(5):
        r = post(open_svc, "/events/logs", {**LOG, "service": f"svc-{i}"})
        assert r.status_code == 202, r.text
    r = post(open_svc, "/events/logs", {**LOG, "service": "svc-5"})
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "open_service_limit"
    # a known service still gets in, and a batch naming a sixth one is refused whole
    assert post(open_svc, "/events/logs", {**LOG, "service": " svc-0 "}).status_code == 202
    r = post(open_svc, "/events/logs/batch", [{**LOG, "service": "svc-1"},
                                               {**LOG, "service": "svc-6"}])
    assert r.status_code == 403
    lines = open_svc.drain()
    assert len(lines) == 6
    assert {line["service"] for line in lines} == {f"svc-{i}" for i in range(5)}


def test_open_mode_still_refuses_a_bad_key_and_another_org(open_svc: Service) -> None:
    assert post(open_svc, "/events/logs", LOG, "nope").json() == UNAUTHORIZED
    r = post(open_svc, "/events/logs", LOG, **{"x-organization-id": "org_x"})
    assert r.json() == ORG_MISMATCH
    assert post(open_svc, "/events/logs", LOG, **{"x-organization-id": "dev"}).status_code \
        == 202


def test_keys_are_required_without_open_mode(svc: Service) -> None:
    assert post(svc, "/events/logs", LOG).status_code == 401


# --- a project's own definition -------------------------------------------------------------

def _tightened_logs() -> dict[str, Any]:
    return {
        "envelope": "event",
        "fields": {
            "service": {"type": "string", "minLength": 1},
            "level": {"enum": ["debug", "info", "warn", "error", "fatal"]},
            "message": "string",
            "traceId": {"type": "string", "required": False},
            "spanId": {"type": "string", "required": False},
            "metadata": {"type": "object", "properties": {"team": "string"},
                         "required": ["team"], "additionalProperties": True},
        },
    }


def test_a_project_can_tighten_a_built_in_dataset(svc: Service, okey: str) -> None:
    svc.put_dataset("org_123456789", "logs", _tightened_logs())
    no_team = {**LOG, "metadata": {"region": "us-east-1"}}
    r = post(svc, "/events/logs", no_team, okey)
    assert r.status_code == 400, r.text
    assert "metadata.team" in r.json()["message"]
    assert post(svc, "/events/logs", LOG, okey).status_code == 202
    # another project still has the built-in
    other = svc.create_key("org_other", "u2")
    assert post(svc, "/events/logs", no_team, other).status_code == 202
    # deleting the project's own brings the built-in back
    assert svc.admin("DELETE", "/admin/projects/org_123456789/datasets/logs").status_code \
        in (200, 204)
    assert post(svc, "/events/logs", no_team, okey).status_code == 202


def test_a_dataset_without_the_event_envelope_is_refused(svc: Service, okey: str) -> None:
    svc.put_dataset("org_123456789", "logs", {"fields": {"message": "string"}})
    r = post(svc, "/events/logs", LOG, okey)
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "dataset_not_event"


# --- quota and idempotency ------------------------------------------------------------------

def test_quota_is_counted_and_429_in_operyn_shape(svc: Service, okey: str) -> None:
    assert svc.admin("PUT", "/admin/users/u1/quota", json={"monthly_limit": 3}).status_code \
        == 200
    assert post(svc, "/events/logs/batch", LOG_BATCH, okey).status_code == 202
    r = post(svc, "/events/logs", LOG, okey)
    assert r.status_code == 202 and r.headers["X-Quota-Remaining"] == "0"
    r = post(svc, "/events/logs", LOG, okey)
    assert r.status_code == 429
    body = r.json()
    assert body["statusCode"] == 429 and body["message"] == "Monthly dataset quota exceeded"
    assert body["quota"]["limit"] == 3 and body["quota"]["used"] == 3
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["X-Quota-Remaining"] == "0"
    assert len(svc.drain()) == 3


def test_idempotent_retry_answers_the_same_id_and_counts_once(svc: Service, okey: str) -> None:
    first = post(svc, "/events/logs", LOG, okey, **{"Idempotency-Key": "k-1"})
    again = post(svc, "/events/logs", LOG, okey, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = post(svc, "/events/logs", {**LOG, "message": "other"}, okey,
                 **{"Idempotency-Key": "k-1"})
    assert other.status_code == 422
    [line] = svc.drain()
    assert line["id"] == first.json()["id"]
    usage = svc.admin("GET", "/admin/users/u1/usage").json()
    assert usage["used"] == 1

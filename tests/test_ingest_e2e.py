"""The Loguro ingest API end to end: every example and every row of its error table, against
the app on a real Redis, with the worker output checked line by line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
import zstandard

from quota import keys
from tests.ingest_fixtures import (
    JWT_SECRET,
    SEED_BATCH,
    SEED_DEFINITION,
    SEED_SINGLE,
    Service,
    start_service,
)

PAYLOAD_RULES_DEFINITION = {
    "fields": {"country": "string", "amount": "number", "active": "boolean"}
}


def _error(message: str, code: str, field: str | None = None) -> dict[str, Any]:
    """The whole body of a one-error answer."""
    return {"success": False, "error": message,
            "errors": [{"code": code, "field": field, "message": message}]}


def _nothing_queued(svc: Service, sync_redis: redis.Redis) -> None:
    """No record written, none left in a queue, nothing counted for u1."""
    assert svc.drain() == []
    assert all(sync_redis.xlen(q) == 0 for q in sync_redis.keys("queue:*"))
    assert sync_redis.get(keys.usage_total_key("u1", keys.period_of(_now()))) is None


def _strip_meta(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if not k.startswith("__")}


def test_single_record_is_queued_and_written_with_trace_id(svc: Service, key: str) -> None:
    r = svc.post("/datasets/13", key, SEED_SINGLE, **{"X-Request-Id": "req_123"})
    assert r.status_code == 202
    assert r.json() == {"success": True, "status": "queued"}
    assert r.headers["X-Request-Id"] == "req_123"
    assert r.headers["X-Quota-Limit"] == "-1"
    lines = svc.drain()
    assert len(lines) == 1
    assert _strip_meta(lines[0]) == SEED_SINGLE
    assert lines[0]["__traceId"] == "req_123"
    assert lines[0]["__datasetVersion"] == 1


def test_batch_is_queued_and_written_in_order(svc: Service, key: str) -> None:
    r = svc.post("/datasets/13/batch", key, SEED_BATCH, **{"X-Request-Id": "req_b"})
    assert r.status_code == 202
    assert r.json() == {"success": True, "count": 2, "status": "queued"}
    lines = svc.drain()
    assert [_strip_meta(line) for line in lines] == SEED_BATCH
    assert {line["__traceId"] for line in lines} == {"req_b"}


def test_request_id_is_generated_when_absent(svc: Service, key: str) -> None:
    r = svc.post("/datasets/13", key, SEED_SINGLE)
    assert r.status_code == 202
    generated = r.headers["X-Request-Id"]
    assert generated.startswith("req_")
    assert svc.drain()[0]["__traceId"] == generated


def test_payload_rules_examples(svc: Service) -> None:
    svc.put_dataset("p1", "rules", PAYLOAD_RULES_DEFINITION)
    key = svc.create_key("p1", "u1")
    valid = {"timestamp": "2026-06-10T10:00:00Z", "context": {}, "country": "RO",
             "amount": 12.5, "active": True}
    assert svc.post("/datasets/rules", key, valid).status_code == 202
    r = svc.post("/datasets/rules", key, {**valid, "amount": "12.5"})
    assert r.status_code == 400
    assert r.json()["error"] == "Invalid number field: amount"
    assert r.json()["errors"][0] == {
        "code": "invalid_number", "field": "amount", "message": "Invalid number field: amount",
    }
    r = svc.post("/datasets/rules", key, {**valid, "extra": "not allowed"})
    assert r.status_code == 400 and r.json()["error"] == "Extra field: extra"


def test_legacy_paths_use_default_dataset(svc: Service) -> None:
    svc.put_dataset("p1", "default", SEED_DEFINITION)
    key = svc.create_key("p1", "u1")
    assert svc.post("/datasets", key, SEED_SINGLE).json() == {"success": True, "status": "queued"}
    r = svc.post("/datasets/batch", key, SEED_BATCH)
    assert r.json() == {"success": True, "count": 2, "status": "queued"}
    lines = svc.drain()
    assert len(lines) == 3
    assert {p.parts[-3] for p in (svc.data_dir / "output").rglob("*.jsonl")} == {"default"}


def test_header_selects_dataset_on_legacy_paths(svc: Service, key: str) -> None:
    r = svc.post("/datasets/batch", key, SEED_BATCH, **{"X-Loguro-Dataset-Id": "13"})
    assert r.status_code == 202
    svc.drain()
    assert {p.parts[-3] for p in (svc.data_dir / "output").rglob("*.jsonl")} == {"13"}


def test_header_agreeing_with_path_is_fine_and_conflict_is_400(
    svc: Service, key: str, sync_redis: redis.Redis,
) -> None:
    assert svc.post("/datasets/13", key, SEED_SINGLE,
                    **{"X-Loguro-Dataset-Id": "13"}).status_code == 202
    r = svc.post("/datasets/13", key, SEED_SINGLE, **{"X-Loguro-Dataset-Id": "14"})
    assert r.status_code == 400
    assert r.json() == _error("X-Loguro-Dataset-Id does not match the dataset ID in the path",
                              "dataset_id_conflict", "X-Loguro-Dataset-Id")
    assert len(svc.drain()) == 1  # the first request's record only
    assert int(sync_redis.get(keys.usage_total_key("u1", keys.period_of(_now()))) or 0) == 1


# --- the Loguro API's error table, row by row ---------------------------------------------

def test_missing_dataset_schema(svc: Service, key: str) -> None:
    r = svc.post("/datasets/99", key, SEED_SINGLE)
    assert (r.status_code, r.json()["error"]) == (404, "Dataset schema not found")


def test_dataset_of_another_project_answers_like_a_missing_one(svc: Service, key: str) -> None:
    svc.put_dataset("p2", "only-in-p2", SEED_DEFINITION)
    missing = svc.post("/datasets/nope", key, SEED_SINGLE)
    other = svc.post("/datasets/only-in-p2", key, SEED_SINGLE)
    assert (other.status_code, other.json()) == (missing.status_code, missing.json())


def test_invalid_dataset_id(svc: Service, key: str, sync_redis: redis.Redis) -> None:
    r = svc.post("/datasets/-bad", key, SEED_SINGLE)
    assert r.status_code == 400
    assert r.json() == _error("Invalid dataset ID", "invalid_dataset_id", "dataset_id")
    r = svc.post("/datasets", key, SEED_SINGLE, **{"X-Loguro-Dataset-Id": "a b"})
    assert r.status_code == 400
    assert r.json() == _error("Invalid dataset ID", "invalid_dataset_id", "dataset_id")
    _nothing_queued(svc, sync_redis)
    # nor created: no dataset or queue of that name exists afterwards
    assert svc.admin("GET", "/admin/projects/p1/datasets/-bad").status_code in (400, 404)
    assert sync_redis.keys("queue:*") == []


def test_missing_project_claim_in_token(svc: Service, key: str) -> None:
    kid = jwt.get_unverified_header(key).get("kid") or jwt.decode(
        key, options={"verify_signature": False})["kid"]
    claims = {"user_id": "u1", "kid": kid, "iat": 1_700_000_000}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": kid})
    r = svc.post("/datasets/13", token, SEED_SINGLE)
    assert (r.status_code, r.json()["error"]) == (401, "Project not found in API token claims")


@pytest.mark.parametrize(
    ("path", "body", "message", "code"),
    [
        ("/datasets/13", b"{not json", "Invalid JSON body", "invalid_json"),
        ("/datasets/13/batch", b"[{", "Invalid JSON body", "invalid_json"),
        ("/datasets/13", b"[1, 2]", "Payload must be an object", "not_an_object"),
        ("/datasets/13/batch", b"[]", "Batch body must be a non-empty array", "empty_batch"),
        ("/datasets/13/batch", b"{}", "Batch body must be a non-empty array", "not_an_array"),
    ],
)
def test_body_errors(svc: Service, key: str, sync_redis: redis.Redis, path: str, body: bytes,
                     message: str, code: str) -> None:
    r = svc.post(path, key, body)
    assert r.status_code == 400
    assert r.json() == _error(message, code)
    _nothing_queued(svc, sync_redis)


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in SEED_SINGLE.items() if k != name}


@pytest.mark.parametrize(
    ("record", "code", "field", "message"),
    [
        (_without("timestamp"), "invalid_timestamp", "timestamp", "Invalid or missing timestamp"),
        ({**SEED_SINGLE, "timestamp": "yesterday"}, "invalid_timestamp", "timestamp",
         "Invalid or missing timestamp"),
        (_without("context"), "invalid_context", "context", "context must be an object"),
        ({**SEED_SINGLE, "context": "billing"}, "invalid_context", "context",
         "context must be an object"),
        ({**SEED_SINGLE, "extra": "x"}, "extra_field", "extra", "Extra field: extra"),
        (_without("amount"), "missing_field", "amount", "Missing field: amount"),
        ({**SEED_SINGLE, "country": 1}, "invalid_string", "country",
         "Invalid string field: country"),
        ({**SEED_SINGLE, "amount": "42.5"}, "invalid_number", "amount",
         "Invalid number field: amount"),
        ({**SEED_SINGLE, "active": "yes"}, "invalid_boolean", "active",
         "Invalid boolean field: active"),
        ({**SEED_SINGLE, "signup_at": 5}, "invalid_timestamp", "signup_at",
         "Invalid timestamp field: signup_at"),
    ],
)
def test_record_errors_single(
    svc: Service, key: str, record: dict[str, Any], code: str, field: str, message: str
) -> None:
    r = svc.post("/datasets/13", key, record)
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False and body["error"] == message
    assert body["errors"][0] == {"code": code, "field": field, "message": message}
    assert svc.drain() == []


def test_batch_errors_list_every_failing_record_and_nothing_is_queued(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    bad = [SEED_BATCH[0], {**SEED_BATCH[1], "amount": "5"}, {**SEED_BATCH[0], "extra": 1}]
    r = svc.post("/datasets/13/batch", key, bad)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert [(e["index"], e["code"], e["field"]) for e in errors] == [
        (1, "invalid_number", "amount"), (2, "extra_field", "extra"),
    ]
    assert r.json()["error_count"] == 2 and r.json()["errors_omitted"] == 0
    assert svc.drain() == []
    assert sync_redis.get(keys.usage_total_key("u1", keys.period_of(_now()))) is None


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- auth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer garbage", "Basic abc", "Bearer a.b.c"])
def test_bad_or_missing_key_is_401(svc: Service, key: str, auth: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    r = svc.client.post("/datasets/13", content=json.dumps(SEED_SINGLE), headers=headers)
    assert r.status_code == 401
    assert r.json()["success"] is False


def test_revoked_key_is_refused(svc: Service, key: str, sync_redis: redis.Redis) -> None:
    key_id = jwt.decode(key, options={"verify_signature": False})["kid"]
    assert svc.admin("DELETE", f"/admin/projects/p1/keys/{key_id}").status_code in (200, 204)
    r = svc.post("/datasets/13", key, SEED_SINGLE)
    assert r.status_code == 401
    assert r.json() == _error("Unknown or revoked API key", "api_key_revoked")
    _nothing_queued(svc, sync_redis)


# --- quota, idempotency --------------------------------------------------------------------

def test_quota_429_with_details_and_nothing_counted(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    assert svc.admin("PUT", "/admin/users/u1/quota", json={"monthly_limit": 2}).status_code == 200
    ok = svc.post("/datasets/13/batch", key, SEED_BATCH)
    assert ok.status_code == 202
    assert (ok.headers["X-Quota-Limit"], ok.headers["X-Quota-Remaining"]) == ("2", "0")
    r = svc.post("/datasets/13", key, SEED_SINGLE)
    assert r.status_code == 429
    body = r.json()
    assert body["success"] is False and body["errors"][0]["code"] == "quota_exceeded"
    assert body["quota"]["limit"] == 2 and body["quota"]["used"] == 2
    assert body["quota"]["requested"] == 1 and body["quota"]["remaining"] == 0
    assert int(r.headers["Retry-After"]) >= 1
    assert len(svc.drain()) == 2
    period = keys.period_of(_now())
    assert int(sync_redis.get(keys.usage_total_key("u1", period)) or 0) == 2


def test_idempotency_key_replays_and_conflicts(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    first = svc.post("/datasets/13/batch", key, SEED_BATCH, **{"Idempotency-Key": "k1"})
    again = svc.post("/datasets/13/batch", key, SEED_BATCH, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    other = svc.post("/datasets/13/batch", key, SEED_BATCH[:1], **{"Idempotency-Key": "k1"})
    assert other.status_code == 422
    assert other.json()["errors"][0]["code"] == "idempotency_conflict"
    assert len(svc.drain()) == 2
    assert int(sync_redis.get(keys.usage_total_key("u1", keys.period_of(_now()))) or 0) == 2


# --- edge: content type, encodings, size -----------------------------------------------------

@pytest.mark.parametrize(("content_type", "message", "code"), [
    ("text/plain", "Content-Type must be application/json", "unsupported_media_type"),
    (None, "Content-Type must be application/json", "unsupported_media_type"),
    ("application/json; charset=latin-1", "Only the utf-8 charset is supported",
     "unsupported_charset"),
])
def test_content_type_must_be_json(
    svc: Service, key: str, sync_redis: redis.Redis, content_type: str | None, message: str,
    code: str,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = svc.client.post("/datasets/13", content=json.dumps(SEED_SINGLE), headers=headers)
    assert r.status_code == 415
    assert r.json() == _error(message, code)
    _nothing_queued(svc, sync_redis)


def test_gzip_and_zstd_bodies(svc: Service, key: str) -> None:
    raw = json.dumps(SEED_BATCH).encode()
    for encoded, name in ((gzip.compress(raw), "gzip"),
                          (zstandard.ZstdCompressor().compress(raw), "zstd")):
        r = svc.post("/datasets/13/batch", key, encoded, **{"Content-Encoding": name})
        assert r.status_code == 202, r.text
    r = svc.post("/datasets/13/batch", key, raw, **{"Content-Encoding": "br"})
    assert r.status_code == 415
    assert r.json() == _error("Content-Encoding must be gzip, zstd or identity",
                              "unsupported_content_encoding")
    assert len(svc.drain()) == 4


def test_body_and_record_caps(data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    for svc in start_service(data_dir, redis_url, STRICTGATE_MAX_BODY_BYTES="600",
                             STRICTGATE_MAX_RECORDS="2"):
        svc.put_dataset("p1", "13", SEED_DEFINITION)
        key = svc.create_key("p1", "u1")
        big = [SEED_BATCH[0]] * 3
        r = svc.post("/datasets/13/batch", key, big)
        assert r.status_code == 413
        small_gz = gzip.compress(json.dumps(big * 20).encode())
        assert len(small_gz) < 600
        r = svc.post("/datasets/13/batch", key, small_gz, **{"Content-Encoding": "gzip"})
        assert r.status_code == 413
        r = svc.post("/datasets/13/batch", key, [SEED_BATCH[0]] * 3)
        assert r.status_code == 413
        assert svc.drain() == []


# --- service surface -------------------------------------------------------------------------

def test_surface_endpoints(svc: Service, key: str) -> None:
    assert svc.client.get("/healthz").status_code == 200
    assert svc.client.get("/readyz").json()["status"] == "ready"
    svc.post("/datasets/13/batch", key, SEED_BATCH)
    svc.post("/datasets/13", key, {**SEED_SINGLE, "amount": "x"})
    text = svc.client.get("/metrics").text
    assert 'strictgate_records_accepted_total{dataset="13",project="p1"} 2.0' in text
    assert 'code="invalid_number"' in text
    assert "strictgate_admission_seconds_bucket" in text
    assert 'strictgate_requests_total{route="/datasets/{dataset_id}/batch",status="202"}' in text
    doc = svc.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/datasets/{dataset_id}/batch" in doc["paths"]
    assert "Error" in doc["components"]["schemas"]
    assert "openapi.json" in svc.client.get("/docs").text

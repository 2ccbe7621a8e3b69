"""The OrcaSheets universal endpoint (``POST /v1/logs``) end to end: every payload example
of its docs, its Python integration script against a running service, all-or-nothing
across tables, both ``unknown_datasets`` policies, errors that name the place, quota across
tables and idempotency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from strictgate.embedded import free_port
from tests.ingest_fixtures import Service
from tests.serve_proc import Serves

DATA = Path(__file__).parent / "data"
ORDER = {"order_id": "1001", "amount": 49.99, "status": "shipped"}
MINIMAL = {"event_type": "ecommerce_sync",
           "records": [{"metric_name": "orders", "metric_value": ORDER}]}
MULTI_TABLE = {"event_type": "ecommerce_sync", "records": [
    {"metric_name": "orders", "metric_value": ORDER},
    {"metric_name": "users", "metric_value": {
        "user_id": "u_1042", "email": "buyer@example.com", "plan": "pro"}},
    {"metric_name": "inventory", "metric_value": {
        "sku": "SKU-991", "quantity": 42, "warehouse": "west-1"}},
    {"metric_name": "payments", "metric_value": {
        "payment_id": "pay_2201", "order_id": "1001", "amount": 49.99, "status": "captured"}},
    {"metric_name": "shipment-tracking", "metric_value": {
        "order_id": "1001", "carrier": "ups", "tracking_number": "1Z999AA10123456784",
        "status": "in_transit"}},
    {"metric_name": "returns", "metric_value": {
        "return_id": "ret_501", "order_id": "1002", "reason": "size_exchange",
        "status": "requested"}},
]}
APPLICATION_EVENT = {"event_type": "ecommerce_sync", "records": [
    {"metric_name": "returns", "metric_value": {
        "return_id": "ret_502", "order_id": "1003", "reason": "damaged_item",
        "status": "approved", "occurred_at": "2026-05-25T10:15:00Z"}}]}
BACKFILL_EMPTY = {"event_type": "ecommerce_backfill_2026_05", "records": []}
TABLES = ("orders", "users", "inventory", "payments", "shipment-tracking", "returns")


def post(svc: Service, body: Any, key: str | None, **headers: str) -> Any:
    """POST to /v1/logs as OrcaSheets clients do."""
    hdrs = {"Content-Type": "application/json", **headers}
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return svc.client.post("/v1/logs", content=raw, headers=hdrs)


def infer(svc: Service, project: str = "p1") -> None:
    """Set the project's policy to schema on first write."""
    r = svc.admin("PUT", f"/admin/projects/{project}/settings",
                  json={"unknown_datasets": "infer"})
    assert r.status_code == 200, r.text


@pytest.fixture
def okey(svc: Service) -> str:
    """A key of user u1 in project p1."""
    return svc.create_key("p1", "u1")


def _rows(lines: list[dict[str, Any]], *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(line.get(f) for f in fields) for line in lines]


# --- the docs' payloads --------------------------------------------------------------------

def test_minimal_payload_lands_in_its_table_with_the_event_type(svc: Service, okey: str
                                                                ) -> None:
    infer(svc)
    r = post(svc, MINIMAL, okey, **{"X-Request-Id": "req-orca-1"})
    assert r.status_code == 202, r.text
    assert r.json() == {"success": True, "count": 1, "status": "queued"}
    assert r.headers["X-Quota-Limit"] == "-1" and r.headers["X-Request-Id"] == "req-orca-1"
    [line] = svc.drain()
    assert {k: line[k] for k in ORDER} == ORDER
    assert line["__eventType"] == "ecommerce_sync" and line["__traceId"] == "req-orca-1"
    definition = svc.admin("GET", "/admin/projects/p1/datasets/orders").json()
    assert definition["version"] == 1
    assert definition["definition"]["envelope"] == "none"


def test_multi_table_batch_lands_in_six_tables_counted_once(svc: Service, okey: str) -> None:
    infer(svc)
    r = post(svc, MULTI_TABLE, okey)
    assert r.status_code == 202, r.text
    assert r.json()["count"] == 6
    lines = svc.drain()
    assert len(lines) == 6
    listed = svc.admin("GET", "/admin/projects/p1/datasets").json()["datasets"]
    assert {d["dataset_id"] for d in listed if not d.get("builtin")} == set(TABLES)
    assert svc.admin("GET", "/admin/users/u1/usage").json()["used"] == 6


def test_application_event_and_backfill_stay_separable(svc: Service, okey: str) -> None:
    infer(svc)
    assert post(svc, APPLICATION_EVENT, okey).status_code == 202
    backfill = {**APPLICATION_EVENT, "event_type": "ecommerce_backfill_2026_05"}
    backfill["records"][0]["metric_value"]["return_id"] = "ret_1"
    assert post(svc, backfill, okey).status_code == 202
    lines = svc.drain()
    assert _rows(lines, "return_id", "__eventType") == [
        ("ret_502", "ecommerce_sync"), ("ret_1", "ecommerce_backfill_2026_05")]


def test_the_empty_backfill_payload_is_invalid(svc: Service, okey: str) -> None:
    infer(svc)
    r = post(svc, BACKFILL_EMPTY, okey)
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False and body["errors"][0]["field"] == "records"
    assert svc.drain() == []


# --- the docs' Python integration script ----------------------------------------------------

@pytest.mark.slow
def test_the_docs_python_script_runs_unchanged(serves: Serves, tmp_path: Path) -> None:
    server = serves.start(tmp_path / "var", free_port()).wait_healthy()
    admin = server.admin()
    r = httpx.put(f"{server.base}/admin/projects/demo/settings",
                  json={"unknown_datasets": "infer"}, headers=admin)
    assert r.status_code == 200, r.text
    key = httpx.post(f"{server.base}/admin/projects/demo/keys", json={"user_id": "alice"},
                     headers=admin).json()["api_key"]
    script = tmp_path / "push.py"
    script.write_text((DATA / "orcasheets_integration.py.txt").read_text().replace(
        "{API_URL}", f"{server.base}/v1/logs"))
    env = {**os.environ, "ORCASHEETS_JWT": key}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Pushed 6 records (HTTP 202)"
    read = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 20
    counts: dict[str, int] = {}
    while time.monotonic() < deadline and sum(counts.values()) < 6:
        counts = {t: len(httpx.get(f"{server.base}/datasets/{t}/records", headers=read
                                   ).json().get("records", [])) for t in TABLES}
        time.sleep(0.2)
    assert counts == dict.fromkeys(TABLES, 1)
    usage = httpx.get(f"{server.base}/admin/users/alice/usage", headers=admin).json()
    assert usage["used"] == 6
    row = httpx.get(f"{server.base}/datasets/orders/records", headers=read).json()["records"][0]
    # the script coerces "1001" to 1001 and "49.99" to 49.99, as its docs say
    assert (row["order_id"], row["amount"], row["__eventType"]) == (1001, 49.99,
                                                                    "ecommerce_sync")


# --- all or nothing, errors --------------------------------------------------------------

def test_one_bad_row_refuses_the_whole_request_naming_the_place(svc: Service, okey: str
                                                                ) -> None:
    svc.put_dataset("p1", "orders", {"envelope": "none", "fields": {
        "order_id": "string", "amount": "number", "status": "string"}})
    svc.put_dataset("p1", "users", {"envelope": "none", "fields": {
        "user_id": "string", "email": "string", "plan": "string"}})
    body = {"event_type": "sync", "records": [
        {"metric_name": "users", "metric_value": MULTI_TABLE["records"][1]["metric_value"]},
        {"metric_name": "orders", "metric_value": {**ORDER, "amount": "49.99"}},
        {"metric_name": "orders", "metric_value": ORDER},
    ]}
    r = post(svc, body, okey)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["error"] == "Invalid number field: amount"
    assert answer["errors"] == [{"index": 1, "code": "invalid_number",
                                 "field": "records[1].metric_value.amount",
                                 "message": "Invalid number field: amount"}]
    assert svc.drain() == []
    assert svc.admin("GET", "/admin/users/u1/usage").json()["used"] == 0


def test_reject_policy_names_the_unregistered_table(svc: Service, okey: str) -> None:
    svc.put_dataset("p1", "orders", {"envelope": "none", "fields": {
        "order_id": "string", "amount": "number", "status": "string"}})
    r = post(svc, {"event_type": "sync", "records": [
        {"metric_name": "orders", "metric_value": ORDER},
        {"metric_name": "ghosts", "metric_value": {"a": 1}}]}, okey)
    assert r.status_code == 400
    assert r.json()["errors"] == [{"index": 1, "code": "dataset_not_found",
                                   "field": "records[1].metric_name",
                                   "message": "Dataset schema not found: ghosts"}]
    assert svc.admin("GET", "/admin/projects/p1/datasets/ghosts").status_code == 404
    assert svc.drain() == []


@pytest.mark.parametrize(("body", "field"), [
    (b"[]", None),
    ({"records": MINIMAL["records"]}, "event_type"),
    ({"event_type": "", "records": MINIMAL["records"]}, "event_type"),
    ({"event_type": 5, "records": MINIMAL["records"]}, "event_type"),
    ({"event_type": "   ", "records": MINIMAL["records"]}, "event_type"),
    ({"event_type": "x" * 201, "records": MINIMAL["records"]}, "event_type"),
    ({**MINIMAL, "extra": 1}, "extra"),
    ({"event_type": "x", "records": [{"metric_name": "orders"}]}, "records[0].metric_value"),
    ({"event_type": "x", "records": [{"metric_name": "orders", "metric_value": [1]}]},
     "records[0].metric_value"),
    ({"event_type": "x", "records": [{"metric_name": 7, "metric_value": {}}]},
     "records[0].metric_name"),
    ({"event_type": "x", "records": [{"metric_name": "a/b", "metric_value": {"a": 1}}]},
     "records[0].metric_name"),
    ({"event_type": "x", "records": [
        {"metric_name": "orders", "metric_value": ORDER, "metric_unit": "x"}]},
     "records[0].metric_unit"),
])
def test_malformed_envelopes_are_400_naming_the_place(
    svc: Service, okey: str, body: Any, field: str | None,
) -> None:
    infer(svc)
    r = post(svc, body, okey)
    assert r.status_code == 400, r.text
    if field is not None:
        assert r.json()["errors"][0]["field"] == field
    assert svc.drain() == []


@pytest.mark.parametrize("raw", [
    b'{"event_type":"a","event_type":"b","records":[{"metric_name":"orders",'
    b'"metric_value":{"order_id":"1"}}]}',
    b'{"event_type":"a","records":[{"metric_name":"orders","metric_name":"users",'
    b'"metric_value":{"order_id":"1"}}]}',
    b'{"event_type":"a","records":[{"metric_name":"orders","metric_value":{"order_id":"1"},'
    b'"metric_value":{"order_id":"2"}}]}',
    b'{"event_type":"a","records":[{"metric_name":"orders","metric_value":'
    b'{"order_id":"1","order_id":"2"}}]}',
    b'{"event_type":"a\\u0022","records":[{"metric_name":"orders","metric_name":"x",'
    b'"metric_value":{"order_id":"1"}}]}',
])
def test_a_repeated_member_anywhere_is_refused(svc: Service, okey: str, raw: bytes) -> None:
    infer(svc)
    r = post(svc, raw, okey)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "duplicate_field"
    assert svc.drain() == []


def test_no_key_is_401_in_our_grammar(svc: Service) -> None:
    r = post(svc, MINIMAL, None)
    assert r.status_code == 401
    assert r.json()["success"] is False and r.json()["errors"][0]["code"] == "unauthorized"


# --- inference ---------------------------------------------------------------------------------

def test_inferred_tables_are_then_strict_and_grow_additively(svc: Service, okey: str) -> None:
    infer(svc)
    assert post(svc, MINIMAL, okey).status_code == 202
    r = post(svc, {"event_type": "s", "records": [
        {"metric_name": "orders", "metric_value": {**ORDER, "amount": "cheap"}}]}, okey)
    assert r.status_code == 400
    assert r.json()["error"] == "Invalid number field: amount"
    # a new column: a new version with that column optional
    r = post(svc, {"event_type": "s", "records": [
        {"metric_name": "orders", "metric_value": {**ORDER, "coupon": "X1"}}]}, okey)
    assert r.status_code == 202, r.text
    info = svc.admin("GET", "/admin/projects/p1/datasets/orders").json()
    assert info["version"] == 2
    assert info["definition"]["fields"]["coupon"]["required"] is False
    # and rows without it still fit
    assert post(svc, MINIMAL, okey).status_code == 202
    assert len(svc.drain()) == 3


def test_nested_values_are_not_inferred_for_orcasheets(svc: Service, okey: str) -> None:
    infer(svc)
    r = post(svc, {"event_type": "s", "records": [
        {"metric_name": "orders", "metric_value": {**ORDER, "address": {"city": "x"}}}]}, okey)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"].startswith("records[0].metric_value.address")
    assert svc.admin("GET", "/admin/projects/p1/datasets/orders").status_code == 404


# --- quota and idempotency across tables ------------------------------------------------------

def test_quota_counts_rows_across_tables_all_or_nothing(svc: Service, okey: str,
                                                        sync_redis: redis.Redis) -> None:
    infer(svc)
    assert svc.admin("PUT", "/admin/users/u1/quota", json={"monthly_limit": 7}
                     ).status_code == 200
    assert post(svc, MULTI_TABLE, okey).status_code == 202
    r = post(svc, MULTI_TABLE, okey)
    assert r.status_code == 429
    assert r.json()["quota"]["used"] == 6 and r.headers["X-Quota-Remaining"] == "1"
    assert post(svc, MINIMAL, okey).status_code == 202
    assert len(svc.drain()) == 7


def test_idempotent_retry_across_tables(svc: Service, okey: str) -> None:
    infer(svc)
    first = post(svc, MULTI_TABLE, okey, **{"Idempotency-Key": "orca-1"})
    again = post(svc, MULTI_TABLE, okey, **{"Idempotency-Key": "orca-1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert post(svc, MINIMAL, okey, **{"Idempotency-Key": "orca-1"}).status_code == 422
    assert len(svc.drain()) == 6
    assert svc.admin("GET", "/admin/users/u1/usage").json()["used"] == 6

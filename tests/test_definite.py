"""The Definite Stream API (``POST /v2/stream``, append mode) from the user's side: every
append example of its docs, its Python helpers run unchanged but for URL and key against a
running service (rows read back from the lake), NDJSON as ``curl -d @-`` sends it, gzip and
zstd, each status of its error table that applies, its limits, the quarantine split, and the
temporary answers to ``mode: "merge"`` and ``wait: true``."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from strictgate.dialects.definite import MAX_DEPTH, MAX_FIELD_BYTES, MAX_ROWS, WAIT_WARNING
from strictgate.embedded import free_port
from tests.ingest_fixtures import Service
from tests.serve_proc import Serves

DATA = Path(__file__).parent / "data"
FIELDS = {"success", "request_id", "stream_id", "table", "accepted", "successful_rows",
          "rejected_rows", "partitions", "snapshot_id", "warnings", "errors"}
CUSTOMERS = [{"id": 1, "name": "Alice", "email": "alice@example.com"},
             {"id": 2, "name": "Bob", "email": "bob@example.com"}]
APPEND_EXAMPLE = {"data": CUSTOMERS, "config": {
    "table": "bronze.customers", "mode": "append", "wait": False,
    "tags": {"source": "my-app"}}}
CURL_EXAMPLE = {"data": [{"event_type": "signup", "user_id": "456"},
                         {"event_type": "purchase", "user_id": "456", "amount": 99.99}],
                "config": {"table": "bronze.events", "mode": "append"}}
NDJSON_EXAMPLE = (b'{"event_type": "page_view", "user_id": "123"}\n'
                  b'{"event_type": "click", "user_id": "123"}\n'
                  b'{"event_type": "purchase", "user_id": "123"}\n')
CUSTOMER_DEFINITION = {"envelope": "none", "fields": {
    "id": "integer", "name": "string", "email": "string"}}


def post(svc: Service, body: Any, key: str | None, path: str = "/v2/stream",
         **headers: str) -> Any:
    """POST as a Definite client does (JSON unless told)."""
    hdrs = {"Content-Type": "application/json", **headers}
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return svc.client.post(path, content=raw, headers=hdrs)


def infer(svc: Service) -> None:
    """Schema on first write for project p1."""
    r = svc.admin("PUT", "/admin/projects/p1/settings", json={"unknown_datasets": "infer"})
    assert r.status_code == 200, r.text


@pytest.fixture
def dkey(svc: Service) -> str:
    """A key of user u1 in project p1."""
    return svc.create_key("p1", "u1")


def _rows(svc: Service, *fields: str) -> list[tuple[Any, ...]]:
    return [tuple(line.get(f) for f in fields) for line in svc.drain()]


# --- the docs' examples ----------------------------------------------------------------------

def test_the_append_example_answers_the_documented_fields(svc: Service, dkey: str) -> None:
    infer(svc)
    r = post(svc, APPEND_EXAMPLE, dkey, **{"X-Request-Id": "req-def-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == FIELDS
    assert body["stream_id"].startswith("st_")
    assert {k: v for k, v in body.items() if k != "stream_id"} == {
        "success": True, "request_id": "req-def-1", "table": "bronze.customers",
        "accepted": 2, "successful_rows": 2, "rejected_rows": 0, "partitions": [],
        "snapshot_id": None, "warnings": [], "errors": []}
    assert r.headers["X-Quota-Limit"] == "-1"
    assert _rows(svc, "id", "name", "email", "__traceId") == [
        (1, "Alice", "alice@example.com", "req-def-1"),
        (2, "Bob", "bob@example.com", "req-def-1")]
    definition = svc.admin("GET", "/admin/projects/p1/datasets/bronze.customers").json()
    assert definition["definition"]["envelope"] == "none"


def test_the_curl_example_and_a_single_object(svc: Service, dkey: str) -> None:
    infer(svc)
    r = post(svc, CURL_EXAMPLE, dkey)
    assert r.status_code == 200, r.text
    assert r.json()["successful_rows"] == 2
    one = {"data": {"event_type": "click", "user_id": "9"},
           "config": {"table": "LAKE.bronze.events"}}
    r = post(svc, one, dkey)
    assert r.status_code == 200, r.text
    assert (r.json()["table"], r.json()["accepted"]) == ("bronze.events", 1)
    assert _rows(svc, "event_type", "amount") == [("signup", None), ("purchase", 99.99),
                                                   ("click", None)]


def test_a_registered_table_takes_rows_under_the_reject_policy(svc: Service, dkey: str
                                                               ) -> None:
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    assert post(svc, APPEND_EXAMPLE, dkey).status_code == 200
    assert len(svc.drain()) == 2


def test_nested_values_are_inferred(svc: Service, dkey: str) -> None:
    infer(svc)
    row = {"id": 1, "address": {"city": "Oslo", "zip": "0150"}, "tags": ["a", "b"]}
    r = post(svc, {"data": [row], "config": {"table": "bronze.people"}}, dkey)
    assert r.status_code == 200, r.text
    [line] = svc.drain()
    assert line["address"] == {"city": "Oslo", "zip": "0150"} and line["tags"] == ["a", "b"]


def test_gzip_and_zstd_bodies(svc: Service, dkey: str) -> None:
    infer(svc)
    raw = json.dumps(CURL_EXAMPLE).encode()
    r = post(svc, gzip.compress(raw), dkey, **{"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    r = post(svc, zstandard.ZstdCompressor().compress(raw), dkey,
             **{"Content-Encoding": "zstd"})
    assert r.status_code == 200, r.text
    assert len(svc.drain()) == 4


# --- NDJSON ----------------------------------------------------------------------------------

def test_ndjson_rows_take_their_config_from_the_query(svc: Service, dkey: str) -> None:
    infer(svc)
    r = post(svc, NDJSON_EXAMPLE, dkey, "/v2/stream?table=bronze.events&mode=append&wait=false",
             **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert (r.json()["table"], r.json()["successful_rows"]) == ("bronze.events", 3)
    assert _rows(svc, "event_type") == [("page_view",), ("click",), ("purchase",)]


def test_ndjson_as_curl_d_sends_it(svc: Service, dkey: str) -> None:
    """``curl -d @-`` drops the newlines: the rows arrive back to back on one line."""
    infer(svc)
    flat = NDJSON_EXAMPLE.replace(b"\n", b"")
    r = post(svc, flat, dkey, "/v2/stream?table=bronze.events",
             **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert r.json()["successful_rows"] == 3
    assert len(svc.drain()) == 3


@pytest.mark.parametrize(("raw", "query", "code", "field"), [
    (NDJSON_EXAMPLE, "", "missing_table", "table"),
    (NDJSON_EXAMPLE, "table=bronze.events&table=x.y", "repeated_parameter", "table"),
    (NDJSON_EXAMPLE, "table=bronze.events&tabel=x", "unknown_parameter", "tabel"),
    (NDJSON_EXAMPLE, "table=bronze.events&wait=maybe", "invalid_wait", "wait"),
    (b'{"a": 1}\n{"a": 2\n', "table=bronze.events", "invalid_json", None),
    (b'{"a": 1}\n[1]\n', "table=bronze.events", "invalid_row", "rows[1]"),
    (b"\n\n", "table=bronze.events", "empty_data", None),
])
def test_bad_ndjson_is_a_400_naming_the_place(svc: Service, dkey: str, raw: bytes,
                                              query: str, code: str, field: str | None
                                              ) -> None:
    infer(svc)
    r = post(svc, raw, dkey, f"/v2/stream?{query}", **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400, r.text
    assert (r.json()["errors"][0]["code"], r.json()["errors"][0]["field"]) == (code, field)
    assert svc.drain() == []


def test_ndjson_is_taken_on_this_route_only(svc: Service, dkey: str) -> None:
    r = post(svc, NDJSON_EXAMPLE, dkey, "/v1/logs", **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 415
    assert r.json()["error"] == "Content-Type must be application/json"
    r = post(svc, NDJSON_EXAMPLE, dkey, **{"Content-Type": "text/csv"})
    assert r.status_code == 415
    assert "application/x-ndjson" in r.json()["error"]


# --- the error table -------------------------------------------------------------------------

def test_401_without_a_valid_key(svc: Service) -> None:
    for key in (None, "sk_not_a_key"):
        r = post(svc, CURL_EXAMPLE, key)
        assert r.status_code == 401, r.text
        assert r.json()["success"] is False
    assert svc.drain() == []


def test_404_for_a_table_that_does_not_exist(svc: Service, dkey: str) -> None:
    r = post(svc, CURL_EXAMPLE, dkey)
    assert r.status_code == 404, r.text
    assert r.json()["errors"] == [{
        "code": "table_not_found", "field": "config.table",
        "message": "Table not found: bronze.events (the namespace or table does not exist)"}]
    assert svc.drain() == []


@pytest.mark.parametrize("table", [
    "events", "a.b.c", "LAKE.a.b.c", "lake.a.b", "a..b", "a/b.c", ".a.b", "a.b.", "",
    "n." + "t" * 130])
def test_a_bad_table_name_is_a_400(svc: Service, dkey: str, table: str) -> None:
    r = post(svc, {"data": CUSTOMERS, "config": {"table": table}}, dkey)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "invalid_table"
    assert r.json()["errors"][0]["field"] == "config.table"


@pytest.mark.parametrize(("body", "field"), [
    ({"data": CUSTOMERS}, "config"),
    ({"config": {"table": "bronze.c"}}, "data"),
    ({"data": CUSTOMERS, "config": {"table": "bronze.c", "colour": "red"}}, "config.colour"),
    ({"data": CUSTOMERS, "config": {"table": "bronze.c"}, "extra": 1}, "extra"),
    ({"data": CUSTOMERS, "config": {"table": 5}}, "config.table"),
    ({"data": CUSTOMERS, "config": {"table": "bronze.c", "wait": "yes"}}, "config.wait"),
    ({"data": CUSTOMERS, "config": {"table": "bronze.c", "mode": "upsert"}}, "config.mode"),
    ({"data": CUSTOMERS, "config": {"table": "bronze.c", "tags": {"a": 1}}}, "config.tags.a"),
    ({"data": 5, "config": {"table": "bronze.c"}}, "data"),
    ({"data": [], "config": {"table": "bronze.c"}}, "data"),
    ({"data": [1], "config": {"table": "bronze.c"}}, "data[0]"),
])
def test_a_malformed_request_is_a_400_naming_the_place(svc: Service, dkey: str, body: Any,
                                                       field: str) -> None:
    infer(svc)
    r = post(svc, body, dkey)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("raw", [
    b'{"data":[{"a":1}],"data":[{"a":2}],"config":{"table":"bronze.c"}}',
    b'{"data":[{"a":1}],"config":{"table":"bronze.c","table":"bronze.d"}}',
    b'{"data":[{"a":1}],"config":{"table":"bronze.c"},"config":{"table":"bronze.d"}}',
    b'{"data":[{"a":"\\u0022"}],"config":{"table":"bronze.c","mode":"append","mode":"x"}}',
    b'{"data":[{"a":1}],"config":{"table":"bronze.c"}',
])
def test_a_repeated_member_or_broken_json_is_refused(svc: Service, dkey: str, raw: bytes
                                                     ) -> None:
    infer(svc)
    r = post(svc, raw, dkey)
    assert r.status_code == 400, r.text
    assert svc.drain() == []


def test_a_query_string_config_is_refused_for_a_json_body(svc: Service, dkey: str) -> None:
    infer(svc)
    r = post(svc, CURL_EXAMPLE, dkey, "/v2/stream?table=other.t")
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "unknown_parameter"


def test_an_invalid_row_is_a_400_naming_row_and_field(svc: Service, dkey: str) -> None:
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    rows = [CUSTOMERS[0], {**CUSTOMERS[1], "id": "two"}]
    r = post(svc, {"data": rows, "config": {"table": "bronze.customers"}}, dkey)
    assert r.status_code == 400, r.text
    [error] = r.json()["errors"]
    assert (error["index"], error["field"]) == (1, "data[1].id")
    assert svc.drain() == []


def test_merge_without_one_primary_key_column_is_a_422(svc: Service, dkey: str) -> None:
    infer(svc)
    for pk in (None, [], ["id", "email"], [""]):
        config: dict[str, Any] = {"table": "bronze.customers", "mode": "merge"}
        if pk is not None:
            config["primary_key"] = pk
        r = post(svc, {"data": CUSTOMERS, "config": config}, dkey)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["code"] == "invalid_primary_key"
    r = post(svc, {"data": CUSTOMERS, "config": {"table": "bronze.customers",
                                                 "primary_key": ["id"]}}, dkey)
    assert r.status_code == 422, r.text
    r = post(svc, NDJSON_EXAMPLE, dkey, "/v2/stream?table=bronze.events&mode=merge",
             **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 422, r.text
    assert svc.drain() == []


def test_merge_is_not_supported_yet(svc: Service, dkey: str) -> None:
    infer(svc)
    body = {"data": CUSTOMERS, "config": {"table": "bronze.customers", "mode": "merge",
                                          "primary_key": ["id"]}}
    r = post(svc, body, dkey)
    assert r.status_code == 501, r.text
    assert r.json()["errors"][0]["code"] == "merge_unsupported"
    assert svc.drain() == []


def test_wait_true_answers_that_the_rows_are_queued(svc: Service, dkey: str) -> None:
    infer(svc)
    body = {"data": CUSTOMERS, "config": {"table": "bronze.customers", "wait": True}}
    r = post(svc, body, dkey)
    assert r.status_code == 200, r.text
    assert r.json()["snapshot_id"] is None and r.json()["warnings"] == [WAIT_WARNING]
    assert len(svc.drain()) == 2


def test_429_over_quota(svc: Service, dkey: str) -> None:
    infer(svc)
    assert svc.admin("PUT", "/admin/users/u1/quota",
                     json={"monthly_limit": 1}).status_code == 200
    r = post(svc, CURL_EXAMPLE, dkey)
    assert r.status_code == 429, r.text
    assert svc.drain() == []


def test_idempotent_retry_names_the_same_stream(svc: Service, dkey: str) -> None:
    infer(svc)
    first = post(svc, CURL_EXAMPLE, dkey, **{"Idempotency-Key": "def-1"})
    again = post(svc, CURL_EXAMPLE, dkey, **{"Idempotency-Key": "def-1"})
    other = post(svc, CURL_EXAMPLE, dkey)
    assert first.json()["stream_id"] == again.json()["stream_id"] != other.json()["stream_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(svc.drain()) == 4


def test_an_idempotency_key_covers_the_ndjson_config_in_the_query(svc: Service,
                                                                  dkey: str) -> None:
    """The same NDJSON body to another table is another request: a 422, not a replay."""
    infer(svc)
    rows = b'{"a": 1}\n{"a": 2}\n'
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "nd-1"}
    first = post(svc, rows, dkey, "/v2/stream?table=bronze.one", **headers)
    again = post(svc, rows, dkey, "/v2/stream?table=bronze.one", **headers)
    other = post(svc, rows, dkey, "/v2/stream?table=bronze.two", **headers)
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422, other.text
    assert len(svc.drain()) == 2


# --- limits ----------------------------------------------------------------------------------

def test_50000_rows_pass_and_one_more_is_a_413(svc: Service) -> None:
    """The route's own limit, above the server's default STRICTGATE_MAX_RECORDS (10,000)."""
    key = svc.create_key("p1", "u1")
    infer(svc)
    body = {"data": [{"i": 1}] * MAX_ROWS, "config": {"table": "bronze.many"}}
    r = post(svc, body, key)
    assert r.status_code == 200, r.text
    assert r.json()["successful_rows"] == MAX_ROWS
    body = {"data": [{"i": 1}] * (MAX_ROWS + 1), "config": {"table": "bronze.many"}}
    r = post(svc, body, key)
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["code"] == "too_many_rows"
    assert "50000" in r.json()["error"]


def test_a_payload_over_10_mb_is_a_413(svc: Service, dkey: str) -> None:
    infer(svc)
    raw = json.dumps({"data": [{"s": "x" * 500_000}] * 21,
                      "config": {"table": "bronze.big"}}).encode()
    r = post(svc, gzip.compress(raw), dkey, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413, r.text


def test_a_field_over_1_mb_is_a_400_naming_row_and_field(svc: Service, dkey: str) -> None:
    infer(svc)
    rows = [{"id": 1, "blob": "ok"}, {"id": 2, "blob": "x" * (MAX_FIELD_BYTES + 1)}]
    r = post(svc, {"data": rows, "config": {"table": "bronze.blobs"}}, dkey)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0] == {
        "code": "field_too_large", "field": "data[1].blob",
        "message": f"Field data[1].blob is larger than {MAX_FIELD_BYTES} bytes"}
    assert svc.drain() == []


def _nested(levels: int) -> dict[str, Any]:
    """A row ``levels`` deep (the row itself is level 1)."""
    value: Any = 1
    for _ in range(levels - 1):
        value = {"n": value}
    return {"id": 1, "deep": value}


def test_nesting_deeper_than_10_is_a_400_naming_row_and_field(svc: Service, dkey: str
                                                              ) -> None:
    svc.put_dataset("p1", "bronze.trees", {"envelope": "none", "fields": {
        "id": "integer", "deep": {"type": "object", "additionalProperties": True}}})
    ok = post(svc, {"data": [_nested(MAX_DEPTH)], "config": {"table": "bronze.trees"}}, dkey)
    assert ok.status_code == 200, ok.text
    r = post(svc, {"data": [{"id": 0}, _nested(MAX_DEPTH + 1)],
                   "config": {"table": "bronze.trees"}}, dkey)
    assert r.status_code == 400, r.text
    assert (r.json()["errors"][0]["code"], r.json()["errors"][0]["field"]) == (
        "too_deep", "data[1].deep")


# --- the on_invalid policy -------------------------------------------------------------------

def test_quarantine_writes_the_good_rows_and_reports_the_rest(svc: Service, dkey: str
                                                              ) -> None:
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    r = svc.admin("PUT", "/admin/projects/p1/datasets/bronze.customers/settings",
                  json={"on_invalid": "quarantine"})
    assert r.status_code == 200, r.text
    rows = [CUSTOMERS[0], {**CUSTOMERS[1], "id": "two"},
            {"id": 3, "name": "Cy", "email": "cy@example.com"}]
    r = post(svc, {"data": rows, "config": {"table": "bronze.customers"}}, dkey)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["successful_rows"], body["rejected_rows"]) == (3, 2, 1)
    [error] = body["errors"]
    assert (error["index"], error["field"]) == (1, "data[1].id")
    kept = [line for line in svc.drain() if "record" not in line]  # quarantine lines apart
    assert [line["id"] for line in kept] == [1, 3]


def test_an_envelope_dataset_is_a_409(svc: Service, dkey: str) -> None:
    svc.put_dataset("p1", "bronze.logs", {"envelope": "event", "fields": {"x": "string"}})
    r = post(svc, {"data": [{"x": "a"}], "config": {"table": "bronze.logs"}}, dkey)
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["code"] == "dataset_not_envelope_free"


# --- against a running service, rows read back from the lake ----------------------------------

def _lake_rows(base: str, key: str, dataset: str, want: int) -> list[dict[str, Any]]:
    read = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(rows) < want:
        rows = httpx.get(f"{base}/datasets/{dataset}/records", headers=read
                         ).json().get("records", [])
        time.sleep(0.2)
    return rows


@pytest.mark.slow
def test_the_docs_python_helpers_and_curl_run_unchanged(serves: Serves, tmp_path: Path
                                                        ) -> None:
    server = serves.start(tmp_path / "var", free_port()).wait_healthy()
    admin = server.admin()
    r = httpx.put(f"{server.base}/admin/projects/demo/settings",
                  json={"unknown_datasets": "infer"}, headers=admin)
    assert r.status_code == 200, r.text
    key = httpx.post(f"{server.base}/admin/projects/demo/keys", json={"user_id": "alice"},
                     headers=admin).json()["api_key"]
    url = f"{server.base}/v2/stream"
    push = (DATA / "definite_push.py.txt").read_text().replace(
        '"YOUR_API_KEY"', repr(key)).replace('"https://api.definite.app/v2/stream"', repr(url))
    compressed = (DATA / "definite_compressed.py.txt").read_text().replace(
        '"https://api.definite.app/v2/stream"', repr(url))
    script = tmp_path / "push.py"
    script.write_text(push + "\n" + compressed + "\n" + (
        'print(push_compressed("bronze.events", [{"event_type": "zipped", "user_id": "7",'
        ' "timestamp": "2024-01-15T10:32:00Z"}])["successful_rows"])\n'))
    done = subprocess.run([sys.executable, str(script)], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Ingested 2 rows", "1"]
    curl = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{url}?table=bronze.clicks", "-H",
         f"Authorization: Bearer {key}", "-H", "Content-Type: application/x-ndjson",
         "-d", "@-"], input=NDJSON_EXAMPLE, capture_output=True, timeout=60)
    assert curl.returncode == 0, curl.stderr
    answer = json.loads(curl.stdout)
    assert answer.get("successful_rows") == 3, answer
    rows = _lake_rows(server.base, key, "bronze.events", 3)
    assert sorted(row["event_type"] for row in rows) == ["click", "page_view", "zipped"]
    rows = _lake_rows(server.base, key, "bronze.clicks", 3)
    assert sorted(row["event_type"] for row in rows) == ["click", "page_view", "purchase"]

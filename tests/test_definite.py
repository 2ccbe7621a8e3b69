"""The Definite Stream API (``POST /v2/stream``) from the user's side: every example of its
docs (append, merge), its Python helpers run unchanged but for URL and key against a running
service (rows read back from the lake), NDJSON as ``curl -d @-`` sends it, gzip and zstd,
each status of its error table that applies, its limits, merge semantics (replace, insert,
repeated and missing keys, last admitted wins across queued requests and out-of-order
commits), ``wait: true`` with a snapshot ``strictgate sql`` can time-travel to, and the
quarantine split."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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
import redis
import zstandard

from quota import keys
from strictgate.dialects.definite import (
    MAX_DEPTH,
    MAX_FIELD_BYTES,
    MAX_ROWS,
    WAIT_NO_LAKE_WARNING,
    WAIT_TIMEOUT_WARNING,
    WAIT_UNKNOWN_WARNING,
)
from strictgate.embedded import EmbeddedServer, free_port
from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.tables import table_name
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.worker.lake_sink import LakeWorker
from tests.ingest_fixtures import Service, start_service
from tests.redis_mode import async_client
from tests.serve_proc import Serves, clean_env, run_cli

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


# --- merge: rows keyed on one column, drained by the real lake worker ------------------------

MERGE_EXAMPLE = {"data": [{"id": 1, "name": "Alice", "email": "alice@new.com"},
                          {"id": 2, "name": "Bob", "email": "bob@new.com"}],
                 "config": {"table": "bronze.customers", "mode": "merge",
                            "primary_key": ["id"]}}


def merge_body(rows: list[dict[str, Any]], table: str = "bronze.customers") -> dict[str, Any]:
    """A merge request keyed on ``id``."""
    return {"data": rows, "config": {"table": table, "mode": "merge", "primary_key": ["id"]}}


def lake_config(svc: Service) -> LakeConfig:
    """The test's lake (beside the service's data)."""
    return LakeConfig.local(svc.data_dir / "lake")


def lake_drain(svc: Service, **options: Any) -> None:
    """Run the real lake worker until the queues are empty."""

    async def run() -> None:
        client = async_client(svc.redis_url)
        worker = LakeWorker(client, lake_config(svc), reclaim_idle_ms=0, **options)
        try:
            await worker.drain()
        finally:
            worker.close()
            await client.aclose()

    asyncio.run(run())


def table_rows(svc: Service, dataset: str = "bronze.customers",
               columns: str = "id, name, email") -> list[tuple[Any, ...]]:
    """The rows of a dataset's lake table, sorted."""
    con = connect(lake_config(svc))
    try:
        return sorted(con.execute(f"SELECT {columns} FROM {table_name('p1', dataset)}"
                                  ).fetchall())
    finally:
        con.close()


def test_the_merge_example_replaces_stored_rows_and_inserts_new_keys(svc: Service, dkey: str
                                                                    ) -> None:
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    assert post(svc, APPEND_EXAMPLE, dkey).status_code == 200
    lake_drain(svc)
    r = post(svc, MERGE_EXAMPLE, dkey, **{"X-Request-Id": "req-merge-1"})
    assert r.status_code == 200, r.text
    assert {k: v for k, v in r.json().items() if k != "stream_id"} == {
        "success": True, "request_id": "req-merge-1", "table": "bronze.customers",
        "accepted": 2, "successful_rows": 2, "rejected_rows": 0, "partitions": [],
        "snapshot_id": None, "warnings": [], "errors": []}
    assert post(svc, merge_body([{"id": 3, "name": "Cy", "email": "cy@example.com"}]),
                dkey).status_code == 200
    lake_drain(svc)
    assert table_rows(svc) == [(1, "Alice", "alice@new.com"), (2, "Bob", "bob@new.com"),
                               (3, "Cy", "cy@example.com")]
    assert table_rows(svc, columns='id, "__traceId"')[:2] == [(1, "req-merge-1"),
                                                               (2, "req-merge-1")]


@pytest.mark.parametrize("batch_records", [200_000, 1])
def test_merges_of_the_same_keys_queued_at_once_keep_the_last_admitted(
        svc: Service, dkey: str, batch_records: int) -> None:
    """Three requests for keys 1 and 2 in the queue before the worker runs, committed in
    one commit or one commit each; the last one (NDJSON, config in the query) included."""
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    first = [{"id": i, "name": "first", "email": f"{i}@first"} for i in (1, 2)]
    assert post(svc, merge_body(first), dkey).status_code == 200
    assert post(svc, merge_body([{"id": 1, "name": "second", "email": "1@second"}]),
                dkey).status_code == 200
    r = post(svc, b'{"id": 2, "name": "third", "email": "2@third"}\n', dkey,
             "/v2/stream?table=bronze.customers&mode=merge&primary_key=id",
             **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    lake_drain(svc, batch_records=batch_records)
    assert table_rows(svc) == [(1, "second", "1@second"), (2, "third", "2@third")]


def test_merges_of_two_users_keep_the_last_admitted(svc: Service, dkey: str) -> None:
    """Two users' requests are two queues (streams) of one table: ordered by the Redis
    server time of their admission, here u2's first, then u1's."""
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    other = svc.create_key("p1", "u2")
    assert post(svc, merge_body([{"id": 1, "name": "u2", "email": "e"}]), other
                ).status_code == 200
    time.sleep(0.01)
    assert post(svc, merge_body([{"id": 1, "name": "u1", "email": "e"}]), dkey
                ).status_code == 200
    lake_drain(svc)
    assert table_rows(svc) == [(1, "u1", "e")]


def test_a_redelivered_merge_is_written_once_and_never_over_a_later_one(
        svc: Service, dkey: str, sync_redis: redis.Redis) -> None:
    """A worker died after committing the later of two merges of key 1, before XACK: the
    next worker finds both pending, skips the committed one and writes the earlier one,
    which must not replace the later row."""
    svc.put_dataset("p1", "bronze.customers", CUSTOMER_DEFINITION)
    for name in ("earlier", "later"):
        assert post(svc, merge_body([{"id": 1, "name": name, "email": "e"}]), dkey
                    ).status_code == 200
    stream = keys.queue_key("u1", "p1", "bronze.customers")
    with contextlib.suppress(redis.ResponseError):
        sync_redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0")
    reply: Any = sync_redis.xreadgroup(keys.QUEUE_GROUP, "dead", {stream: ">"})
    delivered: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
    assert len(delivered) == 2

    async def commit_the_later() -> None:
        client = async_client(svc.redis_url)
        try:
            cache = LakeWorker(client, lake_config(svc)).definitions
            await cache.prefetch({("p1", "bronze.customers", 1)})
            writer = LakeWriter(lake_config(svc), cache)
            writer.write([LakeEntry.from_fields(*delivered[1])], first_delivery=True)
            writer.close()
        finally:
            await client.aclose()

    asyncio.run(commit_the_later())
    assert table_rows(svc) == [(1, "later", "e")]
    lake_drain(svc)
    assert table_rows(svc) == [(1, "later", "e")]
    con = connect(lake_config(svc))
    ledger = con.execute("SELECT count(*), count(DISTINCT entry_id) FROM"
                         " lake.__strictgate.ledger WHERE dataset = 'bronze.customers'"
                         ).fetchone()
    con.close()
    assert ledger == (2, 2)
    assert sync_redis.xpending(stream, keys.QUEUE_GROUP)["pending"] == 0


def test_a_repeated_key_refuses_the_whole_request_naming_both_rows(svc: Service, dkey: str
                                                                  ) -> None:
    infer(svc)
    rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 1.0, "name": "c"}]
    r = post(svc, merge_body(rows), dkey)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "Rows data[0] and data[2] have the same primary key id: a merge " \
        "request must not repeat a key (the whole request is refused)"
    assert [(e["code"], e["field"]) for e in body["errors"]] == [
        ("duplicate_primary_key", "data[0].id"), ("duplicate_primary_key", "data[2].id")]
    r = post(svc, b'{"id": "x"}\n{"id": "y"}\n{"id": "x"}\n', dkey,
             "/v2/stream?table=bronze.customers&mode=merge&primary_key=id",
             **{"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400, r.text
    assert "rows[0] and rows[2]" in r.json()["error"]
    assert sync_redis_empty(svc)


def sync_redis_empty(svc: Service) -> bool:
    """Nothing was queued (the jsonl drain finds no entry)."""
    return svc.drain() == []


@pytest.mark.parametrize(("row", "code"), [
    ({"name": "no id"}, "missing_primary_key"), ({"id": None, "name": "null id"},
                                                 "missing_primary_key"),
    ({"id": {"a": 1}, "name": "object id"}, "invalid_primary_key")])
def test_a_row_without_a_key_value_is_a_400_naming_it(svc: Service, dkey: str,
                                                      row: dict[str, Any], code: str) -> None:
    infer(svc)
    r = post(svc, merge_body([{"id": 1, "name": "ok"}, row]), dkey)
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["errors"][0]["code"], body["errors"][0]["field"]) == (code, "data[1].id")
    assert "data[1]" in body["error"]
    assert sync_redis_empty(svc)


def test_a_merge_creates_and_merges_into_an_inferred_table(svc: Service, dkey: str) -> None:
    infer(svc)
    rows = [{"id": 1, "user_id": "u_42", "amount": 21.50},
            {"id": 2, "user_id": "u_77", "amount": 9.00}]
    assert post(svc, merge_body(rows, "bronze.events"), dkey).status_code == 200
    lake_drain(svc)
    again = [{"id": 2, "user_id": "u_77", "amount": 12.25},
             {"id": 3, "user_id": "u_99", "amount": 1.0}]
    assert post(svc, merge_body(again, "bronze.events"), dkey).status_code == 200
    lake_drain(svc)
    assert table_rows(svc, "bronze.events", "id, user_id, amount") == [
        (1, "u_42", 21.5), (2, "u_77", 12.25), (3, "u_99", 1.0)]


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


@pytest.mark.slow
def test_the_docs_upsert_helper_runs_unchanged(serves: Serves, tmp_path: Path) -> None:
    """The docs' merge helper, run unchanged but for URL and key, replaces the rows an
    append stored (read back from the lake through the records API)."""
    server = serves.start(tmp_path / "var", free_port()).wait_healthy()
    admin = server.admin()
    r = httpx.put(f"{server.base}/admin/projects/demo/settings",
                  json={"unknown_datasets": "infer"}, headers=admin)
    assert r.status_code == 200, r.text
    key = httpx.post(f"{server.base}/admin/projects/demo/keys", json={"user_id": "alice"},
                     headers=admin).json()["api_key"]
    url = f"{server.base}/v2/stream"
    r = httpx.post(url, json=APPEND_EXAMPLE, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert len(_lake_rows(server.base, key, "bronze.customers", 2)) == 2
    upsert = (DATA / "definite_upsert.py.txt").read_text().replace(
        '"YOUR_API_KEY"', repr(key)).replace('"https://api.definite.app/v2/stream"', repr(url))
    script = tmp_path / "upsert.py"
    script.write_text(upsert + '\nprint(result["successful_rows"])\n')
    done = subprocess.run([sys.executable, str(script)], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["2"]
    deadline = time.monotonic() + 30
    emails: list[str] = []
    while time.monotonic() < deadline and emails != ["alice@new.com", "bob@new.com"]:
        rows = _lake_rows(server.base, key, "bronze.customers", 2)
        emails = sorted(row["email"] for row in rows)
        time.sleep(0.2)
    assert emails == ["alice@new.com", "bob@new.com"]


# --- wait: true: the commit's snapshot --------------------------------------------------------

def _wait_body(rows: list[dict[str, Any]], wait: bool = True) -> dict[str, Any]:
    return {"data": rows, "config": {"table": "bronze.customers", "wait": wait}}


def _customers(first: int, n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"n{i}", "email": f"{i}@example.com"}
            for i in range(first, first + n)]


def _sql_at(data_dir: Path, snapshot: int) -> list[dict[str, Any]]:
    """``strictgate sql`` (the console script) on the table as of ``snapshot``."""
    query = ('SELECT count(*) AS n, max(id) AS top FROM p1."bronze.customers" '
             f"AT (VERSION => {int(snapshot)})")
    done = run_cli(clean_env(STRICTGATE_DATA_DIR=str(data_dir)), "sql", "--json", query)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_wait_true_answers_with_a_snapshot_strictgate_sql_time_travels_to(
        data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    for svc in start_service(data_dir, redis_url, STRICTGATE_RUN_WORKER="1"):
        infer(svc)
        key = svc.create_key("p1", "u1")
        first = post(svc, _wait_body(_customers(1, 2)), key)
        assert first.status_code == 200, first.text
        assert first.json()["warnings"] == [] and first.json()["successful_rows"] == 2
        second = post(svc, _wait_body(_customers(3, 1)), key, **{"Idempotency-Key": "w-1"})
        again = post(svc, _wait_body(_customers(3, 1)), key, **{"Idempotency-Key": "w-1"})
        ndjson = post(svc, b'{"id": 4, "name": "Dan", "email": "d@example.com"}\n', key,
                      "/v2/stream?table=bronze.customers&wait=true",
                      **{"Content-Type": "application/x-ndjson"})
        queued = post(svc, _wait_body(_customers(5, 1), wait=False), key)
        assert queued.status_code == 200, queued.text
        assert queued.json()["snapshot_id"] is None and queued.json()["warnings"] == []
    snapshots = [r.json()["snapshot_id"] for r in (first, second, ndjson)]
    assert all(isinstance(s, int) for s in snapshots) and snapshots == sorted(set(snapshots))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["snapshot_id"] == snapshots[1]
    one, two, three = snapshots
    assert _sql_at(data_dir, one) == [{"n": 2, "top": 2}]
    assert _sql_at(data_dir, two) == [{"n": 3, "top": 3}]
    assert _sql_at(data_dir, two - 1) == [{"n": 2, "top": 2}]
    assert _sql_at(data_dir, three) == [{"n": 4, "top": 4}]
    assert list(sync_redis.scan_iter("commit-waiters:*")) == []


def test_wait_true_past_the_bound_answers_that_the_rows_are_queued(
        data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    # no worker runs: the rows are never committed while the request waits
    for svc in start_service(data_dir, redis_url, STRICTGATE_COMMIT_WAIT_S="1"):
        infer(svc)
        key = svc.create_key("p1", "u1")
        started = time.monotonic()
        r = post(svc, _wait_body(CUSTOMERS), key)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert 1 <= took < 10
        body = r.json()
        assert body["success"] is True and body["successful_rows"] == 2
        assert body["snapshot_id"] is None
        assert body["warnings"] == [WAIT_TIMEOUT_WARNING.format(seconds=1)]
        assert list(sync_redis.scan_iter("commit-waiters:*")) == []
        assert len(svc.drain()) == 2


def test_wait_true_without_a_lake_answers_at_once(data_dir: Path, redis_url: str,
                                                  sync_redis: redis.Redis) -> None:
    for svc in start_service(data_dir, redis_url, STRICTGATE_SINK="jsonl"):
        infer(svc)
        key = svc.create_key("p1", "u1")
        started = time.monotonic()
        r = post(svc, _wait_body(CUSTOMERS), key)
        assert time.monotonic() - started < 10  # not the 30 s bound
        assert r.status_code == 200, r.text
        assert r.json()["snapshot_id"] is None
        assert r.json()["warnings"] == [WAIT_NO_LAKE_WARNING]
        assert list(sync_redis.scan_iter("commit-waiters:*")) == []
        assert len(svc.drain()) == 2


@pytest.mark.standalone_redis
def test_wait_true_when_redis_fails_mid_wait_answers_that_the_rows_are_queued(
        tmp_path: Path, data_dir: Path) -> None:
    """Admitted rows are never answered with an error that invites a second copy."""
    server = EmbeddedServer(tmp_path / "redis", persist=False).start()
    client = redis.Redis.from_url(server.url)
    try:
        for svc in start_service(data_dir, server.url, STRICTGATE_COMMIT_WAIT_S="60"):
            infer(svc)
            key = svc.create_key("p1", "u1")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(post, svc, _wait_body(CUSTOMERS), key)
                stream = keys.queue_key("u1", "p1", "bronze.customers")
                deadline = time.monotonic() + 20
                while not client.exists(stream) and time.monotonic() < deadline:
                    time.sleep(0.02)
                client.close()
                server.stop()
                r = answer.result(timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["snapshot_id"] is None
            assert r.json()["warnings"] == [WAIT_UNKNOWN_WARNING]
    finally:
        client.close()
        server.stop()

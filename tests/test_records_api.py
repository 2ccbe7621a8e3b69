"""``GET /datasets/{dataset_id}/records`` over HTTP: the app on the real Redis, a real lake
under its data dir (filled with the lake writer, as the worker does), every parameter and
every refusal."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from quota.admission import Admitted, QuotaService
from strictgate.context import utc_now
from strictgate.ingest.records import CURSOR_LABEL, NDJSON, PARAMETERS, cursor_secret
from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import DEFAULT_LIMIT, MAX_LIMIT, CursorCodec
from strictgate.lake.writer import LakeWriter
from strictgate.queue_entry import QueueEntry
from strictgate.settings import load_settings
from strictgate.worker.service import build_worker
from tests.ingest_fixtures import (
    JWT_SECRET,
    SEED_DEFINITION,
    SEED_SINGLE,
    Service,
    start_service,
)
from tests.lake_support import ROOT, dump_entries, seed_definitions, seed_entries
from tests.redis_mode import async_client

PATH = "/datasets/billing/records"


def fill(data_dir: Path) -> None:
    """p1.billing: 250 records of version 1 received 2026-06-10 (5 entries of 50, in
    different hours, committed in reverse receipt order), 20 of version 2 on 2026-06-11;
    p1.other: 5 records."""
    writer = LakeWriter(LakeConfig.local(data_dir), seed_definitions)
    day1 = [seed_entries(1, 50, start=n, dataset="billing",
                         received_at=f"2026-06-10T0{n}:00:00.000Z")[0] for n in range(5)]
    writer.write(day1[::-1])
    writer.write(seed_entries(2, 10, start=10, version=2,
                              received_at="2026-06-11T12:00:00.000Z"))
    writer.write(seed_entries(1, 5, start=20, dataset="other"))
    writer.close()


@pytest.fixture
def lake_svc(data_dir: Path, redis_url: str, sync_redis: Any) -> Iterator[Service]:
    """The app with p1/billing and p1/other registered and written to the lake."""
    fill(data_dir)
    for service in start_service(data_dir, redis_url):
        service.put_dataset("p1", "billing", SEED_DEFINITION)
        service.put_dataset("p1", "other", SEED_DEFINITION)
        yield service


@pytest.fixture
def p1_key(lake_svc: Service) -> str:
    """A key of project p1."""
    return lake_svc.create_key("p1", "u1")


def get(svc: Service, key: str, path: str = PATH, **headers: str) -> Any:
    """GET with the project key."""
    return svc.client.get(path, headers={"Authorization": f"Bearer {key}", **headers})


def walk(svc: Service, key: str, query: str) -> list[dict[str, Any]]:
    """Every record of the pages of ``query``, following ``next_cursor``."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        r = get(svc, key, f"{PATH}?{query}{cursor}")
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["records"]
        if body["next_cursor"] is None:
            return out
        cursor = f"&cursor={body['next_cursor']}"


def test_pages_of_100_give_each_record_once_in_receipt_order(
        lake_svc: Service, p1_key: str) -> None:
    r = get(lake_svc, p1_key, f"{PATH}?version=1", **{"X-Request-Id": "req_read"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req_read"
    first = r.json()
    assert first["success"] is True and len(first["records"]) == 100
    assert first["records"][0] == {
        "timestamp": "2026-06-10T11:00:00.000Z",
        "context": {"source": "billing-service", "request_id": "req_0"},
        "country": "RO", "plan": "pro", "amount": 0.0, "active": True,
        "signup_at": "2026-06-01T08:00:00Z",
        "__traceId": "trace0", "__datasetVersion": 1,
        "__receivedAt": "2026-06-10T00:00:00.000Z", "__entryId": "u/1781000000000-0",
    }
    records = walk(lake_svc, p1_key, "version=1&limit=100")
    contexts = [r["context"]["request_id"] for r in records]
    assert contexts == [f"req_{i}" for i in range(250)]


def test_from_to_and_version_filters(lake_svc: Service, p1_key: str) -> None:
    assert len(walk(lake_svc, p1_key, "limit=1000")) == 270
    day = walk(lake_svc, p1_key, "from=2026-06-10&to=2026-06-10")
    assert len(day) == 250 and {r["__receivedAt"][:10] for r in day} == {"2026-06-10"}
    hours = walk(lake_svc, p1_key, "from=2026-06-10T01:00:00Z&to=2026-06-10T05:00:00%2B02:00")
    assert {r["__receivedAt"][:13] for r in hours} == {"2026-06-10T01", "2026-06-10T02"}
    assert len(walk(lake_svc, p1_key, "from=2026-06-11")) == 20
    v2 = walk(lake_svc, p1_key, "version=2&limit=7")
    assert len(v2) == 20 and {r["__datasetVersion"] for r in v2} == {2}
    assert walk(lake_svc, p1_key, "version=3") == []


@pytest.mark.parametrize(("query", "field", "code"), [
    ("limit=0", "limit", "invalid_limit"),
    ("limit=1001", "limit", "invalid_limit"),
    ("limit=ten", "limit", "invalid_limit"),
    ("limit=-1", "limit", "invalid_limit"),
    ("from=2026-13-01", "from", "invalid_from"),
    ("from=yesterday", "from", "invalid_from"),
    ("to=2026-06-10T25:00:00Z", "to", "invalid_to"),
    ("from=2026-06-11&to=2026-06-10T12:00:00Z", "to", "invalid_to"),
    ("version=-1", "version", "invalid_version"),
    ("version=v1", "version", "invalid_version"),
    ("cursor=garbage", "cursor", "invalid_cursor"),
    ("cursor=", "cursor", "invalid_cursor"),
    ("limit=1&limit=2", "limit", "invalid_limit"),
    ("offset=10", "offset", "unknown_parameter"),
])
def test_each_bad_parameter_is_a_400_naming_it(lake_svc: Service, p1_key: str, query: str,
                                               field: str, code: str) -> None:
    r = get(lake_svc, p1_key, f"{PATH}?{query}")
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False and body["error"] == body["errors"][0]["message"]
    assert body["errors"] == [{"code": code, "field": field, "message": body["error"]}]
    assert r.headers["X-Request-Id"].startswith("req_")


def test_a_cursor_of_another_dataset_or_tampered_is_refused(
        lake_svc: Service, p1_key: str) -> None:
    cursor = get(lake_svc, p1_key, f"{PATH}?limit=10").json()["next_cursor"]
    other = get(lake_svc, p1_key, f"/datasets/other/records?cursor={cursor}")
    assert other.status_code == 400 and other.json()["errors"][0]["field"] == "cursor"
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    r = get(lake_svc, p1_key, f"{PATH}?cursor={tampered}")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_cursor"
    # signed with a key not derived from this service's JWT secret
    foreign = CursorCodec(b"k" * 32).encode(
        "p1", "billing", (datetime(2026, 6, 10, tzinfo=UTC), "u/1", 0))
    assert get(lake_svc, p1_key, f"{PATH}?cursor={foreign}").status_code == 400
    assert get(lake_svc, p1_key, f"{PATH}?cursor={cursor}").status_code == 200


def test_the_cursor_key_is_derived_from_the_jwt_secret_with_a_label() -> None:
    """Every instance sharing the JWT secret verifies the others' cursors."""
    key = cursor_secret(JWT_SECRET)
    assert key == cursor_secret(JWT_SECRET) and key != cursor_secret(JWT_SECRET + "x")
    assert key != JWT_SECRET.encode() and CURSOR_LABEL not in key


def test_another_projects_key_sees_only_its_own_project(lake_svc: Service) -> None:
    p2_key = lake_svc.create_key("p2", "u2")
    r = get(lake_svc, p2_key)
    missing = get(lake_svc, p2_key, "/datasets/nowhere/records")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "dataset_not_found"
    assert (r.status_code, r.content) == (missing.status_code, missing.content)
    # p2 registers its own "billing": it reads its own (empty) table, never p1's rows
    lake_svc.put_dataset("p2", "billing", SEED_DEFINITION)
    own = get(lake_svc, p2_key)
    assert own.status_code == 200
    assert own.json() == {"success": True, "records": [], "next_cursor": None}
    p1_cursor = get(lake_svc, lake_svc.create_key("p1", "u1"), f"{PATH}?limit=1").json()[
        "next_cursor"]
    assert get(lake_svc, p2_key, f"{PATH}?cursor={p1_cursor}").status_code == 400


def test_without_a_valid_key_it_is_401(lake_svc: Service) -> None:
    r = lake_svc.client.get(PATH)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "unauthorized"
    assert r.headers["X-Request-Id"]
    assert get(lake_svc, "not-a-key").status_code == 401


def test_an_invalid_dataset_id_is_400(lake_svc: Service, p1_key: str) -> None:
    r = get(lake_svc, p1_key, "/datasets/-bad/records")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_dataset_id"


def test_ndjson_lines_and_the_cursor_header(lake_svc: Service, p1_key: str) -> None:
    lines: list[dict[str, Any]] = []
    query = f"{PATH}?limit=100"
    pages = 0
    while True:
        r = get(lake_svc, p1_key, query, Accept="application/x-ndjson")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["X-Request-Id"]
        pages += 1
        lines += [json.loads(line) for line in r.text.splitlines()]
        assert r.text.endswith("\n")
        if "X-Next-Cursor" not in r.headers:
            break
        query = f"{PATH}?limit=100&cursor={r.headers['X-Next-Cursor']}"
    assert pages == 3 and len(lines) == 270
    assert lines == walk(lake_svc, p1_key, "limit=1000")


def test_a_registered_dataset_with_nothing_written_is_an_empty_page(
        lake_svc: Service, p1_key: str) -> None:
    lake_svc.put_dataset("p1", "fresh", SEED_DEFINITION)
    r = get(lake_svc, p1_key, "/datasets/fresh/records")
    assert r.json() == {"success": True, "records": [], "next_cursor": None}


def test_an_empty_data_dir_answers_empty_pages(svc: Service, key: str) -> None:
    """No writer has created the lake yet: nothing to read, no error, and no lake created."""
    r = get(svc, key, "/datasets/13/records")
    assert r.json() == {"success": True, "records": [], "next_cursor": None}
    assert not (svc.data_dir / "lake").exists()


def test_records_are_visible_right_after_a_commit(lake_svc: Service, p1_key: str) -> None:
    before = len(walk(lake_svc, p1_key, "limit=1000"))
    writer = LakeWriter(LakeConfig.local(lake_svc.data_dir), seed_definitions)
    writer.write(seed_entries(1, 3, start=900, received_at="2026-06-12T00:00:00.000Z"))
    assert len(walk(lake_svc, p1_key, "limit=1000")) == before + 3
    # a version the reader has not seen yet (its column maps are cached per dataset)
    writer.write(seed_entries(1, 2, start=901, version=3,
                              received_at="2026-06-12T00:00:01.000Z"))
    writer.close()
    last = walk(lake_svc, p1_key, "limit=1000")[-2:]
    assert [r["__datasetVersion"] for r in last] == [3, 3]


def test_an_unreadable_lake_is_a_503_and_recovers(lake_svc: Service, p1_key: str) -> None:
    data = lake_svc.data_dir / "lake" / "data" / "p1" / "billing"
    aside = lake_svc.data_dir / "aside"
    shutil.move(data, aside)
    r = get(lake_svc, p1_key)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json()["errors"][0]["code"] == "lake_unavailable"
    assert "Traceback" not in r.text and str(data) not in r.text
    shutil.move(aside, data)
    assert get(lake_svc, p1_key).status_code == 200


def test_a_lake_recreated_under_the_same_path_is_read_at_once(
        lake_svc: Service, p1_key: str) -> None:
    """The process keeps its read connection: it must not keep reading the old catalog."""
    assert len(walk(lake_svc, p1_key, "limit=1000")) == 270
    shutil.rmtree(lake_svc.data_dir / "lake")
    # another process writes the new lake, as a worker would
    entries = lake_svc.data_dir / "entries.json"
    dump_entries(seed_entries(1, 4, start=50), entries)
    subprocess.run([sys.executable, "-m", "tests.lake_support", str(lake_svc.data_dir),
                    str(entries)], check=True, cwd=ROOT, capture_output=True, timeout=120)
    r = get(lake_svc, p1_key)
    assert r.status_code == 200, r.text
    assert [x["context"]["request_id"] for x in r.json()["records"]] == [
        f"req_{i}" for i in range(200, 204)]


def test_the_jsonl_sink_has_no_read_api(data_dir: Path, redis_url: str,
                                        sync_redis: Any) -> None:
    for service in start_service(data_dir, redis_url, STRICTGATE_SINK="jsonl"):
        service.put_dataset("p1", "billing", SEED_DEFINITION)
        r = get(service, service.create_key("p1", "u1"))
        assert r.status_code == 501 and r.json()["errors"][0]["code"] == "read_unavailable"


def test_other_methods_on_the_read_path_are_405(lake_svc: Service, p1_key: str) -> None:
    r = lake_svc.client.post(PATH, headers={"Authorization": f"Bearer {p1_key}"}, content=b"[]")
    assert r.status_code == 405


def test_openapi_documents_the_read_endpoint(lake_svc: Service, p1_key: str) -> None:
    doc = lake_svc.client.get("/openapi.json").json()
    op = doc["paths"]["/datasets/{dataset_id}/records"]["get"]
    assert op["security"] == [{"projectKey": []}]
    query = {p["name"] for p in op["parameters"] if p["in"] == "query"}
    assert query == set(PARAMETERS)
    limit = next(p for p in op["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, MAX_LIMIT,
                                                                       DEFAULT_LIMIT)
    assert {"200", "400", "401", "404"} <= set(op["responses"])
    # real answers match the documented bodies
    components = doc["components"]["schemas"]

    def validate(schema: Any, instance: Any) -> None:
        jsonschema.Draft202012Validator(inline(schema, components)).validate(instance)

    content = op["responses"]["200"]["content"]
    validate(content["application/json"]["schema"],
             get(lake_svc, p1_key, f"{PATH}?limit=3").json())
    validate(op["responses"]["400"]["content"]["application/json"]["schema"],
             get(lake_svc, p1_key, f"{PATH}?limit=0").json())
    validate(op["responses"]["404"]["content"]["application/json"]["schema"],
             get(lake_svc, p1_key, "/datasets/nowhere/records").json())
    line = get(lake_svc, p1_key, f"{PATH}?limit=1", Accept=NDJSON).text
    validate(content[NDJSON]["schema"], json.loads(line))
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        validate(content["application/json"]["schema"], {"success": True, "records": [{}],
                                                         "next_cursor": None})


def inline(schema: Any, components: dict[str, Any]) -> Any:
    """``schema`` with every ``#/components/schemas/...`` reference replaced by its target."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: inline(v, components) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inline(v, components) for v in schema]
    return schema


def test_end_to_end_ingest_worker_read(svc: Service, key: str) -> None:
    """POST through the API, the lake worker commits, GET reads the records back as sent."""
    batch = [{**SEED_SINGLE, "amount": float(i), "context": {"n": i}} for i in range(5)]
    r = svc.post("/datasets/13/batch", key, batch, **{"X-Request-Id": "req_e2e"})
    assert r.status_code == 202, r.text

    async def drain() -> None:
        client = async_client(svc.redis_url)
        settings = load_settings({"REDIS_URL": svc.redis_url,
                                  "STRICTGATE_DATA_DIR": str(svc.data_dir)})
        worker = build_worker(client, settings, utc_now, None)
        try:
            await worker.drain()
        finally:
            close = getattr(worker, "close", None)
            if close is not None:
                close()
            await client.aclose()

    asyncio.run(drain())
    page = get(svc, key, "/datasets/13/records").json()
    assert [{k: v for k, v in rec.items() if not k.startswith("__")}
            for rec in page["records"]] == batch
    assert {rec["__traceId"] for rec in page["records"]} == {"req_e2e"}
    assert page["next_cursor"] is None


ORDERS = {"envelope": "none", "fields": {"order_id": "string", "amount": "number"}}


def test_the_event_type_is_read_back_only_for_the_records_that_carry_it(
    svc: Service, key: str,
) -> None:
    """A Loguro record and the rows of one two-dataset admission with a job name (as the
    OrcaSheets route queues them), through the lake worker: ``__eventType`` on those rows
    only, and every record as the OpenAPI document describes a read record."""
    svc.put_dataset("p1", "orders", ORDERS)
    r = svc.post("/datasets/13/batch", key, [SEED_SINGLE], **{"X-Request-Id": "req_plain"})
    assert r.status_code == 202, r.text
    orders = [{"order_id": "1001", "amount": 49.99}, {"order_id": "1002", "amount": 5.0}]

    async def admit_and_drain() -> None:
        client = async_client(svc.redis_url)
        quota = QuotaService(client, default_limit=-1, deadline_s=2.0, clock=utc_now)
        entries = [QueueEntry(
            records=orjson.dumps(records), trace_id="req_job", dataset_version=1,
            received_at="2031-01-01T00:00:00.000Z", project_id="p1", dataset_id=dataset,
            user_id="u1", event_type="ecommerce_backfill_2026_05")
            for dataset, records in (("13", [SEED_SINGLE]), ("orders", orders))]
        admitted = await quota.admit_many(entries, counts=[1, 2], idempotency_key=None,
                                          request_digest="")
        assert isinstance(admitted, Admitted)
        settings = load_settings({"REDIS_URL": svc.redis_url,
                                  "STRICTGATE_DATA_DIR": str(svc.data_dir)})
        worker = build_worker(client, settings, utc_now, None)
        try:
            await worker.drain()
        finally:
            close = getattr(worker, "close", None)
            if close is not None:
                close()
            await client.aclose()

    asyncio.run(admit_and_drain())
    seed = get(svc, key, "/datasets/13/records").json()["records"]
    assert [rec["__traceId"] for rec in seed] == ["req_plain", "req_job"]
    assert "__eventType" not in seed[0]  # absent, not null: read as before
    assert seed[1]["__eventType"] == "ecommerce_backfill_2026_05"
    rows = get(svc, key, "/datasets/orders/records").json()["records"]
    assert [{k: v for k, v in rec.items() if not k.startswith("__")} for rec in rows] == orders
    assert {rec["__eventType"] for rec in rows} == {"ecommerce_backfill_2026_05"}
    line = get(svc, key, "/datasets/orders/records?limit=1", Accept=NDJSON).text
    assert json.loads(line)["__eventType"] == "ecommerce_backfill_2026_05"

    doc = svc.client.get("/openapi.json").json()
    stored = inline(doc["components"]["schemas"]["StoredRecord"], doc["components"]["schemas"])
    for record in seed + rows:
        jsonschema.Draft202012Validator(stored).validate(record)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(stored).validate({**rows[0], "__eventType": 7})

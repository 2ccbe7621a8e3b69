"""The built-in Operyn datasets (``logs``, ``metrics``, ``deployments``): every project has
them without registering anything (version 0, nothing written to Redis), a project's own
definition (version 1 on) wins, deleting it brings the built-in back; and the lake stores
event and envelope-free records with their own columns and reads them back as stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

import schemas
from strictgate.context import utc_now
from strictgate.ingest.event_records import complete_events
from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.tables import table_name
from strictgate.registry.store import Registry
from strictgate.worker.lake_sink import LakeWorker
from tests.ingest_fixtures import Service
from tests.redis_mode import async_client
from tests.worker_lake_support import enqueue
from validator import compile_dataset

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "/admin/projects/p1/datasets"
BUILTIN_FILES = {"logs": "operyn-logs.json", "metrics": "operyn-metrics.json",
                 "deployments": "operyn-deployments.json"}
# The Operyn docs' logs table, tightened: metadata with its team is required
TIGHT_LOGS: dict[str, Any] = json.loads(json.dumps(schemas.builtin("logs")))
TIGHT_LOGS["fields"]["metadata"] = {"type": "object", "properties": {"team": "string"},
                                    "required": ["team"], "additionalProperties": True}


def test_the_builtin_definitions_are_the_shipped_files() -> None:
    for dataset, name in BUILTIN_FILES.items():
        shipped = json.loads((ROOT / "schemas" / "builtin" / name).read_text())
        assert schemas.builtin(dataset) == shipped
        assert shipped["envelope"] == "event"
    assert schemas.builtin("13") is None


def test_the_builtin_tables_say_what_the_operyn_docs_say() -> None:
    logs = compile_dataset(schemas.builtin("logs"))
    ok = {"service": "api-gateway", "level": "error",
          "message": "Upstream timeout connecting to auth-service", "traceId": "abc-123-def",
          "metadata": {"region": "us-east-1", "env": "prod", "team": "platform"}}
    assert logs.validate(ok) == []
    assert [e.code for e in logs.validate({**ok, "level": "trace", "service": "",
                                           "spanId": 1, "metadata": []})] == [
        "too_short", "not_in_enum", "invalid_string", "invalid_object"]
    assert [e.field for e in logs.validate({"service": "a"})] == ["level", "message"]
    metrics = compile_dataset(schemas.builtin("metrics"))
    point = {"service": "api-gateway", "name": "request_latency_p99", "value": 2.34,
             "unit": "seconds", "labels": {"region": "us-east-1", "endpoint": "/api/v1/users"}}
    assert metrics.validate(point) == []
    assert [(e.code, e.field) for e in metrics.validate(
        {**point, "value": "2.34", "labels": {"region": 1}})] == [
        ("invalid_number", "value"), ("invalid_string", "labels.region")]
    deployments = compile_dataset(schemas.builtin("deployments"))
    assert deployments.validate({
        "service": "payment-service", "version": "v2.0.1", "environment": "production",
        "gitHash": "a1b2c3d4", "metadata": {"deployedBy": "jenkins", "deployId": "job-123"},
        "timestamp": "2026-06-10T10:58:00Z"}) == []
    assert [e.field for e in deployments.validate({"service": "s"})] == [
        "version", "environment"]


async def test_a_builtin_resolves_without_writing_anything(aredis: aioredis.Redis) -> None:
    registry = Registry(aredis, clock=utc_now)
    resolved = await registry.resolve("p1", "logs")
    assert resolved is not None
    assert (resolved.version, resolved.builtin, resolved.envelope) == (0, True, "event")
    assert registry.cached("p1", "logs") == (True, resolved)
    assert await registry.resolve("p1", "nothing") is None
    assert await aredis.keys("*") == []  # the hot path only reads
    version = await registry.get_version("p1", "metrics", 0)
    assert version is not None and version.builtin and version.created_at is None
    assert version.definition == schemas.builtin("metrics")
    assert await registry.get_version("p1", "13", 0) is None


async def test_a_put_wins_over_the_builtin_and_delete_falls_back(
        aredis: aioredis.Redis) -> None:
    registry = Registry(aredis, clock=utc_now, refresh_interval_s=0)
    other = Registry(aredis, clock=utc_now, refresh_interval_s=0)
    assert (await other.resolve("p1", "logs")).version == 0  # type: ignore[union-attr]
    put = await registry.put("p1", "logs", TIGHT_LOGS)
    assert (put.version, put.created, put.previous_version) == (1, True, 0)
    # the report compares with the built-in definition it replaces
    assert [(c["field"], c["change"]) for c in put.breaking_changes] == [
        ("metadata", "field_became_required"), ("metadata.team", "field_became_required"),
        ("metadata.team", "type_narrowed")]
    resolved = await other.resolve("p1", "logs")  # another instance's cache moves on too
    assert resolved is not None and (resolved.version, resolved.builtin) == (1, False)
    assert resolved.validator.validate({"service": "a", "level": "info", "message": "m",
                                        "metadata": {}})[0].field == "metadata.team"
    # version 0 stays readable (entries queued before the PUT are written with it)
    assert (await registry.get_version("p1", "logs", 0)) is not None
    assert await registry.delete("p1", "logs") is True
    back = await other.resolve("p1", "logs")
    assert back is not None and (back.version, back.builtin) == (0, True)
    assert await registry.delete("p1", "logs") is False  # a built-in cannot be deleted
    again = await registry.put("p1", "logs", TIGHT_LOGS)
    assert again.version == 2  # numbering continues
    # other projects still have the built-in
    assert (await registry.resolve("p2", "logs")).version == 0  # type: ignore[union-attr]


async def test_putting_the_builtin_itself_stores_nothing(aredis: aioredis.Redis) -> None:
    registry = Registry(aredis, clock=utc_now)
    result = await registry.put("p1", "metrics", schemas.builtin("metrics"))
    assert (result.version, result.changed, result.created) == (0, False, False)
    assert await aredis.keys("*") == []


def test_admin_api_shows_builtins_until_overridden(svc: Service) -> None:
    r = svc.admin("GET", f"{ADMIN}/logs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version"], body["builtin"], body["created_at"]) == (0, True, None)
    assert body["definition"] == schemas.builtin("logs")
    listed = svc.admin("GET", ADMIN).json()["datasets"]
    assert [(d["dataset_id"], d["version"], d["builtin"]) for d in listed] == [
        ("deployments", 0, True), ("logs", 0, True), ("metrics", 0, True)]
    r = svc.admin("PUT", f"{ADMIN}/logs", json=TIGHT_LOGS)
    assert r.status_code == 201, r.text
    assert (r.json()["version"], r.json()["previous_version"]) == (1, 0)
    assert r.json()["breaking_changes"][1]["field"] == "metadata.team"
    body = svc.admin("GET", f"{ADMIN}/logs").json()
    assert (body["version"], body["builtin"], body["definition"]) == (1, False, TIGHT_LOGS)
    listed = svc.admin("GET", ADMIN).json()["datasets"]
    assert [(d["dataset_id"], d["version"]) for d in listed] == [
        ("deployments", 0), ("logs", 1), ("metrics", 0)]
    assert svc.admin("DELETE", f"{ADMIN}/logs").status_code == 200
    body = svc.admin("GET", f"{ADMIN}/logs").json()
    assert (body["version"], body["builtin"]) == (0, True)
    # any definition may replace a built-in one; an envelope change is reported
    r = svc.admin("PUT", f"{ADMIN}/logs", json={"fields": {"message": "string"}})
    assert r.status_code == 201
    assert ("", "envelope_changed") in [(c["field"], c["change"])
                                        for c in r.json()["breaking_changes"]]


# --- the lake -----------------------------------------------------------------------------------

RECEIVED_AT = "2026-12-07T12:00:00.123Z"
NONE_DEF: dict[str, Any] = {"envelope": "none", "fields": {
    "timestamp": {"type": "string", "required": False}, "context": "integer", "n": "number"}}


def _enqueue(r: redis.Redis, dataset: str, version: int, payload: bytes, trace: str) -> None:
    """Queue ``payload`` as ingest does (the stream entry's fields)."""
    fields: dict[str, bytes | str] = {"records": payload, "trace_id": trace.encode(),
              "dataset_version": str(version).encode(), "received_at": RECEIVED_AT.encode(),
              "project_id": b"p1", "dataset_id": dataset.encode(), "user_id": b"u1"}
    enqueue(r, fields, dataset=dataset)


def _validated(definition: dict[str, Any], records: list[Any]) -> bytes:
    result = compile_dataset(definition).validate_batch(orjson.dumps(records))
    assert result.ok, result.errors
    return result.payload


def _drain(svc: Service) -> None:
    async def run() -> None:
        client = async_client(svc.redis_url)
        worker = LakeWorker(client, LakeConfig.local(svc.data_dir), reclaim_idle_ms=0)
        try:
            await worker.drain()
        finally:
            worker.close()
            await client.aclose()
    asyncio.run(run())


def _columns(data_dir: Path, dataset: str) -> list[tuple[str, str]]:
    con = connect(LakeConfig.local(data_dir), read_only=True)
    try:
        rows = con.execute(f"DESCRIBE {table_name('p1', dataset)}").fetchall()
    finally:
        con.close()
    return [(str(r[0]), str(r[1])) for r in rows if not str(r[0]).startswith("__")]


@pytest.fixture
def key(svc: Service) -> str:
    """A key of user u1 in project p1."""
    return svc.create_key("p1", "u1")


def test_event_and_envelope_free_records_in_the_lake(
        svc: Service, key: str, sync_redis: redis.Redis) -> None:
    svc.put_dataset("p1", "plain", NONE_DEF)
    logs = schemas.builtin("logs")
    sent: list[dict[str, Any]] = [{"service": "api", "level": "error", "message": "timeout",
             "metadata": {"region": "us-east-1", "n": [1, 2.5, None]}},
            {"service": "api", "level": "info", "message": "ok",
             "timestamp": "2026-06-10T10:58:00.5+02:00", "traceId": "abc"}]
    payload, ids = complete_events(_validated(logs, sent), RECEIVED_AT)
    _enqueue(sync_redis, "logs", 0, payload, "t-logs")  # version 0: the built-in
    metrics = schemas.builtin("metrics")
    point: dict[str, Any] = {"service": "api", "name": "latency", "value": 2, "unit": "s",
             "labels": {"region": "eu"}}
    mpayload, mids = complete_events(_validated(metrics, [point]), RECEIVED_AT)
    _enqueue(sync_redis, "metrics", 0, mpayload, "t-metrics")
    plain = [{"context": 5, "n": 1.5}, {"timestamp": "whenever", "context": -1, "n": 2}]
    _enqueue(sync_redis, "plain", 1, _validated(NONE_DEF, plain), "t-plain")
    _drain(svc)

    assert _columns(svc.data_dir, "logs") == [
        ("id", "VARCHAR"), ("timestamp", "TIMESTAMP WITH TIME ZONE"),
        ("timestamp__text", "VARCHAR"), ("service", "VARCHAR"), ("level", "VARCHAR"),
        ("message", "VARCHAR"), ("traceId", "VARCHAR"), ("spanId", "VARCHAR"),
        ("metadata", "JSON")]
    assert ("labels", "JSON") in _columns(svc.data_dir, "metrics")
    assert _columns(svc.data_dir, "plain") == [
        ("timestamp", "VARCHAR"), ("context", "BIGINT"), ("n", "DOUBLE")]

    def read(dataset: str) -> list[dict[str, Any]]:
        r = svc.client.get(f"/datasets/{dataset}/records",
                           headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return [{k: v for k, v in rec.items() if not k.startswith("__")}
                for rec in r.json()["records"]]

    assert read("logs") == [
        {"id": ids[0], "timestamp": RECEIVED_AT, **sent[0]},
        {"id": ids[1], **sent[1]},
    ]
    assert read("metrics") == [{"id": mids[0], "timestamp": RECEIVED_AT,
                                **point, "value": 2.0}]
    assert read("plain") == [{"context": 5, "n": 1.5},
                             {"timestamp": "whenever", "context": -1, "n": 2.0}]
    with connect(LakeConfig.local(svc.data_dir), read_only=True) as con:
        version, stamp = con.execute(
            f"SELECT DISTINCT \"__datasetVersion\", timestamp::VARCHAR FROM"
            f" {table_name('p1', 'logs')} WHERE \"traceId\" = 'abc'").fetchone() or (0, "")
    assert (version, stamp) == (0, "2026-06-10 08:58:00.5+00")


def test_records_sent_to_a_builtin_dataset_get_their_id_and_time(
        svc: Service, key: str) -> None:
    # the Loguro route into the built-in logs dataset: no registration needed
    event = {"service": "api-gateway", "level": "error", "message": "Upstream timeout",
             "metadata": {"region": "us-east-1"}}
    r = svc.post("/datasets/logs", key, event)
    assert r.status_code == 202, r.text
    r = svc.post("/datasets/logs/batch", key, [event, {**event, "id": "mine"}])
    assert r.status_code == 400
    assert [(e["index"], e["code"], e["field"]) for e in r.json()["errors"]] == [
        (1, "extra_field", "id")]
    _drain(svc)
    r = svc.client.get("/datasets/logs/records", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    [stored] = r.json()["records"]
    assert stored["__datasetVersion"] == 0
    assert stored["timestamp"] == stored["__receivedAt"]
    assert len(stored["id"]) == 36 and stored["id"].count("-") == 4
    assert {k: v for k, v in stored.items() if k not in ("id", "timestamp")
            and not k.startswith("__")} == event

"""Project settings (``unknown_datasets``): the store and its per-process cache on a real
Redis, the admin API over HTTP, ``strictgate projects ...``, and inferred definitions seen
through the admin API as ordinary ones."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from quota.keys import project_settings_key
from strictgate.cli import main
from strictgate.context import utc_now
from strictgate.registry.settings import (
    InvalidSettingError,
    ProjectSettings,
    ProjectSettingsStore,
)
from strictgate.registry.store import Registry
from tests.ingest_fixtures import Service
from tests.redis_mode import async_client

SETTINGS = "/admin/projects/p1/settings"

# --- the store ----------------------------------------------------------------------------------


async def test_default_is_reject_and_a_change_is_stored_and_answered(
    aredis: aioredis.Redis,
) -> None:
    store = ProjectSettingsStore(aredis)
    assert await store.get("p1") == ProjectSettings("p1", "reject")
    assert await store.unknown_datasets("p1") == "reject"
    changed = await store.set("p1", {"unknown_datasets": "infer"})
    assert changed.to_json() == {"project_id": "p1", "unknown_datasets": "infer"}
    assert changed.infer
    assert await store.unknown_datasets("p1") == "infer"  # this instance: at once
    assert await aredis.hgetall(project_settings_key("p1")) == {
        b"unknown_datasets": b"infer"}
    assert await store.unknown_datasets("p2") == "reject"  # projects are separate
    assert (await store.set("p1", {"unknown_datasets": "reject"})).unknown_datasets == "reject"


@pytest.mark.parametrize(("change", "codes"), [
    ({"unknown_datasets": "allow"}, ["invalid_setting"]),
    ({"unknown_datasets": None}, ["invalid_setting"]),
    ({"unknown_datasets": ["infer"]}, ["invalid_setting"]),
    ({"unknown_datasets": "INFER"}, ["invalid_setting"]),
    ({"unknown": "infer"}, ["unknown_setting"]),
    ({"unknown_datasets": "infer", "x" * 300: 1}, ["unknown_setting"]),
    ({}, ["invalid_body"]),
])
async def test_bad_changes_are_refused_and_store_nothing(
    aredis: aioredis.Redis, change: dict[str, Any], codes: list[str],
) -> None:
    store = ProjectSettingsStore(aredis)
    with pytest.raises(InvalidSettingError) as info:
        await store.set("p1", change)
    assert [code for code, _, _ in info.value.problems] == codes
    assert all(len(message) < 200 for _, _, message in info.value.problems)
    assert await aredis.exists(project_settings_key("p1")) == 0


async def test_a_value_stored_by_hand_that_is_not_a_choice_reads_as_the_default(
    aredis: aioredis.Redis,
) -> None:
    await aredis.hset(project_settings_key("p1"), "unknown_datasets", "maybe")
    assert await ProjectSettingsStore(aredis).unknown_datasets("p1") == "reject"


async def test_a_change_is_seen_by_another_instance_within_a_second_from_its_cache(
    aredis: aioredis.Redis, redis_url: str,
) -> None:
    other_client = async_client(redis_url)
    try:
        here = ProjectSettingsStore(aredis)
        there = ProjectSettingsStore(other_client)
        assert await there.unknown_datasets("p1") == "reject"
        cached = there.cached("p1")
        assert cached is not None and cached.unknown_datasets == "reject"  # no Redis call
        await here.set("p1", {"unknown_datasets": "infer"})
        started = time.monotonic()
        while await there.unknown_datasets("p1") != "infer":
            assert time.monotonic() - started < 1.0, "change not seen within 1 s"
            await asyncio.sleep(0.02)
    finally:
        await other_client.aclose()


async def test_the_registry_holds_the_settings(aredis: aioredis.Redis) -> None:
    registry = Registry(aredis, clock=utc_now)
    await registry.settings.set("p1", {"unknown_datasets": "infer"})
    assert await registry.settings.unknown_datasets("p1") == "infer"


# --- the admin API ------------------------------------------------------------------------------


def test_get_is_reject_until_put_and_put_answers_the_stored_settings(svc: Service) -> None:
    r = svc.admin("GET", SETTINGS)
    assert (r.status_code, r.json()) == (200, {"project_id": "p1", "unknown_datasets": "reject"})
    r = svc.admin("PUT", SETTINGS, json={"unknown_datasets": "infer"})
    assert (r.status_code, r.json()) == (200, {"project_id": "p1", "unknown_datasets": "infer"})
    assert svc.admin("GET", SETTINGS).json()["unknown_datasets"] == "infer"
    assert svc.admin("GET", "/admin/projects/p2/settings").json()["unknown_datasets"] == "reject"
    r = svc.admin("PUT", SETTINGS, json={"unknown_datasets": "reject"})
    assert r.json()["unknown_datasets"] == "reject"


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"unknown_datasets": "allow"}, "invalid_setting", "unknown_datasets"),
    ({"unknown_datasets": True}, "invalid_setting", "unknown_datasets"),
    ({"unknown_dataset": "infer"}, "unknown_setting", "unknown_dataset"),
    ({}, "invalid_body", None),
    ([], "invalid_body", None),
    ("infer", "invalid_body", None),
    (b"{", "invalid_json", None),
    (b"", "invalid_json", None),
])
def test_bad_bodies_are_400_in_the_grammar(
    svc: Service, body: Any, code: str, field: str | None,
) -> None:
    kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = svc.admin("PUT", SETTINGS, **kw)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["success"] is False
    assert (answer["errors"][0]["code"], answer["errors"][0]["field"]) == (code, field)
    assert svc.admin("GET", SETTINGS).json()["unknown_datasets"] == "reject"


def test_unknown_names_are_quoted_bounded(svc: Service) -> None:
    r = svc.admin("PUT", SETTINGS, json={"unknown_datasets": "infer", "z" * 3000: 1})
    assert r.status_code == 400
    assert len(r.text) < 1000 and r.json()["errors"][0]["code"] == "unknown_setting"
    assert svc.admin("GET", SETTINGS).json()["unknown_datasets"] == "reject"  # all or nothing


def test_auth_ids_and_size(svc: Service) -> None:
    for method in ("GET", "PUT"):
        r = svc.client.request(method, SETTINGS, json={"unknown_datasets": "infer"})
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "unauthorized"
        r = svc.client.request(method, SETTINGS, json={"unknown_datasets": "infer"},
                               headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        for bad in ("-p", "a:b", "x" * 129):
            r = svc.admin(method, f"/admin/projects/{bad}/settings",
                          json={"unknown_datasets": "infer"})
            assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_project_id"
    r = svc.admin("PUT", SETTINGS, content=b'{"unknown_datasets": "' + b"x" * 5000 + b'"}')
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "body_too_large"


def test_the_operations_are_in_the_openapi_document(svc: Service) -> None:
    doc = svc.client.get("/openapi.json").json()
    operations = doc["paths"]["/admin/projects/{project_id}/settings"]
    assert {op["operationId"] for op in operations.values()} == {
        "putProjectSettings", "getProjectSettings"}
    schema = operations["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["unknown_datasets"]["enum"] == ["reject", "infer"]


def test_inferred_definitions_are_ordinary_for_the_admin_api(
    svc: Service, redis_url: str,
) -> None:
    async def infer_elsewhere(rows: list[dict[str, Any]]) -> int:
        """An inference by another instance (its own registry on the same Redis)."""
        client = async_client(redis_url)
        try:
            resolved = await Registry(client, clock=utc_now).infer(
                "p1", "orders", rows, flat=True)
            return resolved.version
        finally:
            await client.aclose()

    order = {"order_id": "1001", "amount": 49.99, "status": "shipped"}
    assert asyncio.run(infer_elsewhere([order])) == 1
    ds = "/admin/projects/p1/datasets/orders"
    r = svc.admin("GET", ds)
    assert r.status_code == 200
    assert (r.json()["version"], r.json()["definition"]["envelope"]) == (1, "none")
    assert asyncio.run(infer_elsewhere([{**order, "qty": 2}])) == 2
    listed = svc.admin("GET", "/admin/projects/p1/datasets").json()["datasets"]
    assert [(d["dataset_id"], d["version"]) for d in listed if not d["builtin"]] == [
        ("orders", 2)]
    tightened = {"envelope": "none", "fields": {
        "order_id": "string", "amount": "number", "status": "string",
        "qty": {"type": "integer", "required": False}}}
    r = svc.admin("PUT", ds, json=tightened)
    assert (r.status_code, r.json()["version"]) == (200, 3)
    # held to the admin's definition now: new columns are no longer added
    assert asyncio.run(infer_elsewhere([{**order, "coupon": "X"}])) == 3
    assert svc.admin("DELETE", ds).status_code == 200
    assert asyncio.run(infer_elsewhere([order])) == 4  # the numbering continues
    assert svc.admin("GET", ds + "/versions/4").json()["definition"]["fields"]["amount"] == {
        "type": ["number", "null"], "required": True}


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, data_dir: Path, sync_redis: redis.Redis,
) -> Path:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    return data_dir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_cli_projects_get_and_set(
    env: Path, capsys: pytest.CaptureFixture[str], sync_redis: redis.Redis,
) -> None:
    assert run(capsys, "projects", "get", "demo") == (
        0, {"project_id": "demo", "unknown_datasets": "reject"}, "")
    assert run(capsys, "projects", "set", "demo", "unknown_datasets=infer") == (
        0, {"project_id": "demo", "unknown_datasets": "infer"}, "")
    assert sync_redis.hget(project_settings_key("demo"), "unknown_datasets") == b"infer"
    assert run(capsys, "projects", "get", "demo")[1]["unknown_datasets"] == "infer"
    code, out, err = run(capsys, "projects", "set", "demo", "unknown_datasets=maybe")
    assert (code, out) == (1, None)
    assert err == 'strictgate: unknown_datasets must be "reject" or "infer"\n'
    code, out, err = run(capsys, "projects", "set", "demo", "colour=blue")
    assert (code, out) == (1, None) and "Unknown setting: colour" in err
    assert run(capsys, "projects", "get", "demo")[1]["unknown_datasets"] == "infer"


def test_cli_projects_arguments_are_checked(
    env: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["projects", "set", "demo", "unknown_datasets"], ["projects", "set", "demo"],
                 ["projects", "get", "bad id"], ["projects", "set", "-x", "a=b"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "usage:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["projects", "set", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "unknown_datasets: reject or infer (default reject)" in shown

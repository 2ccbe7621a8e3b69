"""Dataset settings (``on_invalid``, ``quarantine_retention_days``): the store and its
per-process cache on a real Redis, the admin API over HTTP (two app instances on one Redis),
and ``strictgate datasets settings ...``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from quota.keys import dataset_settings_key, datasets_index_key
from strictgate.cli import main
from strictgate.context import AppContext, utc_now
from strictgate.registry.settings import (
    DatasetSettings,
    DatasetSettingsStore,
    InvalidSettingError,
)
from strictgate.registry.store import Registry
from tests.ingest_fixtures import SEED_DEFINITION, Service, start_service

DS = "/admin/projects/p1/datasets/13"
SETTINGS = DS + "/settings"
DEFAULTS = {"project_id": "p1", "dataset_id": "13", "on_invalid": "reject",
            "quarantine_retention_days": 30}


async def _registered(client: aioredis.Redis, project: str = "p1", dataset: str = "13") -> None:
    await Registry(client, clock=utc_now).put(project, dataset, SEED_DEFINITION)


# --- the store ----------------------------------------------------------------------------------


async def test_defaults_then_changes_keep_the_settings_not_named(aredis: aioredis.Redis) -> None:
    await _registered(aredis)
    store = DatasetSettingsStore(aredis)
    assert await store.get("p1", "13") == DatasetSettings("p1", "13", "reject", 30)
    assert await store.read("p1", "13") == DatasetSettings("p1", "13")
    changed = await store.set("p1", "13", {"on_invalid": "quarantine"})
    assert changed == DatasetSettings("p1", "13", "quarantine", 30) and changed.quarantine
    assert await store.get("p1", "13") == changed  # this instance: at once
    changed = await store.set("p1", "13", {"quarantine_retention_days": 7})
    assert changed is not None and changed.to_json() == {
        **DEFAULTS, "on_invalid": "quarantine", "quarantine_retention_days": 7}
    assert await aredis.hgetall(dataset_settings_key("p1", "13")) == {
        b"on_invalid": b"quarantine", b"quarantine_retention_days": b"7"}
    await _registered(aredis, dataset="14")
    assert await store.get("p1", "14") == DatasetSettings("p1", "14")  # datasets are apart
    assert await store.get("p2", "13") == DatasetSettings("p2", "13")  # so are projects


@pytest.mark.parametrize(("change", "codes"), [
    ({"on_invalid": "drop"}, ["invalid_setting"]),
    ({"on_invalid": "QUARANTINE"}, ["invalid_setting"]),
    ({"on_invalid": None}, ["invalid_setting"]),
    ({"quarantine_retention_days": 0}, ["invalid_setting"]),
    ({"quarantine_retention_days": 3651}, ["invalid_setting"]),
    ({"quarantine_retention_days": -1}, ["invalid_setting"]),
    ({"quarantine_retention_days": "7"}, ["invalid_setting"]),
    ({"quarantine_retention_days": 7.0}, ["invalid_setting"]),
    ({"quarantine_retention_days": True}, ["invalid_setting"]),
    ({"on_invalid": "quarantine", "quarantine_retention_days": 0}, ["invalid_setting"]),
    ({"on_invalid": "x", "retention": 7}, ["invalid_setting", "unknown_setting"]),
    ({"unknown_datasets": "infer"}, ["unknown_setting"]),  # a project setting, not this
    ({}, ["invalid_body"]),
])
async def test_bad_changes_are_refused_whole_and_store_nothing(
    aredis: aioredis.Redis, change: dict[str, Any], codes: list[str],
) -> None:
    await _registered(aredis)
    with pytest.raises(InvalidSettingError) as info:
        await DatasetSettingsStore(aredis).set("p1", "13", change)
    assert [code for code, _, _ in info.value.problems] == codes
    assert await aredis.exists(dataset_settings_key("p1", "13")) == 0


@pytest.mark.parametrize(("stored", "expected"), [
    ({"on_invalid": "maybe"}, ("reject", 30)),
    ({"quarantine_retention_days": "0"}, ("reject", 30)),
    ({"quarantine_retention_days": "-3"}, ("reject", 30)),
    ({"quarantine_retention_days": "9" * 5000}, ("reject", 30)),
    ({"quarantine_retention_days": "3650", "future": "x"}, ("reject", 3650)),
    ({"on_invalid": "quarantine", "quarantine_retention_days": "1"}, ("quarantine", 1)),
])
async def test_values_stored_by_hand_read_as_the_default_unless_valid(
    aredis: aioredis.Redis, stored: dict[str, str], expected: tuple[str, int],
) -> None:
    await aredis.hset(dataset_settings_key("p1", "13"), mapping=stored)  # type: ignore[arg-type]
    found = await DatasetSettingsStore(aredis).get("p1", "13")
    assert (found.on_invalid, found.quarantine_retention_days) == expected


async def test_only_a_dataset_the_project_has_takes_settings(aredis: aioredis.Redis) -> None:
    store = DatasetSettingsStore(aredis)
    assert await store.set("p1", "13", {"on_invalid": "quarantine"}) is None
    assert await store.read("p1", "13") is None
    assert await aredis.exists(dataset_settings_key("p1", "13")) == 0
    # Operyn's built-in datasets exist in every project without being stored
    logs = await store.set("p1", "logs", {"on_invalid": "quarantine"})
    assert logs is not None and logs.quarantine
    assert await store.read("p2", "metrics") == DatasetSettings("p2", "metrics")
    # the hot path answers defaults whatever the dataset (the definition says if it exists)
    assert await store.get("p1", "nope") == DatasetSettings("p1", "nope")


async def test_a_dataset_deleted_first_takes_no_settings(aredis: aioredis.Redis) -> None:
    await _registered(aredis)
    assert await Registry(aredis, clock=utc_now).delete("p1", "13")
    assert await DatasetSettingsStore(aredis).set("p1", "13", {"on_invalid": "quarantine"}) \
        is None
    assert await aredis.exists(dataset_settings_key("p1", "13")) == 0


async def test_the_default_case_is_a_memory_hit_after_the_first_read(
    aredis: aioredis.Redis,
) -> None:
    store = DatasetSettingsStore(aredis, refresh_interval_s=60)
    assert store.cached("p1", "13") is None
    assert (await store.get("p1", "13")).on_invalid == "reject"
    assert store.cached("p1", "13") == DatasetSettings("p1", "13")
    # written behind the cache's back (no generation bump): the cache still answers
    await aredis.hset(dataset_settings_key("p1", "13"), "on_invalid", "quarantine")
    assert (await store.get("p1", "13")).on_invalid == "reject"


async def test_a_new_definition_version_keeps_the_settings(aredis: aioredis.Redis) -> None:
    await _registered(aredis)
    store = DatasetSettingsStore(aredis)
    await store.set("p1", "13", {"on_invalid": "quarantine", "quarantine_retention_days": 90})
    registry = Registry(aredis, clock=utc_now)
    put = await registry.put("p1", "13", {"fields": {**SEED_DEFINITION["fields"],
                                                     "coupon": "string"}})
    assert (put.version, put.changed) == (2, True)
    assert await store.read("p1", "13") == DatasetSettings("p1", "13", "quarantine", 90)


def test_the_settings_share_the_slot_of_the_projects_registry_keys() -> None:
    key = dataset_settings_key("p1", "13")
    assert key == "registry:dataset_settings:{p:p1}:13"
    assert key_slot(key.encode()) == key_slot(datasets_index_key("p1").encode())


# --- the admin API ------------------------------------------------------------------------------


def test_get_and_put_answer_every_setting_in_force(svc: Service) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    r = svc.admin("GET", SETTINGS)
    assert (r.status_code, r.json()) == (200, DEFAULTS)
    r = svc.admin("PUT", SETTINGS, json={"on_invalid": "quarantine"})
    assert (r.status_code, r.json()) == (200, {**DEFAULTS, "on_invalid": "quarantine"})
    r = svc.admin("PUT", SETTINGS, json={"quarantine_retention_days": 7})
    assert r.json() == {**DEFAULTS, "on_invalid": "quarantine", "quarantine_retention_days": 7}
    assert svc.admin("GET", SETTINGS).json() == r.json()
    r = svc.admin("PUT", SETTINGS, json={"on_invalid": "reject",
                                         "quarantine_retention_days": 3650})
    assert r.json() == {**DEFAULTS, "quarantine_retention_days": 3650}


def test_a_dataset_the_project_lacks_is_404_as_on_ingest(svc: Service) -> None:
    for method in ("GET", "PUT"):
        r = svc.admin(method, SETTINGS, json={"on_invalid": "quarantine"})
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "Dataset schema not found"
        assert r.json()["errors"][0]["code"] == "dataset_not_found"
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    assert svc.admin("GET", "/admin/projects/p2/datasets/13/settings").status_code == 404
    # a built-in dataset is there without being registered
    r = svc.admin("PUT", "/admin/projects/p2/datasets/logs/settings",
                  json={"on_invalid": "quarantine"})
    assert (r.status_code, r.json()["on_invalid"]) == (200, "quarantine")


def test_a_new_version_keeps_the_settings_and_a_delete_ends_them(svc: Service) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    svc.admin("PUT", SETTINGS, json={"on_invalid": "quarantine", "quarantine_retention_days": 5})
    r = svc.admin("PUT", DS, json={"fields": {**SEED_DEFINITION["fields"], "coupon": "string"}})
    assert (r.status_code, r.json()["version"]) == (200, 2)
    assert svc.admin("GET", SETTINGS).json() == {
        **DEFAULTS, "on_invalid": "quarantine", "quarantine_retention_days": 5}
    ctx: AppContext = svc.client.app.state.ctx  # type: ignore[attr-defined]
    assert svc.client.portal.call(ctx.dataset_settings.get, "p1", "13").quarantine  # type: ignore[union-attr]
    assert svc.admin("DELETE", DS).status_code == 200
    assert svc.admin("GET", SETTINGS).status_code == 404
    assert svc.admin("PUT", SETTINGS, json={"on_invalid": "reject"}).status_code == 404
    # a re-created dataset starts with the defaults, not the deleted one's settings
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    assert svc.admin("GET", SETTINGS).json() == DEFAULTS


@pytest.mark.parametrize(("body", "code", "field", "message"), [
    ({"on_invalid": "drop"}, "invalid_setting", "on_invalid",
     'on_invalid must be "reject" or "quarantine"'),
    ({"quarantine_retention_days": 0}, "invalid_setting", "quarantine_retention_days",
     "quarantine_retention_days must be an integer from 1 to 3650"),
    ({"quarantine_retention_days": "30"}, "invalid_setting", "quarantine_retention_days", None),
    ({"quarantine_retention_days": 30.5}, "invalid_setting", "quarantine_retention_days", None),
    ({"on_invalid": "quarantine", "quarantine_retention_days": False}, "invalid_setting",
     "quarantine_retention_days", None),
    ({"onInvalid": "quarantine"}, "unknown_setting", "onInvalid",
     "Unknown setting: onInvalid (known: on_invalid, quarantine_retention_days)"),
    ({}, "invalid_body", None, None),
    ([], "invalid_body", None, None),
    (b"{", "invalid_json", None, None),
])
def test_bad_bodies_are_400_naming_the_field(
    svc: Service, body: Any, code: str, field: str | None, message: str | None,
) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = svc.admin("PUT", SETTINGS, **kw)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["success"] is False
    assert (answer["errors"][0]["code"], answer["errors"][0]["field"]) == (code, field)
    if message is not None:
        assert answer["error"] == message
    assert svc.admin("GET", SETTINGS).json() == DEFAULTS  # all or nothing


def test_auth_ids_and_size(svc: Service) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    for method in ("GET", "PUT"):
        r = svc.client.request(method, SETTINGS, json={"on_invalid": "quarantine"})
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "unauthorized"
        for bad, code in (("-p/datasets/13", "invalid_project_id"),
                          ("p1/datasets/a:b", "invalid_dataset_id"),
                          ("p1/datasets/" + "x" * 129, "invalid_dataset_id")):
            r = svc.admin(method, f"/admin/projects/{bad}/settings",
                          json={"on_invalid": "quarantine"})
            assert r.status_code == 400 and r.json()["errors"][0]["code"] == code, r.text
    r = svc.admin("PUT", SETTINGS, content=b'{"on_invalid": "' + b"x" * 5000 + b'"}')
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "body_too_large"
    assert svc.admin("GET", SETTINGS).json() == DEFAULTS


def test_a_dataset_named_settings_is_still_a_dataset(svc: Service) -> None:
    svc.put_dataset("p1", "settings", SEED_DEFINITION)
    assert svc.admin("GET", "/admin/projects/p1/datasets/settings").json()["version"] == 1
    r = svc.admin("GET", "/admin/projects/p1/datasets/settings/settings")
    assert (r.status_code, r.json()["dataset_id"]) == (200, "settings")


@pytest.fixture
def other(svc: Service, tmp_path: Path, redis_url: str) -> Iterator[Service]:
    """A second app instance on the same Redis (its own process state and caches)."""
    data_dir = tmp_path / "other"
    data_dir.mkdir()
    yield from start_service(data_dir, redis_url)


def test_a_change_through_one_instance_reaches_the_others_cache_within_a_second(
    svc: Service, other: Service,
) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    ctx: AppContext = other.client.app.state.ctx  # type: ignore[attr-defined]
    portal = other.client.portal
    assert portal is not None

    def seen_there() -> DatasetSettings:
        found: DatasetSettings = portal.call(ctx.dataset_settings.get, "p1", "13")
        return found

    assert seen_there().on_invalid == "reject"
    assert ctx.dataset_settings.cached("p1", "13") is not None  # cached, defaults included
    svc.admin("PUT", SETTINGS, json={"on_invalid": "quarantine", "quarantine_retention_days": 3})
    started = time.monotonic()
    while seen_there() != DatasetSettings("p1", "13", "quarantine", 3):
        assert time.monotonic() - started < 1.0, "change not seen within 1 s"
        time.sleep(0.02)
    assert other.admin("GET", SETTINGS).json()["quarantine_retention_days"] == 3


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


def test_cli_dataset_settings_get_and_set(
    env: Path, capsys: pytest.CaptureFixture[str], sync_redis: redis.Redis, tmp_path: Path,
) -> None:
    cli = ("datasets", "settings")
    shown = {**DEFAULTS, "project_id": "demo"}
    assert run(capsys, *cli, "get", "demo", "13") == (
        1, None, "strictgate: Dataset schema not found\n")
    assert run(capsys, *cli, "set", "demo", "13", "on_invalid=quarantine")[:2] == (1, None)
    definition = tmp_path / "seed.json"
    definition.write_text(json.dumps(SEED_DEFINITION))
    assert run(capsys, "datasets", "put", "demo", "13", str(definition))[0] == 0
    assert run(capsys, *cli, "get", "demo", "13") == (0, shown, "")
    assert run(capsys, *cli, "set", "demo", "13", "on_invalid=quarantine",
               "quarantine_retention_days=7") == (
        0, {**shown, "on_invalid": "quarantine", "quarantine_retention_days": 7}, "")
    assert sync_redis.hgetall(dataset_settings_key("demo", "13")) == {
        b"on_invalid": b"quarantine", b"quarantine_retention_days": b"7"}
    code, out, err = run(capsys, *cli, "set", "demo", "13", "quarantine_retention_days=0",
                         "on_invalid=drop", "colour=blue")
    assert (code, out) == (1, None)
    assert err.splitlines() == [
        'strictgate: on_invalid must be "reject" or "quarantine"',
        "strictgate: Unknown setting: colour (known: on_invalid, quarantine_retention_days)",
        "strictgate: quarantine_retention_days must be an integer from 1 to 3650",
    ]
    code, _, err = run(capsys, *cli, "set", "demo", "13", "quarantine_retention_days=ten")
    assert code == 1 and "from 1 to 3650" in err
    assert run(capsys, *cli, "get", "demo", "13")[1]["quarantine_retention_days"] == 7
    assert run(capsys, *cli, "get", "demo", "logs") == (
        0, {**shown, "dataset_id": "logs"}, "")


def test_cli_dataset_settings_arguments_are_checked(
    env: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["datasets", "settings", "set", "demo", "13"],
                 ["datasets", "settings", "set", "demo", "13", "on_invalid"],
                 ["datasets", "settings", "get", "demo"],
                 ["datasets", "settings", "get", "demo", "a:b"],
                 ["datasets", "settings"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "usage:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["datasets", "settings", "set", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "on_invalid: reject or quarantine (default reject)" in shown
    assert "quarantine_retention_days: 1 to 3650 (default 30)" in shown

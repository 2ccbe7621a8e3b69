"""The dataset registry against a real Redis: versions, dry runs, atomic version claims, and
the per-process validator cache seen from two instances."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from quota.keys import dataset_versions_key, datasets_index_key, registry_generation_key
from strictgate.registry.store import Registry
from tests.redis_mode import async_client
from validator import DefinitionError

T0 = datetime(2026, 6, 10, 10, 58, tzinfo=UTC)
SEED: dict[str, Any] = {"fields": {
    "country": "string", "plan": "string", "amount": "number", "active": "boolean",
    "signup_at": "timestamp",
}}
V2: dict[str, Any] = {"fields": {**SEED["fields"], "amount": "integer"}}


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def registry(aredis: aioredis.Redis) -> Registry:
    return Registry(aredis, clock=Clock())


async def test_create_update_identical_and_old_versions(registry: Registry) -> None:
    first = await registry.put("p1", "13", SEED)
    assert (first.version, first.created, first.changed, first.breaking_changes) == (
        1, True, True, [])
    assert first.created_at == first.updated_at == "2026-06-10T10:58:01.000Z"
    again = await registry.put("p1", "13", SEED)
    assert (again.version, again.created, again.changed) == (1, False, False)
    second = await registry.put("p1", "13", V2)
    assert (second.version, second.created, second.changed) == (2, False, True)
    assert [(c["field"], c["change"]) for c in second.breaking_changes] == [
        ("amount", "type_narrowed")]
    assert second.previous_version == 1

    info = await registry.get("p1", "13")
    assert info is not None
    assert (info.version, info.definition) == (2, V2)
    assert info.created_at == "2026-06-10T10:58:01.000Z"
    assert info.updated_at > info.created_at
    v1 = await registry.get_version("p1", "13", 1)
    assert v1 is not None and v1.definition == SEED
    assert await registry.get_version("p1", "13", 3) is None
    # back to the first definition: a new version, not a revert to 1
    third = await registry.put("p1", "13", SEED)
    assert third.version == 3 and third.breaking_changes == []


async def test_list_and_projects_are_separate(registry: Registry) -> None:
    await registry.put("p1", "b", SEED)
    await registry.put("p1", "a", SEED)
    await registry.put("p1", "a", V2)
    await registry.put("p2", "c", SEED)
    listed = await registry.list("p1")
    assert [(i.dataset_id, i.version) for i in listed if not i.builtin] == [("a", 2), ("b", 1)]
    assert await registry.get("p2", "a") is None
    # a project with nothing stored still has the built-in Operyn datasets, version 0
    assert [(i.dataset_id, i.version, i.builtin) for i in await registry.list("nobody")] == [
        ("deployments", 0, True), ("logs", 0, True), ("metrics", 0, True)]


async def test_delete_removes_versions_and_numbering_continues(
    registry: Registry, aredis: aioredis.Redis
) -> None:
    await registry.put("p1", "13", SEED)
    await registry.put("p1", "13", V2)
    assert await registry.delete("p1", "13") is True
    assert await registry.delete("p1", "13") is False
    assert await registry.get("p1", "13") is None
    assert await registry.get_version("p1", "13", 1) is None
    assert all(i.builtin for i in await registry.list("p1"))
    assert await aredis.hlen(datasets_index_key("p1")) == 0
    again = await registry.put("p1", "13", SEED)
    # a re-created dataset never reuses a version an output record may already name
    assert (again.version, again.created) == (3, True)


async def test_dry_run_stores_nothing(registry: Registry, aredis: aioredis.Redis) -> None:
    generation = await aredis.get(registry_generation_key())
    report = await registry.put("p1", "13", SEED, dry_run=True)
    assert (report.version, report.created, report.dry_run) == (1, True, True)
    assert isinstance(report.json_schema, dict)
    assert await aredis.keys("registry:*") == []
    await registry.put("p1", "13", SEED)
    before = await aredis.hgetall(dataset_versions_key("p1", "13"))
    generation = await aredis.get(registry_generation_key())
    report = await registry.put("p1", "13", V2, dry_run=True)
    assert (report.version, report.changed) == (2, True)
    assert [c["change"] for c in report.breaking_changes] == ["type_narrowed"]
    assert await aredis.hgetall(dataset_versions_key("p1", "13")) == before
    assert await aredis.get(registry_generation_key()) == generation
    assert (await registry.get("p1", "13")).version == 1  # type: ignore[union-attr]


async def test_bad_definition_raises_and_stores_nothing(
    registry: Registry, aredis: aioredis.Redis
) -> None:
    with pytest.raises(DefinitionError) as info:
        await registry.put("p1", "13", {"fields": {"a": "strng"}, "extra": 1})
    assert info.value.problems
    pointers = [p for p, _ in info.value.problems]
    assert "/fields/a" in pointers and all(p == "" or p.startswith("/") for p in pointers)
    assert await aredis.keys("registry:*") == []


async def test_concurrent_puts_never_share_a_version(
    redis_url: str, aredis: aioredis.Redis
) -> None:
    clients = [async_client(redis_url) for _ in range(8)]
    try:
        registries = [Registry(c, clock=Clock()) for c in clients]
        definitions = [
            {"fields": {**SEED["fields"], f"extra{i}": "string"}} for i in range(len(clients))
        ]
        results = await asyncio.gather(*(
            r.put("p1", "race", d) for r, d in zip(registries, definitions, strict=True)
        ))
        versions = sorted(r.version for r in results)
        assert versions == list(range(1, len(clients) + 1))
        assert sum(r.created for r in results) == 1
        stored = await aredis.hgetall(dataset_versions_key("p1", "race"))
        assert len(stored) == len(clients) + 1  # the versions and "seq"
    finally:
        for c in clients:
            await c.aclose()


async def test_resolve_caches_and_returns_the_latest(registry: Registry) -> None:
    assert await registry.resolve("p1", "13") is None
    await registry.put("p1", "13", SEED)
    await asyncio.sleep(0.55)
    resolved = await registry.resolve("p1", "13")
    assert resolved is not None and resolved.version == 1
    assert await registry.resolve("p1", "13") is resolved  # the cached compiled validator
    assert await registry.resolve("p2", "13") is None


async def _eventually(check: Any, within: float = 1.0) -> float:
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        assert time.monotonic() - started < within, "change not seen within 1 s"
        await asyncio.sleep(0.02)


async def test_a_change_through_one_instance_is_seen_by_another_within_a_second(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    other_client = async_client(redis_url)
    try:
        here = Registry(aredis, clock=Clock())
        there = Registry(other_client, clock=Clock())
        assert await there.resolve("p1", "13") is None  # a cached miss
        await here.put("p1", "13", SEED)

        async def created() -> bool:
            r = await there.resolve("p1", "13")
            return r is not None and r.version == 1

        await _eventually(created)
        await here.put("p1", "13", V2)

        async def updated() -> bool:
            r = await there.resolve("p1", "13")
            return r is not None and r.version == 2

        await _eventually(updated)
        await here.delete("p1", "13")

        async def deleted() -> bool:
            return await there.resolve("p1", "13") is None

        await _eventually(deleted)
        # delete + re-create inside one poll interval still refreshes (numbering continues)
        await here.put("p1", "13", SEED)
        await _eventually(lambda: _version_is(there, 3))
    finally:
        await other_client.aclose()


async def _version_is(registry: Registry, version: int) -> bool:
    r = await registry.resolve("p1", "13")
    return r is not None and r.version == version


async def test_ready(registry: Registry) -> None:
    assert await registry.ready() is True


async def test_bad_ids_are_refused(registry: Registry) -> None:
    with pytest.raises(ValueError):
        await registry.put("bad id", "13", SEED)
    with pytest.raises(ValueError):
        await registry.put("p1", "-13", SEED)

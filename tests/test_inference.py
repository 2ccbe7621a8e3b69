"""Schema on first write (``Registry.infer``) against a real Redis: the inference rules, the
additive growth, races between instances, the hot path that never asks Redis, and inferred
definitions being ordinary ones for an admin."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from strictgate.lake.engine import LakeConfig
from strictgate.lake.reader import LakeReader
from strictgate.lake.writer import LakeWriter
from strictgate.registry.evolution import breaking_changes
from strictgate.registry.inference import DESCRIPTION, InferenceError
from strictgate.registry.store import Registry, ResolvedDataset
from tests.lake_support import lake_entry, payload
from tests.redis_mode import async_client

T0 = datetime(2026, 6, 10, 10, 58, tzinfo=UTC)

# The OrcaSheets docs' rows (its "Minimal" and "Multi-table batch" examples)
ORDER = {"order_id": "1001", "amount": 49.99, "status": "shipped"}
INVENTORY = {"sku": "SKU-991", "quantity": 42, "warehouse": "west-1"}
RETURN_EVENT = {"return_id": "ret_502", "order_id": "1003", "reason": "damaged_item",
                "status": "approved", "occurred_at": "2026-05-25T10:15:00Z"}


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


@pytest.fixture
async def instance_clients(redis_url: str, aredis: aioredis.Redis
                           ) -> AsyncIterator[list[aioredis.Redis]]:
    """Four Redis clients of their own: the connections of four service instances."""
    clients = [async_client(redis_url) for _ in range(4)]
    try:
        yield clients
    finally:
        for c in clients:
            await c.aclose()


@pytest.fixture
def registries(instance_clients: list[aioredis.Redis]) -> list[Registry]:
    """Four registries on their own connections: four service instances."""
    return [Registry(c, clock=Clock()) for c in instance_clients]


def errors(resolved: ResolvedDataset, rows: Sequence[Mapping[str, Any]]
           ) -> list[tuple[int, str]]:
    """(row, message) of every validation error of ``rows`` against ``resolved``."""
    return [(i, e.message) for i, row in enumerate(rows)
            for e in resolved.validator.validate(row)]


def fields(resolved: ResolvedDataset) -> dict[str, Any]:
    found: dict[str, Any] = resolved.validator.definition["fields"]
    return found


# --- the rules ------------------------------------------------------------------------------


async def test_first_rows_register_version_1_typed_from_their_values(
    registry: Registry,
) -> None:
    rows = [ORDER, {"order_id": "1002", "amount": 120, "status": "delivered"}]
    resolved = await registry.infer("p1", "orders", rows, flat=True)
    assert (resolved.version, resolved.envelope, resolved.provisional) == (1, "none", False)
    # integers and decimals alike are numbers; every inferred column also takes null
    assert fields(resolved) == {
        "order_id": {"type": ["string", "null"], "required": True},
        "amount": {"type": ["number", "null"], "required": True},
        "status": {"type": ["string", "null"], "required": True},
    }
    assert errors(resolved, rows) == []
    # later rows are held to it: the validator's usual messages
    assert errors(resolved, [{**ORDER, "amount": "12.5"}, {**ORDER, "amount": None},
                             {"order_id": "1", "amount": 1}]) == [
        (0, "Invalid number field: amount"), (2, "Missing field: status")]
    info = await registry.get("p1", "orders")
    assert info is not None and info.version == 1
    assert info.definition["description"] == DESCRIPTION
    assert info.created_at == info.updated_at


async def test_booleans_and_a_column_missing_from_some_rows_is_optional(
    registry: Registry,
) -> None:
    rows: list[dict[str, Any]] = [{"sku": "a", "active": True}, {"sku": "b"}]
    resolved = await registry.infer("p1", "flags", rows, flat=True)
    assert fields(resolved) == {"sku": {"type": ["string", "null"], "required": True},
                                "active": {"type": ["boolean", "null"], "required": False}}
    assert errors(resolved, [{"sku": "c", "active": 1}]) == [
        (0, "Invalid boolean field: active")]


async def test_a_column_null_in_every_row_is_typed_by_its_first_value_later(
    registry: Registry,
) -> None:
    first = await registry.infer("p1", "t", [{"id": 1, "note": None}], flat=True)
    assert fields(first)["note"] == {"type": "null", "required": True}
    assert first.grows_with([{"id": 2, "note": "hello"}])
    assert not first.grows_with([{"id": 2, "note": None}])
    second = await registry.infer("p1", "t", [{"id": 2, "note": "hello"}], flat=True)
    assert second.version == 2
    assert fields(second)["note"] == {"type": ["string", "null"], "required": True}
    assert breaking_changes(first.validator.definition, second.validator.definition) == []
    # typed now: another type is the validator's business, not a new version
    third = await registry.infer("p1", "t", [{"id": 3, "note": 5}], flat=True)
    assert third.version == 2
    assert errors(third, [{"id": 3, "note": 5}]) == [(0, "Invalid string field: note")]


async def test_new_columns_make_a_new_version_with_optional_fields(registry: Registry) -> None:
    v1 = await registry.infer("p1", "returns", [
        {"return_id": "ret_501", "order_id": "1002", "reason": "size_exchange",
         "status": "requested"}], flat=True)
    v2 = await registry.infer("p1", "returns", [RETURN_EVENT], flat=True)
    assert (v1.version, v2.version) == (1, 2)
    assert fields(v2)["occurred_at"] == {"type": ["string", "null"], "required": False}
    assert breaking_changes(v1.validator.definition, v2.validator.definition) == []
    # the same rows again: nothing new, no version
    assert (await registry.infer("p1", "returns", [RETURN_EVENT], flat=True)).version == 2
    stored = await registry.get_version("p1", "returns", 2)
    assert stored is not None and list(stored.definition["fields"]) == [
        "return_id", "order_id", "reason", "status", "occurred_at"]


async def test_rows_that_miss_a_required_column_later_are_refused_not_relaxed(
    registry: Registry,
) -> None:
    await registry.infer("p1", "users", [{"user_id": "u1", "email": "a@b.c"}], flat=True)
    # a misspelt column: the real one is still required, so nothing is stored
    later = await registry.infer("p1", "users", [{"user_id": "u2", "emial": "x@y.z"}],
                                 flat=True)
    assert later.provisional and fields(later)["email"]["required"] is True
    assert errors(later, [{"user_id": "u2", "emial": "x@y.z"}]) == [
        (0, "Missing field: email")]
    info = await registry.get("p1", "users")
    assert info is not None and info.version == 1 and "emial" not in info.definition["fields"]


async def test_rows_that_do_not_all_fit_store_nothing(
    registry: Registry,
) -> None:
    rows: list[dict[str, Any]] = [{"id": "a", "amount": 5}, {"id": "b", "amount": "5"}]
    resolved = await registry.infer("p1", "mixed", rows, flat=True)
    assert resolved.provisional
    assert errors(resolved, rows) == [(1, "Invalid number field: amount")]
    assert await registry.get("p1", "mixed") is None
    # the rows fixed: the first accepted request defines the table
    fixed = await registry.infer("p1", "mixed", [{"id": "a", "amount": 5}], flat=True)
    assert (fixed.version, fixed.provisional) == (1, False)
    # the same for a column a later request adds
    rows = [{"id": "c", "amount": 1, "x": True}, {"id": "d", "amount": 2, "x": "yes"}]
    resolved = await registry.infer("p1", "mixed", rows, flat=True)
    assert resolved.provisional and errors(resolved, rows) == [
        (1, "Invalid boolean field: x")]
    # a new column in rows whose other values do not fit: not added until they do
    rows = [{"id": "e", "amount": "1", "y": 1}]
    resolved = await registry.infer("p1", "mixed", rows, flat=True)
    assert resolved.provisional and errors(resolved, rows) == [
        (0, "Invalid number field: amount")]
    info = await registry.get("p1", "mixed")
    assert info is not None and info.version == 1
    added = await registry.infer("p1", "mixed", [{"id": "e", "amount": 1, "y": 1}], flat=True)
    assert (added.version, added.provisional) == (2, False)


# --- flat and nested rows ---------------------------------------------------------------------


async def test_flat_rows_refuse_a_nested_value_naming_row_and_column(
    registry: Registry,
) -> None:
    rows = [ORDER, {**ORDER, "address": {"city": "Cluj"}}]
    with pytest.raises(InferenceError) as info:
        await registry.infer("p1", "orders", rows, flat=True)
    assert (info.value.code, info.value.index, info.value.field) == (
        "nested_value", 1, "address")
    assert "Nested value in field: address" in info.value.message
    assert isinstance(info.value, ValueError)
    assert await registry.get("p1", "orders") is None
    await registry.infer("p1", "orders", [{**ORDER, "tags": None}], flat=True)
    with pytest.raises(InferenceError) as info:  # typing a null-so-far column
        await registry.infer("p1", "orders", [{**ORDER, "tags": ["a"]}], flat=True)
    assert (info.value.code, info.value.index, info.value.field) == ("nested_value", 0, "tags")
    # where a column is typed already, a nested value is the validator's type error
    resolved = await registry.infer("p1", "orders", [{**ORDER, "status": {"a": 1}}], flat=True)
    assert errors(resolved, [{**ORDER, "status": {"a": 1}, "tags": None}]) == [
        (0, "Invalid string field: status")]


async def test_nested_rows_become_nested_definitions(registry: Registry) -> None:
    # the OneSight docs' payloads (UWB location, POS transaction)
    location = {"customer_id": "cust_123", "position": {"x": 12.5, "y": 8.3, "z": 1.2},
                "zone": "produce_section", "timestamp": "2026-04-12T10:30:00Z"}
    pos = {"transaction_id": "TXN001", "items": [{"sku": "A001", "qty": 1, "price": 298}],
           "total": 298, "timestamp": "2026-04-12T10:35:00Z", "refunds": []}
    v1 = await registry.infer("p1", "uwb_location", [location], flat=False)
    assert fields(v1)["position"] == {"type": ["object", "null"], "required": True,
                                      "properties": {c: {"type": ["number", "null"]}
                                                     for c in ("x", "y", "z")}}
    # nested members are optional; nested objects are closed
    assert errors(v1, [{**location, "position": {"x": 1}},
                       {**location, "position": {"x": "1"}}]) == [
        (1, "Invalid number field: position.x")]
    assert v1.grows_with([{**location, "position": {"x": 1, "floor": 2}}])
    v2 = await registry.infer("p1", "uwb_location",
                              [{**location, "position": {"x": 1, "floor": 2}}], flat=False)
    assert v2.version == 2 and "floor" in fields(v2)["position"]["properties"]
    assert breaking_changes(v1.validator.definition, v2.validator.definition) == []

    t1 = await registry.infer("p1", "pos_transaction", [pos], flat=False)
    assert fields(t1)["items"]["items"] == {"type": ["object", "null"], "properties": {
        "sku": {"type": ["string", "null"]}, "qty": {"type": ["number", "null"]},
        "price": {"type": ["number", "null"]}}}
    # an array seen only empty: no element seen so far, typed by its first element
    assert fields(t1)["refunds"] == {"type": ["array", "null"], "items": {"type": "null"},
                                     "required": True}
    later = {**pos, "refunds": [{"sku": "A001", "amount": 298}]}
    assert t1.grows_with([later])
    t2 = await registry.infer("p1", "pos_transaction", [later], flat=False)
    assert fields(t2)["refunds"]["items"]["type"] == ["object", "null"]
    assert breaking_changes(t1.validator.definition, t2.validator.definition) == []
    assert errors(t2, [later, pos]) == []


async def test_rows_a_definition_cannot_hold_are_refused(registry: Registry) -> None:
    cases: list[tuple[list[dict[str, Any]], str, int | None, str | None]] = [
        ([{"a": 1}, {"__absent": 1}], "invalid_field_name", 1, "__absent"),
        ([{"": 1}], "invalid_field_name", 0, ""),
        ([{"x" * 129: 1}], "invalid_field_name", 0, "x" * 100 + "…"),
        ([{f"c{i}": i for i in range(501)}], "too_many_fields", None, None),
        ([{}, {}], "no_fields", None, None),
    ]
    for rows, code, index, field in cases:
        with pytest.raises(InferenceError) as info:
            await registry.infer("p1", "t", rows, flat=True)
        assert (info.value.code, info.value.index, info.value.field) == (code, index, field)
    deep: Any = 1
    for _ in range(40):
        deep = {"d": deep}
    with pytest.raises(InferenceError) as info:
        await registry.infer("p1", "t", [{"deep": deep}], flat=False)
    assert info.value.code == "too_deep" and info.value.index == 0
    for bad in ("", "has space", "-dash", "x" * 129, "a:b"):
        with pytest.raises(InferenceError) as info:
            await registry.infer("p1", bad, [{"a": 1}], flat=True)
        assert info.value.code == "invalid_dataset_id" and isinstance(info.value, ValueError)
    assert [d.dataset_id for d in await registry.list("p1") if not d.builtin] == []


# --- ordinary definitions ----------------------------------------------------------------------


async def test_registered_and_builtin_definitions_do_not_grow(registry: Registry) -> None:
    await registry.put("p1", "orders", {"envelope": "none", "fields": {
        "order_id": "string", "amount": "number"}})
    resolved = await registry.infer("p1", "orders", [ORDER], flat=True)
    assert (resolved.version, resolved.shape) == (1, None)
    assert errors(resolved, [ORDER]) == [(0, "Extra field: status")]
    builtin = await registry.infer("p1", "logs", [{"x": 1}], flat=True)
    assert builtin.builtin and builtin.version == 0
    assert [d.dataset_id for d in await registry.list("p1") if not d.builtin] == ["orders"]


async def test_an_admin_can_read_tighten_and_replace_an_inferred_definition(
    registry: Registry,
) -> None:
    v1 = await registry.infer("p1", "orders", [ORDER], flat=True)
    info = await registry.get("p1", "orders")
    assert info is not None and info.definition == v1.validator.definition
    # PUT of the same definition: no new version, still inferred (it grows)
    same = await registry.put("p1", "orders", info.definition)
    assert (same.version, same.changed) == (1, False)
    assert (await registry.infer("p1", "orders", [{**ORDER, "qty": 2}], flat=True)).version == 2
    # tightened by an admin: held to it from now on, new columns are errors
    tight = {"envelope": "none", "fields": {"order_id": "string", "amount": "number",
                                             "status": "string",
                                             "qty": {"type": "number", "required": False}}}
    put = await registry.put("p1", "orders", tight)
    assert (put.version, sorted(c["field"] for c in put.breaking_changes)) == (
        3, ["amount", "order_id", "qty", "status"])  # null no longer accepted
    held = await registry.infer("p1", "orders", [{**ORDER, "coupon": "X"}], flat=True)
    assert held.version == 3 and held.shape is None
    assert errors(held, [{**ORDER, "coupon": "X"}]) == [(0, "Extra field: coupon")]
    # deleted: the next write infers again, and the numbering continues
    assert await registry.delete("p1", "orders")
    again = await registry.infer("p1", "orders", [ORDER], flat=True)
    assert again.version == 4 and again.shape is not None
    fetched = await registry.get_version("p1", "orders", 4)
    assert fetched is not None and fetched.definition["fields"]["amount"] == {
        "type": ["number", "null"], "required": True}


# --- cost: the hot path never asks Redis -------------------------------------------------------


async def _commands(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def test_rows_that_fit_the_cached_definition_cost_no_redis_call(
    aredis: aioredis.Redis,
) -> None:
    registry = Registry(aredis, clock=Clock(), refresh_interval_s=3600)
    await registry.infer("p1", "orders", [ORDER], flat=True)
    await registry.infer("p1", "orders", [ORDER], flat=True)  # settles the poll
    await aredis.config_resetstat()
    before = await _commands(aredis)
    for amount in (1, 2.5, None, "not a number"):
        resolved = await registry.infer("p1", "orders", [{**ORDER, "amount": amount}],
                                        flat=True)
        assert resolved.version == 1
    assert await _commands(aredis) == before
    # a new column is news: Redis is asked
    assert (await registry.infer("p1", "orders", [{**ORDER, "qty": 1}], flat=True)).version == 2
    assert await _commands(aredis) > before


# --- races ------------------------------------------------------------------------------------


async def test_concurrent_first_writes_make_one_definition_that_takes_every_request(
    instance_clients: list[aioredis.Redis],
) -> None:
    rnd = random.Random(7)
    columns = [f"c{i}" for i in range(12)]
    requests = []
    for i in range(40):
        chosen = rnd.sample(columns, 4)
        requests.append([{"id": f"r{i}-{j}", **{c: rnd.choice(["x", 1.5, None]) if c == "c0"
                                                else f"{c}-{j}" for c in chosen}}
                         for j in range(3)])
    # Each instance has looked the table up once (not there, cached): every request below
    # finds no definition, so all 40 race to create it. Without this, an instance still
    # connecting (a cluster client's first command maps the slots) could look it up after
    # another request stored version 1: a later request, not a racing one.
    racers = [Registry(c, clock=Clock(), refresh_interval_s=3600) for c in instance_clients]
    for registry in racers:
        assert await registry.resolve("p1", "race") is None
    results = await asyncio.gather(*(
        racers[i % len(racers)].infer("p1", "race", rows, flat=True)
        for i, rows in enumerate(requests)))
    latest = await racers[0].get("p1", "race")
    assert latest is not None
    stored = [await racers[0].get_version("p1", "race", n)
              for n in range(1, latest.version + 1)]
    definitions = [s.definition for s in stored if s is not None]
    assert len(definitions) == latest.version  # one version 1, then additive versions only
    for old, new in itertools.pairwise(definitions):
        assert breaking_changes(old, new) == []
        assert set(old["fields"]) <= set(new["fields"])
    checked = 0
    for rows, resolved in zip(requests, results, strict=True):
        if any(row.get("c0") is not None for row in rows):
            continue  # c0's type differs between requests: the validator refuses some
        assert not resolved.provisional
        assert errors(resolved, rows) == [], (rows, resolved.validator.definition)
        assert set(rows[0]) <= set(latest.definition["fields"])
        checked += 1
    assert checked >= 20


async def test_the_same_new_column_added_at_once_makes_one_version(
    registries: list[Registry],
) -> None:
    await registries[0].infer("p1", "orders", [ORDER], flat=True)
    rows = [{**ORDER, "qty": 2, "coupon": None}]
    results = await asyncio.gather(*(
        registries[i % len(registries)].infer("p1", "orders", rows, flat=True)
        for i in range(24)))
    assert {r.version for r in results} == {2}
    latest = await registries[0].get("p1", "orders")
    assert latest is not None and latest.version == 2


async def test_racing_first_writes_define_the_table_together(
    registries: list[Registry],
) -> None:
    a, b = registries[0], registries[1]
    first, second = await asyncio.gather(
        a.infer("p1", "users", [{"user_id": "u1", "email": "a@b.c"}], flat=True),
        b.infer("p1", "users", [{"user_id": "u2", "plan": "pro"}], flat=True))
    final = max(first, second, key=lambda r: r.version)
    assert final.version == 2
    # a column is required only if every row of both requests has it
    assert {n: d["required"] for n, d in fields(final).items()} == {
        "user_id": True, "email": False, "plan": False}
    assert errors(first, [{"user_id": "u1", "email": "a@b.c"}]) == []
    assert errors(second, [{"user_id": "u2", "plan": "pro"}]) == []


# --- the lake takes inferred versions -----------------------------------------------------------


async def test_rows_of_every_inferred_version_read_back_from_the_lake(
    registry: Registry, tmp_path: Path,
) -> None:
    v1_rows: list[dict[str, Any]] = [
        {"order_id": "1001", "amount": 49.99, "note": None},
        {"order_id": "1002", "amount": 5, "note": None}]
    v2_rows: list[dict[str, Any]] = [
        {"order_id": "1003", "amount": 1.5, "note": "gift", "qty": 2},
        {"order_id": "1004", "amount": None, "note": None}]
    v1 = await registry.infer("p1", "orders", v1_rows, flat=True)
    v2 = await registry.infer("p1", "orders", v2_rows, flat=True)
    assert (v1.version, v2.version) == (1, 2)
    definitions = {n: (await registry.get_version("p1", "orders", n)) for n in (1, 2)}

    def definition(project: str, dataset: str, version: int) -> dict[str, Any]:
        found = definitions[version]
        assert found is not None
        return dict(found.definition)

    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, definition)
    entries = [
        lake_entry(f"u1/{n}-0", "p1", "orders", n, f"t{n}", f"2026-06-10T11:00:0{n}.000Z",
                   payload(definition("p1", "orders", n), [orjson.dumps(r) for r in rows]))
        for n, rows in ((1, v1_rows), (2, v2_rows))]
    assert writer.write(entries).records == 4
    writer.close()
    reader = LakeReader(config, b"k" * 32)
    try:
        records = reader.page("p1", "orders", limit=10).records
    finally:
        reader.close()
    assert [{k: v for k, v in r.items() if not k.startswith("__")} for r in records] == [
        {**row, "amount": None if row["amount"] is None else float(row["amount"])}
        for row in v1_rows + v2_rows]
    assert [r["__datasetVersion"] for r in records] == [1, 1, 2, 2]

"""``POST /admin/projects/{p}/datasets/{d}/quarantine/replay`` over HTTP on a real Redis and
a real lake, written by the real lake worker: records quarantined by a mixed batch are
re-checked after a definition fix and admitted exactly once (twice run, run from two places
at once), stored with their original trace id and receipt time plus the replay time, counted
once against the user whose key sent them; what is still invalid keeps its new errors; the
quota stops a replay; every dialect's records replay with what they carried."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from quota.admission import QuotaService
from strictgate.context import utc_now
from strictgate.lake.config import lake_config
from strictgate.lake.engine import connect
from strictgate.lake.tables import QUARANTINE_TABLE
from strictgate.quarantine_replay import (
    BATCH_ROWS,
    Replay,
    ReplayFilter,
    ReplayReport,
    add_replay_command,
)
from strictgate.registry.store import Registry
from strictgate.settings import load_settings
from strictgate.worker.service import build_worker
from tests.ingest_fixtures import SEED_DEFINITION, Service, start_service
from tests.redis_mode import async_client
from tests.test_dry_run import ROUTES, ROW_DEFINITION, Route, _send

ROOT = Path(__file__).resolve().parent.parent
REPLAY = "/admin/projects/p1/datasets/d/quarantine/replay"
V1 = {"fields": {"country": "string", "amount": "integer",
                 "plan": {"type": "string", "enum": ["free", "pro"]}}}
# the fixes: amounts with a fraction (v2), then the "team" plan too (v3)
V2 = {"fields": {**V1["fields"], "amount": "number"}}
V3 = {"fields": {**V2["fields"], "plan": {"type": "string", "enum": ["free", "pro", "team"]}}}


def record(i: int, *, amount: float | None = None, plan: str = "pro") -> dict[str, Any]:
    """The ``i``-th record of dataset d (valid under v1 unless told otherwise)."""
    return {"timestamp": "2026-06-10T11:00:00Z",
            "context": {"source": "shop", "request_id": f"r{i}"},
            "country": "RO", "amount": i if amount is None else amount, "plan": plan}


def drain(svc: Service) -> None:
    """Run the real lake worker until the queues are empty."""

    async def run() -> None:
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

    asyncio.run(run())


def quarantine_rows(svc: Service, dataset: str = "d") -> list[dict[str, Any]]:
    """The dataset's quarantine rows, in receipt order (read with SQL)."""
    settings = load_settings({"STRICTGATE_DATA_DIR": str(svc.data_dir)})
    con = connect(lake_config(settings), read_only=True)
    try:
        cur = con.execute(f"SELECT * FROM {QUARANTINE_TABLE} WHERE project = 'p1' AND"
                          " dataset = ? ORDER BY received_at, entry_id, seq", [dataset])
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def stored(svc: Service, key: str, dataset: str = "d") -> list[dict[str, Any]]:
    """Every stored record of the dataset, through the records API."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        r = svc.client.get(f"/datasets/{dataset}/records?limit=1000{cursor}",
                           headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        out += r.json()["records"]
        if r.json()["next_cursor"] is None:
            return out
        cursor = f"&cursor={r.json()['next_cursor']}"


def used(sync_redis: redis.Redis, user: str = "u1") -> int:
    raw = sync_redis.get(keys.usage_total_key(user, keys.period_of(datetime.now(UTC))))
    return int(raw) if isinstance(raw, bytes) else 0


def replay(svc: Service, body: Any = None, **headers: str) -> Any:
    """One replay of p1/d through the API."""
    return svc.admin("POST", REPLAY, headers=headers,
                     content=b"" if body is None else orjson.dumps(body))


def quarantined_dataset(svc: Service) -> str:
    """p1/d registered at v1 under the quarantine policy; a key of user u1."""
    svc.put_dataset("p1", "d", V1)
    r = svc.admin("PUT", "/admin/projects/p1/datasets/d/settings",
                  json={"on_invalid": "quarantine"})
    assert r.status_code == 200, r.text
    return svc.create_key("p1", "u1")


def send(svc: Service, key: str, records: list[dict[str, Any]], trace: str) -> int:
    """POST a batch to p1/d; how many records it quarantined."""
    r = svc.post("/datasets/d/batch", key, records, **{"X-Request-Id": trace})
    assert r.status_code == 202, r.text
    assert r.headers["X-Request-Id"] == trace
    return int(r.json()["quarantined"])


@pytest.fixture
def key(svc: Service) -> str:
    """p1/d quarantining, at v1; a key of u1."""
    return quarantined_dataset(svc)


def test_a_fixed_definition_replays_each_record_once(svc: Service, key: str,
                                                     sync_redis: redis.Redis) -> None:
    mixed = [record(0), record(1, amount=1.5), record(2), record(3, amount=3.5), record(4)]
    assert send(svc, key, mixed, "req_mixed") == 2
    drain(svc)
    assert used(sync_redis) == 3 and len(quarantine_rows(svc)) == 2
    svc.put_dataset("p1", "d", V2)

    first = replay(svc)
    assert first.status_code == 200, first.text
    assert first.json() == {"success": True, "replayed": 2, "still_invalid": 0,
                            "skipped_already_replayed": 0, "duplicates": 0,
                            "remaining": 0, "stopped": None}
    # run again before the worker stored them (their rows are still there): nothing twice
    again = replay(svc)
    assert again.json() == {"success": True, "replayed": 0, "still_invalid": 0,
                            "skipped_already_replayed": 2, "duplicates": 0,
                            "remaining": 0, "stopped": None}
    assert used(sync_redis) == 5

    drain(svc)
    assert quarantine_rows(svc) == []
    rows = stored(svc, key)
    assert sorted(r["context"]["request_id"] for r in rows) == [f"r{i}" for i in range(5)]
    assert {r["__traceId"] for r in rows} == {"req_mixed"}
    assert len({r["__receivedAt"] for r in rows}) == 1  # the original receipt time
    replayed = {r["context"]["request_id"]: r for r in rows if r.get("__replayedAt")}
    assert sorted(replayed) == ["r1", "r3"]
    assert [replayed["r1"]["amount"], replayed["r3"]["amount"]] == [1.5, 3.5]
    assert {r["__datasetVersion"] for r in replayed.values()} == {2}
    assert all(r["__replayedAt"] > r["__receivedAt"] for r in replayed.values())
    # a third run after the commit finds nothing left
    assert replay(svc).json()["replayed"] == 0 and used(sync_redis) == 5
    assert len(stored(svc, key)) == 5


def test_the_quota_counts_against_the_user_who_sent_the_records(
        svc: Service, key: str, sync_redis: redis.Redis) -> None:
    other = svc.create_key("p1", "u2")
    assert send(svc, key, [record(0, amount=0.5)], "req_u1") == 1
    assert send(svc, other, [record(1, amount=1.5), record(2, amount=2.5)], "req_u2") == 2
    drain(svc)
    svc.put_dataset("p1", "d", V2)
    assert replay(svc).json()["replayed"] == 3
    assert (used(sync_redis, "u1"), used(sync_redis, "u2")) == (1, 2)
    drain(svc)
    traces = {r["context"]["request_id"]: r["__traceId"] for r in stored(svc, key)}
    assert traces == {"r0": "req_u1", "r1": "req_u2", "r2": "req_u2"}


def test_a_partial_fix_keeps_the_new_errors(svc: Service, key: str,
                                            sync_redis: redis.Redis) -> None:
    bad = [record(0, amount=0.5), record(1, plan="team"), record(2, amount=2.5, plan="team")]
    assert send(svc, key, bad, "req_bad") == 3
    drain(svc)
    before = {r["seq"]: r for r in quarantine_rows(svc)}
    assert len(before[2]["error_codes"]) == 2
    svc.put_dataset("p1", "d", V2)

    r = replay(svc)
    assert r.json() == {"success": True, "replayed": 1, "still_invalid": 2,
                        "skipped_already_replayed": 0, "duplicates": 0,
                        "remaining": 2, "stopped": None}
    drain(svc)
    after = {r["seq"]: r for r in quarantine_rows(svc)}
    assert sorted(after) == [1, 2]
    enum_codes = before[1]["error_codes"]
    for seq in (1, 2):
        # the errors of the current version: the amount is fine now, the plan is not
        assert after[seq]["error_codes"] == enum_codes
        assert [e["code"] for e in json.loads(after[seq]["errors"])] == enum_codes
        assert after[seq]["dataset_version"] == 2 and before[seq]["dataset_version"] == 1
        assert after[seq]["checked_at"] > before[seq]["checked_at"]
        assert after[seq]["record"] == before[seq]["record"]
        assert after[seq]["trace_id"] == "req_bad"
    assert used(sync_redis) == 1

    # the rest once "team" is a plan; a code filter takes only the records failing on it
    svc.put_dataset("p1", "d", V3)
    r = replay(svc, {"code": "no_such_code"})
    assert r.json()["replayed"] == 0 and r.json()["remaining"] == 0
    r = replay(svc, {"code": enum_codes[0], "limit": 1})
    assert r.json() == {"success": True, "replayed": 1, "still_invalid": 0,
                        "skipped_already_replayed": 0, "duplicates": 0,
                        "remaining": 1, "stopped": None}
    assert replay(svc, {"code": enum_codes[0]}).json()["replayed"] == 1
    drain(svc)
    assert quarantine_rows(svc) == [] and used(sync_redis) == 3
    assert sorted(r["context"]["request_id"] for r in stored(svc, key)) == ["r0", "r1", "r2"]


def test_the_receipt_time_filters(svc: Service, key: str) -> None:
    assert send(svc, key, [record(0, amount=0.5)], "req_t") == 1
    drain(svc)
    received = quarantine_rows(svc)[0]["received_at"]
    svc.put_dataset("p1", "d", V2)
    later = replay(svc, {"from": f"{received.year + 1}-01-01"}).json()
    assert (later["replayed"], later["remaining"]) == (0, 0)
    earlier = replay(svc, {"to": received.isoformat()}).json()
    assert (earlier["replayed"], earlier["remaining"]) == (0, 0)
    day = received.date().isoformat()
    assert replay(svc, {"from": day, "to": day}).json()["replayed"] == 1


def test_an_exceeded_quota_stops_the_replay(svc: Service, key: str,
                                            sync_redis: redis.Redis) -> None:
    for i in range(3):  # three requests: three entries to replay, one record each
        assert send(svc, key, [record(10 * i), record(10 * i + 1, amount=0.5)],
                    f"req_{i}") == 1
    drain(svc)
    assert svc.admin("PUT", "/admin/users/u1/quota",
                     json={"monthly_limit": 4}).status_code == 200
    svc.put_dataset("p1", "d", V2)

    r = replay(svc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stopped"]["code"] == "quota_exceeded" and "u1" in body["stopped"]["message"]
    assert (body["replayed"], body["still_invalid"], body["remaining"]) == (1, 0, 2)
    assert used(sync_redis) == 4

    assert svc.admin("PUT", "/admin/users/u1/quota",
                     json={"monthly_limit": 100}).status_code == 200
    again = replay(svc).json()
    assert (again["replayed"], again["skipped_already_replayed"], again["stopped"]) == (
        2, 1, None)
    drain(svc)
    assert used(sync_redis) == 6 and quarantine_rows(svc) == []
    assert len(stored(svc, key)) == 6


@pytest.fixture
def small_queue_svc(data_dir: Path, redis_url: str, sync_redis: redis.Redis
                    ) -> Iterator[Service]:
    """The app with queues of at most 4 unwritten records."""
    yield from start_service(data_dir, redis_url, STRICTGATE_MAX_QUEUE_RECORDS="4")


def test_a_full_queue_stops_the_replay_with_a_503(small_queue_svc: Service,
                                                  sync_redis: redis.Redis) -> None:
    svc = small_queue_svc
    key = quarantined_dataset(svc)
    for i in range(3):
        bad = [record(10 * i, amount=0.5), record(10 * i + 1, amount=1.5)]
        assert send(svc, key, bad, f"req_{i}") == 2
    drain(svc)
    svc.put_dataset("p1", "d", V2)
    r = replay(svc)
    # two entries of two records fill the queue to its bound: the third waits
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    body = r.json()
    assert body["success"] is False and body["stopped"]["code"] == "queue_full"
    assert body["errors"] == [{"code": "queue_full", "field": None,
                               "message": body["error"]}]
    assert (body["replayed"], body["remaining"]) == (4, 2) and used(sync_redis) == 4
    drain(svc)
    assert replay(svc).json()["replayed"] == 2
    drain(svc)
    assert quarantine_rows(svc) == [] and used(sync_redis) == 6


def _cli(project: str, dataset: str, *options: str) -> int:
    parser = argparse.ArgumentParser()
    add_replay_command(parser.add_subparsers())
    args = parser.parse_args(["replay", project, dataset, *options])
    return int(args.func(args))


def test_the_cli_refuses_a_bad_filter_and_an_unknown_dataset(
        svc: Service, key: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", svc.redis_url)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(svc.data_dir))
    assert _cli("p1", "d", "--limit", "0") == 1
    assert "--limit: limit must be an integer" in capsys.readouterr().err
    assert _cli("p1", "d", "--from", "yesterday") == 1
    assert "--from:" in capsys.readouterr().err
    assert _cli("p1", "nowhere") == 1
    assert "Dataset not found" in capsys.readouterr().err
    assert _cli("p1", "d", "--code", "invalid_type", "--limit", "5") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["replayed"] == 0


def test_two_replays_at_once_admit_each_record_once(
        svc: Service, key: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One through the API (streaming its progress), one from the CLI, at the same time."""
    requests, bad_each = 25, 100
    for n in range(requests):
        batch = [record(1000 * n + i, amount=0.5 if i >= 4 else None)
                 for i in range(4 + bad_each)]
        assert send(svc, key, batch, f"req_{n}") == bad_each
    drain(svc)
    total = requests * bad_each
    assert len(quarantine_rows(svc)) == total and used(sync_redis) == 4 * requests
    svc.put_dataset("p1", "d", V2)
    monkeypatch.setenv("REDIS_URL", svc.redis_url)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(svc.data_dir))

    def api() -> list[dict[str, Any]]:
        r = replay(svc, None, Accept="application/x-ndjson")
        assert r.status_code == 200 and r.headers["content-type"].startswith(
            "application/x-ndjson")
        return [json.loads(line) for line in r.text.splitlines()]

    with ThreadPoolExecutor(2) as pool:
        lines_future = pool.submit(api)
        cli_status = pool.submit(_cli, "p1", "d").result()
        lines = lines_future.result()
    assert cli_status == 0
    cli_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    batches = -(-total // BATCH_ROWS)
    for found in (lines, cli_lines):
        progress, summary = found[:-1], found[-1]
        assert [p["scanned"] for p in progress] == [
            min(total, BATCH_ROWS * (k + 1)) for k in range(batches)]
        assert summary["success"] is True and summary["stopped"] is None
        assert summary["replayed"] + summary["skipped_already_replayed"] == total
        assert summary["still_invalid"] == summary["remaining"] == 0
        assert progress[-1]["replayed"] == summary["replayed"]
    assert lines[-1]["replayed"] + cli_lines[-1]["replayed"] == total
    assert used(sync_redis) == 4 * requests + total

    drain(svc)
    assert quarantine_rows(svc) == []
    rows = stored(svc, key)
    ids = [r["context"]["request_id"] for r in rows]
    assert len(ids) == len(set(ids)) == requests * (4 + bad_each)
    assert sum(1 for r in rows if r.get("__replayedAt")) == total


# --- every dialect ---------------------------------------------------------------------------

# definitions that accept each dialect's bad records of tests.test_dry_run
def _widened(definition: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**definition, "fields": {**definition["fields"], **fields}}


FIXES: dict[str, dict[str, Any]] = {
    "13": _widened(SEED_DEFINITION, plan={"type": ["string", "integer"]},
                   amount={"type": ["number", "string"]},
                   extra={"type": "integer", "required": False}),
    "orders": _widened(ROW_DEFINITION, order_id={"type": ["string", "integer"]},
                       amount={"type": ["number", "string"]}),
}
FIXES["bronze.orders"] = FIXES["orders"]  # Definite's table namespace.table
_LOGS = json.loads((ROOT / "schemas" / "builtin" / "operyn-logs.json").read_text())
_LOGS["fields"]["level"]["enum"].append("loud")
_LOGS["fields"]["message"]["type"] = ["string", "integer"]
FIXES["logs"] = _LOGS


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.dialect)
def test_every_dialect_replays_with_what_its_records_carried(
        svc: Service, sync_redis: redis.Redis, route: Route) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    svc.put_dataset("p1", "orders", ROW_DEFINITION)
    svc.put_dataset("p1", "bronze.orders", ROW_DEFINITION)
    key = svc.create_key("p1", "u1")
    r = svc.admin("PUT", f"/admin/projects/p1/datasets/{route.dataset}/settings",
                  json={"on_invalid": "quarantine"})
    assert r.status_code == 200, r.text
    sent = _send(svc, route, key, route.body(5, 2), "")
    assert sent.status_code == route.ok, sent.text
    trace = sent.headers["X-Request-Id"]
    drain(svc)
    assert len(quarantine_rows(svc, route.dataset)) == 2
    svc.put_dataset("p1", route.dataset, FIXES[route.dataset])

    path = f"/admin/projects/p1/datasets/{route.dataset}/quarantine/replay"
    r = svc.admin("POST", path)
    assert r.status_code == 200, r.text
    assert (r.json()["replayed"], r.json()["still_invalid"]) == (2, 0)
    drain(svc)
    assert quarantine_rows(svc, route.dataset) == [] and used(sync_redis) == 5
    rows = stored(svc, key, route.dataset)
    assert len(rows) == 5 and {row["__traceId"] for row in rows} == {trace}
    replayed = [row for row in rows if row.get("__replayedAt")]
    assert len(replayed) == 2
    if route.dialect == "orcasheets":
        assert {row["__eventType"] for row in rows} == {"dry"}
    if route.dialect == "onesight":  # the events' ids: the first two were the bad ones
        assert sorted(row["__eventId"] for row in replayed) == ["e0", "e1"]
    if route.dialect == "operyn":  # the server's part of an event: an id, the receipt time
        assert len({row["id"] for row in rows}) == 5
        assert {row["timestamp"] for row in replayed} == {rows[0]["__receivedAt"]}


def test_a_onesight_event_resent_fixed_is_not_replayed_again(
        svc: Service, sync_redis: redis.Redis) -> None:
    """The client fixed its producer and resent the event with the same ``event_id``
    before the replay: the quarantined copy is then a duplicate, as at the door: neither
    counted nor stored, and it leaves the quarantine. Two quarantined copies of one id
    replay once."""
    svc.put_dataset("p1", "orders", ROW_DEFINITION)
    key = svc.create_key("p1", "u1")
    assert svc.admin("PUT", "/admin/projects/p1/datasets/orders/settings",
                     json={"on_invalid": "quarantine"}).status_code == 200
    bad = {"order_id": 7, "amount": 1.5, "status": "new"}
    good = {"order_id": "7", "amount": 1.5, "status": "new"}
    path = "/api/openapi/v1/data/events"
    body = {"events": [{"event_type": "orders", "event_id": "resent", "payload": bad},
                       {"event_type": "orders", "event_id": "twice", "payload": bad},
                       {"event_type": "orders", "event_id": "twice", "payload": bad}]}
    r = svc.post(path, key, body)
    assert r.status_code == 202 and r.json()["data"]["quarantined"] == 3, r.text
    r = svc.post(path, key, {"events": [{"event_type": "orders", "event_id": "resent",
                                         "payload": good}]})
    assert r.json()["data"]["duplicates"] == 0 and used(sync_redis) == 1
    drain(svc)
    svc.put_dataset("p1", "orders", FIXES["orders"])
    r = svc.admin("POST", "/admin/projects/p1/datasets/orders/quarantine/replay")
    assert r.status_code == 200, r.text
    assert (r.json()["replayed"], r.json()["duplicates"]) == (1, 2), r.text
    drain(svc)
    assert quarantine_rows(svc, "orders") == [] and used(sync_redis) == 2
    rows = stored(svc, key, "orders")
    assert sorted(row["__eventId"] for row in rows) == ["resent", "twice"]
    assert [row["order_id"] for row in rows if row["__eventId"] == "resent"] == ["7"]


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field", "code"), [
    ({"code": 5}, "code", "invalid_code"),
    ({"code": "Not-A-Code"}, "code", "invalid_code"),
    ({"code": "x" * 65}, "code", "invalid_code"),
    ({"from": "yesterday"}, "from", "invalid_from"),
    ({"from": 20260610}, "from", "invalid_from"),
    ({"to": "2026-13-01"}, "to", "invalid_to"),
    ({"from": "2026-06-11", "to": "2026-06-10T12:00:00Z"}, "to", "invalid_to"),
    ({"limit": 0}, "limit", "invalid_limit"),
    ({"limit": True}, "limit", "invalid_limit"),
    ({"limit": "5"}, "limit", "invalid_limit"),
    ({"limit": 1.5}, "limit", "invalid_limit"),
    ({"codes": ["x"]}, "codes", "unknown_field"),
])
def test_a_bad_filter_is_a_400_naming_it(svc: Service, key: str, body: Any, field: str,
                                         code: str) -> None:
    r = replay(svc, body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"] == [{"code": code, "field": field, "message": r.json()["error"]}]


@pytest.mark.parametrize("raw", [b"[1]", b"{", b"null"])
def test_a_body_that_is_no_json_object_is_a_400(svc: Service, key: str, raw: bytes) -> None:
    r = svc.admin("POST", REPLAY, content=raw)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_json"


def test_the_admin_token_and_a_known_dataset_are_needed(svc: Service, key: str) -> None:
    assert svc.client.post(REPLAY).status_code == 401
    assert svc.client.post(REPLAY, headers={"Authorization": f"Bearer {key}"}
                           ).status_code == 401
    r = svc.admin("POST", "/admin/projects/p1/datasets/nowhere/quarantine/replay")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "dataset_not_found"
    r = svc.admin("POST", "/admin/projects/p1/datasets/-bad/quarantine/replay")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_dataset_id"


def test_nothing_quarantined_yet_replays_nothing(svc: Service, key: str) -> None:
    assert not (svc.data_dir / "lake").exists()
    assert replay(svc).json() == {"success": True, "replayed": 0, "still_invalid": 0,
                                  "skipped_already_replayed": 0, "duplicates": 0, "remaining": 0,
                                  "stopped": None}


@pytest.fixture
def jsonl_svc(data_dir: Path, redis_url: str, sync_redis: redis.Redis) -> Iterator[Service]:
    """The app writing JSON Lines files (no lake)."""
    yield from start_service(data_dir, redis_url, STRICTGATE_SINK="jsonl")


def test_without_the_lake_it_is_a_501(jsonl_svc: Service) -> None:
    jsonl_svc.put_dataset("p1", "d", V1)
    r = jsonl_svc.admin("POST", REPLAY)
    assert r.status_code == 501 and r.json()["errors"][0]["code"] == "read_unavailable"


# --- what a replay meets besides records ---------------------------------------------------


def _insert_row(svc: Service, like: dict[str, Any], seq: int, text: str) -> None:
    """A quarantine row beside ``like`` (same entry) holding ``text`` as its record."""
    settings = load_settings({"STRICTGATE_DATA_DIR": str(svc.data_dir)})
    con = connect(lake_config(settings))
    try:
        row = {**like, "seq": seq, "request_index": seq, "record": text}
        names = list(row)
        con.execute(f"INSERT INTO {QUARANTINE_TABLE} ({', '.join(names)}) VALUES"
                    f" ({', '.join('?' for _ in names)})", [row[n] for n in names])
    finally:
        con.close()


def test_a_record_that_is_not_json_stays_and_the_others_replay(
        svc: Service, key: str, sync_redis: redis.Redis) -> None:
    """Never written by ingest (its records come from a parsed body), but a row is data:
    one that does not parse keeps a body error and does not hold back its entry's others."""
    assert send(svc, key, [record(0, amount=0.5), record(1, amount=1.5)], "req_j") == 2
    drain(svc)
    _insert_row(svc, quarantine_rows(svc)[0], 5, '{"country": "RO", "amount": ')
    svc.put_dataset("p1", "d", V2)
    assert replay(svc).json() == {"success": True, "replayed": 2, "still_invalid": 1,
                                  "skipped_already_replayed": 0, "duplicates": 0, "remaining": 1,
                                  "stopped": None}
    drain(svc)
    [left] = quarantine_rows(svc)
    assert left["seq"] == 5 and left["dataset_version"] == 2
    assert left["error_codes"] == [json.loads(left["errors"])[0]["code"]]
    assert used(sync_redis) == 2 and len(stored(svc, key)) == 2


def test_an_unreadable_lake_stops_the_replay_with_a_503(svc: Service, key: str) -> None:
    assert send(svc, key, [record(0, amount=0.5)], "req_l") == 1
    drain(svc)
    files = list((svc.data_dir / "lake" / "data").rglob("*.parquet"))
    quarantine_files = [f for f in files if "quarantine" in str(f)]
    assert quarantine_files
    for path in quarantine_files:
        path.unlink()
    svc.put_dataset("p1", "d", V2)
    r = replay(svc)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    body = r.json()
    assert body["stopped"]["code"] == "lake_unavailable" and body["success"] is False
    assert body["replayed"] == 0


async def _replay_directly(svc: Service, quota_url: str, *, delete_after_first: bool
                           ) -> ReplayReport:
    """A replay of p1/d with the real registry, quota on ``quota_url``; with
    ``delete_after_first``, the dataset is deleted once the first batch is done."""
    client = async_client(svc.redis_url)
    quota_client = aioredis.Redis.from_url(quota_url, socket_connect_timeout=0.5)
    settings = load_settings({"REDIS_URL": svc.redis_url,
                              "STRICTGATE_DATA_DIR": str(svc.data_dir)})
    registry = Registry(client, clock=utc_now)
    try:
        run = Replay(registry=registry,
                     quota=QuotaService(quota_client, default_limit=-1, deadline_s=2,
                                        clock=utc_now),
                     lake=lake_config(settings), project="p1", dataset="d",
                     flt=ReplayFilter(), event_window_s=3600, clock=utc_now)
        async for report in run.batches():
            if delete_after_first and report.scanned == BATCH_ROWS:
                assert await registry.delete("p1", "d")
        return run.report
    finally:
        await client.aclose()
        await quota_client.aclose()


def test_redis_not_answering_stops_the_replay(svc: Service, key: str,
                                              sync_redis: redis.Redis) -> None:
    assert send(svc, key, [record(0, amount=0.5), record(1, plan="team")], "req_r") == 2
    drain(svc)
    svc.put_dataset("p1", "d", V2)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}"
    report = asyncio.run(_replay_directly(svc, dead, delete_after_first=False))
    assert report.stopped is not None and report.stopped.code == "unavailable"
    assert (report.replayed, report.still_invalid, report.remaining) == (0, 1, 2)
    assert used(sync_redis) == 0
    assert replay(svc).json()["replayed"] == 1  # once Redis answers


def test_a_dataset_deleted_during_the_replay_stops_it(svc: Service, key: str,
                                                      sync_redis: redis.Redis) -> None:
    count = BATCH_ROWS + 10
    assert send(svc, key, [record(i, amount=0.5) for i in range(count)], "req_x") == count
    drain(svc)
    svc.put_dataset("p1", "d", V2)
    report = asyncio.run(_replay_directly(svc, svc.redis_url, delete_after_first=True))
    assert report.stopped is not None and report.stopped.code == "dataset_not_found"
    assert (report.replayed, report.remaining) == (BATCH_ROWS, 10)
    assert used(sync_redis) == BATCH_ROWS

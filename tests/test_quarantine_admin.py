"""Reading a dataset's quarantine: ``GET /admin/projects/{p}/datasets/{d}/quarantine`` and
``.../quarantine/stats`` over HTTP (the app on the real Redis, a real lake under its data
dir), and ``strictgate quarantine list|stats`` through the CLI's entry point: paging,
filters, cursors bound to the dataset and the filters, counts per code, every refusal, one
project's path never showing another's records; and a mixed batch sent to an ingest route
under ``on_invalid: quarantine``, committed by the real lake worker, listed back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from strictgate.cli import main
from strictgate.lake.engine import LakeConfig
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.worker.lake_sink import LakeWorker
from tests.ingest_fixtures import SEED_BATCH, SEED_DEFINITION, Service, start_service
from tests.lake_support import lake_entry, seed_definitions
from tests.redis_mode import async_client

BASE = "/admin/projects/{p}/datasets/{d}/quarantine"
PATH = BASE.format(p="p1", d="billing")


def codes_of(i: int) -> list[str]:
    """The error codes of the ``i``-th item of an entry: a, b, or both."""
    return [["a"], ["b"], ["a", "b"]][i % 3]


def q_entry(n: int, project: str, dataset: str, received_at: str, items: int,
            codes: list[str] | None = None) -> LakeEntry:
    """Entry ``u/<n>-0`` of no valid record and ``items`` quarantined ones (record text
    ``{"n": <n>, "i": <i>}``, with a space: kept as sent)."""
    entry = lake_entry(f"u/{1781000000000 + n}-0", project, dataset, 1, f"trace{n}",
                       received_at, b"[]")
    value = orjson.dumps([{
        "index": 2 * i + 1, "record": f'{{"n": {n}, "i": {i}}}',
        "errors": [{"code": c, "field": "amount", "message": f"{c} {i}"}
                   for c in (codes or codes_of(i))]} for i in range(items)])
    return dataclasses.replace(entry, queued=msgspec.structs.replace(entry.queued,
                                                                     quarantine=value))


def fill(data_dir: Path) -> None:
    """p1/billing: 4 entries of 5 quarantined records received 2026-06-10 at 00:00..03:00
    (committed in reverse), 1 of 2 (code ``c``) on 2026-06-11; p1/other: 1 of 1; p2/billing:
    1 of 3 (code ``z``)."""
    writer = LakeWriter(LakeConfig.local(data_dir), seed_definitions)
    day1 = [q_entry(n, "p1", "billing", f"2026-06-10T0{n}:00:00.000Z", 5) for n in range(4)]
    writer.write(day1[::-1])
    writer.write([q_entry(10, "p1", "billing", "2026-06-11T12:00:00.000Z", 2, ["c"]),
                  q_entry(20, "p1", "other", "2026-06-10T00:00:00.000Z", 1),
                  q_entry(30, "p2", "billing", "2026-06-10T00:00:00.000Z", 3, ["z"])])
    writer.close()


@pytest.fixture
def q_svc(data_dir: Path, redis_url: str, sync_redis: Any) -> Iterator[Service]:
    """The app with p1/billing, p1/other, p2/billing registered and their quarantine in the
    lake."""
    fill(data_dir)
    for service in start_service(data_dir, redis_url):
        for project, dataset in (("p1", "billing"), ("p1", "other"), ("p2", "billing")):
            service.put_dataset(project, dataset, SEED_DEFINITION)
        yield service


def walk(svc: Service, query: str, path: str = PATH) -> list[dict[str, Any]]:
    """Every record of the pages of ``query``, following ``next_cursor``."""
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        r = svc.admin("GET", f"{path}?{query}{cursor}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True
        out += body["records"]
        if body["next_cursor"] is None:
            return out
        cursor = f"&cursor={body['next_cursor']}"


def expected(n: int, i: int, received_at: str, codes: list[str] | None = None
             ) -> dict[str, Any]:
    """The answer's item for record ``i`` of :func:`q_entry` ``n``."""
    return {"record": {"n": n, "i": i},
            "errors": [{"code": c, "field": "amount", "message": f"{c} {i}"}
                       for c in (codes or codes_of(i))],
            "dataset_version": 1, "trace_id": f"trace{n}", "received_at": received_at,
            "entry_id": f"u/{1781000000000 + n}-0", "seq": i, "index": 2 * i + 1}


ALL = [expected(n, i, f"2026-06-10T0{n}:00:00.000Z") for n in range(4) for i in range(5)] + [
    expected(10, i, "2026-06-11T12:00:00.000Z", ["c"]) for i in range(2)]


def test_pages_give_each_record_once_in_receipt_order(q_svc: Service) -> None:
    r = q_svc.admin("GET", PATH)
    assert r.status_code == 200
    assert r.json() == {"success": True, "records": ALL, "next_cursor": None}
    for limit in (1, 7, 22):
        assert walk(q_svc, f"limit={limit}") == ALL
    first = q_svc.admin("GET", f"{PATH}?limit=21").json()
    assert first["records"] == ALL[:21] and first["next_cursor"] is not None


def test_filters_by_code_and_time(q_svc: Service) -> None:
    assert walk(q_svc, "code=a&limit=3") == [r for r in ALL if "a" in
                                              [e["code"] for e in r["errors"]]]
    assert walk(q_svc, "code=c,b") == [r for r in ALL if {"b", "c"} & {
        e["code"] for e in r["errors"]}]
    assert walk(q_svc, "code=nothing") == []
    assert walk(q_svc, "from=2026-06-11") == ALL[20:]
    assert walk(q_svc, "from=2026-06-10T01:00:00Z&to=2026-06-10T03:00:00%2B00:00&limit=4") == (
        ALL[5:15])
    assert walk(q_svc, "to=2026-06-10&code=b") == [
        r for r in ALL[:20] if "b" in [e["code"] for e in r["errors"]]]


def test_a_cursor_is_bound_to_its_dataset_and_filters(q_svc: Service) -> None:
    cursor = q_svc.admin("GET", f"{PATH}?limit=2&code=a").json()["next_cursor"]
    assert q_svc.admin("GET", f"{PATH}?limit=2&code=a&cursor={cursor}").status_code == 200
    # the same codes in another order are the same filter
    assert q_svc.admin("GET", f"{PATH}?limit=2&code=a,a&cursor={cursor}").status_code == 200
    for query in (f"code=b&cursor={cursor}", f"cursor={cursor}",
                  f"code=a&from=2026-06-10&cursor={cursor}"):
        r = q_svc.admin("GET", f"{PATH}?{query}")
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_cursor"
    for path in (BASE.format(p="p1", d="other"), BASE.format(p="p2", d="billing")):
        r = q_svc.admin("GET", f"{path}?code=a&cursor={cursor}")
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "cursor"
    # a records API cursor is no quarantine cursor
    records = q_svc.client.get(
        "/datasets/billing/records?limit=1",
        headers={"Authorization": f"Bearer {q_svc.create_key('p1', 'u1')}"}).json()
    assert records["records"] == []  # nothing valid was written


@pytest.mark.parametrize(("query", "field", "code"), [
    ("limit=0", "limit", "invalid_limit"),
    ("limit=1001", "limit", "invalid_limit"),
    ("from=yesterday", "from", "invalid_from"),
    ("from=2026-06-11&to=2026-06-10T12:00:00Z", "to", "invalid_to"),
    ("cursor=garbage", "cursor", "invalid_cursor"),
    ("cursor=", "cursor", "invalid_cursor"),
    ("code=", "code", "invalid_code"),
    ("code=a,,b", "code", "invalid_code"),
    ("code=a%20b", "code", "invalid_code"),
    ("code=" + ",".join(f"c{i}" for i in range(51)), "code", "invalid_code"),
    ("code=a&code=b", "code", "invalid_code"),
    ("version=1", "version", "unknown_parameter"),
])
def test_each_bad_parameter_is_a_400_naming_it(q_svc: Service, query: str, field: str,
                                               code: str) -> None:
    r = q_svc.admin("GET", f"{PATH}?{query}")
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["errors"] == [{"code": code, "field": field, "message": body["error"]}]


def test_stats_count_records_in_all_and_per_code(q_svc: Service) -> None:
    r = q_svc.admin("GET", f"{PATH}/stats")
    assert r.status_code == 200
    # per entry of 5: a in items 0, 2, 3; b in 1, 2, 4
    assert r.json() == {"success": True, "total": 22, "by_code": {"a": 12, "b": 12, "c": 2}}
    other = q_svc.admin("GET", BASE.format(p="p2", d="billing") + "/stats").json()
    assert other == {"success": True, "total": 3, "by_code": {"z": 3}}
    assert q_svc.admin("GET", f"{PATH}/stats?code=a").status_code == 400


def test_one_project_s_path_never_shows_another_s_records(q_svc: Service) -> None:
    p2 = walk(q_svc, "", BASE.format(p="p2", d="billing"))
    assert [r["trace_id"] for r in p2] == ["trace30"] * 3
    assert [r["record"] for r in walk(q_svc, "", BASE.format(p="p1", d="other"))] == [
        {"n": 20, "i": 0}]
    # p2 has no dataset "other": a 404, though p1's "other" has quarantined records
    for path in (BASE.format(p="p2", d="other"), BASE.format(p="p2", d="other") + "/stats"):
        r = q_svc.admin("GET", path)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "dataset_not_found"


def test_admin_token_ids_and_methods(q_svc: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for path in (PATH, f"{PATH}/stats"):
            r = q_svc.client.get(path, headers=headers)
            assert r.status_code == 401 and r.json()["errors"][0]["code"] == "unauthorized"
    r = q_svc.admin("GET", BASE.format(p="p1", d="bad id"))
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_dataset_id"
    r = q_svc.admin("GET", BASE.format(p="p 1", d="billing") + "/stats")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid_project_id"
    assert q_svc.admin("DELETE", PATH).status_code == 405


def test_a_registered_dataset_nothing_was_quarantined_in_reads_empty(
        data_dir: Path, redis_url: str, sync_redis: Any) -> None:
    for service in start_service(data_dir, redis_url):  # no lake at all yet
        service.put_dataset("p1", "billing", SEED_DEFINITION)
        assert service.admin("GET", PATH).json() == {
            "success": True, "records": [], "next_cursor": None}
        assert service.admin("GET", f"{PATH}/stats").json() == {
            "success": True, "total": 0, "by_code": {}}
        # a bad cursor is still refused
        assert service.admin("GET", f"{PATH}?cursor=garbage").status_code == 400


def test_a_record_no_json_answer_carries_exactly_is_answered_as_its_text(
        data_dir: Path, redis_url: str, sync_redis: Any) -> None:
    entry = q_entry(1, "p1", "billing", "2026-06-10T00:00:00.000Z", 1)
    texts = ['{"amount": 123456789012345678901234567890}', '{"a": 1e999}', '{"a": 1}']
    value = orjson.dumps([{"index": i, "record": t, "errors": []} for i, t in enumerate(texts)])
    writer = LakeWriter(LakeConfig.local(data_dir), seed_definitions)
    writer.write([dataclasses.replace(entry, queued=msgspec.structs.replace(
        entry.queued, quarantine=value))])
    writer.close()
    for service in start_service(data_dir, redis_url):
        service.put_dataset("p1", "billing", SEED_DEFINITION)
        records = service.admin("GET", PATH).json()["records"]
        assert [r["record"] for r in records] == [texts[0], texts[1], {"a": 1}]
        assert [r["errors"] for r in records] == [[], [], []]


def test_the_jsonl_sink_has_no_quarantine_read(data_dir: Path, redis_url: str,
                                               sync_redis: Any) -> None:
    for service in start_service(data_dir, redis_url, STRICTGATE_SINK="jsonl"):
        service.put_dataset("p1", "billing", SEED_DEFINITION)
        for path in (PATH, f"{PATH}/stats"):
            r = service.admin("GET", path)
            assert r.status_code == 501
            assert r.json()["errors"][0]["code"] == "read_unavailable"


# --- the CLI -------------------------------------------------------------------------------

@pytest.fixture
def cli_lake(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The quarantine of :func:`fill` under STRICTGATE_DATA_DIR."""
    for name in [n for n in os.environ if n.startswith("STRICTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    fill(data_dir)
    return data_dir


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_cli_list_follows_every_page(cli_lake: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["quarantine", "list", "p1", "billing"]) == 0
    assert _lines(capsys.readouterr().out) == ALL
    assert main(["quarantine", "list", "p1", "billing", "--code", "c", "--code", "b,x",
                 "--from", "2026-06-10T01:00:00Z", "--limit", "5"]) == 0
    assert _lines(capsys.readouterr().out) == [
        r for r in ALL[5:] if {"b", "c"} & {e["code"] for e in r["errors"]}][:5]
    assert main(["quarantine", "list", "p1", "billing", "--to", "2026-06-10T01:00:00Z"]) == 0
    assert _lines(capsys.readouterr().out) == ALL[:5]
    assert main(["quarantine", "list", "p2", "nothing"]) == 0
    assert capsys.readouterr().out == ""


def test_cli_stats_and_refusals(cli_lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quarantine", "stats", "p1", "billing"]) == 0
    assert json.loads(capsys.readouterr().out) == {"total": 22,
                                                   "by_code": {"a": 12, "b": 12, "c": 2}}
    assert main(["quarantine", "list", "p1", "billing", "--from", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("strictgate quarantine list: from must be") and err.count("\n") == 1


def test_cli_on_a_data_dir_without_a_lake(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for name in [n for n in os.environ if n.startswith("STRICTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    assert main(["quarantine", "stats", "p1", "billing"]) == 0
    assert json.loads(capsys.readouterr().out) == {"total": 0, "by_code": {}}
    assert not (data_dir / "lake").exists()


# --- end to end ----------------------------------------------------------------------------

def test_a_mixed_batch_under_quarantine_is_listed_after_the_worker_commits_it(
        data_dir: Path, redis_url: str, sync_redis: Any) -> None:
    bad = {**SEED_BATCH[0], "amount": "twenty"}
    for service in start_service(data_dir, redis_url):
        service.put_dataset("p1", "13", SEED_DEFINITION)
        key = service.create_key("p1", "u1")
        r = service.admin("PUT", "/admin/projects/p1/datasets/13/settings",
                          json={"on_invalid": "quarantine"})
        assert r.status_code == 200, r.text
        sent = service.post("/datasets/13/batch", key, [SEED_BATCH[0], bad, SEED_BATCH[1]],
                            **{"X-Request-Id": "req_mixed"})
        assert sent.status_code < 300, sent.text

        async def commit() -> None:
            client = async_client(redis_url)
            worker = LakeWorker(client, LakeConfig.local(data_dir), reclaim_idle_ms=0)
            try:
                await worker.drain()
            finally:
                worker.close()
                await client.aclose()

        asyncio.run(commit())
        [kept] = walk(service, "", BASE.format(p="p1", d="13"))
        assert kept["record"] == bad and kept["index"] == 1
        assert kept["trace_id"] == "req_mixed" and kept["dataset_version"] == 1
        assert [e["field"] for e in kept["errors"]] == ["amount"]
        stats = service.admin("GET", BASE.format(p="p1", d="13") + "/stats").json()
        assert stats["total"] == 1 and sum(stats["by_code"].values()) == 1
        stored = service.client.get("/datasets/13/records",
                                    headers={"Authorization": f"Bearer {key}"}).json()
        assert [r["__traceId"] for r in stored["records"]] == ["req_mixed"] * 2
        assert stored["records"][0]["__receivedAt"] == kept["received_at"]

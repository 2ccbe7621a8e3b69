"""The quarantine's storage side against a real Redis and a real DuckLake (SQLite catalog,
Parquet files): a queue entry's quarantined records committed by the real lake worker with
its valid rows, exactly once (redelivery, a writer killed before and after its commit); an
entry of quarantined records only; a replay's delete of the rows it replays in the commit
that stores them; the retention purge (worker and CLI); the JSON Lines sink's files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from quota import keys
from strictgate.cli import main
from strictgate.lake import maintenance, tables
from strictgate.lake.engine import LakeConfig, connect
from strictgate.lake.writer import LakeEntry, LakeWriter
from strictgate.queue_entry import QueueEntry
from strictgate.registry.settings import DatasetSettingsStore
from strictgate.worker import sink
from strictgate.worker.consumer import Worker, quarantine_lines
from strictgate.worker.lake_sink import LakeWorker
from tests.lake_support import ROOT, dump_entries, seed_definitions, seed_entries
from tests.redis_mode import async_client, service_env
from tests.worker_lake_support import enqueue, lake_rows, register_seed, seed_records

RECEIVED = "2026-06-10T10:00:00.000Z"


class Crash(Exception):
    """A worker dying at an injected point."""


def item(index: int, *codes: str, record: str = '{"amount": "x"}',
         event: dict[str, Any] | None = None) -> dict[str, Any]:
    """One quarantine item as ingest queues it: one error per code."""
    out: dict[str, Any] = {"index": index, "record": record, "errors": [
        {"code": code, "field": f"f{i}", "message": f"bad {i}"} for i, code in enumerate(codes)]}
    if event is not None:
        out["event"] = event
    return out


def quarantined_fields(records: list[dict[str, Any]], trace: str, items: list[dict[str, Any]],
                       *, dataset: str = "13", received_at: str = RECEIVED,
                       **extra: Any) -> dict[str, bytes | str]:
    """A queue entry's stream fields with ``items`` quarantined."""
    return QueueEntry(
        records=orjson.dumps(records), trace_id=trace, dataset_version=1,
        received_at=received_at, project_id="p1", dataset_id=dataset, user_id="u1",
        quarantine=orjson.dumps(items) if items else None, **extra).to_fields()


def quarantine_rows(config: LakeConfig, columns: str = "entry_id, seq",
                    where: str = "true", at: int | None = None) -> list[tuple[Any, ...]]:
    """``columns`` of the quarantine table's rows (at snapshot ``at``), sorted."""
    con = connect(config)
    try:
        snapshot = "" if at is None else f" AT (VERSION => {int(at)})"
        return sorted(con.execute(
            f"SELECT {columns} FROM {tables.QUARANTINE_TABLE}{snapshot} WHERE {where}"
        ).fetchall())
    finally:
        con.close()


async def drain(aredis: aioredis.Redis, config: LakeConfig, **options: Any) -> LakeWorker:
    """A lake worker run until the queues are empty."""
    worker = LakeWorker(aredis, config, reclaim_idle_ms=0, **options)
    try:
        await worker.drain()
    finally:
        worker.close()
    return worker


@pytest.fixture
def lake(tmp_path: Path) -> LakeConfig:
    """An empty lake under the test's directory."""
    return LakeConfig.local(tmp_path)


def test_the_purge_module_names_the_writer_s_quarantine_table() -> None:
    assert maintenance.QUARANTINE == tables.QUARANTINE_TABLE


async def test_the_worker_commits_valid_and_quarantined_records_together(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    event = {"id": "ev1", "source": None, "time": "2026-06-10T09:59:00Z"}
    mixed = enqueue(sync_redis, quarantined_fields(
        seed_records(2, "m"), "mixed",
        [item(1, "invalid_type", "missing_field", "invalid_type"),
         item(4, "invalid_format", record='[1, "not an object"]', event=event)],
        event_type="job"))
    only = quarantined_fields([], "only", [item(i, "enum_mismatch") for i in range(3)])
    enqueue(sync_redis, only)
    enqueue(sync_redis, quarantined_fields(seed_records(3, "v"), "valid", []))
    worker = await drain(aredis, lake)
    assert worker.commits == 1 and worker.stats.dead_letters == 0
    assert sorted(r[0] for r in lake_rows(lake)) == ["mixed"] * 2 + ["valid"] * 3
    rows = quarantine_rows(
        lake, "trace_id, seq, request_index, record, errors, error_codes, dataset_version,"
              " user_id, event_type, event, received_at, checked_at, project, dataset")
    at = datetime(2026, 6, 10, 10, tzinfo=UTC)
    assert [r[:4] for r in rows] == [
        ("mixed", 0, 1, '{"amount": "x"}'), ("mixed", 1, 4, '[1, "not an object"]'),
        ("only", 0, 0, '{"amount": "x"}'), ("only", 1, 1, '{"amount": "x"}'),
        ("only", 2, 2, '{"amount": "x"}')]
    assert json.loads(rows[0][4]) == item(1, "invalid_type", "missing_field",
                                          "invalid_type")["errors"]
    assert [r[5] for r in rows] == [["invalid_type", "missing_field"], ["invalid_format"]] + [
        ["enum_mismatch"]] * 3
    assert {r[6:8] for r in rows} == {(1, "u1")}
    assert [r[8] for r in rows] == ["job", "job", None, None, None]
    assert json.loads(rows[1][9]) == event and rows[0][9] is None
    assert {r[10:] for r in rows} == {(at, at, "p1", "13")}
    # the entry of quarantined records only is ledgered like any other, with 0 records
    con = connect(lake)
    try:
        ledger = sorted(con.execute(
            "SELECT records FROM lake.__strictgate.ledger").fetchall())
    finally:
        con.close()
    assert ledger == [(0,), (2,), (3,)]
    assert sync_redis.xlen(mixed) == 0
    assert sync_redis.xpending(mixed, keys.QUEUE_GROUP)["pending"] == 0
    assert int(sync_redis.get(keys.queued_records_key(mixed)) or 0) == 0


async def test_redelivered_entries_do_not_quarantine_twice(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    # a worker that died between its commit and XACK: rows, quarantine rows and ledger are
    # in the lake, the entries still pending in Redis
    await register_seed(aredis)
    stream = ""
    for i in range(4):
        stream = enqueue(sync_redis, quarantined_fields(
            seed_records(i % 2, f"r{i}"), f"t{i}", [item(0, "a"), item(2, "b")]))
    sync_redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0")
    delivered = sync_redis.xreadgroup(keys.QUEUE_GROUP, "dead", {stream: ">"}, count=3)[0][1]
    cache = LakeWorker(aredis, lake).definitions
    await cache.prefetch({("p1", "13", 1)})
    writer = LakeWriter(lake, cache)
    writer.write([LakeEntry.from_fields(i, f) for i, f in delivered], first_delivery=True)
    writer.close()
    assert len(quarantine_rows(lake)) == 6
    worker = await drain(aredis, lake)
    rows = quarantine_rows(lake, "trace_id, seq")
    assert rows == sorted((f"t{i}", s) for i in range(4) for s in (0, 1))
    assert worker.stats.entries_finished_from_marks == 3
    assert sync_redis.xlen(stream) == 0


def test_a_failed_commit_leaves_no_quarantine_row_and_its_retry_writes_each_once(
    lake: LakeConfig,
) -> None:
    entries = with_quarantine(seed_entries(3, 2))

    def fail() -> None:
        raise Crash

    writer = LakeWriter(lake, seed_definitions, before_commit=fail)
    with pytest.raises(Crash):
        writer.write(entries)
    assert quarantine_rows(lake) == []
    writer.before_commit = None
    assert writer.write(entries).quarantined == 6
    assert writer.write(entries).quarantined == 0  # redelivered: skipped by the ledger
    writer.close()
    assert len(set(quarantine_rows(lake))) == len(quarantine_rows(lake)) == 6


def with_quarantine(entries: list[LakeEntry], per_entry: int = 2) -> list[LakeEntry]:
    """``entries``, each with ``per_entry`` quarantined records."""
    value = orjson.dumps([item(i, "bad") for i in range(per_entry)])
    return [dataclasses.replace(e, queued=msgspec.structs.replace(e.queued, quarantine=value))
            for e in entries]


@pytest.mark.parametrize("kill", ["before_commit", "after_commit"])
def test_a_writer_killed_then_rerun_quarantines_each_record_once(
    tmp_path: Path, kill: str,
) -> None:
    entries = with_quarantine(seed_entries(30, 3))
    path = tmp_path / "e.json"
    dump_entries(entries, path)
    lake_dir = tmp_path / "lake"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.lake_support", str(lake_dir), str(path), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)

    died = run(kill)
    assert died.returncode == -signal.SIGKILL, died.stderr
    config = LakeConfig.local(lake_dir)
    before = 20 if kill == "after_commit" else 0  # its first commit: 10 entries
    assert len(quarantine_rows(config)) == before
    again = run()
    assert again.returncode == 0, again.stderr
    rows = quarantine_rows(config)
    assert len(rows) == len(set(rows)) == 60


async def test_a_replay_inserts_its_rows_and_deletes_their_quarantine_rows_in_one_commit(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await register_seed(aredis)
    stream = enqueue(sync_redis, quarantined_fields(
        seed_records(1, "first"), "orig", [item(1, "a"), item(2, "b"), item(3, "c")]))
    sync_redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0")
    [(stream_id, _)] = sync_redis.xrange(stream)
    entry_id = f"u1/{stream_id.decode()}"
    await drain(aredis, lake)
    before = _last_snapshot(lake)
    # the replay: two records now valid, stored with their original trace id and receipt
    enqueue(sync_redis, quarantined_fields(
        seed_records(2, "fixed"), "orig", [], replayed_at="2026-07-01T08:00:00.500Z",
        replay_of=orjson.dumps([[entry_id, 0], [entry_id, 2]])))
    await drain(aredis, lake)
    after = _last_snapshot(lake)
    assert after > before
    assert quarantine_rows(lake, "seq") == [(1,)]
    # the snapshot before the replay's commit has the quarantine rows and not the rows;
    # the replay's commit (whatever followed it) has both changes at once
    replay_commit = _snapshot_with_replayed_rows(lake)
    assert quarantine_rows(lake, "seq", at=replay_commit) == [(1,)]
    assert quarantine_rows(lake, "seq", at=replay_commit - 1) == [(0,), (1,), (2,)]
    con = connect(lake)
    try:
        replayed = con.execute(
            'SELECT "__traceId", "__receivedAt", "__replayedAt" FROM lake.p1."13"'
            ' WHERE "__replayedAt" IS NOT NULL').fetchall()
    finally:
        con.close()
    assert replayed == [("orig", datetime(2026, 6, 10, 10, tzinfo=UTC),
                         datetime(2026, 7, 1, 8, 0, 0, 500000, tzinfo=UTC))] * 2


def _last_snapshot(config: LakeConfig) -> int:
    con = connect(config)
    try:
        row = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def _snapshot_with_replayed_rows(config: LakeConfig) -> int:
    """The first snapshot holding a row with ``__replayedAt``."""
    con = connect(config)
    try:
        for (snapshot,) in con.execute(
                "SELECT snapshot_id FROM ducklake_snapshots('lake') ORDER BY 1").fetchall():
            try:
                found = con.execute(
                    f'SELECT count(*) FROM lake.p1."13" AT (VERSION => {int(snapshot)})'
                    ' WHERE "__replayedAt" IS NOT NULL').fetchone()
            except Exception:  # the table did not exist yet at that snapshot
                continue
            if found and found[0]:
                return int(snapshot)
    finally:
        con.close()
    raise AssertionError("no snapshot holds the replayed rows")


@pytest.mark.parametrize(("extra", "detail"), [
    ({"replay_of": b'[["u1/1-0", 0]]'}, "replay_of: names 1 rows for 2 records"),
    ({"events": b'[{"id": "a", "source": null, "time": "2026-06-10T10:00:00Z"}]'},
     "events: holds 1 events for 2 records"),
    ({"replay_of": b'[["u1/1-0", "zero"]]'}, "queue entry field replay_of"),
    ({"quarantine": b'[{"index": 0, "record": {}, "errors": []}]'},
     "queue entry field quarantine"),
])
async def test_entries_whose_parts_do_not_match_are_dead_lettered_as_malformed(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
    extra: dict[str, bytes], detail: str,
) -> None:
    await register_seed(aredis)
    fields = {**quarantined_fields(seed_records(2, "x"), "bad", [item(0, "a")]), **extra}
    stream = enqueue(sync_redis, fields)
    enqueue(sync_redis, quarantined_fields(seed_records(1, "ok"), "ok", [item(0, "a")]))
    await drain(aredis, lake)
    assert [r[0] for r in lake_rows(lake)] == ["ok"]
    assert quarantine_rows(lake, "trace_id") == [("ok",)]
    [(_, dead)] = sync_redis.xrange(keys.dead_letter_key(stream))
    assert dead[b"dead_reason"] == b"malformed_entry"
    assert detail in dead[b"dead_detail"].decode()


# --- retention ---------------------------------------------------------------------------

NOW = datetime(2026, 6, 20, 12, tzinfo=UTC)
AGES = {"old": timedelta(days=10), "recent": timedelta(days=2), "new": timedelta(hours=1)}


async def _fill_for_purge(aredis: aioredis.Redis, sync_redis: redis.Redis,
                          lake: LakeConfig, now: datetime) -> None:
    """p1/13 (retention 1 day) and p1/14 (the default, 30 days): a quarantined record
    received 10 days (``old``), 2 days (``recent``) and 1 hour (``new``) before ``now``."""
    await register_seed(aredis, "p1", "13")
    await register_seed(aredis, "p1", "14")
    stored = await DatasetSettingsStore(aredis).set(
        "p1", "13", {"quarantine_retention_days": 1})
    assert stored is not None and stored.quarantine_retention_days == 1
    for dataset in ("13", "14"):
        for name, age in AGES.items():
            received = (now - age).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            enqueue(sync_redis, quarantined_fields(
                seed_records(1, "v"), f"{dataset}-{name}", [item(0, "a")], dataset=dataset,
                received_at=received), dataset=dataset)
    await drain(aredis, lake)
    assert len(quarantine_rows(lake)) == 6


async def test_the_worker_purges_quarantined_records_past_their_dataset_s_retention(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await _fill_for_purge(aredis, sync_redis, lake, NOW)
    # a worker whose purge is due at once (and whose clock says NOW)
    worker = await drain(aredis, lake, purge_every_s=0.0, clock=lambda: NOW)
    assert worker.purged == 2
    assert quarantine_rows(lake, "trace_id") == [
        ("13-new",), ("14-new",), ("14-old",), ("14-recent",)]
    # the rows of the datasets themselves are never purged
    assert len(lake_rows(lake, "p1", "13")) == 3


async def test_a_new_worker_waits_before_its_first_purge(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
) -> None:
    await _fill_for_purge(aredis, sync_redis, lake, NOW)
    worker = await drain(aredis, lake, clock=lambda: NOW)  # the defaults: not yet
    assert worker.purged == 0 and len(quarantine_rows(lake)) == 6


async def test_a_failing_purge_is_logged_once_and_never_stops_ingest(
    aredis: aioredis.Redis, sync_redis: redis.Redis, lake: LakeConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await register_seed(aredis)
    enqueue(sync_redis, quarantined_fields(seed_records(1, "a"), "t0", []))
    worker = LakeWorker(aredis, lake, reclaim_idle_ms=0, purge_every_s=0.0)
    try:
        await worker.drain()
        # a quarantine table the purge cannot read (as a hand-made one would be)
        con = connect(lake)
        con.execute(f"DROP TABLE {tables.QUARANTINE_TABLE}")
        con.execute(f"CREATE TABLE {tables.QUARANTINE_TABLE} (x INTEGER)")
        con.close()
        with caplog.at_level(logging.WARNING, logger="strictgate.worker"):
            for i in (1, 2):
                enqueue(sync_redis, quarantined_fields(seed_records(1, "b"), f"t{i}", []))
                await worker.drain()
    finally:
        worker.close()
    failed = [r.getMessage() for r in caplog.records if "quarantine purge failed" in
              r.getMessage()]
    assert len(failed) == 1 and "BinderException" in failed[0]
    assert sorted(r[0] for r in lake_rows(lake)) == ["t0", "t1", "t2"]
    assert worker.health.ok


def test_the_cli_purges_now(sync_redis: redis.Redis, tmp_path: Path, redis_url: str,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    for name in [n for n in os.environ if n.startswith("STRICTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", redis_url)
    for name, value in service_env().items():
        monkeypatch.setenv(name, value)
    lake = LakeConfig.local(tmp_path.resolve())

    async def fill() -> None:
        client = async_client(redis_url)
        try:
            await _fill_for_purge(client, sync_redis, lake, datetime.now(UTC))
        finally:
            await client.aclose()

    asyncio.run(fill())
    assert main(["quarantine", "purge", "p1", "14"]) == 0  # 30 days: nothing is that old
    assert json.loads(capsys.readouterr().out) == {"deleted": 0, "datasets": 1}
    assert main(["quarantine", "purge"]) == 0  # every dataset: p1/13's two old ones
    assert json.loads(capsys.readouterr().out) == {"deleted": 2, "datasets": 2}
    assert quarantine_rows(lake, "trace_id") == [
        ("13-new",), ("14-new",), ("14-old",), ("14-recent",)]
    assert main(["quarantine", "purge", "p1"]) == 2
    assert "name both a project and a dataset" in capsys.readouterr().err


# --- the JSON Lines sink -----------------------------------------------------------------

async def test_the_jsonl_sink_writes_quarantined_records_to_their_own_files(
    aredis: aioredis.Redis, tmp_path: Path,
) -> None:
    event = {"id": "ev1", "source": "pos", "time": "2026-06-10T09:59:00Z"}
    stream = keys.queue_key("u1", "p1", "13")
    await aredis.sadd(keys.queues_index_key(), stream)
    for fields in (
        quarantined_fields(seed_records(2, "m"), "mixed", [item(1, "a", "b")],
                           event_type="job"),
        quarantined_fields([], "only", [item(0, "c", event=event), item(3, "d")]),
        quarantined_fields(seed_records(1, "v"), "valid", [],
                           replayed_at="2026-07-01T08:00:00.000Z",
                           replay_of=b'[["u1/1-0", 0]]'),
    ):
        await aredis.xadd(stream, fields)  # type: ignore[arg-type]
    out = tmp_path / "out"
    await Worker(aredis, out).drain()
    records = _lines(out / "p1" / "13")
    assert [(r["__traceId"], r.get("__replayedAt")) for r in records] == [
        ("mixed", None), ("mixed", None), ("valid", "2026-07-01T08:00:00.000Z")]
    kept = _lines(out / "quarantine" / "p1" / "13" / "2026-06-10")
    assert kept == [
        {"record": '{"amount": "x"}', "index": 1, "errors": item(1, "a", "b")["errors"],
         "trace_id": "mixed", "dataset_version": 1, "received_at": RECEIVED,
         "event_type": "job"},
        {"record": '{"amount": "x"}', "index": 0, "errors": item(0, "c")["errors"],
         "trace_id": "only", "dataset_version": 1, "received_at": RECEIVED, "event": event},
        {"record": '{"amount": "x"}', "index": 3, "errors": item(3, "d")["errors"],
         "trace_id": "only", "dataset_version": 1, "received_at": RECEIVED}]
    assert await aredis.xlen(stream) == 0


def _lines(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(root.rglob("*.jsonl"))
            for line in path.read_text().splitlines()]


async def test_a_jsonl_worker_dying_between_its_two_renames_writes_each_line_once(
    aredis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = keys.queue_key("u1", "p1", "13")
    await aredis.sadd(keys.queues_index_key(), stream)
    await aredis.xadd(stream, quarantined_fields(  # type: ignore[arg-type]
        seed_records(2, "m"), "mixed", [item(1, "a")]))
    await aredis.xadd(stream, quarantined_fields(  # type: ignore[arg-type]
        [], "only", [item(0, "b")]))
    real_publish = sink.publish
    renamed: list[Path] = []

    def publish(final: Path) -> bool:
        if renamed:
            raise Crash  # dies after the first of the batch's two renames
        renamed.append(final)
        return real_publish(final)

    out = tmp_path / "out"
    monkeypatch.setattr(sink, "publish", publish)
    with pytest.raises(Crash):
        await Worker(aredis, out, consumer="dying").drain()
    monkeypatch.undo()
    assert len(list(out.rglob(".*.tmp"))) == 1
    survivor = Worker(aredis, out, consumer="survivor", reclaim_idle_ms=0)
    await survivor.drain()
    assert survivor.stats.entries_finished_from_marks == 2
    assert [r["__traceId"] for r in _lines(out / "p1")] == ["mixed", "mixed"]
    assert [r["trace_id"] for r in _lines(out / "quarantine")] == ["mixed", "only"]
    assert not list(out.rglob(".*.tmp"))


def test_quarantine_lines_of_an_entry_without_quarantine_are_none() -> None:
    entry = QueueEntry(records=b"[]", trace_id="t", dataset_version=1, received_at=RECEIVED,
                       project_id="p1", dataset_id="13", user_id="u1")
    assert quarantine_lines(entry) == []

"""The worker against a real Redis: exactly-once output, redelivery, trimming."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from quota import keys
from quota.admission import Admitted, QuotaService
from strictgate.context import utc_now
from strictgate.queue_entry import QueueEntry
from strictgate.worker import sink
from strictgate.worker.consumer import Worker
from tests.ingest_fixtures import Service


def _entry(n: int, trace: str, *, day: str = "2026-06-10", user: str = "u1"
           ) -> dict[str, bytes | str]:
    records = [{"timestamp": f"{day}T10:00:00Z", "context": {}, "n": i} for i in range(n)]
    return QueueEntry(
        records=orjson.dumps(records), trace_id=trace, dataset_version=3,
        received_at=f"{day}T10:00:00.000Z", project_id="p1", dataset_id="13", user_id=user,
    ).to_fields()


def _output_lines(root: Path) -> list[dict[str, object]]:
    lines = []
    for path in sorted(root.rglob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


async def _enqueue(r: aioredis.Redis, *entries: dict[str, bytes | str]) -> str:
    stream = keys.queue_key("u1", "p1", "13")
    for fields in entries:
        await r.xadd(stream, fields)  # type: ignore[arg-type]
    await r.sadd(keys.queues_index_key(), stream)
    return stream


async def test_records_written_once_with_trace_id_and_version(
    aredis: aioredis.Redis, tmp_path: Path
) -> None:
    stream = await _enqueue(aredis, _entry(2, "req_a"), _entry(1, "req_b"))
    worker = Worker(aredis, tmp_path)
    assert await worker.drain() == 2
    lines = _output_lines(tmp_path)
    assert [(ln["n"], ln["__traceId"], ln["__datasetVersion"]) for ln in lines] == [
        (0, "req_a", 3), (1, "req_a", 3), (0, "req_b", 3),
    ]
    files = list(tmp_path.rglob("*.jsonl"))
    assert all(f.parent == tmp_path / "p1" / "13" / "2026-06-10" for f in files)
    # acknowledged entries are deleted: Redis holds nothing for them
    assert await aredis.xlen(stream) == 0
    assert await aredis.hlen(keys.written_marks_key(stream)) == 0


async def test_files_split_by_utc_day_of_receipt(aredis: aioredis.Redis, tmp_path: Path) -> None:
    await _enqueue(aredis, _entry(1, "a", day="2026-06-10"), _entry(1, "b", day="2026-06-11"))
    await Worker(aredis, tmp_path).drain()
    days = sorted(p.parent.name for p in tmp_path.rglob("*.jsonl"))
    assert days == ["2026-06-10", "2026-06-11"]


class Crash(Exception):
    """Simulated death of the worker between two steps."""


@pytest.mark.parametrize("crash_after", ["stage", "mark", "publish"])
async def test_crash_at_each_step_then_reclaim_writes_exactly_once(
    aredis: aioredis.Redis, tmp_path: Path, crash_after: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = await _enqueue(aredis, _entry(3, "req_x"), _entry(2, "req_y"))
    dying = Worker(aredis, tmp_path, consumer="dying")

    real_stage, real_publish = sink.stage, sink.publish
    real_hset = aredis.hset

    def stage(final: Path, lines: list[bytes]) -> None:
        real_stage(final, lines)
        if crash_after == "stage":
            raise Crash

    async def hset(*args: object, **kwargs: object) -> object:
        result = await real_hset(*args, **kwargs)  # type: ignore[arg-type]
        if crash_after == "mark":
            raise Crash
        return result

    def publish(final: Path) -> bool:
        done = real_publish(final)
        if crash_after == "publish":
            raise Crash
        return done

    monkeypatch.setattr(sink, "stage", stage)
    monkeypatch.setattr(sink, "publish", publish)
    monkeypatch.setattr(aredis, "hset", hset)
    with pytest.raises(Crash):
        await dying.drain()
    monkeypatch.undo()

    # entries are still pending for the dead consumer; a new worker reclaims them
    assert await aredis.xlen(stream) == 2
    survivor = Worker(aredis, tmp_path, consumer="survivor", reclaim_idle_ms=0)
    await survivor.drain()
    ns = sorted((ln["__traceId"], ln["n"]) for ln in _output_lines(tmp_path))
    assert ns == [("req_x", 0), ("req_x", 1), ("req_x", 2), ("req_y", 0), ("req_y", 1)]
    assert await aredis.xlen(stream) == 0
    assert not list(tmp_path.rglob("*.tmp"))  # no staged file left behind
    # once marked, entries are only finished (renamed, acked), never written again
    marked = crash_after != "stage"
    assert survivor.stats.entries_finished_from_marks == (2 if marked else 0)
    assert survivor.stats.entries_written == (0 if marked else 2)


async def test_redelivered_marked_entries_are_finished_not_rewritten(
    aredis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker dies after publishing a file of two entries, before acking them. The survivor
    reads them one at a time: writing them again would produce a file per entry (the first
    one overwritten with fewer records, a second one beside it); finishing them from the
    marks leaves the dead worker's file exactly as it was."""
    stream = await _enqueue(aredis, _entry(3, "req_x"), _entry(2, "req_y"))
    real_publish = sink.publish

    def publish(final: Path) -> bool:
        real_publish(final)
        raise Crash

    monkeypatch.setattr(sink, "publish", publish)
    with pytest.raises(Crash):
        await Worker(aredis, tmp_path, consumer="dying").drain()
    monkeypatch.undo()
    published = {p.name: p.read_bytes() for p in tmp_path.rglob("*.jsonl")}
    assert len(published) == 1 and await aredis.xlen(stream) == 2

    survivor = Worker(aredis, tmp_path, consumer="survivor", reclaim_idle_ms=0, batch_size=1,
                      max_batch_entries=1)
    await survivor.drain()
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*.jsonl")} == published
    assert survivor.stats.entries_finished_from_marks == 2
    assert survivor.stats.entries_written == 0
    assert await aredis.xlen(stream) == 0
    assert await aredis.hlen(keys.written_marks_key(stream)) == 0


async def test_restart_with_same_consumer_name_finishes_its_own_pending(
    aredis: aioredis.Redis, tmp_path: Path
) -> None:
    stream = await _enqueue(aredis, _entry(1, "req_own"))
    first = Worker(aredis, tmp_path, consumer="w1")
    await first.discover()
    # delivered but never processed (the process died right after XREADGROUP)
    await aredis.xreadgroup(keys.QUEUE_GROUP, "w1", {stream: ">"}, count=10)
    again = Worker(aredis, tmp_path, consumer="w1")
    await again.drain()
    assert [ln["__traceId"] for ln in _output_lines(tmp_path)] == ["req_own"]


async def test_two_workers_share_a_stream_without_duplicates(
    aredis: aioredis.Redis, tmp_path: Path
) -> None:
    await _enqueue(aredis, *[_entry(1, f"t{i}") for i in range(200)])
    w1 = Worker(aredis, tmp_path, consumer="a", batch_size=7, max_batch_entries=7)
    w2 = Worker(aredis, tmp_path, consumer="b", batch_size=7, max_batch_entries=7)
    import asyncio

    await asyncio.gather(w1.drain(), w2.drain())
    traces = sorted(str(ln["__traceId"]) for ln in _output_lines(tmp_path))
    assert traces == sorted(f"t{i}" for i in range(200))
    assert w1.stats.entries_written > 0 and w2.stats.entries_written > 0


async def test_stream_found_by_scan_even_if_missing_from_index(
    aredis: aioredis.Redis, tmp_path: Path
) -> None:
    stream = keys.queue_key("u1", "p1", "13")
    await aredis.xadd(stream, _entry(1, "orphan"))  # type: ignore[arg-type]
    await Worker(aredis, tmp_path).drain()
    assert [ln["__traceId"] for ln in _output_lines(tmp_path)] == ["orphan"]


async def test_reads_grow_for_small_entries_and_stay_bounded_in_records(
    aredis: aioredis.Redis, tmp_path: Path
) -> None:
    """After a first read of ``batch_size`` entries, a stream of one-record entries is read
    ``max_batch_entries`` at a time, a stream of 10-record entries ``batch_records / 10``
    at a time."""
    small = await _enqueue(aredis, *[_entry(1, f"s{i}") for i in range(120)])
    worker = Worker(aredis, tmp_path, batch_size=5, max_batch_entries=50, batch_records=100)
    await worker.discover()
    assert [await worker.run_once() for _ in range(4)] == [5, 50, 50, 15]
    big = keys.queue_key("u2", "p1", "13")
    for i in range(30):
        await aredis.xadd(big, _entry(10, f"b{i}", user="u2"))  # type: ignore[arg-type]
    await aredis.sadd(keys.queues_index_key(), big)
    worker.discover_interval_s = 0
    assert [await worker.run_once() for _ in range(4)] == [5, 10, 10, 5]
    assert await aredis.xlen(small) == 0 and await aredis.xlen(big) == 0
    assert len(_output_lines(tmp_path)) == 120 + 300


@pytest.mark.parametrize(("payload", "compact"), [
    (b'[{"a":1}]', b'[{"a":1}]'),
    (b'[ {\t"a" : 1.50e+10 ,"b":[ 1E400 , -0.0, 123456789012345678901234567890 ] } ]',
     b'[{"a":1.50e+10,"b":[1E400,-0.0,123456789012345678901234567890]}]'),
    # whitespace, quotes and escapes inside strings stay as they are
    (b'[{"k y" : "x  y \\" z\\\\ ", "e":"\\u00e9\\/\xc3\xa9"}]',
     b'[{"k y":"x  y \\" z\\\\ ","e":"\\u00e9\\/\xc3\xa9"}]'),
])
def test_compact_json_drops_whitespace_outside_strings_only(payload: bytes, compact: bytes) -> None:
    from strictgate.worker.consumer import compact_json

    assert compact_json(payload) == compact
    assert json.loads(compact) == json.loads(payload)


def test_indented_body_is_written_as_compact_json_lines(svc: Service, key: str) -> None:
    """A client's pretty-printed body over HTTP: each output line is compact, every value
    (number text included) unchanged."""
    body = (
        b'[\n  {\n    "timestamp": "2026-06-10T11:00:00Z",\n    "context": { "source": "a b" },\n'
        b'    "country": "RO",\n    "plan": "pro  plan",\n    "amount": 42.50,\n'
        b'    "active": true,\n    "signup_at": "2026-06-01T08:00:00Z"\n  }\n]\n'
    )
    r = svc.post("/datasets/13/batch", key, body)
    assert r.status_code == 202, r.text
    svc.drain()
    (path,) = (svc.data_dir / "output").rglob("*.jsonl")
    (line,) = path.read_bytes().splitlines()
    trace = r.headers["X-Request-Id"]
    assert line == (
        b'{"timestamp":"2026-06-10T11:00:00Z","context":{"source":"a b"},"country":"RO",'
        b'"plan":"pro  plan","amount":42.50,"active":true,"signup_at":"2026-06-01T08:00:00Z",'
        b'"__traceId":"' + trace.encode() + b'","__datasetVersion":1}'
    )


class _BuggyOnce(Worker):
    """A worker whose first write hits a bug (an exception no handler expects)."""

    bugs = 1

    async def _write(self, stream: str, entries: Any) -> int:
        if self.bugs:
            self.bugs -= 1
            raise RuntimeError("a bug in the sink")
        return await super()._write(stream, entries)


async def test_an_unexpected_error_is_logged_seen_and_retried_not_fatal(
    aredis: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = await _enqueue(aredis, _entry(2, "req_a"))
    worker = _BuggyOnce(aredis, tmp_path, reclaim_idle_ms=0, poll_interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(500):
            if worker.health.failures and await aredis.xlen(stream) == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    # the loop went on after the bug and wrote the entry once
    assert [ln["__traceId"] for ln in _output_lines(tmp_path)] == ["req_a", "req_a"]
    assert worker.health.failures == 1 and worker.health.ok
    bugs = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(bugs) == 1 and bugs[0].exc_info is not None
    assert any("sink cannot write" in r.getMessage() and "internal error: RuntimeError"
               in r.getMessage() for r in caplog.records)


async def test_event_type_is_written_on_each_line_of_its_entries_only(
    aredis: aioredis.Redis, tmp_path: Path,
) -> None:
    """Entries of one multi-dataset admission (OrcaSheets: a job name for every row) and an
    entry without one: ``__eventType`` on the lines of the first only."""
    svc = QuotaService(aredis, default_limit=-1, deadline_s=2.0, clock=utc_now)
    rows = {"orders": [{"order_id": "1001"}, {"order_id": "1002"}], "users": [{"u": "a"}]}
    entries = [QueueEntry(
        records=orjson.dumps(records), trace_id="req_job", dataset_version=1,
        received_at="2026-06-10T10:00:00.000Z", project_id="p1", dataset_id=dataset,
        user_id="u1", event_type='ecommerce "sync"') for dataset, records in rows.items()]
    admitted = await svc.admit_many(entries, counts=[2, 1], idempotency_key=None,
                                    request_digest="")
    assert isinstance(admitted, Admitted)
    await _enqueue(aredis, _entry(1, "req_plain"))
    assert await Worker(aredis, tmp_path).drain() == 3
    by_dataset = {path.parent.parent.name: [json.loads(line) for line in
                                            path.read_text().splitlines()]
                  for path in tmp_path.rglob("*.jsonl")}
    assert by_dataset["orders"] == [
        {"order_id": "1001", "__traceId": "req_job", "__datasetVersion": 1,
         "__eventType": 'ecommerce "sync"'},
        {"order_id": "1002", "__traceId": "req_job", "__datasetVersion": 1,
         "__eventType": 'ecommerce "sync"'}]
    assert by_dataset["users"] == [{"u": "a", "__traceId": "req_job", "__datasetVersion": 1,
                                    "__eventType": 'ecommerce "sync"'}]
    assert "__eventType" not in by_dataset["13"][0]

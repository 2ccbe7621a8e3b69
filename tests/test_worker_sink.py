"""Issue 11 item 5: an output sink that cannot write is visible and recovers by itself.

Real failures only: a regular file where an output directory must be (no mount needed), and
a real 1 MB tmpfs filled up under the output dir (skipped with the reason when this process
may not mount). Records keep being admitted (202), stay queued, and are each written once
when the cause is gone; ``/readyz``, the metrics and the log (one line per change of state)
say what is wrong meanwhile.

Also what the sink writes for events (OneSight): each record's ``__eventId``, ``__source``
and ``__eventTime`` spliced into its line, and an entry whose events do not match its
records set aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from quota import keys
from strictgate.embedded import free_port
from strictgate.metrics import Metrics
from strictgate.queue_entry import MalformedEntryError, QueuedEvent, QueueEntry, encode_events
from strictgate.worker.consumer import Worker
from strictgate.worker.consumer import output_lines as entry_lines
from strictgate.worker.health import SinkHealth
from strictgate.worker.queues import queue_snapshot
from tests.ingest_fixtures import SEED_DEFINITION, SEED_SINGLE, Service, output_lines, start_service
from tests.test_worker import _enqueue, _entry
from tests.test_worker import _output_lines as worker_output

FAILING = "sink cannot write"
RECOVERED = "sink writes again"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    """Worker log lines containing ``needle``."""
    return [r.getMessage() for r in caplog.records
            if r.name == "strictgate.worker" and needle in r.getMessage()]


async def wait_for(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll ``check`` until it holds (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_file_where_a_directory_must_be_reported_once_then_caught_up(
    aredis: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "output"
    root.mkdir()
    blocker = root / "p1"  # the project's directory cannot be made
    blocker.write_text("not a directory")
    metrics = Metrics()
    health = SinkHealth("jsonl", metrics)
    stream = await _enqueue(aredis, *[_entry(2, f"t{i}") for i in range(3)])
    worker = Worker(aredis, root, health=health, poll_interval_s=0.01)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="strictgate.worker")
    task = asyncio.create_task(worker.run(stop))
    try:
        await wait_for(lambda: health.failures >= 3)
        assert not health.ok
        assert health.reason is not None
        assert health.reason.startswith("ENOTDIR (Not a directory) creating ")
        assert str(blocker) in health.reason
        # more records arrive meanwhile: they are queued, the lag (oldest unwritten) grows
        await _enqueue(aredis, *[_entry(1, f"u{i}") for i in range(2)])
        first = (await queue_snapshot(aredis)).oldest_age_s
        await asyncio.sleep(1.1)
        later = await queue_snapshot(aredis)
        assert later.oldest_age_s >= first + 1.0
        assert later.lengths == {stream: 5}
        shown = samples(metrics.render().decode())
        assert shown[("strictgate_sink_up", (("sink", "jsonl"),))] == 0
        errors = shown[("strictgate_sink_errors_total", (("cause", "ENOTDIR"), ("sink", "jsonl")))]
        assert errors == health.failures >= 3
        # retried several times, said once, and not as a Redis error
        assert len(messages(caplog, FAILING)) == 1
        assert messages(caplog, "redis") == []
        assert worker_output(root) == []

        blocker.unlink()
        await wait_for(lambda: health.ok)
        await wait_for(lambda: worker.stats.entries_written == 5)
    finally:
        stop.set()
        await task
    traces = Counter(str(line["__traceId"]) for line in worker_output(root))
    assert traces == {**{f"t{i}": 2 for i in range(3)}, **{f"u{i}": 1 for i in range(2)}}
    assert await aredis.xlen(stream) == 0
    assert await aredis.xpending(stream, keys.QUEUE_GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []}
    assert len(messages(caplog, FAILING)) == 1
    assert len(messages(caplog, RECOVERED)) == 1
    assert samples(metrics.render().decode())[("strictgate_sink_up", (("sink", "jsonl"),))] == 1
    assert not list(root.rglob("*.tmp"))


async def test_redis_outage_is_logged_once_with_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a port nothing listens on, of this test alone (the outage state is per server)
    where = f"127.0.0.1:{free_port()}"
    client = aioredis.Redis.from_url(f"redis://:hunter2@{where}/0")
    worker = Worker(client, tmp_path, poll_interval_s=0.01)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(1.0)  # a handful of retries (backoff 0.02, 0.04, ... s)
    stop.set()
    await task
    await client.aclose()
    said = [r.getMessage() for r in caplog.records if where in r.getMessage()]
    assert len(said) == 1
    assert "unreachable: ConnectionError" in said[0]
    assert "hunter2" not in caplog.text
    assert messages(caplog, FAILING) == [] and worker.health.ok


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    """A real tmpfs of ``size`` mounted on ``path`` (skip the test if mounting fails)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                  str(path)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()[:200]}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no page left."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"x" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def poll(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``check`` (blocking) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_output_disk_full_over_http(
    data_dir: Path, redis_url: str, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    output = data_dir / "output"
    caplog.set_level(logging.INFO, logger="strictgate.worker")
    with tmpfs(output, "1m"), contextlib.contextmanager(start_service)(
            data_dir, redis_url, STRICTGATE_RUN_WORKER="1", STRICTGATE_SINK="jsonl") as svc:
        svc.put_dataset("p1", "13", SEED_DEFINITION)
        key = svc.create_key("p1", "u1")
        sent = [post_one(svc, key)]
        poll(lambda: len(lines_of(output)) == 1)
        assert svc.client.get("/readyz").status_code == 200

        fill(output / "filler")
        sent += [post_one(svc, key) for _ in range(20)]  # clients keep getting 202
        poll(lambda: svc.client.get("/readyz").status_code == 503)
        ready = svc.client.get("/readyz")
        body = ready.json()
        assert body["success"] is False and body["errors"][0]["code"] == "sink_unavailable"
        assert "ENOSPC (No space left on device) writing " + str(output) in body["error"]
        assert len(ready.text) < 1000

        def errors() -> float:
            return metric(svc).get(("strictgate_sink_errors_total",
                                    (("cause", "ENOSPC"), ("sink", "jsonl"))), 0.0)

        poll(lambda: errors() >= 3)  # retried several times ...
        assert len(messages(caplog, FAILING)) == 1  # ... and said once
        assert messages(caplog, "redis") == []
        shown = metric(svc)
        assert shown[("strictgate_sink_up", (("sink", "jsonl"),))] == 0
        lag = shown[("strictgate_worker_lag_seconds", ())]
        time.sleep(2.2)  # the gauges are read from Redis every second
        assert metric(svc)[("strictgate_worker_lag_seconds", ())] >= lag + 1.0
        assert not list(output.rglob("*.tmp"))
        assert len(lines_of(output)) == 1

        (output / "filler").unlink()  # space again: the worker catches up by itself
        poll(lambda: svc.client.get("/readyz").status_code == 200)
        poll(lambda: sync_redis.xlen(keys.queue_key("u1", "p1", "13")) == 0)
        poll(lambda: metric(svc)[("strictgate_worker_lag_seconds", ())] == 0)
        assert metric(svc)[("strictgate_sink_up", (("sink", "jsonl"),))] == 1
        written = Counter(str(line["__traceId"]) for line in lines_of(output))
        assert written == dict.fromkeys(sent, 1)
        assert not list(output.rglob("*.tmp"))
        assert len(messages(caplog, FAILING)) == 1
        assert len(messages(caplog, RECOVERED)) == 1


def post_one(svc: Service, key: str) -> str:
    """Send one record; it must be accepted. Returns its request id."""
    r = svc.post("/datasets/13", key, SEED_SINGLE)
    assert r.status_code == 202, r.text
    return str(r.headers["X-Request-Id"])


def lines_of(output: Path) -> list[dict[str, object]]:
    """Published output lines (temp files are hidden, not ``*.jsonl``)."""
    return output_lines(output)


def metric(svc: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of GET /metrics."""
    r = svc.client.get("/metrics")
    assert r.status_code == 200
    return samples(r.text)


# --- events (OneSight) in the JSON Lines sink ------------------------------------------------

def _events_entry(n: int, trace: str, events: bytes) -> dict[str, bytes | str]:
    fields = _entry(n, trace)
    return {**fields, "events": events}


def test_output_lines_splice_each_record_s_event_in() -> None:
    events = encode_events([QueuedEvent("loc_001", "virtual_store_server",
                                        "2026-04-12t10:30:00z"),
                            QueuedEvent("loc \"2\"", None, "2016-12-31T23:59:60+00:00")])
    entry = QueueEntry(records=b'[{"a": 1},\n {"b": {"c": 2}}]', trace_id="t",
                       dataset_version=2, received_at="2026-04-12T10:30:01.000Z",
                       project_id="p", dataset_id="uwb_location", user_id="u",
                       event_type="job", events=events)
    assert entry_lines(entry) == [
        b'{"a":1,"__traceId":"t","__datasetVersion":2,"__eventType":"job",'
        b'"__eventId":"loc_001","__source":"virtual_store_server",'
        b'"__eventTime":"2026-04-12t10:30:00z"}',
        b'{"b":{"c":2},"__traceId":"t","__datasetVersion":2,"__eventType":"job",'
        b'"__eventId":"loc \\"2\\"","__source":null,"__eventTime":"2016-12-31T23:59:60+00:00"}']
    # an entry without events: its lines are what they were
    plain = msgspec.structs.replace(entry, events=None, event_type=None)
    assert entry_lines(plain) == [b'{"a":1,"__traceId":"t","__datasetVersion":2}',
                                   b'{"b":{"c":2},"__traceId":"t","__datasetVersion":2}']
    with pytest.raises(MalformedEntryError, match="holds 2 events for 1 records"):
        entry_lines(msgspec.structs.replace(entry, records=b'[{"a":1}]'))


async def test_the_jsonl_worker_writes_events_and_sets_aside_entries_that_do_not_match(
    aredis: aioredis.Redis, tmp_path: Path,
) -> None:
    two = encode_events([QueuedEvent(f"e{i}", "s", f"2026-04-12T10:30:0{i}Z") for i in range(2)])
    stream = await _enqueue(aredis, _events_entry(2, "good", two),
                            _events_entry(3, "short", two),
                            _events_entry(1, "bad", b'[{"id": "x", "source": null}]'),
                            _entry(1, "plain"))
    worker = Worker(aredis, tmp_path / "out")
    await worker.drain()
    lines = worker_output(tmp_path / "out")
    assert [(ln["__traceId"], ln.get("__eventId"), ln.get("__eventTime")) for ln in lines] == [
        ("good", "e0", "2026-04-12T10:30:00Z"), ("good", "e1", "2026-04-12T10:30:01Z"),
        ("plain", None, None)]
    assert "__source" not in lines[2]
    dead = {f[b"trace_id"]: f for _, f in await aredis.xrange(keys.dead_letter_key(stream))}
    assert set(dead) == {b"short", b"bad"}
    assert dead[b"short"][b"dead_reason"] == b"malformed_record"
    assert b"holds 2 events for 3 records" in dead[b"short"][b"dead_detail"]
    assert dead[b"bad"][b"dead_reason"] == b"malformed_entry"
    assert b"events" in dead[b"bad"][b"dead_detail"]
    assert await aredis.xlen(stream) == 0

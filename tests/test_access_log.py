"""The access line of a serving process (strictgate/access_log.py LineWriter): the same text
the log format gives, written in chunks at most FLUSH_INTERVAL_S late, the rest at exit; and
what a one-record request costs in writes on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from strictgate import access_log
from strictgate.access_log import CHUNK_BYTES, FLUSH_INTERVAL_S, LineWriter
from strictgate.cli import LOG_FORMAT
from strictgate.embedded import free_port
from tests.ingest_fixtures import SEED_SINGLE, start_service
from tests.serve_proc import SEED_DEFINITION, Serves, wait_for

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO strictgate\.access (\{.*\})$")


@pytest.fixture
def pipe() -> Iterator[tuple[int, object]]:
    """A pipe: its read end (non-blocking) and a text stream on its write end."""
    read, write = os.pipe()
    fcntl.fcntl(read, fcntl.F_SETFL, fcntl.fcntl(read, fcntl.F_GETFL) | os.O_NONBLOCK)
    stream = os.fdopen(write, "w")
    try:
        yield read, stream
    finally:
        stream.close()
        os.close(read)


def _drain(fd: int) -> str:
    try:
        return os.read(fd, 1 << 20).decode()
    except BlockingIOError:
        return ""


def test_a_line_is_what_the_log_format_makes_of_the_record(pipe: tuple[int, object]) -> None:
    read, stream = pipe
    writer = LineWriter(stream, LOG_FORMAT)  # type: ignore[arg-type]
    formatter = logging.Formatter(LOG_FORMAT)
    for created in (1765138272.4195, 1765138272.0, 1765138273.9999, 1700000000.5):
        message = '{"method":"POST","path":"/datasets/13","status":202}'
        record = logging.LogRecord("strictgate.access", logging.INFO, __file__, 1, message,
                                   None, None)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        writer.write(message, created)  # no event loop here: written at once
        assert _drain(read) == formatter.format(record) + "\n"


async def test_lines_wait_for_the_interval_or_a_full_chunk(pipe: tuple[int, object]) -> None:
    read, stream = pipe
    writer = LineWriter(stream, LOG_FORMAT)  # type: ignore[arg-type]
    for i in range(3):
        writer.write(f'{{"n":{i}}}', time.time())
    assert _drain(read) == ""  # held
    await asyncio.sleep(FLUSH_INTERVAL_S * 2)
    lines = _drain(read).splitlines()
    assert [json.loads(LINE.match(line)[1]) for line in lines] == [  # type: ignore[index]
        {"n": 0}, {"n": 1}, {"n": 2}]
    # a chunk's worth leaves at once, every line whole
    message = json.dumps({"path": "x" * 200})
    count = CHUNK_BYTES // len(message) + 2
    for _ in range(count):
        writer.write(message, time.time())
    first = _drain(read)
    assert first and first.endswith("\n")
    await asyncio.sleep(FLUSH_INTERVAL_S * 2)
    lines = (first + _drain(read)).splitlines()
    assert len(lines) == count and all(LINE.match(line) for line in lines)


def test_a_served_request_is_logged_with_its_fields_and_the_rest_at_exit(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url).wait_healthy()
    headers = serve.provision()
    record = {"timestamp": "2026-06-10T10:58:00Z", "context": {}, **{
        "country": "RO", "plan": "pro", "amount": 1, "active": True,
        "signup_at": "2026-06-01T08:00:00Z"}}
    assert SEED_DEFINITION["fields"].keys() <= record.keys()

    def logged(request_id: str) -> list[dict[str, object]]:
        found = []
        for line in serve.log().splitlines():
            match = LINE.match(line)
            if match and json.loads(match[1]).get("request_id") == request_id:
                found.append(json.loads(match[1]))
        return found

    r = httpx.post(serve.base + "/datasets/13", json=record, timeout=10,
                   headers={**headers, "X-Request-Id": "req-access-1"})
    assert r.status_code == 202, r.text
    wait_for(lambda: bool(logged("req-access-1")), 5, "the access line")
    [line] = logged("req-access-1")
    assert set(line) == {"method", "path", "status", "records", "duration_ms", "request_id"}
    assert (line["method"], line["path"], line["status"], line["records"]) == (
        "POST", "/datasets/13", 202, 1)
    # the last line before a stop is written at exit, not lost
    r = httpx.post(serve.base + "/datasets/13", json=record, timeout=10,
                   headers={**headers, "X-Request-Id": "req-access-2"})
    assert r.status_code == 202
    serve.stop()
    assert len(logged("req-access-2")) == 1


def test_held_lines_are_written_when_the_lifespan_shuts_down(
    pipe: tuple[int, object], data_dir: Path, redis_url: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn ends a SIGTERM by raising it again (no exit handlers run): the lifespan's
    shutdown writes what is held."""
    read, stream = pipe
    caplog.set_level(logging.INFO, logger="strictgate.access")
    monkeypatch.setattr(access_log, "_writer", LineWriter(
        stream, LOG_FORMAT, interval_s=3600))  # type: ignore[arg-type]
    service = start_service(data_dir, redis_url)
    svc = next(service)
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    key = svc.create_key("p1", "u1")
    assert svc.post("/datasets/13", key, SEED_SINGLE, **{"X-Request-Id": "req-held"}
                    ).status_code == 202
    assert "req-held" not in _drain(read)  # held for the hour
    with contextlib.suppress(StopIteration):
        next(service)  # leaves the TestClient: the lifespan shuts down
    held = [json.loads(LINE.match(line)[1])  # type: ignore[index]
            for line in _drain(read).splitlines()]
    assert [line["request_id"] for line in held if line["path"] == "/datasets/13"] == [
        "req-held"]


def _writes(pid: int) -> int:
    """Write system calls so far of process ``pid`` (all its threads)."""
    text = Path(f"/proc/{pid}/io").read_text()
    return int(re.search(r"^syscw: (\d+)$", text, re.M)[1])  # type: ignore[index]


def test_a_one_record_request_costs_two_writes(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    """Its answer in one write (status line, headers and body together), its admission in
    one, its access line buffered with others: two per request, where it was four."""
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url,
                         STRICTGATE_RUN_WORKER="false").wait_healthy()
    headers = serve.provision()
    body = json.dumps({"timestamp": "2026-06-10T10:58:00Z", "context": {}, "country": "RO",
                       "plan": "pro", "amount": 1, "active": True,
                       "signup_at": "2026-06-01T08:00:00Z"})
    requests = 300
    with httpx.Client(base_url=serve.base, headers=headers, timeout=10) as client:
        for _ in range(20):  # warm: caches, the admission connection
            assert client.post("/datasets/13", content=body).status_code == 202
        before = _writes(serve.proc.pid)
        for _ in range(requests):
            assert client.post("/datasets/13", content=body).status_code == 202
        per_request = (_writes(serve.proc.pid) - before) / requests
    assert per_request < 2.5, per_request

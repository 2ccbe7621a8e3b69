"""Issue 11, item 5: Redis connection problems are logged once per change of state, naming
host:port and never a password (the user's side: test_redis_supervision.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from strictgate.context import utc_now
from strictgate.embedded import free_port
from strictgate.redis_health import RedisHealth, check, health_of
from strictgate.settings import load_settings
from strictgate.worker import service

SECRET = "hunter2-secret-password"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "strictgate.redis"]


def test_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="strictgate.redis")
    health = RedisHealth("db:6379", secret=SECRET)
    for _ in range(5):
        health.failed(ConnectionRefusedError("refused"))
    health.failed(ConnectionError(f"bad password {SECRET}"))  # a new reason is news
    health.succeeded()
    health.succeeded()
    lines = _messages(caplog)
    assert lines[:2] == ["redis at db:6379 unreachable: ConnectionRefusedError: refused",
                         "redis at db:6379 unreachable: ConnectionError: bad password ***"]
    assert len(lines) == 3 and lines[2].startswith("redis at db:6379 reachable again after")


async def test_check_names_the_server_of_a_url_with_a_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="strictgate.redis")
    port = free_port()
    client = aioredis.Redis.from_url(f"redis://:{SECRET}@127.0.0.1:{port}/0")
    try:
        for _ in range(3):
            assert not await check(client, 0.5)
    finally:
        await client.aclose()
    (line,) = _messages(caplog)
    assert line.startswith(f"redis at 127.0.0.1:{port} unreachable: ConnectionError")
    assert SECRET not in caplog.text
    assert health_of(client).up is False


async def test_usage_flush_reports_connection_problems_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(service, "FLUSH_INTERVAL_S", 0.02)
    port = free_port()
    client = aioredis.Redis.from_url(f"redis://:{SECRET}@127.0.0.1:{port}/0")
    settings = load_settings({"STRICTGATE_DATA_DIR": str(tmp_path)})
    stop = asyncio.Event()
    task = asyncio.create_task(service._flusher(client, settings, utc_now, stop))
    await asyncio.sleep(0.3)  # many failed flushes
    stop.set()
    await task
    await client.aclose()
    assert "usage flush failed" not in caplog.text
    (line,) = _messages(caplog)
    assert line.startswith(f"redis at 127.0.0.1:{port} unreachable: ConnectionError: ")
    assert SECRET not in caplog.text

"""Issue 11 item 5: queue metrics exist in every deployment. An API without the worker
(``STRICTGATE_RUN_WORKER=0``) exports the queue length and lag read from Redis, and a
stand-alone ``strictgate worker --metrics-port`` serves its own metrics over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from quota import keys
from tests.ingest_fixtures import SEED_SINGLE, Service
from tests.test_worker import _entry
from tests.test_worker_sink import samples

REPO = Path(__file__).resolve().parents[1]
LAG = ("strictgate_worker_lag_seconds", ())


def poll(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_api_without_worker_exports_queue_length_and_lag(svc: Service, key: str) -> None:
    queue = keys.queue_key("u1", "p1", "13")
    length = ("strictgate_queue_length", (("queue", queue),))

    def shown() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        r = svc.client.get("/metrics")
        assert r.status_code == 200
        return samples(r.text)

    for _ in range(3):
        assert svc.post("/datasets/13", key, SEED_SINGLE).status_code == 202
    poll(lambda: shown().get(length) == 3)
    # nobody writes: the oldest record's age grows
    poll(lambda: shown()[LAG] >= 1.0)
    # no worker in this process: no sink state is claimed
    assert not [k for k in shown() if k[0] == "strictgate_sink_up"]

    assert len(svc.drain()) == 3
    poll(lambda: shown().get(length) == 0 and shown()[LAG] == 0)


def test_worker_cli_serves_its_metrics(
    redis_url: str, sync_redis: redis.Redis, data_dir: Path
) -> None:
    stream = keys.queue_key("u1", "p1", "13")
    for i in range(3):
        sync_redis.xadd(stream, _entry(2, f"t{i}"))  # type: ignore[arg-type]
    sync_redis.sadd(keys.queues_index_key(), stream)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
    env.update(REDIS_URL=redis_url, STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_SINK="jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "strictgate.cli", "worker", "--metrics-port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        prefix = "strictgate worker: metrics on http://127.0.0.1:"
        assert first.startswith(prefix) and first.endswith("/metrics"), first
        url = first.removeprefix("strictgate worker: metrics on ")

        def shown() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            r = httpx.get(url, timeout=5)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            return samples(r.text)

        poll(lambda: shown().get(("strictgate_records_written_total", ())) == 6)
        poll(lambda: shown().get(("strictgate_queue_length", (("queue", stream),))) == 0)
        now = shown()
        assert now[LAG] == 0
        assert now[("strictgate_sink_up", (("sink", "jsonl"),))] == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]


def test_worker_cli_metrics_port_in_use_is_one_line_error(
    redis_url: str, data_dir: Path
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
        env.update(REDIS_URL=redis_url, STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_SINK="jsonl")
        done = subprocess.run(
            [sys.executable, "-m", "strictgate.cli", "worker", "--metrics-port", str(port)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"strictgate worker: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize("flag", ["--metrics-port", "--metrics-host"])
def test_worker_cli_documents_metrics_flags(flag: str) -> None:
    done = subprocess.run([sys.executable, "-m", "strictgate.cli", "worker", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and flag in done.stdout

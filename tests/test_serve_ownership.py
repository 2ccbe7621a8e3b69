"""One owner per data dir and per port, with real ``strictgate serve``
processes: a second instance exits touching nothing, the first loses and double-counts
nothing; a stopped or killed service leaves the CLI a one-line "no running service"."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest

from strictgate.embedded import free_port
from tests.serve_proc import (
    Serves,
    ledger_records,
    run_cli,
    valkeys_on,
    wait_for,
    written_trace_ids,
)

pytestmark = pytest.mark.slow


def _assert_written_once(data_dir: Path, acked: dict[str, int]) -> None:
    wait_for(lambda: len(written_trace_ids(data_dir)) >= sum(acked.values()), 60,
             "the worker to write every acknowledged record")
    counts = collections.Counter(written_trace_ids(data_dir))
    assert counts == collections.Counter(acked)


def test_second_serve_on_the_same_data_dir_exits_and_the_first_loses_nothing(
    tmp_path: Path, serves: Serves,
) -> None:
    data_dir = tmp_path / "var"
    first = serves.start(data_dir, free_port()).wait_healthy()
    try:
        headers = first.provision()
        acked = first.send_batches(headers, "before", batches=20, size=10)
        url_before = (data_dir / "redis.url").read_bytes()

        second = serves.start(data_dir, free_port())
        assert second.wait_exit(60) == 1
        second.stop()
        assert second.log().strip() == (
            f"strictgate: data dir {data_dir.resolve()} is in use by PID {first.proc.pid}")
        # touching nothing: one valkey on the data dir, the first's URL in place
        assert len(valkeys_on(data_dir)) == 1
        assert (data_dir / "redis.url").read_bytes() == url_before

        # the first keeps serving
        acked |= first.send_batches(headers, "after", batches=20, size=10)
        assert sum(acked.values()) == 400
        _assert_written_once(data_dir, acked)
    finally:
        assert first.stop() is not None
    # the stop flushed usage once: the ledger counts each acknowledged record once
    assert ledger_records(data_dir) == 400
    assert "equal or smaller" not in (data_dir / "redis" / "valkey.log").read_text()


def test_second_serve_on_a_taken_port_starts_nothing(tmp_path: Path, serves: Serves) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    first = serves.start(data_dir, port).wait_healthy()
    try:
        headers = first.provision()
        acked = first.send_batches(headers, "before", batches=30, size=10)
        url_file = data_dir / "redis.url"
        url_before, mtime_before = url_file.read_bytes(), url_file.stat().st_mtime_ns

        # the case: a plain second `make run` (same data dir, same port) ...
        second = serves.start(data_dir, port)
        assert second.wait_exit(60) == 1
        second.stop()
        assert second.log().strip() == (
            f"strictgate: cannot listen on 127.0.0.1:{port}: Address already in use")
        # ... and one on its own data dir: the port is checked before anything starts
        other_dir = tmp_path / "other"
        third = serves.start(other_dir, port)
        assert third.wait_exit(60) == 1
        third.stop()
        assert "cannot listen on" in third.log()
        assert not other_dir.exists()

        assert len(valkeys_on(data_dir)) == 1 and valkeys_on(other_dir) == []
        assert (url_file.read_bytes(), url_file.stat().st_mtime_ns) == (url_before,
                                                                        mtime_before)
        acked |= first.send_batches(headers, "after", batches=30, size=10)
        assert sum(acked.values()) == 600
        _assert_written_once(data_dir, acked)
    finally:
        first.stop()
    # no second worker flushed usage: the ledger counts each acknowledged record once
    assert ledger_records(data_dir) == 600


def test_cli_says_no_running_service_after_a_clean_stop_and_after_kill_9(
    tmp_path: Path, serves: Serves,
) -> None:
    data_dir = tmp_path / "var"
    message = f"strictgate: no running service for {data_dir.resolve()}"
    serve = serves.start(data_dir, free_port()).wait_healthy()
    try:
        listed = run_cli(serve.env, "datasets", "list", "demo")
        assert listed.returncode == 0, listed.stderr
    finally:
        assert serve.stop(signal.SIGINT) is not None
    # a clean stop removes the URL
    assert not (data_dir / "redis.url").exists()
    for argv in (("datasets", "list", "demo"), ("quota", "get", "alice"), ("worker",)):
        done = run_cli(serve.env, *argv)
        assert (done.returncode, done.stdout) == (1, ""), argv
        assert done.stderr.startswith(message) and "Traceback" not in done.stderr, argv

    # kill -9 leaves a stale URL (its valkey dies with it): the same message
    killed = serves.start(data_dir, free_port()).wait_healthy()
    killed.stop(signal.SIGKILL)
    assert (data_dir / "redis.url").exists()
    wait_for(lambda: valkeys_on(data_dir) == [], 15, "the orphaned valkey to exit")
    for stale_argv in (("keys", "list", "demo"), ("usage", "flush")):
        done = run_cli(killed.env, *stale_argv)
        assert done.returncode == 1 and done.stderr.startswith(message), done.stderr

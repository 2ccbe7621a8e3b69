"""``strictgate serve`` with ``STRICTGATE_API_PROCESSES=2``, as an operator runs it: a parent
process that holds the port, the data dir and the embedded valkey, two API processes that
share the port, and one worker process; children restarted when they die, stopped in order,
and gone when the parent is killed."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from strictgate.datadir import DataDirError, lock_data_dir
from strictgate.embedded import free_port
from tests.serve_proc import (
    RECORD,
    Serve,
    Serves,
    clean_env,
    ledger_records,
    run_cli,
    valkeys_on,
    wait_for,
    written_trace_ids,
)

API = "api"
WORKER = "worker"
VALKEY = "valkey"


def children(pid: int) -> dict[str, list[int]]:
    """The child processes of ``pid`` by kind (API process, worker, valkey, other)."""
    found: dict[str, list[int]] = collections.defaultdict(list)
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    for child in pids:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:  # gone meanwhile
            continue
        if comm == "valkey-server":
            found[VALKEY].append(child)
        elif b"strictgate.api_process" in argv:
            found[API].append(child)
        elif argv[-3:-1] == [b"strictgate.cli", b"worker"]:
            found[WORKER].append(child)
        else:
            found["other"].append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_group(serve: Serve, apis: int = 2, timeout: float = 60) -> dict[str, list[int]]:
    """Wait until the parent has ``apis`` API processes, a worker and a valkey."""
    def complete() -> bool:
        kids = children(serve.proc.pid)
        return (len(kids[API]), len(kids[WORKER]), len(kids[VALKEY])) == (apis, 1, 1)

    wait_for(complete, timeout, "the API processes, the worker and valkey")
    return children(serve.proc.pid)


def established_socket_inodes(port: int) -> set[str]:
    """Inodes of the ESTABLISHED TCP sockets whose local port is ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
            inodes.add(fields[9])
    return inodes


def pids_holding_connections(pids: list[int], port: int) -> set[int]:
    """Those of ``pids`` that hold an accepted connection on ``port``."""
    inodes = established_socket_inodes(port)
    holding = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                holding.add(pid)
    return holding


def serving_pids(serve: Serve, api_pids: list[int], connections: int = 16) -> set[int]:
    """Open ``connections`` kept-alive connections, each answered 200 once; which of
    ``api_pids`` hold one of them (the kernel spreads connections by hash)."""
    clients = [httpx.Client(base_url=serve.base, timeout=30) for _ in range(connections)]
    try:
        for client in clients:
            assert client.get("/healthz").status_code == 200
        return pids_holding_connections(api_pids, serve.port)
    finally:
        for client in clients:
            client.close()


def port_is_free(port: int) -> bool:
    """Whether a plain listening socket can take ``port`` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def data_dir_is_free(data_dir: Path) -> bool:
    """Whether the data dir's lock can be taken now (it is released again)."""
    try:
        lock_data_dir(data_dir).release()
    except DataDirError:
        return False
    return True


def vm_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` in kB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("VmRSS:"))
    return int(line.split()[1])


def read_records(serve: Serve, headers: dict[str, str], count: int) -> list[str]:
    """The trace ids read back through the API once ``count`` records are there."""
    found: list[str] = []

    def enough() -> bool:
        nonlocal found
        r = httpx.get(f"{serve.base}/datasets/13/records", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        found = [x["__traceId"] for x in r.json()["records"]]
        return len(found) >= count

    wait_for(enough, 60, f"{count} records read back")
    return found


def post_batch(serve: Serve, headers: dict[str, str], request_id: str, size: int) -> int:
    """POST one batch of ``size`` records (by a new connection); the status."""
    return httpx.post(f"{serve.base}/datasets/13/batch", content=json.dumps([RECORD] * size),
                      headers={**headers, "X-Request-Id": request_id}, timeout=30).status_code


@pytest.fixture
def group(tmp_path: Path, serves: Serves) -> Serve:
    """A service with two API processes, started and healthy."""
    return serves.start(tmp_path / "var", free_port(),
                        STRICTGATE_API_PROCESSES="2").wait_healthy()


@pytest.mark.parametrize(("value", "message"), [
    ("0", "STRICTGATE_API_PROCESSES must be >= 1, got 0"),
    ("65", "STRICTGATE_API_PROCESSES must be <= 64, got 65"),
    ("two", "STRICTGATE_API_PROCESSES must be an integer, got 'two'"),
])
def test_a_bad_process_count_is_one_line_exit_2(tmp_path: Path, value: str,
                                                message: str) -> None:
    env = clean_env(STRICTGATE_DATA_DIR=str(tmp_path / "var"),
                    STRICTGATE_PORT=str(free_port()), STRICTGATE_API_PROCESSES=value)
    done = run_cli(env, "serve")
    assert (done.returncode, done.stderr, done.stdout) == (2, f"strictgate: {message}\n", "")
    assert not (tmp_path / "var").exists()


@pytest.mark.slow
def test_api_processes_serve_share_the_port_and_refuse_a_second_service(
    tmp_path: Path, serves: Serves, group: Serve,
) -> None:
    data_dir = group.data_dir
    kids = wait_for_group(group)
    assert set(kids) == {API, WORKER, VALKEY}
    # the parent imports no app code: it stays small beside its ~200 MB children
    assert vm_rss_kb(group.proc.pid) < 100_000
    headers = group.provision()
    r = httpx.post(f"{group.base}/datasets/13", content=json.dumps(RECORD),
                   headers={**headers, "X-Request-Id": "single"})
    assert r.status_code == 202, r.text
    assert group.send_batches(headers, "batch", batches=3, size=2) == {
        "batch-0": 2, "batch-1": 2, "batch-2": 2}
    # the worker process writes them to the lake; any API process reads them back
    assert sorted(read_records(group, headers, 7)) == sorted(
        ["single", *["batch-0"] * 2, *["batch-1"] * 2, *["batch-2"] * 2])
    # each API process holds connections and answers on them
    assert serving_pids(group, kids[API]) == set(kids[API])
    # the CLI finds the parent's embedded valkey through <data dir>/redis.url
    listed = run_cli(group.env, "datasets", "list", "demo")
    assert listed.returncode == 0 and "13" in listed.stdout, listed.stderr

    # a second service on the port, or on the data dir, starts nothing
    other_dir = tmp_path / "other"
    second = serves.start(other_dir, group.port, STRICTGATE_API_PROCESSES="2")
    assert second.wait_exit(60) == 1
    assert second.log().strip() == (
        f"strictgate: cannot listen on 127.0.0.1:{group.port}: Address already in use")
    assert not other_dir.exists()
    third = serves.start(data_dir, free_port(), STRICTGATE_API_PROCESSES="2")
    assert third.wait_exit(60) == 1
    assert third.log().strip() == (
        f"strictgate: data dir {data_dir.resolve()} is in use by PID {group.proc.pid}")
    assert valkeys_on(data_dir) == kids[VALKEY]

    assert group.stop() == 0
    every_child = [pid for pids in kids.values() for pid in pids]
    assert not any(alive(pid) for pid in every_child)
    assert port_is_free(group.port) and data_dir_is_free(data_dir)
    assert valkeys_on(data_dir) == [] and not (data_dir / "redis.url").exists()
    # the worker flushed usage once, after the API processes had stopped
    assert ledger_records(data_dir) == 7
    password = (data_dir / "redis-password").read_text().strip()
    assert password not in group.log()


@pytest.mark.slow
def test_sigterm_lets_an_in_flight_request_finish_before_the_worker_stops(
    group: Serve,
) -> None:
    headers = group.provision()
    wait_for_group(group)
    body = json.dumps([RECORD] * 3).encode()
    head = (f"POST /datasets/13/batch HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Type: application/json\r\n"
            f"X-Request-Id: in-flight\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", group.port), timeout=30) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.5)  # the request is being read by an API process
        group.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        sock.sendall(body[10:])
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 202 "), answer
    assert group.stop() == 0
    # admitted while stopping, counted by the worker's last usage flush (the worker stopped
    # after the API processes)
    assert ledger_records(group.data_dir) == 3


@pytest.mark.slow
def test_killed_children_are_restarted_and_nothing_is_lost(group: Serve) -> None:
    data_dir = group.data_dir
    headers = group.provision()
    kids = wait_for_group(group)

    # an API process killed: another takes its place; no request fails meanwhile (the
    # connections that reach its socket wait in the backlog the parent keeps)
    victim = kids[API][0]
    os.kill(victim, signal.SIGKILL)
    acked = group.send_batches(headers, "api-killed", batches=20, size=5)
    assert len(acked) == 20
    after = wait_for_group(group)
    assert victim not in after[API] and kids[API][1] in after[API]
    assert serving_pids(group, after[API]) == set(after[API])
    deaths = [x for x in group.log().splitlines() if "killed by SIGKILL" in x]
    assert len(deaths) == 1 and f"api process 1 (pid {victim}) killed by SIGKILL" in deaths[0]

    # the worker killed while it writes: restarted, every acknowledged record written once
    # (what the dead one had read is taken over after the 30 s reclaim time)
    acked |= group.send_batches(headers, "before-worker-kill", batches=20, size=5)
    os.kill(after[WORKER][0], signal.SIGKILL)
    acked |= group.send_batches(headers, "after-worker-kill", batches=20, size=5)
    wait_for(lambda: children(group.proc.pid)[WORKER] not in ([], after[WORKER]), 30,
             "the worker to be restarted")
    restarted = wait_for_group(group)

    # valkey killed: the parent starts it again on the same port and AOF
    os.kill(restarted[VALKEY][0], signal.SIGKILL)
    wait_for(lambda: children(group.proc.pid)[VALKEY] not in ([], restarted[VALKEY]), 30,
             "valkey to be restarted")
    # each API process's first request on its broken Redis connection may answer 503 (the
    # client retries, as with one process): every batch is acknowledged within a few tries
    for i in range(5):
        request_id = f"after-valkey-kill-{i}"
        statuses = [post_batch(group, headers, request_id, 5)]
        while statuses[-1] == 503 and len(statuses) < 5:
            statuses.append(post_batch(group, headers, request_id, 5))
        assert statuses[-1] == 202, statuses
        acked[request_id] = 5
    assert sum(acked.values()) == 325

    wait_for(lambda: len(written_trace_ids(data_dir)) >= 325, 120,
             "every acknowledged record in the lake")
    assert collections.Counter(written_trace_ids(data_dir)) == collections.Counter(acked)
    assert group.stop() == 0


@pytest.mark.slow
def test_children_exit_when_the_parent_is_killed(group: Serve) -> None:
    kids = wait_for_group(group)
    every_child = [pid for pids in kids.values() for pid in pids]
    group.proc.send_signal(signal.SIGKILL)
    group.proc.wait(10)
    start = time.monotonic()
    wait_for(lambda: not any(alive(pid) for pid in every_child), 20,
             "the children of a killed parent to exit")
    assert time.monotonic() - start < 20
    assert port_is_free(group.port) and data_dir_is_free(group.data_dir)


@pytest.mark.slow
def test_without_run_worker_there_is_no_worker_process(tmp_path: Path, serves: Serves) -> None:
    serve = serves.start(tmp_path / "var", free_port(), STRICTGATE_API_PROCESSES="1",
                         STRICTGATE_RUN_WORKER="0").wait_healthy()
    wait_for(lambda: len(children(serve.proc.pid)[API]) == 1, 30, "the API process")
    kids = children(serve.proc.pid)
    assert (len(kids[API]), kids[WORKER], len(kids[VALKEY])) == (1, [], 1)
    assert serve.stop() == 0


@pytest.mark.slow
def test_an_api_process_that_cannot_start_stops_the_service(tmp_path: Path,
                                                           serves: Serves) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text("")  # the app refuses an empty secret file
    serve = serves.start(data_dir, free_port(), STRICTGATE_API_PROCESSES="2")
    assert serve.wait_exit(120) == 3  # uvicorn's status for a failed start, as without
    assert "exited with status 3: it cannot start; stopping" in serve.log()
    assert valkeys_on(data_dir) == [] and port_is_free(serve.port)

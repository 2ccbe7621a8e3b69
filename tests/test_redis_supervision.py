"""Issue 11, items 5 (supervision, connection logs, password) from the user's side: a real
``strictgate serve`` process, its stderr, its embedded valkey killed with SIGKILL.

- the embedded valkey dies: the service logs it, restarts it on the same data dir, port and
  password, and the API answers 202 again by itself; nothing acknowledged is lost or doubled;
- an unreachable ``REDIS_URL``: one log line per change of state, naming host:port, never the
  password; when the server comes, the service recovers and reads its durability;
- the CLI still reaches (and authenticates to) the embedded server of the running service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from strictgate.embedded import EmbeddedServer, EmbeddedServerError, free_port
from tests.ingest_fixtures import SEED_BATCH, SEED_DEFINITION
from tests.serve_proc import lake_rows

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "topsecret-0123456789"


@dataclass
class Served:
    """A ``strictgate serve`` process and where its stderr goes."""

    proc: subprocess.Popen[bytes]
    base: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, *needles: str) -> list[str]:
        return [line for line in self.log().splitlines() if all(n in line for n in needles)]

    def admin(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + (self.data_dir / "admin-token").read_text().strip()}


def _env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRICTGATE_") and k != "REDIS_URL"}
    env.update(STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_PORT=str(port), **extra)
    return env


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(**env)`` starts ``strictgate serve`` and waits for /healthz; stopped after."""
    started: list[Served] = []

    def start(**extra: str) -> Served:
        data_dir = tmp_path / "var"
        port = free_port()
        log_path = tmp_path / f"serve-{len(started)}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "strictgate.cli", "serve"], cwd=ROOT,
                                    env=_env(data_dir, port, **extra), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        served = Served(proc, f"http://127.0.0.1:{port}", data_dir, log_path)
        started.append(served)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, served.log()
            try:
                if httpx.get(served.base + "/healthz", timeout=1).status_code == 200:
                    return served
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("service did not start:\n" + served.log())

    yield start
    for served in started:
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(20)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait(5)


def valkey_children(pid: int) -> list[int]:
    """PIDs of the valkey-server processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == pid and comm.startswith("valkey"):
            found.append(int(stat.parent.name))
    return found


@dataclass
class Load:
    """Keyed ingest from one thread: every request retried on 503 until a 202."""

    base: str
    key: str
    accepted: dict[str, int] = field(default_factory=dict)
    statuses: list[tuple[float, int]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.base, timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                rid, n = f"r{i}", 1 + i % 3
                i += 1
                body = [{**SEED_BATCH[0], "context": {"rid": rid, "j": j}} for j in range(n)]
                for _ in range(500):
                    try:
                        r = client.post("/datasets/13/batch", content=json.dumps(body),
                                        headers={**headers, "X-Request-Id": rid,
                                                 "Idempotency-Key": rid})
                    except httpx.HTTPError as exc:
                        self.bad.append(f"{rid}: {exc!r}")
                        return
                    self.statuses.append((time.monotonic(), r.status_code))
                    if r.status_code == 202:
                        self.accepted[rid] = n
                        break
                    if r.status_code != 503 or "Retry-After" not in r.headers:
                        self.bad.append(f"{rid}: {r.status_code} {r.text[:200]}")
                        return
                    time.sleep(0.05)
                else:
                    self.bad.append(f"{rid}: never accepted")
                    return
                time.sleep(0.005)


def test_killed_embedded_valkey_is_restarted_and_nothing_acknowledged_is_lost(
    serve: Any,
) -> None:
    svc: Served = serve()
    r = httpx.put(f"{svc.base}/admin/projects/p1/datasets/13", json=SEED_DEFINITION,
                  headers=svc.admin())
    assert r.status_code == 201, r.text
    r = httpx.post(f"{svc.base}/admin/projects/p1/keys", json={"user_id": "u1"},
                   headers=svc.admin())
    load = Load(svc.base, r.json()["api_key"])
    (old,) = valkey_children(svc.proc.pid)
    port = (svc.data_dir / "redis.url").read_text().strip().rsplit(":", 1)[1].split("/")[0]

    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        time.sleep(1.0)
        before = len(load.accepted)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        # the API answers 202 again by itself within a few seconds
        deadline = killed_at + 10
        while time.monotonic() < deadline and not any(
                at > killed_at + 0.3 and status == 202 for at, status in load.statuses):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        load.stop.set()
        thread.join(60)
    assert load.bad == []
    assert before > 0
    recovered = [at - killed_at for at, status in load.statuses
                 if status == 202 and at > killed_at + 0.3]
    assert recovered and recovered[0] < 5, recovered[:3]

    (new,) = valkey_children(svc.proc.pid)
    assert new != old
    assert httpx.get(svc.base + "/readyz").status_code == 200
    # one line for the death (with how it died), one for the restart, on the same port
    deaths = svc.lines("embedded valkey", f"pid {old}", "killed by SIGKILL")
    restarts = svc.lines("embedded valkey restarted", f"pid {new}", f"127.0.0.1:{port}")
    assert (len(deaths), len(restarts)) == (1, 1), svc.log()
    assert (svc.data_dir / "redis.url").read_text().strip().endswith(f":{port}/0")

    # acknowledged vs written: every 202 in the lake exactly once, nothing else
    expected = {(rid, j) for rid, n in load.accepted.items() for j in range(n)}
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = lake_rows(svc.data_dir, ("__traceId", "context"))
        if len(rows) >= len(expected):
            break
        time.sleep(0.2)
    written = Counter((str(x["__traceId"]), int(json.loads(x["context"])["j"])) for x in rows)
    assert set(written) == expected
    assert max(written.values()) == 1

    # the CLI reaches the restarted server (same port, same password) of the running service
    cli = subprocess.run([sys.executable, "-m", "strictgate.cli", "datasets", "list", "p1"],
                         cwd=ROOT, env=_env(svc.data_dir, 1), capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "13" in cli.stdout

    password = (svc.data_dir / "redis-password").read_text().strip()
    assert password not in svc.log()


def test_unreachable_redis_is_logged_once_per_change_with_host_port_and_no_password(
    serve: Any, tmp_path: Path,
) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    svc: Served = serve(REDIS_URL=url)
    assert httpx.get(svc.base + "/readyz").status_code == 503
    time.sleep(5)  # the worker retries every <= 2 s, the watch pings every 1 s
    where = f"127.0.0.1:{port}"
    problems = svc.lines("ConnectionError")
    assert problems, svc.log()
    assert all(where in line for line in problems), problems
    assert len(svc.lines("redis at", where, "unreachable")) == 1, svc.log()
    assert len(problems) <= 2, problems  # the watch's line, the worker's line: once each

    # the server comes (no AOF): the service recovers and says what a 2xx is worth now
    server = EmbeddedServer(tmp_path / "late", port=port, persist=False,
                            password=PASSWORD).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = httpx.get(svc.base + "/readyz")
            if r.status_code == 200 and r.json()["durability"]["redis"] == "no-aof":
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert "runs without AOF" in r.json()["durability"]["warning"]
        time.sleep(1.5)
    finally:
        server.stop()
    assert len(svc.lines("redis at", where, "reachable again")) == 1, svc.log()
    assert len(svc.lines("durability:", where, "runs without AOF")) == 1, svc.log()
    assert PASSWORD not in svc.log()


def test_a_second_server_never_runs_on_the_files_of_one_still_running(tmp_path: Path) -> None:
    """A service killed with -9 releases its data-dir lock at once while its valkey is still
    shutting down: the next start waits for that server, and refuses while it lives."""
    first = EmbeddedServer(tmp_path / "redis").start()
    try:
        assert first.pid_path.read_text().strip() == str(first.process.pid)  # type: ignore[union-attr]
        second = EmbeddedServer(tmp_path / "redis")
        assert second.previous_server_pid() == first.process.pid  # type: ignore[union-attr]
        started = time.monotonic()
        with pytest.raises(EmbeddedServerError, match=r"an earlier valkey-server \(PID \d+\) "
                                                      r"still runs on "):
            second.wait_for_previous_server(timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert second.process is None  # nothing was started
        # the earlier one going away in the meantime: the wait ends and the start goes on
        threading.Timer(0.3, first.stop).start()
        second.start()
        try:
            # it started only once the earlier one had exited
            assert first.process.poll() is not None  # type: ignore[union-attr]
            assert second.previous_server_pid() is None
            assert second.client().ping()
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_stale_pidfile_of_a_dead_server_does_not_block(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "redis").start()
    server.kill()  # SIGKILL: valkey cannot remove its pidfile
    assert server.pid_path.exists()
    again = EmbeddedServer(tmp_path / "redis")
    assert again.previous_server_pid() is None
    again.start()
    again.stop()

"""The processes of one scale-out configuration of bench/scale.py, on this machine:
``strictgate serve`` with ``STRICTGATE_API_PROCESSES=N`` and ``STRICTGATE_RUN_WORKER=0`` (N
API processes sharing the port) and M ``strictgate worker`` processes, all on one Redis
Cluster and one lake (PostgreSQL catalog; local or S3 data path), as separate machines
would run them: the same admin token and JWT secret, given in the environment.

Every process gets the same environment. The data dir matters little here: the admin token
and the JWT secret come from the environment, Redis is the cluster; what stays in it is the
usage ledger, which every usage flusher of one Redis must share (quota/flush.py takes a file
lock on it), so the workers share the API's data dir (``strictgate serve`` locks it; workers
do not).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis.crc import key_slot

from bench.local_cluster import CLUSTER_RANGES
from quota import keys
from strictgate.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
STRICTGATE = Path(sys.executable).parent / "strictgate"
PROJECT = "bench"
DATASET = "13"
START_TIMEOUT_S = 120.0


def spread_users(count: int) -> list[str]:
    """``count`` user ids whose keys (hash tag ``{<user>}``) fall on the cluster's three
    masters in turn, so the load reaches every master about equally."""
    per_range: list[list[str]] = [[] for _ in CLUSTER_RANGES]
    serial = 0
    while sum(map(len, per_range)) < count:
        user = f"scale-user-{serial}"
        serial += 1
        slot = key_slot(keys.user_tag(user).encode())
        index = next(i for i, (first, last) in enumerate(CLUSTER_RANGES)
                     if first <= slot <= last)
        if len(per_range[index]) < -(-count // len(CLUSTER_RANGES)):
            per_range[index].append(user)
    users = [u for group in zip(*per_range, strict=False) for u in group]
    users += [u for group in per_range for u in group if u not in users]
    return users[:count]


def service_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any strictgate, Redis or AWS setting, plus
    ``settings``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRICTGATE_", "AWS_")) and k != "REDIS_URL"}
    env.update(settings)
    return env


@dataclass
class Topology:
    """A running ``strictgate serve`` and its workers."""

    base: str
    admin_token: str
    serve: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def api_pids(self) -> list[int]:
        """The serve process (its API processes are below it)."""
        return [self.serve.pid]

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes (their compaction children are below them)."""
        return [w.pid for w in self.workers]

    def check_alive(self) -> None:
        """Raise SystemExit, with the log's tail, if a process has exited."""
        for proc, log in zip([self.serve, *self.workers], self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM the API (in-flight requests finish), then the workers; SIGKILL whatever
        is still running after 60 s."""
        for group in ([self.serve], self.workers):
            for proc in group:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


def start(work: Path, settings: dict[str, str], api_processes: int, workers: int) -> Topology:
    """Start the configuration: its logs in ``work``; returns once ``/readyz`` answers 200."""
    admin_token = secrets.token_urlsafe(24)
    port = free_port()
    env = service_env({
        **settings,
        "STRICTGATE_ADMIN_TOKEN": admin_token,
        "STRICTGATE_JWT_SECRET": secrets.token_urlsafe(32),
        "STRICTGATE_DATA_DIR": str(work / "var"),
        "STRICTGATE_HOST": "127.0.0.1", "STRICTGATE_PORT": str(port),
        "STRICTGATE_API_PROCESSES": str(api_processes), "STRICTGATE_RUN_WORKER": "0",
    })
    serve_log = work / "serve.log"
    topology = Topology(f"http://127.0.0.1:{port}", admin_token, _spawn(["serve"], env, serve_log),
                        logs=[serve_log])
    try:
        for index in range(workers):
            log = work / f"worker-{index}.log"
            topology.workers.append(_spawn(["worker"], env, log))
            topology.logs.append(log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            topology.check_alive()
            try:
                if httpx.get(topology.base + "/readyz", timeout=2).status_code == 200:
                    return topology
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{topology.base}/readyz did not answer 200 within "
                                 f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
    except BaseException:
        topology.stop()
        raise


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # a session of its own: one killpg stops the process and its children
    return subprocess.Popen([str(STRICTGATE), *argv], env=env, cwd=ROOT,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def provision(topology: Topology, definition: object, users: list[str]) -> dict[str, str]:
    """The dataset in project ``bench`` and one API key per user: user -> key."""
    admin = {"Authorization": f"Bearer {topology.admin_token}"}
    with httpx.Client(base_url=topology.base, headers=admin, timeout=30) as client:
        client.put(f"/admin/projects/{PROJECT}/datasets/{DATASET}",
                   json=definition).raise_for_status()
        keys = {}
        for user in users:
            answer = client.post(f"/admin/projects/{PROJECT}/keys", json={"user_id": user})
            answer.raise_for_status()
            keys[user] = str(answer.json()["api_key"])
    return keys


def used_records(topology: Topology, users: list[str]) -> int:
    """Records admitted this month for ``users``: the sum of ``used`` of the admin usage API."""
    admin = {"Authorization": f"Bearer {topology.admin_token}"}
    with httpx.Client(base_url=topology.base, headers=admin, timeout=30) as client:
        return sum(int(client.get(f"/admin/users/{user}/usage").raise_for_status()
                       .json()["used"]) for user in users)

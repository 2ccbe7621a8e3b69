"""A real Redis Cluster on this machine: 3 masters (and optionally one replica each) started
from the embedded valkey binary, slots split in thirds, joined with CLUSTER MEET.

The cluster tests (``tests/cluster_support.py`` re-exports this) and the scale-out benchmark
(``bench/scale.py``) start the same cluster from here."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import redis

from strictgate.embedded import EmbeddedServer, free_port

CLUSTER_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))
NODE_TIMEOUT_MS = 2000
"""How long a master may be unreachable before its replica takes over (cluster-node-timeout);
short, so a failover test waits seconds, not the default 15 s."""


@dataclass
class Cluster:
    """The servers of a running cluster (masters first, then their replicas)."""

    masters: list[EmbeddedServer]
    replicas: list[EmbeddedServer] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        """Ports of the masters the cluster started with."""
        return [server.port for server in self.masters]

    @property
    def url(self) -> str:
        """A URL naming one node: what ``REDIS_URL`` holds with ``STRICTGATE_REDIS_CLUSTER``."""
        return f"redis://127.0.0.1:{self.masters[0].port}/0"

    @property
    def pids(self) -> list[int]:
        """PIDs of the node processes still running (for CPU accounting)."""
        return [server.process.pid for server in [*self.masters, *self.replicas]
                if server.process is not None and server.process.poll() is None]

    def flush(self) -> None:
        """Empty every node that is a master now (a replica refuses FLUSHALL)."""
        for server in [*self.masters, *self.replicas]:
            if server.process is None or server.process.poll() is not None:
                continue
            with redis.Redis(port=server.port) as client:
                if client.info("replication")["role"] == "master":
                    client.flushall()

    def stop(self) -> None:
        """Stop every server."""
        for server in [*self.replicas, *self.masters]:
            server.stop()


def _node(base: Path, name: str, *, persist: bool) -> tuple[EmbeddedServer, int]:
    bus = free_port()
    server = EmbeddedServer(
        base / name, persist=persist,
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(bus),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS)],
    ).start()
    return server, bus


def start_cluster(base: Path, *, replicas: bool = False, persist: bool = False) -> Cluster:
    """Start 3 cluster-enabled masters (and a replica of each with ``replicas``) with their
    files under ``base``, give each master a third of the slots, join them, and wait until
    every node reports ``cluster_state:ok`` (and every replica is in sync). ``persist``: AOF
    with ``appendfsync always``, as strictgate's embedded server runs."""
    cluster = Cluster(masters=[])
    buses: list[int] = []
    try:
        for index in range(3):
            server, bus = _node(base, f"node{index}", persist=persist)
            cluster.masters.append(server)
            buses.append(bus)
        if replicas:
            for index in range(3):
                server, bus = _node(base, f"replica{index}", persist=persist)
                cluster.replicas.append(server)
                buses.append(bus)
        nodes = [*cluster.masters, *cluster.replicas]
        clients = [redis.Redis(port=s.port, decode_responses=True) for s in nodes]
        try:
            for client, (first, last) in zip(clients, CLUSTER_RANGES, strict=False):
                client.cluster("ADDSLOTSRANGE", first, last)
            for server, bus in zip(nodes[1:], buses[1:], strict=True):
                clients[0].cluster("MEET", "127.0.0.1", server.port, bus)
            _wait(lambda: all(int(c.cluster("info")["cluster_known_nodes"]) == len(nodes)
                              for c in clients), "every node to know the others")
            for replica, master in zip(clients[3:], clients[:3], strict=False):
                master_id = str(master.cluster("MYID"))
                _wait(partial(_replicate, replica, master_id), "a replica to attach")
            _wait(lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients),
                  "cluster_state:ok")
            for replica in clients[3:]:
                _wait(partial(_in_sync, replica), "replicas in sync")
        finally:
            for client in clients:
                client.close()
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _replicate(replica: redis.Redis, master_id: str) -> bool:
    """CLUSTER REPLICATE, which fails until the replica has learnt of the master."""
    try:
        replica.cluster("REPLICATE", master_id)
    except redis.ResponseError:
        return False
    return True


def _in_sync(replica: redis.Redis) -> bool:
    return bool(replica.info("replication")["master_link_status"] == "up")


def _wait(done: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.05)
    raise RuntimeError(f"cluster: timed out waiting for {what}")

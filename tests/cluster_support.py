"""A real Redis Cluster for tests: the cluster of ``bench/local_cluster.py`` (3 masters, and
optionally one replica each, from the embedded valkey binary), plus the skip for machines
where that binary cannot be had."""

from __future__ import annotations

import pytest

from bench.local_cluster import CLUSTER_RANGES, NODE_TIMEOUT_MS, Cluster, start_cluster
from strictgate.embedded import EmbeddedServerError, server_binary

__all__ = ["CLUSTER_RANGES", "NODE_TIMEOUT_MS", "Cluster", "skip_without_binary",
           "start_cluster"]


def skip_without_binary() -> None:
    """Skip the calling test where the embedded binary cannot be had."""
    try:
        server_binary()
    except EmbeddedServerError as exc:
        pytest.skip(f"no valkey-server binary for the cluster tests: {exc}")

"""Run a Lua script from this package with exactly one attempt per call.

redis-py retries a command on connection errors and timeouts (3 times by default, on every
connection of a pool). That is right for reads, wrong for a script that counts: the first
attempt may have run on the server before its reply was lost, and the retry would count the
request twice. :class:`OneShotScript` therefore sends the script outside the client's retry
machinery; the caller decides whether a second attempt is safe (see
:mod:`quota.admission`). Redirections (MOVED/ASK) and NOSCRIPT are still followed: in both
cases the server has refused the script without running it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quota.coalesce import CoalescingChannel

Arg = str | bytes | int | float
AnyRedis = aioredis.Redis | RedisCluster

MOVED_ATTEMPTS = 3
"""Sends of a script on a cluster whose slot moved (each after re-reading the slot map)."""

REFRESH_EVERY_S = 0.25
"""Least time between two re-reads of the slot map after errors."""


def pack(command: Sequence[Arg]) -> bytes:
    """``command`` as one RESP array of bulk strings (str as UTF-8, numbers as their text);
    TypeError for any other type (a bool included).

    hiredis's C packer, as redis-py's own; a Python loop over the ~23 arguments of an
    admission was a visible part of a one-record request (see bench/stages.py).
    """
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]
    return packed


def load_source(name: str) -> bytes:
    """The bytes of the Lua file ``name`` shipped in this package."""
    return resources.files("quota").joinpath(name).read_bytes()


class OneShotScript:
    """A package Lua script bound to a client, run by EVALSHA, one attempt per call."""

    def __init__(self, redis: AnyRedis, name: str, *, wait_replicas: int = 0,
                 wait_timeout_ms: int = 1000) -> None:
        self.redis = redis
        self.source = load_source(name)
        self.sha = hashlib.sha1(self.source).hexdigest()
        # on a cluster: replicas that must have the script's writes before its reply counts
        # (WAIT on the same connection), so a failover cannot lose an acknowledged admission
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        # concurrent calls share one connection and one write per event-loop turn
        self._channel: CoalescingChannel | None = None
        self._last_refresh = -1e9
        # asked once: isinstance against RedisCluster is a slow (protocol) check per call
        self._cluster = isinstance(redis, RedisCluster)

    async def preload(self) -> None:
        """SCRIPT LOAD on the server (every primary of a cluster), so EVALSHA hits at once."""
        await self.redis.script_load(self.source)

    async def run(self, keys: Sequence[str], args: Sequence[Arg],
                  deadline: float | None = None) -> Any:
        """EVALSHA the script; on NOSCRIPT (server restarted, flushed) EVAL it once.
        TimeoutError once the event loop's clock passes ``deadline``, if given."""
        try:
            return await self._send(keys, deadline, "EVALSHA", self.sha, len(keys), *keys,
                                    *args)
        except NoScriptError:
            # The server did not run anything; EVAL also caches the script for next time.
            return await self._send(keys, deadline, "EVAL", self.source, len(keys), *keys,
                                    *args)

    async def _send(self, keys: Sequence[str], deadline: float | None, *command: Arg) -> Any:
        if self._cluster:
            if deadline is None:
                return await self._send_cluster(keys[0], command)
            async with asyncio.timeout_at(deadline):
                return await self._send_cluster(keys[0], command)
        if self._channel is None:
            assert not isinstance(self.redis, RedisCluster)  # once: self._cluster is False
            self._channel = CoalescingChannel(self.redis)
        return await self._channel.call(pack(command), deadline)

    async def _send_cluster(self, key: str, command: Sequence[Arg]) -> Any:
        cluster = self.redis
        assert isinstance(cluster, RedisCluster)
        # Re-reads the slot map only when an earlier error marked it stale.
        await cluster.initialize()
        for _ in range(MOVED_ATTEMPTS):
            node = cluster.get_node_from_key(key)
            if node is None:
                raise ClusterDownError("no node serves the slot; retry")
            try:
                if self.wait_replicas:
                    return await self._run_then_wait(node, command)
                # An explicit target turns off the cluster client's own retry loop (and
                # redis-py builds node connections without retries).
                return await cluster.execute_command(*command, target_nodes=node)
            except (MovedError, ReadOnlyError):
                # refused without running: a failover or a resharding moved the slot, or
                # the node we knew as its master came back as a replica (redis-py does not
                # re-read the slot map on READONLY)
                await self._refresh_slots(cluster)
            except (ClusterDownError, TryAgainError, RedisConnectionError, RedisTimeoutError,
                    OSError):
                await self._refresh_slots(cluster)  # a later call finds the new master
                raise
        raise ClusterDownError("the slot kept moving; retry")

    async def _run_then_wait(self, node: ClusterNode, command: Sequence[Arg]) -> Any:
        """The script, then ``WAIT`` on the same connection (WAIT counts the replicas that
        have that connection's writes); :class:`ReplicationUnconfirmed` when fewer than
        :attr:`wait_replicas` confirmed within the timeout."""
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(
                pack(command) + pack(("WAIT", self.wait_replicas, self.wait_timeout_ms)),
                check_health=False)
            try:
                reply: Any = await connection.read_response()
            except ResponseError as exc:
                reply = exc
            confirmed = int(await connection.read_response())
        except BaseException:
            # replies may be left unread on it: never hand it to another caller
            await connection.disconnect()
            raise
        finally:
            node.release(connection)
        if isinstance(reply, ResponseError):
            raise reply
        if confirmed < self.wait_replicas:
            raise ReplicationUnconfirmed(
                f"{confirmed} of {self.wait_replicas} replicas confirmed the write")
        return reply

    async def _refresh_slots(self, cluster: RedisCluster) -> None:
        """Re-read the slot map (at most every :data:`REFRESH_EVERY_S`: under load every
        request of a failing slot would ask)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_refresh < REFRESH_EVERY_S:
            return
        self._last_refresh = now
        with contextlib.suppress(RedisError, OSError):
            await cluster.nodes_manager.initialize()


class ReplicationUnconfirmed(RedisError):
    """The script ran on the master, but fewer replicas than asked confirmed its writes in
    time: a failover now could lose them, so the outcome counts as unknown."""

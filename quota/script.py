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

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from quota.coalesce import CoalescingChannel

Arg = str | bytes | int | float
AnyRedis = aioredis.Redis | RedisCluster


def pack(command: Sequence[Arg]) -> bytes:
    """``command`` as one RESP array of bulk strings (str as UTF-8).

    Equivalent to redis-py's ``pack_command`` for these argument types, several times faster
    for the ~20 arguments of an admission, which matters on the hot path (see bench/quota.py).
    """
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            # refused, not stringified: a wrong value would reach the queue as its repr
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


def load_source(name: str) -> bytes:
    """The bytes of the Lua file ``name`` shipped in this package."""
    return resources.files("quota").joinpath(name).read_bytes()


class OneShotScript:
    """A package Lua script bound to a client, run by EVALSHA, one attempt per call."""

    def __init__(self, redis: AnyRedis, name: str) -> None:
        self.redis = redis
        self.source = load_source(name)
        self.sha = hashlib.sha1(self.source).hexdigest()
        # concurrent calls share one connection and one write per event-loop turn
        self._channel: CoalescingChannel | None = None

    async def preload(self) -> None:
        """SCRIPT LOAD on the server (every primary of a cluster), so EVALSHA hits at once."""
        await self.redis.script_load(self.source)

    async def run(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA the script; on NOSCRIPT (server restarted, flushed) EVAL it once."""
        try:
            return await self._send(keys, "EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # The server did not run anything; EVAL also caches the script for next time.
            return await self._send(keys, "EVAL", self.source, len(keys), *keys, *args)

    async def _send(self, keys: Sequence[str], *command: Arg) -> Any:
        if isinstance(self.redis, RedisCluster):
            return await self._send_cluster(keys[0], command)
        if self._channel is None:
            self._channel = CoalescingChannel(self.redis)
        return await self._channel.call(pack(command))

    async def _send_cluster(self, key: str, command: Sequence[Arg]) -> Any:
        cluster = self.redis
        assert isinstance(cluster, RedisCluster)
        # Re-reads the slot map only when an earlier error marked it stale.
        await cluster.initialize()
        node = cluster.get_node_from_key(key)
        # An explicit target turns off the cluster client's own retry loop (and redis-py
        # builds node connections without retries); MOVED/ASK are still followed.
        return await cluster.execute_command(*command, target_nodes=node)

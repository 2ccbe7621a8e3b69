"""Whether a Redis server answers, as seen by everything in this process that talks to it;
logged once per change of state, naming the server by ``host:port`` (never a password).

Components that meet a connection problem (the worker loop, the watch below) report it to
the :class:`RedisHealth` of their client instead of logging it themselves, so an outage is
one line when it starts and one when it ends, not a line per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from strictgate.unavailable import REDIS_FAILURES

log = logging.getLogger("strictgate.redis")

WATCH_INTERVAL_S = 1.0
REASON_CHARS = 200


def is_connection_problem(exc: BaseException) -> bool:
    """True for errors that mean "could not talk to Redis" (refused, reset, timed out, bad
    password), as opposed to an error reply of a server that answers."""
    # not every OSError: the worker's disk errors are not Redis's
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionError
                      | TimeoutError)


def client_where(client: aioredis.Redis) -> str:
    """``host:port`` (or the socket path) of ``client``'s server, from its pool's settings;
    ``cluster host:port`` (the node it was given) for a cluster client."""
    if isinstance(client, RedisCluster):
        seed = next(iter(client.nodes_manager.startup_nodes.values()), None)
        return f"cluster {seed.host}:{seed.port}" if seed is not None else "cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}"


def _reason(exc: BaseException, secret: str | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text[:REASON_CHARS]


class RedisHealth:
    """Up or down, for one server; logs each change (and only changes)."""

    def __init__(self, where: str, secret: str | None = None) -> None:
        self.where = where
        self._secret = secret
        self.up: bool | None = None  # None: not known yet
        self._down_since = 0.0
        self._reason = ""

    def failed(self, exc: BaseException) -> None:
        """Report a connection problem; logged when the server was up or not known yet, or
        when the reason changes (refused -> bad password is news)."""
        reason = _reason(exc, self._secret)
        if self.up is False and reason == self._reason:
            return
        if self.up is not False:
            self._down_since = time.monotonic()
        self.up = False
        self._reason = reason
        log.error("redis at %s unreachable: %s", self.where, reason)

    def succeeded(self) -> None:
        """Report a command that got an answer; logged when the server was down."""
        if self.up is False:
            log.warning("redis at %s reachable again after %.1f s", self.where,
                        time.monotonic() - self._down_since)
        self.up = True


_BY_WHERE: dict[str, RedisHealth] = {}


def health_of(client: aioredis.Redis) -> RedisHealth:
    """The process-wide :class:`RedisHealth` of ``client``'s server."""
    where = client_where(client)
    health = _BY_WHERE.get(where)
    if health is None:
        secret = (client.connection_kwargs if isinstance(client, RedisCluster)
                  else client.connection_pool.connection_kwargs).get("password")
        health = _BY_WHERE[where] = RedisHealth(where, str(secret) if secret else None)
    return health


async def check(client: aioredis.Redis, timeout_s: float) -> bool:
    """PING once; report the outcome to :func:`health_of` ``client``. True if it answered."""
    health = health_of(client)
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except REDIS_FAILURES as exc:
        if is_connection_problem(exc):
            health.failed(exc)
        else:  # it answered, with an error (e.g. LOADING): reachable, not ready
            health.succeeded()
        return False
    health.succeeded()
    return True


async def watch(
    client: aioredis.Redis, stop: asyncio.Event, timeout_s: float,
    on_up: Callable[[], Awaitable[None]] | None = None, interval_s: float = WATCH_INTERVAL_S,
) -> None:
    """PING every ``interval_s`` until ``stop``, so an outage is logged even when nothing
    else talks to Redis; ``on_up`` runs each time the server answers after not answering."""
    was_up = health_of(client).up
    while not stop.is_set():
        up = await check(client, timeout_s)
        if up and was_up is False and on_up is not None:
            await on_up()
        was_up = up
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)

"""Keeping per-process caches fresh: poll one Redis counter, revalidate on change.

Every registry change (dataset put/delete, key revoke) increments ``registry:generation``.
A cache asks :meth:`GenerationPoll.maybe_refresh` on each use; at most once per interval it
reads the counter (one GET) and, when the counter moved, re-checks its entries against Redis.
So a change made through any instance is in force everywhere within ``interval_s`` (0.5 s by
default), and the hot path costs one clock read in between. As a backstop against a bump lost
to a crash between the write and the increment, entries are also re-checked every
``full_every_s`` whatever the counter says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from quota.keys import registry_generation_key


async def bump_generation(redis: aioredis.Redis) -> None:
    """Announce a registry change to every process (they poll the counter)."""
    await redis.incr(registry_generation_key())


class GenerationPoll:
    """Decides when a cache must re-check its entries against Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        interval_s: float = 0.5,
        full_every_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._interval_s = interval_s
        self._full_every_s = full_every_s
        self._monotonic = monotonic
        self._value: bytes | str | None = None
        self._checked_at = -math.inf
        self._validated_at = -math.inf
        self._busy = False
        self.epoch = 0
        """Incremented before each revalidation: a cache fill that started in an older epoch
        may hold pre-change data and must not be stored."""

    def fresh(self) -> bool:
        """Whether the cache may be used without a re-check now (no Redis call needed)."""
        return self._busy or self._monotonic() - self._checked_at < self._interval_s

    async def maybe_refresh(self, revalidate: Callable[[], Awaitable[None]]) -> None:
        """Read the counter if the interval has passed; run ``revalidate`` if it moved.

        Concurrent callers do not wait for a refresh in progress: they keep using the cache,
        which is at most one interval old.
        """
        now = self._monotonic()
        if self._busy or now - self._checked_at < self._interval_s:
            return
        self._busy = True
        try:
            self._checked_at = now
            value = await self._redis.get(registry_generation_key())
            if value != self._value or now - self._validated_at >= self._full_every_s:
                self.epoch += 1
                await revalidate()
                # Only after a successful re-check: a failed one is retried next interval.
                self._value = value
                self._validated_at = now
        finally:
            self._busy = False

    async def ping(self) -> bool:
        """Whether the counter can be read (readiness)."""
        await self._redis.get(registry_generation_key())
        return True

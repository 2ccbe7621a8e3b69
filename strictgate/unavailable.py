"""Where a Redis failure becomes an answer: what counts as one (:data:`REDIS_FAILURES`),
and the one translation of it into a 503 (:func:`redis_step` on the data plane,
:func:`or_unavailable` on the admin plane). Fail closed: no answer from Redis within the
deadline is never taken as a yes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from redis.exceptions import RedisClusterException, RedisError

from strictgate.errors import ApiError

T = TypeVar("T")

REDIS_FAILURES: tuple[type[Exception], ...] = (
    RedisError, RedisClusterException, OSError, TimeoutError)
"""What a call to Redis raises when the server is down, slow, paused or unreachable."""

RETRY_AFTER_S = 1


UNAVAILABLE_MESSAGE = "Service temporarily unavailable; retry later"
INGEST_UNAVAILABLE_MESSAGE = (
    "Service temporarily unavailable; retry later with the same Idempotency-Key"
)


def unavailable(retry_after_s: int = RETRY_AFTER_S) -> ApiError:
    """503 + Retry-After: Redis did not answer within the deadline (admin, readiness)."""
    return ApiError(
        503, UNAVAILABLE_MESSAGE, "unavailable",
        headers={"Retry-After": str(max(1, retry_after_s))},
    )


def ingest_unavailable(retry_after_s: int = RETRY_AFTER_S) -> ApiError:
    """The ingest endpoints' 503. Redis did not confirm in time: the request may or may not
    have been admitted (a frozen server can still run the script later), so only a retry with
    the same Idempotency-Key is guaranteed not to count twice; the message says so."""
    return ApiError(
        503, INGEST_UNAVAILABLE_MESSAGE, "unavailable",
        headers={"Retry-After": str(max(1, retry_after_s))},
    )


async def or_unavailable(call: Awaitable[T]) -> T:
    """Await a Redis-backed admin call; a Redis failure becomes the 503 of
    :func:`unavailable`."""
    try:
        return await call
    except REDIS_FAILURES:
        raise unavailable() from None


@contextlib.asynccontextmanager
async def redis_step(deadline_s: float) -> AsyncIterator[None]:
    """A Redis-backed step of an ingest request, bounded by ``deadline_s``; a Redis failure
    (the deadline included) becomes the 503 of :func:`ingest_unavailable`."""
    try:
        # asyncio.timeout, not wait_for: no extra task per request on the hot path
        async with asyncio.timeout(deadline_s):
            yield
    except REDIS_FAILURES:
        raise ingest_unavailable() from None

"""The 503 answer used whenever Redis cannot be reached within the deadline (fail closed)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import RedisError

from strictgate.errors import ApiError

T = TypeVar("T")

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
    """Await a Redis-backed call; a Redis or socket error becomes the 503 of :func:`unavailable`."""
    try:
        return await call
    except (RedisError, OSError):
        raise unavailable() from None

"""Project API key authentication for the ingest endpoints."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.requests import Request

from admin.auth import bearer_token
from registry.apikeys import AuthError, Principal
from strictgate.context import AppContext
from strictgate.errors import ApiError
from strictgate.unavailable import ingest_unavailable

MISSING_KEY = ApiError(
    401, "Missing or invalid API key", "unauthorized",
    headers={"WWW-Authenticate": 'Bearer realm="strictgate"'},
)


async def authenticate(request: Request, ctx: AppContext) -> Principal:
    """The verified principal of the request's Bearer project key; 401 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise MISSING_KEY
    principal = ctx.keys.cached(token)
    if principal is not None:
        return principal
    try:
        # asyncio.timeout, not wait_for: no extra task per request on the hot path
        async with asyncio.timeout(ctx.settings.redis_deadline_s):
            return await ctx.keys.verify(token)
    except AuthError as exc:
        raise ApiError(
            401, exc.message, exc.code,
            headers={"WWW-Authenticate": 'Bearer realm="strictgate"'},
        ) from None
    except (RedisError, OSError, TimeoutError):
        raise ingest_unavailable() from None

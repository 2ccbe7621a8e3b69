"""Project API key authentication for the ingest endpoints."""

from __future__ import annotations

from starlette.requests import Request

from strictgate.admin.auth import bearer_token
from strictgate.context import AppContext
from strictgate.errors import ApiError
from strictgate.registry.apikeys import AuthError, Principal
from strictgate.unavailable import redis_step

MISSING_KEY = ApiError(
    401, "Missing or invalid API key", "unauthorized",
    headers={"WWW-Authenticate": 'Bearer realm="strictgate"'},
)


async def verify_key(ctx: AppContext, token: str) -> Principal:
    """The principal of a project key: from the cache of verified keys, else verified
    against Redis within the deadline (503 when Redis fails); :class:`AuthError` for a key
    that is not one (each dialect answers it in its own shape)."""
    principal = ctx.keys.cached(token)
    if principal is not None:
        return principal
    async with redis_step(ctx.settings.redis_deadline_s):
        return await ctx.keys.verify(token)


async def authenticate(request: Request, ctx: AppContext) -> Principal:
    """The verified principal of the request's Bearer project key; 401 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise MISSING_KEY
    try:
        return await verify_key(ctx, token)
    except AuthError as exc:
        raise ApiError(
            401, exc.message, exc.code,
            headers={"WWW-Authenticate": 'Bearer realm="strictgate"'},
        ) from None

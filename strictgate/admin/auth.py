"""Admin authentication: one Bearer token, compared in constant time."""

from __future__ import annotations

from starlette.requests import Request

from strictgate.context import context_of
from strictgate.errors import ApiError
from strictgate.secrets import constant_time_equals

UNAUTHORIZED = ApiError(
    401, "Invalid or missing admin token", "unauthorized",
    headers={"WWW-Authenticate": 'Bearer realm="strictgate-admin"'},
)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    raw = request.headers.get("authorization")
    if raw is None:
        return None
    scheme, _, token = raw.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_admin(request: Request) -> None:
    """Raise a 401 :class:`ApiError` unless the request carries the admin token."""
    token = bearer_token(request)
    expected = context_of(request).admin_token
    if token is None or not constant_time_equals(token, expected):
        raise UNAUTHORIZED

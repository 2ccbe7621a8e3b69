"""Admin endpoints of monthly quotas: a user's limit, and a month's usage."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota.admission import MAX_LIMIT, QuotaUnavailableError, UsageReport
from quota.keys import ID_PATTERN
from quota.periods import InvalidPeriodError, parse_period
from strictgate.admin.auth import require_admin
from strictgate.context import context_of
from strictgate.errors import ApiError, json_response
from strictgate.timestamps import utc_z
from strictgate.unavailable import unavailable

MAX_BODY_BYTES = 4096


def _user_id(request: Request) -> str:
    user_id = request.path_params["user_id"]
    if not ID_PATTERN.match(user_id):
        raise ApiError(400, "Invalid user ID", "invalid_user_id", field="user_id")
    return str(user_id)


def _bad_body(message: str) -> ApiError:
    return ApiError(400, message, "invalid_body", field="monthly_limit")


async def _monthly_limit(request: Request) -> int:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise _bad_body("Body must be a JSON object with monthly_limit")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Invalid JSON body", "invalid_json") from None
    if not isinstance(document, dict) or set(document) != {"monthly_limit"}:
        raise _bad_body("Body must be a JSON object with exactly one field: monthly_limit")
    value = document["monthly_limit"]
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_LIMIT:
        raise _bad_body(f"monthly_limit must be an integer from -1 (unlimited) to {MAX_LIMIT}")
    return value


async def put_quota(request: Request) -> Response:
    """Set a user's monthly limit (-1 = unlimited)."""
    require_admin(request)
    user_id = _user_id(request)
    limit = await _monthly_limit(request)
    try:
        await context_of(request).quota.set_limit(user_id, limit)
    except QuotaUnavailableError:
        raise unavailable() from None
    return json_response({"user_id": user_id, "monthly_limit": limit})


async def get_quota(request: Request) -> Response:
    """A user's effective monthly limit (the default when none was set)."""
    require_admin(request)
    user_id = _user_id(request)
    try:
        limit = await context_of(request).quota.get_limit(user_id)
    except QuotaUnavailableError:
        raise unavailable() from None
    return json_response({"user_id": user_id, "monthly_limit": limit})


def usage_body(user_id: str, report: UsageReport) -> dict[str, Any]:
    """The JSON shape of a usage report."""
    return {
        "user_id": user_id,
        "limit": report.limit,
        "used": report.used,
        "remaining": report.remaining,
        "period": report.period,
        "resets_at": utc_z(report.resets_at, "seconds"),
        "flushed": report.flushed,
        "unflushed": report.unflushed,
    }


async def get_usage(request: Request) -> Response:
    """Usage of a month (``?period=YYYY-MM``, default: the current UTC month)."""
    require_admin(request)
    user_id = _user_id(request)
    period = request.query_params.get("period")
    if period is not None:
        try:
            parse_period(period)
        except InvalidPeriodError:
            raise ApiError(400, "period must be YYYY-MM", "invalid_period",
                           field="period") from None
    try:
        report = await context_of(request).quota.usage(user_id, period)
    except QuotaUnavailableError:
        raise unavailable() from None
    return json_response(usage_body(user_id, report))


def routes() -> list[Route]:
    """``PUT|GET /admin/users/{user_id}/quota`` and ``GET /admin/users/{user_id}/usage``."""
    return [
        Route("/admin/users/{user_id}/quota", put_quota, methods=["PUT"], name="put_quota"),
        Route("/admin/users/{user_id}/quota", get_quota, methods=["GET"], name="get_quota"),
        Route("/admin/users/{user_id}/usage", get_usage, methods=["GET"], name="get_usage"),
    ]

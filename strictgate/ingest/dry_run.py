"""``?dry_run=true`` on every ingest route: the full verdict on a body, nothing counted,
queued or stored.

The body goes through the same steps as a real request (auth, the dataset's definition, the
dialect's envelope, validation, the ``on_invalid`` policy, the ``unknown_datasets`` policy
with nothing stored) and the answer is a 200 in one shape for every dialect::

    {"success": true, "dry_run": true,
     "outcome": "accepted" | "quarantined" | "rejected" | "quota_exceeded",
     "status": <what the real request would have answered: 202, 400 or 429>,
     "records": n, "valid": v, "invalid": i, "admitted": a, "quarantined": q,
     "error_count": e, "errors": [{"index", "code", "field", "message"}, ...],
     "errors_omitted": o, "quota": {"limit", "used", "remaining", "requested"}}

``errors`` lists every error of every invalid record (at most :data:`MAX_ERRORS`, the rest
counted in ``errors_omitted``), not only the first as a 400 does. Nothing reads or writes
the per-event id memory or the idempotency records: a dry run says what the body would do
as new records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from strictgate.context import AppContext
from strictgate.errors import ApiError, json_response
from strictgate.registry.apikeys import Principal
from strictgate.unavailable import redis_step

PARAMETER = "dry_run"
MAX_ERRORS = 10_000
"""Errors listed in a dry run's answer."""
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def wants_dry_run(request: Request) -> bool:
    """Whether the request asks for a dry run (``dry_run=true``; a value other than
    true/false/1/0, or the parameter twice, is a 400 naming it)."""
    if not request.scope.get("query_string"):
        return False  # the hot path: no query string to parse
    values = request.query_params.getlist(PARAMETER)
    if not values:
        return False
    if len(values) > 1 or values[0].lower() not in _TRUE + _FALSE:
        raise ApiError(400, "dry_run must be true or false", "invalid_dry_run",
                       field=PARAMETER)
    return values[0].lower() in _TRUE


@dataclass
class Verdict:
    """What a body would do, gathered over its datasets."""

    records: int = 0
    invalid: int = 0
    quarantined: int = 0
    rejected: bool = False
    """Some record is invalid where the policy is ``reject`` (or names no dataset)."""
    admitted: int = 0
    """Valid records, which a real request would count against the quota."""
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_errors(self, items: list[dict[str, Any]]) -> None:
        """Record error items (``index``, ``code``, ``field``, ``message``)."""
        self.error_count += len(items)
        room = MAX_ERRORS - len(self.errors)
        if room > 0:
            self.errors += items[:room]


async def answer(ctx: AppContext, principal: Principal, verdict: Verdict,
                 headers: dict[str, str]) -> Response:
    """The dry run's 200 (see the module docstring)."""
    async with redis_step(ctx.settings.redis_deadline_s):
        usage = await ctx.quota.usage(principal.user_id)
    exceeds = (usage.limit >= 0 and verdict.admitted > 0
               and usage.used + verdict.admitted > usage.limit)
    if verdict.rejected:
        outcome, status = "rejected", 400
    elif exceeds:
        outcome, status = "quota_exceeded", 429
    elif verdict.quarantined:
        outcome, status = "quarantined", 202
    else:
        outcome, status = "accepted", 202
    errors = sorted(verdict.errors, key=lambda e: int(e.get("index", 0)))
    return json_response({
        "success": True, "dry_run": True, "outcome": outcome, "status": status,
        "records": verdict.records, "valid": verdict.records - verdict.invalid,
        "invalid": verdict.invalid,
        "admitted": verdict.admitted if status == 202 else 0,
        "quarantined": verdict.quarantined if status == 202 else 0,
        "error_count": verdict.error_count, "errors": errors,
        "errors_omitted": verdict.error_count - len(errors),
        "quota": {"limit": usage.limit, "used": usage.used, "remaining": usage.remaining,
                  "requested": verdict.admitted},
    }, 200, headers)

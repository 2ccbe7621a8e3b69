"""The response shapes of the Loguro ingest endpoints, quota headers included."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from starlette.responses import Response

from strictgate.errors import ApiError, json_response
from strictgate.ingest.quarantine import Quarantined
from strictgate.timestamps import utc_z
from validator import BatchResult, RecordError

# At most this many record errors in one response; the body says how many were left out.
MAX_ERRORS_PER_RESPONSE = 100


@functools.lru_cache(maxsize=64)
def iso(moment: datetime) -> str:
    """``2026-07-01T00:00:00Z`` (cached: every 2xx of a month carries the same reset)."""
    return utc_z(moment, "seconds")


def quota_headers(limit: int, remaining: int, resets_at: datetime) -> dict[str, str]:
    """Quota state on every 2xx (-1 limit and remaining mean unlimited)."""
    return {
        "X-Quota-Limit": str(limit),
        "X-Quota-Remaining": str(remaining),
        "X-Quota-Reset": iso(resets_at),
    }


def accepted(batch: bool, count: int, headers: dict[str, str],
             quarantined: Quarantined | None = None) -> Response:
    """202 exactly as the Loguro ingest API documents it; under the ``quarantine`` policy
    also how many records were quarantined and their errors (``status`` is
    ``quarantined`` when a single record was)."""
    body: dict[str, Any] = {"success": True, "count": count, "status": "queued"} if batch \
        else {"success": True, "status": "queued"}
    if quarantined is not None:
        if not batch and count == 0:
            body["status"] = "quarantined"
        body.update(quarantined.answer())
    return json_response(body, 202, headers)


def _error_item(err: RecordError, batch: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"code": err.code, "field": err.field, "message": err.message}
    if batch:
        item = {"index": err.index, **item}
    return item


def invalid_records(result: BatchResult, batch: bool) -> ApiError:
    """400 listing every failing record (capped), the first message as the Loguro API's
    ``error``."""
    shown: Sequence[RecordError] = result.errors[:MAX_ERRORS_PER_RESPONSE]
    first = shown[0]
    return ApiError(
        400, first.message, first.code, field=first.field,
        errors=[_error_item(e, batch) for e in shown],
        extra={
            "error_count": result.error_count,
            "errors_omitted": max(0, result.error_count - len(shown)),
        },
    )


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from ``now`` to ``moment``, rounded up, at least 1: a client that waits
    that long is past ``moment`` (rounded down, it would come back just before it)."""
    micros = (moment - now) // timedelta(microseconds=1)
    return max(1, -(-micros // 1_000_000))


def quota_exceeded(
    limit: int, used: int, requested: int, remaining: int, period: str, resets_at: datetime,
    now: datetime,
) -> ApiError:
    """429 with the quota details and Retry-After (seconds from ``now``, Redis's clock when it
    refused, to the next month)."""
    retry_after = seconds_until(resets_at, now)
    return ApiError(
        429, "Monthly dataset quota exceeded", "quota_exceeded",
        headers={"Retry-After": str(retry_after), **quota_headers(limit, remaining, resets_at)},
        extra={
            "quota": {
                "limit": limit, "used": used, "requested": requested, "remaining": remaining,
                "period": period, "resets_at": iso(resets_at),
            }
        },
    )


def queue_full(retry_after_s: int) -> ApiError:
    """503 + Retry-After: the dataset's queue holds more unwritten records than
    ``STRICTGATE_MAX_QUEUE_RECORDS`` (backpressure). Nothing was queued or counted: a plain
    retry later is safe."""
    return ApiError(
        503, "Dataset queue is full; retry later", "queue_full",
        headers={"Retry-After": str(max(1, retry_after_s))},
    )


IDEMPOTENCY_CONFLICT = ApiError(
    422, "Idempotency-Key was already used with a different request", "idempotency_conflict",
    field="Idempotency-Key",
)

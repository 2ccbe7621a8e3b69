"""Seed 004's endpoints: one record or a batch, by dataset path or legacy selector.

Flow: edge checks -> auth -> dataset -> body -> validate -> admit (one Redis script) -> 202.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingest import answers
from ingest.auth import authenticate
from ingest.body import check_content_type, check_declared_length, read_body
from ingest.selectors import idempotency_key, request_digest, request_id, select_dataset
from quota.results import Admitted, Duplicate, IdempotencyConflict, QueueFull, QuotaExceeded
from registry.store import ResolvedDataset
from strictgate.context import AppContext, context_of
from strictgate.errors import ApiError
from strictgate.unavailable import ingest_unavailable
from validator import BodyError

# Bodies larger than this are validated off the event loop (smaller ones take a few ms).
THREAD_BODY_BYTES = 256 * 1024
DATASET_NOT_FOUND = ApiError(404, "Dataset schema not found", "dataset_not_found")


def _body_error(exc: BodyError) -> ApiError:
    return ApiError(exc.status, exc.message, exc.code)


async def _resolve(ctx: AppContext, project_id: str, dataset_id: str) -> ResolvedDataset:
    hit, cached = ctx.registry.cached(project_id, dataset_id)
    if hit:
        if cached is None:
            raise DATASET_NOT_FOUND
        return cached
    try:
        async with asyncio.timeout(ctx.settings.redis_deadline_s):
            resolved = await ctx.registry.resolve(project_id, dataset_id)
    except (RedisError, OSError, TimeoutError):
        raise ingest_unavailable() from None
    if resolved is None:
        raise DATASET_NOT_FOUND
    return resolved


async def ingest(request: Request, *, batch: bool, path_dataset: str | None) -> Response:
    """Validate, count and queue the records of one request."""
    ctx = context_of(request)
    settings = ctx.settings
    trace_id = request_id(request)
    request.state.request_id = trace_id
    check_declared_length(request, settings.max_body_bytes)
    check_content_type(request)
    principal = await authenticate(request, ctx)
    dataset_id = select_dataset(request, path_dataset)
    idem_key = idempotency_key(request)
    resolved = await _resolve(ctx, principal.project_id, dataset_id)
    body = await read_body(request, settings.max_body_bytes)
    validator = resolved.validator
    validate = functools.partial(validator.validate_batch, body, max_records=settings.max_records
                                 ) if batch else functools.partial(validator.validate_one, body)
    try:
        # A large body is validated in a thread, so the event loop keeps answering (RE2
        # releases the GIL; Python code yields it every few ms): no request holds it long.
        result = await asyncio.to_thread(validate) if len(body) > THREAD_BODY_BYTES \
            else validate()
    except BodyError as exc:
        raise _body_error(exc) from None
    metrics = request.app.state.metrics
    if not result.ok:
        for err in result.errors:
            metrics.child(metrics.records_rejected, principal.project_id, dataset_id,
                          err.code).inc()
        raise answers.invalid_records(result, batch)
    now = ctx.clock()
    entry: dict[str, bytes | str] = {
        "records": result.payload,
        "trace_id": trace_id,
        "dataset_version": str(resolved.version),
        "received_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "project_id": principal.project_id,
        "dataset_id": dataset_id,
        "user_id": principal.user_id,
    }
    started = time.perf_counter()
    outcome = await ctx.quota.admit(
        user_id=principal.user_id,
        project_id=principal.project_id,
        dataset_id=dataset_id,
        count=result.count,
        entry=entry,
        idempotency_key=idem_key,
        request_digest=request_digest(dataset_id, batch, body) if idem_key else "",
    )
    metrics.admission_seconds.observe(time.perf_counter() - started)
    request.state.records = result.count
    headers = {"X-Request-Id": trace_id}
    if isinstance(outcome, Admitted):
        metrics.child(metrics.records_accepted, principal.project_id, dataset_id).inc(
            result.count)
        headers.update(answers.quota_headers(outcome.limit, outcome.remaining, outcome.resets_at))
        return answers.accepted(batch, result.count, headers)
    if isinstance(outcome, Duplicate):
        headers.update(answers.quota_headers(outcome.limit, outcome.remaining, outcome.resets_at))
        headers["Idempotent-Replayed"] = "true"
        return answers.accepted(batch, outcome.count, headers)
    if isinstance(outcome, QuotaExceeded):
        metrics.child(metrics.quota_rejections, principal.project_id, dataset_id).inc()
        raise answers.quota_exceeded(
            outcome.limit, outcome.used, outcome.requested, outcome.remaining, outcome.period,
            outcome.resets_at, outcome.server_time,
        )
    if isinstance(outcome, IdempotencyConflict):
        raise answers.IDEMPOTENCY_CONFLICT
    if isinstance(outcome, QueueFull):
        raise answers.queue_full(math.ceil(outcome.retry_after_s))
    raise ingest_unavailable(math.ceil(outcome.retry_after_s))


class _IngestEndpoint:
    """A plain ASGI endpoint: Starlette passes it the scope directly, skipping the per-request
    wrappers a function endpoint gets (errors still reach the app's exception handlers)."""

    def __init__(self, batch: bool, with_path: bool) -> None:
        self.batch = batch
        self.with_path = with_path
        self.__doc__ = f"Ingest {'a batch' if batch else 'one record'}."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        path_dataset = scope["path_params"]["dataset_id"] if self.with_path else None
        response = await ingest(request, batch=self.batch, path_dataset=path_dataset)
        await response(scope, receive, send)


def routes() -> list[Route]:
    """The four ingest routes of seed 004 (legacy ones first: ``/datasets/batch`` must not be
    read as dataset ``batch``)."""
    return [
        Route("/datasets", _IngestEndpoint(False, False), methods=["POST"], name="ingest_legacy"),
        Route("/datasets/batch", _IngestEndpoint(True, False), methods=["POST"],
              name="ingest_legacy_batch"),
        Route("/datasets/{dataset_id}", _IngestEndpoint(False, True), methods=["POST"],
              name="ingest_record"),
        Route("/datasets/{dataset_id}/batch", _IngestEndpoint(True, True), methods=["POST"],
              name="ingest_batch"),
    ]

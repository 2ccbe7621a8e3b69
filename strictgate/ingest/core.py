"""The one ingest path every dialect shares.

Flow: request id -> edge checks (size, content type) -> the dialect's caller and dataset ->
resolve the definition -> read the body -> validate -> the dialect's rewrite (validated
again) -> server-assigned fields of event datasets -> admit and queue (one Redis script) ->
the dialect's answer. Errors are raised as :class:`ApiError` in the strictgate grammar; the
dialect renders them in its own shape (:func:`strictgate.ingest.front.answer`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from quota.results import Admitted, Duplicate, IdempotencyConflict, QueueFull, QuotaExceeded
from strictgate.context import AppContext, context_of
from strictgate.dialects.base import IngestRoute
from strictgate.errors import ApiError
from strictgate.ingest import answers
from strictgate.ingest.body import check_content_type, check_declared_length, read_body
from strictgate.ingest.event_records import complete_events
from strictgate.ingest.selectors import idempotency_key, request_digest, request_id
from strictgate.queue_entry import QueueEntry
from strictgate.registry.store import ResolvedDataset
from strictgate.timestamps import utc_z
from strictgate.unavailable import ingest_unavailable, redis_step
from validator import BatchResult, BodyError

# Bodies larger than this are validated off the event loop (smaller ones take a few ms).
THREAD_BODY_BYTES = 256 * 1024
DATASET_NOT_FOUND = ApiError(404, "Dataset schema not found", "dataset_not_found")
# Ids of event records sent with an Idempotency-Key are derived from it, so a replay answers
# with the ids of the first attempt without storing them.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c1f63-5a0e-4d6b-9a53-0b6f2f4f3c11")


@dataclass(frozen=True)
class Outcome:
    """An admitted (or replayed) request: what the dialects answer with."""

    count: int
    ids: list[str]
    """The server-assigned ids of event records (empty for other datasets)."""
    replayed: bool
    limit: int
    remaining: int
    resets_at: datetime


async def resolve_dataset(ctx: AppContext, project_id: str, dataset_id: str
                          ) -> ResolvedDataset:
    """The latest definition of a project's dataset (cached), 404 when there is none."""
    hit, cached = ctx.registry.cached(project_id, dataset_id)
    if hit:
        if cached is None:
            raise DATASET_NOT_FOUND
        return cached
    async with redis_step(ctx.settings.redis_deadline_s):
        resolved = await ctx.registry.resolve(project_id, dataset_id)
    if resolved is None:
        raise DATASET_NOT_FOUND
    return resolved


async def _validate(ctx: AppContext, resolved: ResolvedDataset, body: bytes, batch: bool
                    ) -> BatchResult:
    validator = resolved.validator
    validate = functools.partial(
        validator.validate_batch, body, max_records=ctx.settings.max_records,
    ) if batch else functools.partial(validator.validate_one, body)
    try:
        # A large body is validated in a thread, so the event loop keeps answering (RE2
        # releases the GIL; Python code yields it every few ms): no request holds it long.
        return await asyncio.to_thread(validate) if len(body) > THREAD_BODY_BYTES \
            else validate()
    except BodyError as exc:
        raise ApiError(exc.status, exc.message, exc.code) from None


def event_ids(count: int, user_id: str, project_id: str, idem_key: str | None
              ) -> list[str] | None:
    """Ids for ``count`` event records derived from the idempotency key (the same key
    always gives the same ids: see ``_EVENT_ID_NAMESPACE``); None without one (random ids,
    drawn in bulk by :func:`complete_events`)."""
    if idem_key is None:
        return None
    base = f"{user_id}\x00{project_id}\x00{idem_key}\x00"
    return [str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{base}{i}")) for i in range(count)]


async def submit(request: Request, route: IngestRoute, path_params: Mapping[str, str]
                 ) -> Response:
    """Validate, count and queue the records of one request; the dialect's 2xx answer."""
    ctx = context_of(request)
    settings = ctx.settings
    dialect = route.dialect
    trace_id = request_id(request)
    request.state.request_id = trace_id
    check_declared_length(request, settings.max_body_bytes)
    check_content_type(request)
    principal = await dialect.principal(request, ctx)
    dataset_id = dialect.dataset(request, route, path_params)
    idem_key = idempotency_key(request)
    resolved = await resolve_dataset(ctx, principal.project_id, dataset_id)
    if dialect.event_datasets_only and resolved.envelope != "event":
        raise ApiError(
            409, f"Dataset {dataset_id} is not an event dataset (its definition's envelope is"
            " not \"event\"), so it cannot take this route", "dataset_not_event",
            field="envelope",
        )
    body = await read_body(request, settings.max_body_bytes)
    batch = route.batch
    result = await _validate(ctx, resolved, body, batch)
    metrics = request.app.state.metrics
    if result.ok:
        rewritten = dialect.rewrite(route, result.payload)
        if rewritten is not None:
            result = await _validate(ctx, resolved, rewritten, batch)
        if result.ok:
            await dialect.check(ctx, principal, route, result.payload)
    if not result.ok:
        for err in result.errors:
            metrics.child(metrics.records_rejected, principal.project_id, dataset_id,
                          err.code).inc()
        raise answers.invalid_records(result, batch)
    received_at = utc_z(ctx.clock())
    payload = result.payload
    ids: list[str] = []
    if resolved.envelope == "event":
        payload, ids = complete_events(payload, received_at, event_ids(
            result.count, principal.user_id, principal.project_id, idem_key))
    entry = QueueEntry(
        records=payload, trace_id=trace_id, dataset_version=resolved.version,
        received_at=received_at, project_id=principal.project_id,
        dataset_id=dataset_id, user_id=principal.user_id,
    )
    started = time.perf_counter()
    outcome = await ctx.quota.admit(
        entry, count=result.count, idempotency_key=idem_key,
        request_digest=request_digest(dataset_id, batch, body) if idem_key else "",
    )
    metrics.admission_seconds.observe(time.perf_counter() - started)
    request.state.records = result.count
    headers = {"X-Request-Id": trace_id}
    if isinstance(outcome, Admitted | Duplicate):
        replayed = isinstance(outcome, Duplicate)
        count = outcome.count if isinstance(outcome, Duplicate) else result.count
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        else:
            metrics.child(metrics.records_accepted, principal.project_id, dataset_id).inc(
                result.count)
        headers.update(answers.quota_headers(outcome.limit, outcome.remaining, outcome.resets_at))
        return dialect.accepted(route, Outcome(
            count=count, ids=ids, replayed=replayed, limit=outcome.limit,
            remaining=outcome.remaining, resets_at=outcome.resets_at,
        ), headers)
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

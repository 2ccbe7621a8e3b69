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
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from quota.results import Admitted, Duplicate, IdempotencyConflict, QueueFull, QuotaExceeded
from strictgate.context import AppContext, context_of
from strictgate.dialects.base import IngestRoute, Part, Split
from strictgate.errors import ApiError, clip
from strictgate.ingest import answers
from strictgate.ingest.body import check_content_type, check_declared_length, read_body
from strictgate.ingest.event_records import complete_events
from strictgate.ingest.selectors import idempotency_key, request_digest, request_id
from strictgate.queue_entry import QueueEntry
from strictgate.registry.apikeys import Principal
from strictgate.registry.inference import InferenceError
from strictgate.registry.store import RegistryConflictError, ResolvedDataset
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
    dataset_id = "" if dialect.splits else dialect.dataset(request, route, path_params)
    idem_key = idempotency_key(request)
    if dialect.splits:
        body = await read_body(request, settings.max_body_bytes)
        split = dialect.split(route, body, settings.max_records)
        assert split is not None  # a dialect that splits always does
        return await _submit_split(request, ctx, route, principal, split, idem_key,
                                   request_digest(route.path, True, body) if idem_key else "")
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
        # every error counted, not only the listed ones (a batch lists at most 100)
        for code, n in result.error_codes.items():
            metrics.child(metrics.records_rejected, principal.project_id, dataset_id,
                          code).inc(n)
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
    return await _admit(request, ctx, route, principal, [(entry, result.count)], ids,
                        idem_key, request_digest(dataset_id, batch, body) if idem_key else "")


async def _part_dataset(ctx: AppContext, project_id: str, part: Part, split: Split
                        ) -> ResolvedDataset | None:
    """The definition a part's records are checked against: the registered one (grown by
    new columns when it was inferred and the project's ``unknown_datasets`` policy is
    ``infer``), one inferred from them under ``infer``, else None."""
    hit, cached = ctx.registry.cached(project_id, part.dataset_id)
    if not hit:
        async with redis_step(ctx.settings.redis_deadline_s):
            cached = await ctx.registry.resolve(project_id, part.dataset_id)
    # a registered or built-in definition never grows: no rows decoded, no policy read
    if cached is not None and cached.shape is None:
        return cached
    if not await _infers(ctx, project_id):
        return cached
    rows = [orjson.loads(record) for record in part.records]
    if cached is not None and not cached.grows_with(rows):
        return cached
    try:
        async with redis_step(ctx.settings.redis_deadline_s):
            resolved = await ctx.registry.infer(project_id, part.dataset_id, rows,
                                                flat=split.flat)
    except InferenceError as exc:
        index = part.indexes[exc.index] if exc.index is not None else part.indexes[0]
        where = split.record_path.format(index=index)
        field = f"{where}.{exc.field}" if exc.field else where
        raise ApiError(400, exc.message, exc.code, field=field, errors=[
            {"index": index, "code": exc.code, "field": field, "message": exc.message}],
        ) from None
    except RegistryConflictError:
        raise ApiError(409, "Too many concurrent changes to the dataset's definition; retry",
                       "conflict", field=split.name_path.format(index=part.indexes[0]),
                       headers={"Retry-After": "1"}) from None
    return resolved


async def _infers(ctx: AppContext, project_id: str) -> bool:
    """Whether the project's ``unknown_datasets`` policy is ``infer``."""
    async with redis_step(ctx.settings.redis_deadline_s):
        return await ctx.project_settings.unknown_datasets(project_id) == "infer"


async def _submit_split(request: Request, ctx: AppContext, route: IngestRoute,
                        principal: Principal, split: Split, idem_key: str | None,
                        digest: str) -> Response:
    """The core for a request whose records go to several datasets: every part resolved
    and validated, errors named by the record's place in the request, then one admission
    for all parts."""
    metrics = request.app.state.metrics
    project = principal.project_id
    errors: list[dict[str, Any]] = []
    error_count = 0
    checked: list[tuple[Part, ResolvedDataset, BatchResult]] = []
    for part in split.parts:
        resolved = await _part_dataset(ctx, project, part, split)
        if resolved is None:
            message = f"Dataset schema not found: {clip(part.dataset_id, 80)}"
            for index in part.indexes:
                errors.append({"index": index, "code": "dataset_not_found",
                               "field": split.name_path.format(index=index),
                               "message": message})
            error_count += len(part.indexes)
            continue
        result = await _validate(ctx, resolved, b"[" + b",".join(part.records) + b"]", True)
        if resolved.provisional and result.ok:  # pragma: no cover - inference guarantees it
            raise ApiError(500, "Internal server error", "internal_error")
        for code, n in result.error_codes.items():
            metrics.child(metrics.records_rejected, project, part.dataset_id, code).inc(n)
        for err in result.errors:
            where = split.record_path.format(index=part.indexes[err.index])
            errors.append({"index": part.indexes[err.index], "code": err.code,
                           "field": f"{where}.{err.field}" if err.field else where,
                           "message": err.message})
        error_count += result.error_count
        checked.append((part, resolved, result))
    if errors:
        errors.sort(key=lambda item: int(item["index"]))
        shown = errors[:answers.MAX_ERRORS_PER_RESPONSE]
        first = shown[0]
        raise ApiError(400, first["message"], first["code"], field=first["field"],
                       errors=shown, extra={"error_count": error_count,
                                            "errors_omitted": error_count - len(shown)})
    received_at = utc_z(ctx.clock())
    entries: list[tuple[QueueEntry, int]] = []
    for part, resolved, result in checked:
        payload = result.payload
        if resolved.envelope == "event":
            payload, _ = complete_events(payload, received_at, None)
        entries.append((QueueEntry(
            records=payload, trace_id=request.state.request_id,
            dataset_version=resolved.version, received_at=received_at, project_id=project,
            dataset_id=part.dataset_id, user_id=principal.user_id,
            event_type=split.event_type,
        ), result.count))
    return await _admit(request, ctx, route, principal, entries, [], idem_key, digest)


async def _admit(request: Request, ctx: AppContext, route: IngestRoute, principal: Principal,
                 entries: list[tuple[QueueEntry, int]], ids: list[str], idem_key: str | None,
                 digest: str) -> Response:
    """Admit ``entries`` (each with its record count) in one Redis script, all or none,
    and answer in the route's dialect."""
    metrics = request.app.state.metrics
    total = sum(count for _, count in entries)
    started = time.perf_counter()
    if len(entries) == 1:
        outcome = await ctx.quota.admit(entries[0][0], count=total, idempotency_key=idem_key,
                                        request_digest=digest)
    else:
        outcome = await ctx.quota.admit_many(
            [entry for entry, _ in entries], counts=[n for _, n in entries],
            idempotency_key=idem_key, request_digest=digest)
    metrics.admission_seconds.observe(time.perf_counter() - started)
    request.state.records = total
    headers = {"X-Request-Id": request.state.request_id}
    project = principal.project_id
    if isinstance(outcome, Admitted | Duplicate):
        replayed = isinstance(outcome, Duplicate)
        count = outcome.count if isinstance(outcome, Duplicate) else total
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        else:
            for entry, n in entries:
                metrics.child(metrics.records_accepted, project, entry.dataset_id).inc(n)
        headers.update(answers.quota_headers(outcome.limit, outcome.remaining, outcome.resets_at))
        return route.dialect.accepted(route, Outcome(
            count=count, ids=ids, replayed=replayed, limit=outcome.limit,
            remaining=outcome.remaining, resets_at=outcome.resets_at,
        ), headers)
    if isinstance(outcome, QuotaExceeded):
        for entry, _ in entries:
            metrics.child(metrics.quota_rejections, project, entry.dataset_id).inc()
        raise answers.quota_exceeded(
            outcome.limit, outcome.used, outcome.requested, outcome.remaining, outcome.period,
            outcome.resets_at, outcome.server_time,
        )
    if isinstance(outcome, IdempotencyConflict):
        raise answers.IDEMPOTENCY_CONFLICT
    if isinstance(outcome, QueueFull):
        raise answers.queue_full(math.ceil(outcome.retry_after_s))
    raise ingest_unavailable(math.ceil(outcome.retry_after_s))

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from quota.admission import AdmissionResult
from quota.results import (
    Admitted,
    Duplicate,
    EventsSeen,
    IdempotencyConflict,
    QueueFull,
    QuotaExceeded,
)
from strictgate.context import AppContext, context_of, utc_now
from strictgate.dialects.base import EventMeta, IngestRoute, Part, Split
from strictgate.errors import ApiError, clip
from strictgate.ingest import answers
from strictgate.ingest.body import check_content_type, check_declared_length, read_body
from strictgate.ingest.dry_run import Verdict, wants_dry_run
from strictgate.ingest.dry_run import answer as dry_run_answer
from strictgate.ingest.event_records import complete_events
from strictgate.ingest.events import CheckedPart, admit_events, assign_ids
from strictgate.ingest.quarantine import Quarantined, Separated, quarantines, separate
from strictgate.ingest.quarantine import entry_field as quarantine_field
from strictgate.ingest.selectors import idempotency_key, request_digest, request_id
from strictgate.queue_entry import QueueEntry
from strictgate.registry.apikeys import Principal
from strictgate.registry.inference import InferenceError
from strictgate.registry.store import RegistryConflictError, ResolvedDataset
from strictgate.timestamps import utc_z
from strictgate.unavailable import ingest_unavailable, redis_step
from validator import BatchResult, BodyError
from validator.errors import RecordError

# Bodies larger than this are validated off the event loop (smaller ones take a few ms).
THREAD_BODY_BYTES = 256 * 1024
DATASET_NOT_FOUND = ApiError(404, "Dataset schema not found", "dataset_not_found")
# Ids of event records sent with an Idempotency-Key are derived from it, so a replay answers
# with the ids of the first attempt without storing them.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c1f63-5a0e-4d6b-9a53-0b6f2f4f3c11")


@dataclass(slots=True)
class Outcome:
    """An admitted (or replayed) request: what the dialects answer with (read it, do not
    change it: not frozen only because a frozen dataclass costs three times as much to
    build, once per request)."""

    count: int
    ids: list[str]
    """The server-assigned ids of event records (empty for other datasets)."""
    replayed: bool
    limit: int
    remaining: int
    resets_at: datetime
    duplicates: int = 0
    """Events acknowledged without being counted or stored again (per-event ids)."""
    quarantined: Quarantined | None = None
    """The records kept in the quarantine (the dataset's ``on_invalid`` policy), if any."""
    entry_ids: tuple[str, ...] = ()
    """The queue stream id of every entry admitted (a replay: the first admission's)."""
    entry_datasets: tuple[str, ...] = ()
    """The dataset of each of ``entry_ids``, in the same order."""


class MillisText:
    """:func:`utc_z` (milliseconds) of moments given as nanoseconds since the epoch, the
    text of their second made once per second (by :func:`utc_z` itself)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def text(self, ns: int) -> str:
        """``2026-06-10T10:58:00.123Z`` of the moment ``ns``."""
        second, millis = divmod(ns // 1_000_000, 1000)
        if second != self._second:
            self._second = second
            self._prefix = utc_z(datetime.fromtimestamp(second, UTC), "seconds")[:-1]
        return f"{self._prefix}.{millis:03d}Z"


_RECEIPT = MillisText()


def receipt_time(clock: Callable[[], datetime]) -> str:
    """``utc_z(clock())``: a request's time of receipt. For the real clock the same text
    from ``time.time_ns()`` (the same clock, also cut to the millisecond below), without
    an aware datetime and its isoformat per request."""
    return _RECEIPT.text(time.time_ns()) if clock is utc_now else utc_z(clock())


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


async def _validate(ctx: AppContext, resolved: ResolvedDataset, body: bytes, batch: bool,
                    *, all_errors: bool = False, max_records: int | None = None
                    ) -> BatchResult:
    validator = resolved.validator
    validate = functools.partial(
        validator.validate_batch, body, max_records=max_records or ctx.settings.max_records,
        all_errors=all_errors,
    ) if batch else functools.partial(validator.validate_one, body, all_errors=all_errors)
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


@dataclass
class Checked:
    """A body's records after validation and the ``on_invalid`` policy."""

    count: int
    """Valid records (those to admit)."""
    payload: bytes
    """The valid records, one JSON array."""
    quarantined: Quarantined | None = None
    """The invalid records, under the ``quarantine`` policy."""
    rejected: BatchResult | None = None
    """The verdict, when invalid records refuse the request (a dry run only: a real
    request raises the 400)."""


async def submit(request: Request, route: IngestRoute, path_params: Mapping[str, str]
                 ) -> Response:
    """Validate, count and queue the records of one request; the dialect's 2xx answer (or
    the verdict of a dry run)."""
    ctx = context_of(request)
    settings = ctx.settings
    dialect = route.dialect
    trace_id = request_id(request)
    request.state.request_id = trace_id
    check_declared_length(request, settings.max_body_bytes)
    check_content_type(request)
    principal = await dialect.principal(request, ctx)
    dry_run = wants_dry_run(request)
    dataset_id = "" if dialect.splits else dialect.dataset(request, route, path_params)
    idem_key = None if dry_run else idempotency_key(request)
    if dialect.splits:
        body = await read_body(request, settings.max_body_bytes)
        split = dialect.split(route, body, dialect.max_records or settings.max_records)
        assert split is not None  # a dialect that splits always does
        return await _submit_split(request, ctx, route, principal, split, idem_key,
                                   _split_digest(request, route, body) if idem_key else "",
                                   dry_run)
    resolved = await resolve_dataset(ctx, principal.project_id, dataset_id)
    if dialect.event_datasets_only and resolved.envelope != "event":
        raise ApiError(
            409, f"Dataset {dataset_id} is not an event dataset (its definition's envelope is"
            " not \"event\"), so it cannot take this route", "dataset_not_event",
            field="envelope",
        )
    body = await read_body(request, settings.max_body_bytes)
    batch = route.batch
    checked = await _check(request, ctx, route, principal, resolved, body, dry_run)
    if dry_run:
        return await dry_run_answer(ctx, principal, _verdict(checked, batch),
                                    {"X-Request-Id": trace_id})
    received_at = receipt_time(ctx.clock)
    payload = checked.payload
    ids: list[str] = []
    if resolved.envelope == "event" and checked.count:
        payload, ids = complete_events(payload, received_at, event_ids(
            checked.count, principal.user_id, principal.project_id, idem_key))
    quarantined = checked.quarantined
    entry = QueueEntry(
        records=payload, trace_id=trace_id, dataset_version=resolved.version,
        received_at=received_at, project_id=principal.project_id,
        dataset_id=dataset_id, user_id=principal.user_id,
        quarantine=None if quarantined is None else quarantine_field(quarantined.items),
    )
    return await _admit(request, ctx, route, principal, [(entry, checked.count)], ids,
                        idem_key, request_digest(dataset_id, batch, body) if idem_key else "",
                        quarantined)


async def _check(request: Request, ctx: AppContext, route: IngestRoute, principal: Principal,
                 resolved: ResolvedDataset, body: bytes, dry_run: bool) -> Checked:
    """Validate ``body`` and apply the dataset's ``on_invalid`` policy, then the dialect's
    rewrite and last check on the valid records; a 400 when invalid records refuse it."""
    batch = route.batch
    project = principal.project_id
    result = await _validate(ctx, resolved, body, batch, all_errors=dry_run)
    checked = Checked(result.count, result.payload)
    if not result.ok:
        result, separated = await _on_invalid(request, ctx, project, resolved, body, batch,
                                              result, dry_run)
        if separated is not None:
            checked = Checked(separated.count, separated.payload, separated.quarantined)
        elif dry_run:
            return Checked(0, b"[]", rejected=result)
        else:
            raise answers.invalid_records(result, batch)
    if checked.count == 0:
        return checked
    rewritten = route.dialect.rewrite(route, checked.payload)
    if rewritten is not None:
        again = await _validate(ctx, resolved, rewritten, batch)
        if not again.ok:
            raise answers.invalid_records(again, batch)
        checked.payload = again.payload
    if not dry_run:
        await route.dialect.check(ctx, principal, route, checked.payload)
    return checked


async def _on_invalid(request: Request, ctx: AppContext, project: str,
                      resolved: ResolvedDataset, body: bytes, batch: bool, result: BatchResult,
                      dry_run: bool, *, max_records: int | None = None,
                      indexes: Sequence[int] | None = None, record_path: str | None = None
                      ) -> tuple[BatchResult, Separated | None]:
    """A body some of whose records failed: its errors counted in the metrics (not for a
    dry run), then, under the dataset's ``quarantine`` policy, its complete verdict split
    into the records to admit and those to keep (None under ``reject``, or for a
    provisional inferred definition, which never admits)."""
    if not dry_run:
        # every error counted, not only the listed ones (a batch lists at most 100)
        metrics = request.app.state.metrics
        for code, n in result.error_codes.items():
            metrics.child(metrics.records_rejected, project, resolved.dataset_id, code).inc(n)
    if resolved.provisional or not await quarantines(ctx, project, resolved.dataset_id):
        return result, None
    if not result.complete:
        result = await _validate(ctx, resolved, body, batch, all_errors=True,
                                 max_records=max_records)
    return result, separate(result, indexes=indexes, record_path=record_path)


def _listed(result: BatchResult) -> list[RecordError]:
    """A failed verdict's errors: every one of every record when it is complete (a dry
    run), else those the verdict lists."""
    if result.complete:
        return [RecordError(f.index, e.code, e.field, e.message)
                for f in result.failures() for e in f.errors]
    return list(result.errors)


def _verdict(checked: Checked, batch: bool) -> Verdict:
    """A dry run's verdict on one dataset's records."""
    verdict = Verdict()
    rejected = checked.rejected
    if rejected is not None:
        verdict.rejected = True
        verdict.records = rejected.count
        verdict.invalid = rejected.failed_records
        verdict.add_errors([{"index": e.index, "code": e.code, "field": e.field,
                             "message": e.message} for e in _listed(rejected)])
        return verdict
    quarantined = checked.quarantined or Quarantined()
    verdict.records = checked.count + quarantined.count
    verdict.invalid = verdict.quarantined = quarantined.count
    verdict.admitted = checked.count
    verdict.add_errors(quarantined.errors)
    return verdict


def _split_digest(request: Request, route: IngestRoute, body: bytes) -> str:
    """The idempotency digest of a split request: its route, its query string when it has
    one (Definite's NDJSON config travels there) and its body."""
    query = request.scope.get("query_string") or b""
    target = route.path + ("?" + query.decode("latin-1") if query else "")
    return request_digest(target, True, body)


async def _part_dataset(ctx: AppContext, project_id: str, part: Part, split: Split,
                        dry_run: bool = False) -> ResolvedDataset | None:
    """The definition a part's records are checked against: the registered one (grown by
    new columns when it was inferred and the project's ``unknown_datasets`` policy is
    ``infer``), one inferred from them under ``infer``, else None. A dry run stores no
    inferred definition."""
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
            # a dry run stores nothing: what the rows would infer, not kept
            infer = ctx.registry.preview_infer if dry_run else ctx.registry.infer
            resolved = await infer(project_id, part.dataset_id, rows, flat=split.flat)
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
                        digest: str, dry_run: bool) -> Response:
    """The core for a request whose records go to several datasets: every part resolved
    and validated (under its dataset's ``on_invalid`` policy), errors named by the record's
    place in the request, then one admission for all parts."""
    project = principal.project_id
    errors: list[dict[str, Any]] = []
    error_count = 0
    invalid = 0
    checked: list[CheckedPart] = []
    for part in split.parts:
        resolved = await _part_dataset(ctx, project, part, split, dry_run)
        if resolved is not None and (split.events is not None
                                     or route.dialect.envelope_free_only) \
                and resolved.envelope != "none":
            raise ApiError(
                409, f"Dataset {part.dataset_id} is not envelope-free (its definition's "
                f"envelope is \"{resolved.envelope}\"), so its events' payloads cannot be "
                "checked against it", "dataset_not_envelope_free",
                field=split.name_path.format(index=part.indexes[0]))
        if resolved is None:
            message = f"Dataset schema not found: {clip(part.dataset_id, 80)}"
            for index in part.indexes:
                errors.append({"index": index, "code": "dataset_not_found",
                               "field": split.name_path.format(index=index),
                               "message": message})
            error_count += len(part.indexes)
            invalid += len(part.indexes)
            continue
        body = b"[" + b",".join(part.records) + b"]"
        most = route.dialect.max_records
        result = await _validate(ctx, resolved, body, True, all_errors=dry_run,
                                 max_records=most)
        if resolved.provisional and result.ok:  # pragma: no cover - inference guarantees it
            raise ApiError(500, "Internal server error", "internal_error")
        if result.ok:
            checked.append(CheckedPart(part, resolved, result.payload, result.count))
            continue
        result, separated = await _on_invalid(
            request, ctx, project, resolved, body, True, result, dry_run, max_records=most,
            indexes=part.indexes, record_path=split.record_path)
        if separated is not None:
            checked.append(CheckedPart(
                Part(part.dataset_id, [], [part.indexes[k] for k in separated.kept]),
                resolved, separated.payload, separated.count, separated.quarantined))
            continue
        invalid += result.failed_records
        for err in _listed(result):
            where = split.record_path.format(index=part.indexes[err.index])
            errors.append({"index": part.indexes[err.index], "code": err.code,
                           "field": f"{where}.{err.field}" if err.field else where,
                           "message": err.message})
        error_count += result.error_count
    if dry_run:
        return await dry_run_answer(ctx, principal, _split_verdict(
            split, checked, errors, error_count, invalid), {"X-Request-Id":
                                                            request.state.request_id})
    if errors:
        errors.sort(key=lambda item: int(item["index"]))
        shown = errors[:answers.MAX_ERRORS_PER_RESPONSE]
        first = shown[0]
        raise ApiError(400, first["message"], first["code"], field=first["field"],
                       errors=shown, extra={"error_count": error_count,
                                            "errors_omitted": error_count - len(shown)})
    received_at = receipt_time(ctx.clock)
    quarantined = _gathered(checked)
    if split.events is not None:
        return await _submit_events(request, ctx, route, principal, split.events, checked,
                                    received_at, idem_key, digest, quarantined)
    entries: list[tuple[QueueEntry, int]] = []
    for item in checked:
        payload = item.payload
        if item.resolved.envelope == "event" and item.count:
            payload, _ = complete_events(payload, received_at, None)
        entries.append((QueueEntry(
            records=payload, trace_id=request.state.request_id,
            dataset_version=item.resolved.version, received_at=received_at,
            project_id=project, dataset_id=item.part.dataset_id, user_id=principal.user_id,
            event_type=split.event_type, merge_key=split.merge_key,
            quarantine=None if item.quarantined is None
            else quarantine_field(item.quarantined.items),
        ), item.count))
    return await _admit(request, ctx, route, principal, entries, [], idem_key, digest,
                        quarantined)


def _gathered(checked: list[CheckedPart]) -> Quarantined | None:
    """Every part's quarantined records together (None when no part quarantined any)."""
    parts = [item.quarantined for item in checked if item.quarantined is not None]
    if not parts:
        return None
    every = Quarantined()
    for part in parts:
        every.add(part)
    return every


def _split_verdict(split: Split, checked: list[CheckedPart], errors: list[dict[str, Any]],
                   error_count: int, invalid: int) -> Verdict:
    """A dry run's verdict on a request whose records go to several datasets."""
    verdict = Verdict(records=split.count, invalid=invalid, rejected=bool(errors))
    verdict.add_errors(errors)
    verdict.error_count = error_count
    quarantined = _gathered(checked)
    if quarantined is not None:
        verdict.invalid += quarantined.count
        verdict.quarantined = quarantined.count
        verdict.add_errors(quarantined.errors)
    verdict.admitted = sum(item.count for item in checked)
    return verdict


async def _submit_events(request: Request, ctx: AppContext, route: IngestRoute,
                         principal: Principal, metas: list[EventMeta],
                         checked: list[CheckedPart], received_at: str, idem_key: str | None,
                         digest: str, quarantined: Quarantined | None) -> Response:
    """Admit a request's events, each client id at most once per project
    (:mod:`strictgate.ingest.events`), and answer in the route's dialect."""
    ids = assign_ids(metas, event_ids(len(metas), principal.user_id, principal.project_id,
                                      idem_key))
    await route.dialect.before_admission(ctx, route, principal,
                                         [item.part.dataset_id for item in checked])
    started = time.perf_counter()
    admission = await admit_events(ctx, principal, checked, metas, ids,
                                   trace_id=request.state.request_id, received_at=received_at,
                                   idem_key=idem_key, digest=digest)
    request.app.state.metrics.admission_seconds.observe(time.perf_counter() - started)
    return await _answer(request, ctx, route, principal, admission.outcome,
                         admission.entries, admission.ids, admission.duplicates, quarantined)


async def _admit(request: Request, ctx: AppContext, route: IngestRoute, principal: Principal,
                 entries: list[tuple[QueueEntry, int]], ids: list[str], idem_key: str | None,
                 digest: str, quarantined: Quarantined | None = None) -> Response:
    """Admit ``entries`` (each with its record count) in one Redis script, all or none,
    and answer in the route's dialect."""
    await route.dialect.before_admission(ctx, route, principal,
                                         [entry.dataset_id for entry, _ in entries])
    started = time.perf_counter()
    if len(entries) == 1:
        outcome = await ctx.quota.admit(entries[0][0], count=entries[0][1],
                                        idempotency_key=idem_key, request_digest=digest)
    else:
        outcome = await ctx.quota.admit_many(
            [entry for entry, _ in entries], counts=[n for _, n in entries],
            idempotency_key=idem_key, request_digest=digest)
    request.app.state.metrics.admission_seconds.observe(time.perf_counter() - started)
    return await _answer(request, ctx, route, principal, outcome, entries, ids, 0,
                         quarantined)


async def _answer(request: Request, ctx: AppContext, route: IngestRoute,
                  principal: Principal, outcome: AdmissionResult,
                  entries: list[tuple[QueueEntry, int]], ids: list[str], duplicates: int,
                  quarantined: Quarantined | None = None) -> Response:
    """The dialect's answer to an admission's outcome (an :class:`ApiError` for a
    refusal)."""
    metrics = request.app.state.metrics
    total = sum(count for _, count in entries)
    request.state.records = total
    headers = {"X-Request-Id": request.state.request_id}
    project = principal.project_id
    if isinstance(outcome, (Admitted, Duplicate)):
        replayed = isinstance(outcome, Duplicate)
        count = outcome.count if isinstance(outcome, Duplicate) else total
        if replayed:
            headers["Idempotent-Replayed"] = "true"
            # the first answer again: what it did not admit or quarantine was a duplicate
            held = quarantined.count if quarantined is not None else 0
            duplicates = max(0, len(ids) - count - held)
        else:
            for entry, n in entries:
                metrics.child(metrics.records_accepted, project, entry.dataset_id).inc(n)
        headers.update(answers.quota_headers(outcome.limit, outcome.remaining, outcome.resets_at))
        # a replay's entries are those of the same request again, so in the same order
        entry_ids = tuple(e for e in outcome.entry_ids if e)
        datasets = tuple(entry.dataset_id for entry, _ in entries)
        answer = Outcome(
            count=count, ids=ids, replayed=replayed, limit=outcome.limit,
            remaining=outcome.remaining, resets_at=outcome.resets_at, duplicates=duplicates,
            quarantined=quarantined, entry_ids=entry_ids,
            entry_datasets=datasets if len(datasets) == len(entry_ids) else (),
        )
        await route.dialect.after_admission(ctx, route, principal, answer)
        return route.dialect.accepted(route, answer, headers)
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
    if isinstance(outcome, EventsSeen):  # pragma: no cover - strictgate.ingest.events retries
        raise ingest_unavailable(1)
    raise ingest_unavailable(math.ceil(outcome.retry_after_s))

"""``POST /admin/projects/{project_id}/datasets/{dataset_id}/quarantine/replay``: re-check a
dataset's quarantined records against its current definition and admit those now valid,
each exactly once (:mod:`strictgate.quarantine_replay`).

The admin token authenticates it. The optional JSON body filters what is replayed:
``{"code": <error code>, "from": <time>, "to": <time>, "limit": <records>}`` (``from``
inclusive, ``to`` exclusive, on the receipt time, RFC 3339 or ``YYYY-MM-DD`` as on the
records API; ``limit``: at most that many records, the first in receipt order). Any other
member or a bad value is a 400 whose ``field`` names it.

The answer is ``{"success": true, "replayed", "still_invalid", "skipped_already_replayed",
"duplicates", "remaining", "stopped": null | {"code", "message"}}``. A replay stopped by the
quota of a record's user still answers 200 (``stopped.code`` ``quota_exceeded``: what it admitted
before stays admitted); one stopped by a full queue or by Redis or the lake not answering
is a 503 with Retry-After and the same counts (``success`` false, the error grammar's
``error``/``errors`` beside them). With ``Accept: application/x-ndjson`` the body is one
progress line per batch of :data:`~strictgate.quarantine_replay.BATCH_ROWS` records
(``{"replayed", "still_invalid", "scanned"}``) and then that answer as the last line (the
status is 200 once the first line is sent). An unknown dataset is a 404
``dataset_not_found``; with ``STRICTGATE_SINK=jsonl`` (no lake, no quarantine table) a 501.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from strictgate.admin.auth import require_admin
from strictgate.admin.datasets import path_id, project_id_of
from strictgate.context import AppContext, context_of
from strictgate.errors import ApiError, json_response
from strictgate.ingest.records import NDJSON, wants_ndjson
from strictgate.lake.config import lake_config
from strictgate.quarantine_replay import (
    FilterError,
    Replay,
    ReplayFilter,
    ReplayReport,
    filter_of,
)
from strictgate.unavailable import or_unavailable

MAX_BODY_BYTES = 4096
# stops answered as a 503: the replay can go on once the service can again
_UNAVAILABLE_STOPS = ("queue_full", "unavailable", "lake_unavailable")


async def _document(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (no filter)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"Body larger than {MAX_BODY_BYTES} bytes", "body_too_large")
    if not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Invalid JSON body", "invalid_json") from None
    if not isinstance(document, dict):
        raise ApiError(400, "Body must be a JSON object", "invalid_json")
    return document


def parse_filter(document: Mapping[str, Any]) -> ReplayFilter:
    """The replay filter of a request body, checked: a 400 naming the first bad member."""
    try:
        return filter_of(document)
    except FilterError as exc:
        raise ApiError(400, exc.message, exc.code, field=exc.field) from None


def _dataset_id(request: Request) -> str:
    return path_id(request, "dataset_id", "Invalid dataset ID", "invalid_dataset_id")


def _answer(report: ReplayReport) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of a replay's answer (see the module docstring)."""
    body = report.summary()
    stopped = report.stopped
    if stopped is None or stopped.code not in _UNAVAILABLE_STOPS:
        return 200, body, {}
    retry_after = str(max(1, math.ceil(stopped.retry_after_s or 1)))
    error = ApiError(503, stopped.message, stopped.code).body()
    return 503, {**body, **error}, {"Retry-After": retry_after}


def new_replay(ctx: AppContext, project: str, dataset: str, flt: ReplayFilter) -> Replay:
    """A replay of the dataset's quarantine with the process's registry, quota and lake."""
    return Replay(registry=ctx.registry, quota=ctx.quota, lake=lake_config(ctx.settings),
                  project=project, dataset=dataset, flt=flt,
                  event_window_s=ctx.settings.event_id_window_s, clock=ctx.clock)


async def replay_quarantine(request: Request) -> Response:
    """Answer one replay (see the module docstring)."""
    require_admin(request)
    project = project_id_of(request)
    dataset = _dataset_id(request)
    flt = parse_filter(await _document(request))
    ctx = context_of(request)
    if await or_unavailable(ctx.registry.resolve(project, dataset)) is None:
        raise ApiError(404, "Dataset schema not found", "dataset_not_found",
                       field="dataset_id")
    if ctx.settings.sink != "lake":
        raise ApiError(501, "The quarantine needs the lake sink (STRICTGATE_SINK=lake)",
                       "read_unavailable")
    replay = new_replay(ctx, project, dataset, flt)
    if wants_ndjson(request):
        return StreamingResponse(_lines(replay), media_type=NDJSON)
    status, body, headers = _answer(await replay.run())
    return json_response(body, status, headers)


async def _lines(replay: Replay) -> AsyncIterator[bytes]:
    """One progress line per batch, then the answer."""
    async for report in replay.batches():
        yield orjson.dumps(report.progress()) + b"\n"
    yield orjson.dumps(_answer(replay.report)[1]) + b"\n"


def routes() -> list[Route]:
    """``POST /admin/projects/{project_id}/datasets/{dataset_id}/quarantine/replay``."""
    return [Route("/admin/projects/{project_id}/datasets/{dataset_id}/quarantine/replay",
                  replay_quarantine, methods=["POST"], name="replay_quarantine")]

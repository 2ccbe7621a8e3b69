"""The data plane's own way in: the four ingest routes served straight from the app's
``__call__``, without Starlette's middleware stack and router.

Every layer of that stack (server-error middleware, access log, exception middleware,
router, route) wraps ``send`` and adds a frame per message; for a one-record request that
was a tenth of the server's CPU. Here one function does what they did for these routes:
match the path, run :func:`ingest.handlers.ingest`, render an :class:`ApiError` or an
unexpected exception in the error grammar, send the answer with the server's own ``send``,
then count and log the request exactly as :class:`strictgate.access_log.AccessLog` does.
Anything else (other methods, other paths, a ``root_path``) goes through Starlette as
before.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ingest.handlers import ingest
from strictgate.access_log import record_request
from strictgate.errors import ApiError, error_response
from strictgate.request_id import HEADER, id_of_request

log = logging.getLogger("strictgate")

INTERNAL_ERROR = ApiError(500, "Internal server error", "internal_error")

# (batch, takes the dataset from the path, route template as the metrics label)
Lane = tuple[bool, bool, str]
_LEGACY: dict[str, Lane] = {
    "/datasets": (False, False, "/datasets"),
    "/datasets/batch": (True, False, "/datasets/batch"),
}
_RECORD: Lane = (False, True, "/datasets/{dataset_id}")
_BATCH: Lane = (True, True, "/datasets/{dataset_id}/batch")


def ingest_lane(scope: Scope) -> tuple[Lane, str | None] | None:
    """The ingest route a request targets and its path dataset id, or None when Starlette
    should route it (not a POST, another path, or served under a ``root_path``)."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    legacy = _LEGACY.get(path)
    if legacy is not None:
        return legacy, None
    # Starlette's "{dataset_id}" matches one non-empty segment; the same here.
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "datasets" and parts[2]:
        return _RECORD, parts[2]
    if len(parts) == 4 and parts[1] == "datasets" and parts[2] and parts[3] == "batch":
        return _BATCH, parts[2]
    return None


def _with_request_id(response: Response, scope: Scope) -> Response:
    """An error answer carries the request's id like a 202 does: the one the handler settled
    on, else a fresh one (the handler fails before it only on an invalid ``X-Request-Id``,
    which is not echoed). Also kept for the access line."""
    state: dict[str, Any] = scope.setdefault("state", {})
    state["request_id"] = id_of_request(state, None)
    response.headers[HEADER] = state["request_id"]
    return response


async def serve_ingest(app: Any, scope: Scope, receive: Receive, send: Send, lane: Lane,
                       path_dataset: str | None) -> None:
    """Answer one ingest request (see the module docstring)."""
    started = time.perf_counter()
    batch, _, route_name = lane
    scope["app"] = app
    status = 500
    try:
        try:
            response = await ingest(Request(scope, receive), batch=batch,
                                    path_dataset=path_dataset)
        except ApiError as exc:
            response = _with_request_id(error_response(exc), scope)
        except Exception:
            # Never a stack trace to a client: log it, answer with the grammar.
            log.exception("unhandled error on POST %s", scope["path"][:256])
            response = _with_request_id(error_response(INTERNAL_ERROR), scope)
        status = response.status_code
        await response(scope, receive, send)
    finally:
        record_request(scope, route_name, status, started)

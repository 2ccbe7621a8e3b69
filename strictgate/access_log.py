"""One structured log line per request: method, path, status, records, duration, request id.

Never the Authorization header, never a body. Pure ASGI (no BaseHTTPMiddleware) so the hot
path pays for one dict and one log call. The same middleware gives every answer that passes
through it (admin, probes, Starlette's own 404/405, error answers) its ``X-Request-Id``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strictgate.request_id import id_of_scope

log = logging.getLogger("strictgate.access")


class AccessLog:
    """ASGI middleware writing the access line and counting requests by route and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        state: dict[str, Any] = scope.setdefault("state", {})
        # Settled before the app runs, so an exception handler can name it too.
        state["request_id"] = id_of_scope(scope)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", state["request_id"].encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            record_request(scope, getattr(route, "path", None) or "unmatched", status, started)


def record_request(scope: Scope, route_name: str, status: int, started: float) -> None:
    """Count a finished request by route and status and write its access line
    (``started``: its ``time.perf_counter()`` at arrival)."""
    state: dict[str, Any] = scope.get("state", {})
    app = scope.get("app")
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.child(metrics.requests, route_name, str(status)).inc()
    if log.isEnabledFor(logging.INFO):
        log.info(orjson.dumps({
            "method": scope["method"],
            # the path is client input: bounded before it is logged
            "path": scope["path"][:256],
            "status": status,
            "records": state.get("records", 0),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": state.get("request_id"),
        }).decode())

"""The ingest routes of every dialect, served two ways from one table
(:data:`strictgate.dialects.INGEST_ROUTES`).

The fast lane: the app's ``__call__`` matches the path itself (:func:`ingest_lane`) and
answers (:func:`serve_ingest`) without Starlette's middleware stack and router. Every layer
of that stack (server-error middleware, access log, exception middleware, router, route)
wraps ``send`` and adds a frame per message; for a one-record request that was a tenth of
the server's CPU. Here one function does what they did: run the core
(:func:`strictgate.ingest.core.submit`), render an :class:`ApiError` or an unexpected
exception in the route's dialect, send the answer with the server's own ``send``, then count
and log the request exactly as :class:`strictgate.access_log.AccessLog` does. On the way it
reads the request's headers from a dict (:class:`LookupHeaders`) and, under uvicorn's
httptools protocol, sends the status line, headers and body in one write
(:func:`send_answer`).

The same routes as Starlette routes (:func:`starlette_routes`) serve what the fast lane
leaves to the router (a request under a ``root_path``), with the same answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

try:  # uvicorn's httptools protocol (uvicorn[standard]): its answers can leave in one write
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
except ImportError:  # pragma: no cover - served some other way: as Starlette sends
    RequestResponseCycle = None  # type: ignore[assignment,misc]

from strictgate.access_log import record_request
from strictgate.dialects import INGEST_ROUTES, IngestRoute
from strictgate.errors import ApiError
from strictgate.ingest.core import submit
from strictgate.request_id import HEADER, id_of_request

log = logging.getLogger("strictgate")

INTERNAL_ERROR = ApiError(500, "Internal server error", "internal_error")

_EXACT: dict[str, IngestRoute] = {}
_TEMPLATED: list[IngestRoute] = []
for _route in INGEST_ROUTES:
    if "{" in _route.path:
        _TEMPLATED.append(_route)
    else:
        _EXACT.setdefault(_route.path, _route)


def match(path: str) -> tuple[IngestRoute, dict[str, str]] | None:
    """The ingest route of ``path`` and its path parameters, else None. A ``{name}``
    segment matches one non-empty segment, as in Starlette."""
    exact = _EXACT.get(path)
    if exact is not None:
        return exact, {}
    parts = path.split("/")[1:]
    for route in _TEMPLATED:
        segments = route.segments
        if len(segments) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(segments, parts, strict=True):
            if want.startswith("{"):
                if not got:
                    break
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return route, params
    return None


def ingest_lane(scope: Scope) -> tuple[IngestRoute, dict[str, str]] | None:
    """The ingest route a request targets and its path parameters, or None when Starlette
    should route it (not a POST, another path, or served under a ``root_path``)."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    return match(scope["path"])


class LookupHeaders(Headers):
    """Starlette's request headers with constant-time lookups. ``Headers`` encodes the name
    and scans the list on every ``get``; an ingest request reads eight headers, which
    showed on the one-record path. Built in one pass; the same answers (the first of
    repeated names; names as the server gave them, lower case under ASGI)."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        first: dict[str, str] = {}
        for name, value in self._list:
            key = name.decode("latin-1")
            if key not in first:
                first[key] = value.decode("latin-1")
        self._first = first

    def __getitem__(self, key: str) -> str:
        value = self._first.get(key.lower())
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: Any) -> bool:
        return key.lower() in self._first

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of header ``key`` (any case), else ``default``."""
        return self._first.get(key.lower(), default)


class IngestRequest(Request):
    """The Starlette request of an ingest route, its headers a :class:`LookupHeaders`."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope, receive)
        self._headers = LookupHeaders(scope)


def _with_request_id(response: Response, scope: Scope) -> Response:
    """An error answer carries the request's id like a 202 does: the one the core settled
    on, else a fresh one (the core fails before it only on an invalid ``X-Request-Id``,
    which is not echoed). Also kept for the access line."""
    state: dict[str, Any] = scope.setdefault("state", {})
    state["request_id"] = id_of_request(state, None)
    response.headers[HEADER] = state["request_id"]
    return response


async def answer(route: IngestRoute, params: Mapping[str, str], scope: Scope,
                 receive: Receive) -> Response:
    """The response to one ingest request, errors rendered in the route's dialect."""
    try:
        return await submit(IngestRequest(scope, receive), route, params)
    except ApiError as exc:
        return _with_request_id(route.dialect.error(route, exc), scope)
    except Exception:
        # Never a stack trace to a client: log it, answer with the grammar.
        log.exception("unhandled error on POST %s", scope["path"][:256])
        return _with_request_id(route.dialect.error(route, INTERNAL_ERROR), scope)


class _OneWrite:
    """Stands in for the transport of a uvicorn (httptools) connection while one answer is
    sent: uvicorn writes the status line and headers, then the body, each with its own
    ``write``, i.e. two system calls and two TCP segments per answer; this keeps the bytes
    and writes them once, in the same order. ``close`` (a ``Connection: close`` answer)
    writes what it holds first; anything else goes to the real transport."""

    __slots__ = ("parts", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Keep ``data`` for the one write."""
        self.parts.append(data)

    def writelines(self, lines: Any) -> None:
        """Keep ``lines`` for the one write."""
        self.parts.extend(lines)

    def flush(self) -> None:
        """Write what is kept, in one write."""
        if self.parts:
            data = b"".join(self.parts)
            self.parts.clear()
            self.transport.write(data)

    def close(self) -> None:
        """Write what is kept, then close the real transport."""
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def send_answer(response: Response, scope: Scope, receive: Receive, send: Send
                      ) -> None:
    """Send ``response``: in one write when ``send`` is that of a uvicorn httptools
    connection (see :class:`_OneWrite`), else as Starlette does."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        await response(scope, receive, send)
        return
    transport = cycle.transport
    gathered = _OneWrite(transport)
    cycle.transport = gathered  # type: ignore[assignment]
    try:
        await response(scope, receive, send)
    finally:
        cycle.transport = transport
        gathered.flush()


async def serve_ingest(app: Any, scope: Scope, receive: Receive, send: Send,
                       route: IngestRoute, params: dict[str, str]) -> None:
    """Answer one ingest request on the fast lane (see the module docstring)."""
    started = time.perf_counter()
    scope["app"] = app
    status = 500
    try:
        response = await answer(route, params, scope, receive)
        status = response.status_code
        await send_answer(response, scope, receive, send)
    finally:
        record_request(scope, route.path, status, started)


class _Endpoint:
    """A plain ASGI endpoint: Starlette passes it the scope directly, skipping the
    per-request wrappers a function endpoint gets."""

    def __init__(self, route: IngestRoute) -> None:
        self.route = route
        self.__doc__ = f"{route.dialect.name}: {'a batch' if route.batch else 'one record'}."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await answer(self.route, scope["path_params"], scope, receive)
        await response(scope, receive, send)


def starlette_routes() -> list[Route]:
    """Every ingest route as a Starlette route, in the table's order."""
    return [Route(r.path, _Endpoint(r), methods=["POST"], name=r.name) for r in INGEST_ROUTES]

"""One structured log line per request: method, path, status, records, duration, request id.

Never the Authorization header, never a body. Pure ASGI (no BaseHTTPMiddleware) so the hot
path pays for one dict and one line. The same middleware gives every answer that passes
through it (admin, probes, Starlette's own 404/405, error answers) its ``X-Request-Id``.

Where the line goes: through :mod:`logging` (logger ``strictgate.access``, level INFO), unless
the process called :func:`write_lines_to`, as ``strictgate serve`` does
(:func:`strictgate.cli.configure_logging`). Then the line is formatted here, exactly as the
process's log format would render it, and written with other lines in one ``write`` (a
:class:`LineWriter`): a LogRecord, its formatting and a write per request were a tenth of
the server's CPU for a one-record request. The lines are at most
:data:`FLUSH_INTERVAL_S` late (so they may follow other log lines written meanwhile; their
times are those of the requests); those still held are written when the app's lifespan
shuts down (:func:`flushing_at_shutdown`) and at exit. A process killed hard (SIGKILL, a
crash of the interpreter) loses the lines of its last moments. A log line is not a record:
nothing admitted depends on it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import select
import time
from typing import Any, TextIO

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strictgate.request_id import id_of_scope

log = logging.getLogger("strictgate.access")

FLUSH_INTERVAL_S = 0.1
"""Longest a buffered access line waits before it is written."""

CHUNK_BYTES = select.PIPE_BUF
"""Largest single write: a write of at most PIPE_BUF bytes to a pipe is never interleaved
with another process's (API processes share the parent's stderr), so lines stay whole."""


# how logging.Formatter writes %(asctime)s by default (local time, milliseconds)
_TIME_FORMAT = logging.Formatter.default_time_format
_MSEC_FORMAT = logging.Formatter.default_msec_format or "%s,%03d"


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


class LineWriter:
    """Access lines rendered in a log format and written to a file descriptor in chunks.

    A line waits in memory until :data:`FLUSH_INTERVAL_S` after the first line of its chunk
    (a timer on the running event loop) or until the chunk is full, whichever is first;
    outside an event loop it is written at once. What is left is written at exit.
    """

    def __init__(self, stream: TextIO, fmt: str, interval_s: float = FLUSH_INTERVAL_S
                 ) -> None:
        self._stream = stream
        self._interval_s = interval_s
        # The format rendered once with placeholders: a line is then one % of the time and
        # the message (asctime as logging.Formatter writes it by default, local time).
        self._template = fmt.replace("%%", "%%%%") % {
            "asctime": "%s", "levelname": logging.getLevelName(logging.INFO),
            "name": log.name, "message": "%s"}
        self._second = -1
        self._second_text = ""
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def _asctime(self, now: float) -> str:
        """``now`` as logging's default ``%(asctime)s``: ``2026-12-07 21:11:12,419``."""
        second = int(now)
        if second != self._second:  # strftime once per second, not per line
            self._second = second
            self._second_text = time.strftime(_TIME_FORMAT, time.localtime(second))
        msecs = int((now - second) * 1000)
        return _MSEC_FORMAT % (self._second_text, msecs)

    def write(self, message: str, now: float) -> None:
        """Queue the line of ``message`` logged at ``now`` (``time.time()``)."""
        line = self._template % (self._asctime(now), message) + "\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= CHUNK_BYTES:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to flush later: now
            self.flush()
            return
        # (a timer of another loop, one that has ended, would never fire)
        if self._timer is None or self._timer_loop is not loop:
            self._timer_loop = loop
            self._timer = loop.call_later(self._interval_s, self.flush)

    def flush(self) -> None:
        """Write every queued line, in writes of at most :data:`CHUNK_BYTES`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode("utf-8", "backslashreplace")
            if chunk and size + len(data) > CHUNK_BYTES:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        try:
            # what the stream itself holds first (a print to stderr), then ours, in order
            self._stream.flush()
            fd = self._stream.fileno()
            while data:
                data = data[os.write(fd, data):]
        except (OSError, ValueError):  # closed or broken stream: the lines are dropped
            pass


_writer: LineWriter | None = None


def write_lines_to(stream: TextIO, fmt: str) -> None:
    """Write this process's access lines to ``stream`` in the log format ``fmt`` (that of
    its other log lines), buffered (see the module docstring), instead of through
    :mod:`logging`. The logger's level still decides whether they are written."""
    global _writer
    if _writer is not None:
        _writer.flush()
        atexit.unregister(_writer.flush)
    _writer = LineWriter(stream, fmt)


def flush() -> None:
    """Write the access lines still held, if this process holds any (see
    :func:`write_lines_to`)."""
    if _writer is not None:
        _writer.flush()


def flushing_at_shutdown(send: Send) -> Send:
    """The ``send`` of an ASGI lifespan, the held access lines written before its shutdown
    completes: uvicorn ends a SIGTERM by raising it again, which runs no exit handlers."""
    async def send_flushing(message: Message) -> None:
        if message["type"].startswith("lifespan.shutdown."):
            flush()
        await send(message)

    return send_flushing


def record_request(scope: Scope, route_name: str, status: int, started: float) -> None:
    """Count a finished request by route and status and write its access line
    (``started``: its ``time.perf_counter()`` at arrival)."""
    state: dict[str, Any] = scope.get("state", {})
    app = scope.get("app")
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.child(metrics.requests, route_name, str(status)).inc()
    if log.isEnabledFor(logging.INFO):
        message = orjson.dumps({
            "method": scope["method"],
            # the path is client input: bounded before it is logged
            "path": scope["path"][:256],
            "status": status,
            "records": state.get("records", 0),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": state.get("request_id"),
        }).decode()
        if _writer is not None:
            _writer.write(message, time.time())
        else:
            log.info(message)

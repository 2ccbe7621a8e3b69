"""Connection limits of the HTTP server: a header timeout and a cap answered with 503.

uvicorn's httptools protocol arms its keep-alive timer only after a response, and cancels it
on any byte received: a connection that never speaks, or sends its headers one byte at a time
(slow loris), is held forever. Past the process's open-file limit new connections are then
accepted and dropped by the event loop (clients see resets), and nothing is logged.

:class:`GuardedHttpToolsProtocol` adds:

- a header deadline: a request's head must be complete ``header_timeout_s`` after the
  connection opened (first request) or after its first byte (later requests), else the
  connection is closed;
- a cap: while more than ``max_connections`` connections are open, requests are answered
  ``503 server_busy`` in the API's error grammar, with ``Connection: close``, and connections
  opened over the cap get a short header deadline, so descriptors are handed back quickly.
  The cap is kept below the open-file limit (:func:`strictgate.server.check_cap`) so that
  these connections can still be accepted and answered;
- one log line when the cap is reached and one when the count is back under it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from strictgate.errors import ApiError, error_response
from strictgate.request_id import HEADER, id_of_scope

log = logging.getLogger("strictgate.connections")

OVER_CAP_HEADER_TIMEOUT_S = 1.0
"""Header deadline of a connection opened over the cap: a client with a request sends it at
once and gets its 503; an idle one gives its descriptor back within a second."""

BACK_UNDER_FRACTION = 0.9
"""The cap counts as cleared below this fraction of it: one pair of log lines per episode,
not one per connection at the edge."""


async def server_busy(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a request made over the connection cap."""
    request_id = id_of_scope({"headers": scope["headers"]})  # no state: the app never ran
    response = error_response(ApiError(
        503, "Server busy: too many open connections, retry shortly", "server_busy",
        headers={"Retry-After": "1", "Connection": "close", HEADER: request_id},
    ))
    await response(scope, receive, send)


class ConnectionGuard:
    """The limits shared by every connection of one server, and the cap's state."""

    def __init__(self, *, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.saturated = False
        self.busy_answers = 0

    def over_cap(self, open_connections: int) -> bool:
        """Whether a request arriving now is answered 503."""
        return open_connections > self.max_connections

    def opened(self, open_connections: int) -> bool:
        """A connection was accepted (``open_connections`` counts it); True when over the cap."""
        over = self.over_cap(open_connections)
        if over and not self.saturated:
            self.saturated = True
            log.warning(
                "connection cap reached: %d open connections (STRICTGATE_MAX_CONNECTIONS=%d); "
                "answering new requests 503 server_busy", open_connections, self.max_connections,
            )
        return over

    def closed(self, open_connections: int) -> None:
        """A connection went away (``open_connections`` no longer counts it)."""
        if self.saturated and open_connections < self.max_connections * BACK_UNDER_FRACTION:
            self.saturated = False
            log.warning(
                "connections back under the cap: %d open (STRICTGATE_MAX_CONNECTIONS=%d); "
                "%d requests were answered 503 meanwhile", open_connections,
                self.max_connections, self.busy_answers,
            )
            self.busy_answers = 0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header deadline and the cap of :attr:`guard`
    (set on a subclass made by :func:`guarded_protocol`)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._served_app = self.app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection and start its header deadline."""
        super().connection_made(transport)
        over = self.guard.opened(len(self.connections))
        self._arm_header_timer(OVER_CAP_HEADER_TIMEOUT_S if over else self.guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline and update the cap's state."""
        self._cancel_header_timer()
        super().connection_lost(exc)
        self.guard.closed(len(self.connections))

    def on_message_begin(self) -> None:
        """A request's first byte: its head is due within the header timeout (the first
        request's deadline runs from the connection's opening already)."""
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer(self.guard.header_timeout_s)

    def on_headers_complete(self) -> None:
        """The head arrived in time: serve it, or answer 503 while over the cap."""
        self._cancel_header_timer()
        if self.guard.over_cap(len(self.connections)):
            self.guard.busy_answers += 1
            self.app = server_busy
        else:
            self.app = self._served_app
        super().on_headers_complete()

    def _arm_header_timer(self, delay: float) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(delay, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head is late while a response is still going out: finish that
            # response, then close
            self.cycle.keep_alive = False
            return
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to ``guard``."""
    return type("StrictgateHttpProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})

"""Request ids: every answer carries one in ``X-Request-Id`` (the client's, when valid, else
a fresh one), and the access line and the queued records name the same id."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from typing import Any

HEADER = "X-Request-Id"
# Visible ASCII only, bounded: request ids and idempotency keys are echoed and stored.
VISIBLE_TOKEN = re.compile(r"^[\x21-\x7e]{1,200}\Z")


class RequestIds:
    """Fresh request ids: ``req_`` + 32 hex digits, a random 64-bit prefix per process and
    a counter. Unique like uuid4 without a ``getrandom`` call and a UUID object per
    request; a forked child draws its own prefix."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = "req_" + os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A request id no other request of any process has."""
        return f"{self._prefix}{next(self._counter):016x}"


_REQUEST_IDS = RequestIds()


def new_request_id() -> str:
    """A fresh request id (see :class:`RequestIds`)."""
    return _REQUEST_IDS.next()


def is_valid(given: str) -> bool:
    """Whether a client's ``X-Request-Id`` may be used as is."""
    return VISIBLE_TOKEN.match(given) is not None


def id_of_scope(scope: Mapping[str, Any]) -> str:
    """:func:`id_of_request` for an ASGI scope: its ``state``, else its ``X-Request-Id``
    header (ASGI servers give header names in lower case)."""
    given = next((value.decode("latin-1") for name, value in scope.get("headers", ())
                  if name == b"x-request-id"), None)
    return id_of_request(scope.get("state", {}), given)


def id_of_request(state: Mapping[str, Any], given: str | None) -> str:
    """The id an answer carries: the one the handler settled on (``state["request_id"]``),
    else the client's when valid, else a fresh one (an invalid one is never echoed)."""
    settled = state.get("request_id")
    if isinstance(settled, str):
        return settled
    if given is not None and is_valid(given):
        return given
    return new_request_id()

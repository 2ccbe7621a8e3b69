"""The one error grammar of the HTTP API.

Every error answer is ``{"success": false, "error": <message>, "errors": [...]}`` where each item
is ``{"code", "field", "message"}`` plus ``"index"`` on batch errors. Codes are stable
snake_case; messages never quote more than :data:`MAX_QUOTED` characters of client input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

MAX_QUOTED = 200


def clip(value: str, limit: int = MAX_QUOTED) -> str:
    """``value`` cut to ``limit`` characters, marking the cut."""
    return value if len(value) <= limit else value[:limit] + "…"


class ApiError(Exception):
    """An error answer: raise it anywhere below a handler, the app renders it."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        field: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.field = field
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        errors = self.errors
        if errors is None:
            errors = [{"code": self.code, "field": self.field, "message": self.message}]
        body: dict[str, Any] = {"success": False, "error": self.message, "errors": errors}
        body.update(self.extra)
        return body


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class JsonResponse(Response):
    """A JSON answer whose header list is built here in one pass: the same headers, in the
    same order, as Starlette's ``Response(content, status, headers, "application/json")``
    (the given ones, then ``content-length`` and ``content-type`` unless given). Starlette's
    generic version (a copy, a key list, media-type checks) was a visible part of every
    one-record request. Not for statuses without a body length (1xx, 204, 304)."""

    media_type = "application/json"

    def __init__(self, content: bytes, status_code: int, headers: Mapping[str, str]) -> None:
        self.status_code = status_code
        self.background = None
        self.body = content
        raw: list[tuple[bytes, bytes]] = []
        length = kind = True
        for name, value in headers.items():
            key = name.lower().encode("latin-1")
            if key == b"content-length":
                length = False
            elif key == b"content-type":
                kind = False
            raw.append((key, value.encode("latin-1")))
        if length:
            raw.append((b"content-length", b"%d" % len(content)))
        if kind:
            raw.append(_JSON_CONTENT_TYPE)
        self.raw_headers = raw


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response serialized with orjson."""
    content = orjson.dumps(body)
    if status < 200 or status in (204, 304):  # no length on these: Starlette's rules
        return Response(content, status_code=status, headers=dict(headers or {}),
                        media_type="application/json")
    return JsonResponse(content, status, headers or {})


def error_response(err: ApiError) -> Response:
    """Render an :class:`ApiError`."""
    return json_response(err.body(), err.status, err.headers)

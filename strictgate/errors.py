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


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response serialized with orjson."""
    return Response(
        orjson.dumps(body), status_code=status, headers=dict(headers or {}),
        media_type="application/json",
    )


def error_response(err: ApiError) -> Response:
    """Render an :class:`ApiError`."""
    return json_response(err.body(), err.status, err.headers)

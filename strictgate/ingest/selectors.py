"""Which dataset a request targets, and the request's own ids (request id, idempotency key)."""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from quota.keys import ID_PATTERN
from strictgate.errors import ApiError
from strictgate.request_id import VISIBLE_TOKEN, new_request_id

DATASET_HEADER = "x-loguro-dataset-id"
DEFAULT_DATASET = "default"

INVALID_DATASET_ID = ApiError(400, "Invalid dataset ID", "invalid_dataset_id", field="dataset_id")


def select_dataset(request: Request, path_dataset: str | None) -> str:
    """The dataset id from the path, else ``X-Loguro-Dataset-Id``, else ``default``.

    A header that disagrees with the path is a 400, not a silent choice.
    """
    header = request.headers.get(DATASET_HEADER)
    if path_dataset is not None:
        if header is not None and header != path_dataset:
            raise ApiError(
                400, "X-Loguro-Dataset-Id does not match the dataset ID in the path",
                "dataset_id_conflict", field="X-Loguro-Dataset-Id",
            )
        chosen = path_dataset
    else:
        chosen = header if header is not None else DEFAULT_DATASET
    if not ID_PATTERN.match(chosen):
        raise INVALID_DATASET_ID
    return chosen


def request_id(request: Request) -> str:
    """``X-Request-Id`` when given (visible ASCII, at most 200 chars), else a new one."""
    given = request.headers.get("x-request-id")
    if given is None:
        return new_request_id()
    if not VISIBLE_TOKEN.match(given):
        raise ApiError(
            400, "X-Request-Id must be 1-200 visible ASCII characters", "invalid_request_id",
            field="X-Request-Id",
        )
    return given


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header (visible ASCII, at most 200 chars), if any."""
    given = request.headers.get("idempotency-key")
    if given is None:
        return None
    if not VISIBLE_TOKEN.match(given):
        raise ApiError(
            400, "Idempotency-Key must be 1-200 visible ASCII characters",
            "invalid_idempotency_key", field="Idempotency-Key",
        )
    return given


def request_digest(dataset_id: str, batch: bool, body: bytes) -> str:
    """What makes two requests "the same" for an idempotency key: target and body."""
    h = hashlib.sha256()
    h.update(dataset_id.encode())
    h.update(b"\x00batch\x00" if batch else b"\x00one\x00")
    h.update(body)
    return h.hexdigest()

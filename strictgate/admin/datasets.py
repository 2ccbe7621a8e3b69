"""Admin endpoints of dataset definitions: put (with evolution report and dry run), get,
versions, list, delete."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota.keys import ID_PATTERN
from strictgate.admin.auth import require_admin
from strictgate.context import context_of
from strictgate.errors import ApiError, clip, json_response
from strictgate.registry.store import RegistryConflictError
from strictgate.unavailable import or_unavailable
from validator import DefinitionError

MAX_DEFINITION_BYTES = 1_000_000
MAX_VERSION = 2**53


def path_id(request: Request, name: str, message: str, code: str) -> str:
    """A path parameter checked against the id pattern (400 ``message`` otherwise)."""
    value = request.path_params[name]
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ApiError(400, message, code, field=name)
    return value


def project_id_of(request: Request) -> str:
    """The ``project_id`` path parameter, checked."""
    return path_id(request, "project_id", "Invalid project ID", "invalid_project_id")


def _dataset_id(request: Request) -> str:
    return path_id(request, "dataset_id", "Invalid dataset ID", "invalid_dataset_id")


def dataset_not_found() -> ApiError:
    """404 for a dataset (or version) that does not exist in this project."""
    return ApiError(404, "Dataset not found", "dataset_not_found", field="dataset_id")


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object; 400 for invalid JSON or another JSON type, 413 when
    larger than ``limit`` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"Body larger than {limit} bytes", "body_too_large")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Invalid JSON body", "invalid_json") from None
    if not isinstance(document, dict):
        raise ApiError(400, "Body must be a JSON object", "invalid_body")
    return document


def _dry_run(request: Request) -> bool:
    raw = request.query_params.get("dry_run")
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, "dry_run must be true or false", "invalid_query", field="dry_run")


def _definition_error(exc: DefinitionError) -> ApiError:
    errors = [
        {"code": "invalid_definition", "field": pointer, "message": clip(message)}
        for pointer, message in exc.problems
    ]
    return ApiError(400, "Invalid dataset definition", "invalid_definition", errors=errors)


async def put_dataset(request: Request) -> Response:
    """Create or update a definition: 201 on create, 200 on update or no change."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = _dataset_id(request)
    dry_run = _dry_run(request)
    definition = await read_json_object(request, MAX_DEFINITION_BYTES)
    try:
        result = await or_unavailable(context_of(request).registry.put(
            project_id, dataset_id, definition, dry_run=dry_run
        ))
    except DefinitionError as exc:
        raise _definition_error(exc) from None
    except RegistryConflictError:
        raise ApiError(409, "Concurrent updates of this dataset; retry", "conflict") from None
    status = 201 if result.created and result.changed and not dry_run else 200
    return json_response(result.to_json(), status)


async def get_dataset(request: Request) -> Response:
    """The latest definition with its version and timestamps."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = _dataset_id(request)
    info = await or_unavailable(context_of(request).registry.get(project_id, dataset_id))
    if info is None:
        raise dataset_not_found()
    return json_response(info.to_json())


async def get_version(request: Request) -> Response:
    """One version of a definition."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = _dataset_id(request)
    raw = request.path_params["n"]
    # 0 is the version of a built-in definition (see schemas.builtin)
    if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= MAX_VERSION:
        raise ApiError(400, "Version must be an integer >= 0", "invalid_version", field="n")
    version = await or_unavailable(
        context_of(request).registry.get_version(
            project_id, dataset_id, int(raw)
        )
    )
    if version is None:
        raise ApiError(404, "Dataset version not found", "version_not_found", field="n")
    return json_response(version.to_json())


async def list_datasets(request: Request) -> Response:
    """Every dataset of a project with its latest version."""
    require_admin(request)
    project_id = project_id_of(request)
    infos = await or_unavailable(context_of(request).registry.list(project_id))
    return json_response({
        "project_id": project_id,
        "datasets": [info.to_json(with_definition=False) for info in infos],
    })


async def delete_dataset(request: Request) -> Response:
    """Remove a dataset and its versions (records already queued or written stay)."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = _dataset_id(request)
    removed = await or_unavailable(context_of(request).registry.delete(project_id, dataset_id))
    if not removed:
        raise dataset_not_found()
    return json_response({"project_id": project_id, "dataset_id": dataset_id, "deleted": True})


def routes() -> list[Route]:
    """The dataset admin routes."""
    one = "/admin/projects/{project_id}/datasets/{dataset_id}"
    return [
        Route(one, put_dataset, methods=["PUT"], name="put_dataset"),
        Route(one, get_dataset, methods=["GET"], name="get_dataset"),
        Route(one, delete_dataset, methods=["DELETE"], name="delete_dataset"),
        Route(one + "/versions/{n}", get_version, methods=["GET"], name="get_dataset_version"),
        Route("/admin/projects/{project_id}/datasets", list_datasets, methods=["GET"],
              name="list_datasets"),
    ]

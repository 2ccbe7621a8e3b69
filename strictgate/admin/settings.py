"""Admin endpoints of settings (see :mod:`strictgate.registry.settings`): a project's
(``unknown_datasets``) and a dataset's (``on_invalid``, ``quarantine_retention_days``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strictgate.admin.auth import require_admin
from strictgate.admin.datasets import path_id, project_id_of, read_json_object
from strictgate.context import context_of
from strictgate.errors import ApiError, json_response
from strictgate.registry.settings import (
    DATASET_SETTINGS,
    PROJECT_SETTINGS,
    InvalidSettingError,
    SettingsSchema,
)
from strictgate.unavailable import or_unavailable

MAX_BODY_BYTES = 4096


async def _changes(request: Request, schema: SettingsSchema) -> dict[str, Any]:
    """The body's settings, checked before anything is read from Redis: 400 listing every
    problem (the first names the answer's code and field)."""
    document = await read_json_object(request, MAX_BODY_BYTES)
    try:
        return dict(schema.parse(document))
    except InvalidSettingError as exc:
        code, field, message = exc.problems[0]
        raise ApiError(400, message, code, field=field, errors=[
            {"code": c, "field": f, "message": m} for c, f, m in exc.problems]) from None


def _dataset_id(request: Request) -> str:
    return path_id(request, "dataset_id", "Invalid dataset ID", "invalid_dataset_id")


def _no_such_dataset() -> ApiError:
    # what ingest answers for a dataset the project does not have
    return ApiError(404, "Dataset schema not found", "dataset_not_found", field="dataset_id")


async def put_settings(request: Request) -> Response:
    """Set the project settings the body names (the others keep their values); answers
    every setting now in force."""
    require_admin(request)
    project_id = project_id_of(request)
    changes = await _changes(request, PROJECT_SETTINGS)
    store = context_of(request).registry.settings
    settings = await or_unavailable(store.set(project_id, changes))
    return json_response(settings.to_json())


async def get_settings(request: Request) -> Response:
    """The project's settings, defaults included."""
    require_admin(request)
    project_id = project_id_of(request)
    settings = await or_unavailable(context_of(request).registry.settings.read(project_id))
    return json_response(settings.to_json())


async def put_dataset_settings(request: Request) -> Response:
    """Set the dataset settings the body names (the others keep their values); answers
    every setting now in force. 404 when the project has no such dataset."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = _dataset_id(request)
    changes = await _changes(request, DATASET_SETTINGS)
    store = context_of(request).dataset_settings
    settings = await or_unavailable(store.set(project_id, dataset_id, changes))
    if settings is None:
        raise _no_such_dataset()
    return json_response(settings.to_json())


async def get_dataset_settings(request: Request) -> Response:
    """The dataset's settings, defaults included; 404 when the project has no such
    dataset."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = _dataset_id(request)
    store = context_of(request).dataset_settings
    settings = await or_unavailable(store.read(project_id, dataset_id))
    if settings is None:
        raise _no_such_dataset()
    return json_response(settings.to_json())


def routes() -> list[Route]:
    """``PUT|GET /admin/projects/{project_id}/settings`` and
    ``PUT|GET /admin/projects/{project_id}/datasets/{dataset_id}/settings``."""
    project = "/admin/projects/{project_id}/settings"
    dataset = "/admin/projects/{project_id}/datasets/{dataset_id}/settings"
    return [
        Route(project, put_settings, methods=["PUT"], name="put_project_settings"),
        Route(project, get_settings, methods=["GET"], name="get_project_settings"),
        Route(dataset, put_dataset_settings, methods=["PUT"], name="put_dataset_settings"),
        Route(dataset, get_dataset_settings, methods=["GET"], name="get_dataset_settings"),
    ]

"""Admin endpoints of project settings: ``unknown_datasets`` (``reject`` or ``infer``, see
:mod:`strictgate.registry.settings`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strictgate.admin.auth import require_admin
from strictgate.admin.datasets import project_id_of, read_json_object
from strictgate.context import context_of
from strictgate.errors import ApiError, json_response
from strictgate.registry.settings import InvalidSettingError, parse_changes
from strictgate.unavailable import or_unavailable

MAX_BODY_BYTES = 4096


async def put_settings(request: Request) -> Response:
    """Set the settings the body names (the others keep their values); answers every
    setting now in force."""
    require_admin(request)
    project_id = project_id_of(request)
    document = await read_json_object(request, MAX_BODY_BYTES)
    try:
        changes = parse_changes(document)
    except InvalidSettingError as exc:
        first = exc.problems[0]
        raise ApiError(400, first[2], first[0], field=first[1], errors=[
            {"code": code, "field": field, "message": message}
            for code, field, message in exc.problems]) from None
    store = context_of(request).registry.settings
    settings = await or_unavailable(store.set(project_id, changes))
    return json_response(settings.to_json())


async def get_settings(request: Request) -> Response:
    """The project's settings, defaults included."""
    require_admin(request)
    project_id = project_id_of(request)
    settings = await or_unavailable(context_of(request).registry.settings.read(project_id))
    return json_response(settings.to_json())


def routes() -> list[Route]:
    """``PUT|GET /admin/projects/{project_id}/settings``."""
    path = "/admin/projects/{project_id}/settings"
    return [
        Route(path, put_settings, methods=["PUT"], name="put_project_settings"),
        Route(path, get_settings, methods=["GET"], name="get_project_settings"),
    ]

"""Admin endpoints of project API keys: create (the token is shown once), list, revoke."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota.keys import ID_PATTERN
from strictgate.admin.auth import require_admin
from strictgate.admin.datasets import path_id, project_id_of, read_json_object
from strictgate.context import context_of
from strictgate.errors import ApiError, json_response
from strictgate.unavailable import or_unavailable

MAX_BODY_BYTES = 4096


async def create_key(request: Request) -> Response:
    """``{"user_id": ...}`` -> 201 ``{"key_id", "api_key"}``."""
    require_admin(request)
    project_id = project_id_of(request)
    body = await read_json_object(request, MAX_BODY_BYTES)
    user_id = body.get("user_id")
    if set(body) != {"user_id"}:
        raise ApiError(400, "Body must be a JSON object with exactly one field: user_id",
                       "invalid_body", field="user_id")
    if not isinstance(user_id, str) or not ID_PATTERN.match(user_id):
        raise ApiError(400, "Invalid user ID", "invalid_user_id", field="user_id")
    created = await or_unavailable(context_of(request).keys.create(project_id, user_id))
    return json_response(
        {"key_id": created.key_id, "api_key": created.api_key, "project_id": project_id,
         "user_id": user_id},
        201,
    )


async def list_keys(request: Request) -> Response:
    """The live keys of a project, without secrets."""
    require_admin(request)
    project_id = project_id_of(request)
    infos = await or_unavailable(context_of(request).keys.list(project_id))
    return json_response({"project_id": project_id, "keys": [i.to_json() for i in infos]})


async def revoke_key(request: Request) -> Response:
    """Revoke a key; in force on every instance within a second."""
    require_admin(request)
    project_id = project_id_of(request)
    key_id = path_id(request, "key_id", "Invalid key ID", "invalid_key_id")
    revoked = await or_unavailable(context_of(request).keys.revoke(project_id, key_id))
    if not revoked:
        raise ApiError(404, "API key not found", "key_not_found", field="key_id")
    return json_response({"project_id": project_id, "key_id": key_id, "revoked": True})


def routes() -> list[Route]:
    """The key admin routes."""
    return [
        Route("/admin/projects/{project_id}/keys", create_key, methods=["POST"],
              name="create_key"),
        Route("/admin/projects/{project_id}/keys", list_keys, methods=["GET"], name="list_keys"),
        Route("/admin/projects/{project_id}/keys/{key_id}", revoke_key, methods=["DELETE"],
              name="revoke_key"),
    ]

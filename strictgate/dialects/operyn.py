"""The Operyn ingestion API: ``POST /events/{logs,metrics,deployments}`` (one event, 202
``{"id", "queued": true}``) and ``.../batch`` (an array, 202 ``{"accepted": n}``).

- Auth: the project API key in ``x-api-key`` (``Authorization: Bearer`` works too); missing
  or invalid: 401 ``{"statusCode": 401, "message": "Invalid or missing API key"}``.
  ``x-organization-id`` names the project; when sent it must be the key's project, else 403
  ``{"statusCode": 403, "message": "Organization does not match API key"}``.
- Open mode (``STRICTGATE_OPEN_PROJECT``): a request without a key writes to that project as
  user ``anonymous``, which takes events from at most :data:`OPEN_PROJECT_SERVICES`
  services, as Operyn's default organization does.
- Datasets: the project's ``logs``, ``metrics`` and ``deployments`` (built in, or the
  project's own definition of one of them, which must keep the ``event`` envelope: the
  server assigns each event its ``id`` and, when absent, its ``timestamp``).
- ``service`` is trimmed, as Operyn does, before it is validated again and stored.
- Errors: ``{"statusCode", "message", "errors"}``; a 400's message is
  ``Invalid log event: <the first error>`` (metric, deployment), its ``errors`` the
  strictgate error items (with ``index`` in a batch). Unknown fields are errors (Operyn's
  Zod schemas strip them silently; strictgate refuses them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response

from quota import keys
from strictgate.admin.auth import bearer_token
from strictgate.dialects.base import Dialect, IngestRoute
from strictgate.errors import ApiError, clip, json_response
from strictgate.ingest.auth import verify_key
from strictgate.registry.apikeys import AuthError, Principal
from strictgate.unavailable import redis_step

if TYPE_CHECKING:
    from strictgate.context import AppContext
    from strictgate.ingest.core import Outcome

# (dataset, the event's name in messages)
KINDS = (("logs", "log"), ("metrics", "metric"), ("deployments", "deployment"))
OPEN_PROJECT_SERVICES = 5
ANONYMOUS_USER = "anonymous"

UNAUTHORIZED = ApiError(401, "Invalid or missing API key", "unauthorized")
ORG_MISMATCH = ApiError(403, "Organization does not match API key", "organization_mismatch",
                        field="x-organization-id")
# the Operyn docs give these bodies exactly: nothing but statusCode and message
_EXACT_SHAPE = frozenset({UNAUTHORIZED.code, ORG_MISMATCH.code})

# Adds the services of a request to the open project's set, all or none, unless that would
# make more than ARGV[1] distinct services: 1 admitted, 0 refused.
_OPEN_SERVICES_LUA = """
local fresh = {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then fresh[#fresh + 1] = ARGV[i] end
end
if #fresh == 0 then return 1 end
if redis.call('SCARD', KEYS[1]) + #fresh > tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], unpack(fresh))
return 1
"""


class _Named(msgspec.Struct):
    """The one field of an event this dialect reads itself (others are ignored here)."""

    service: Any = None


_SERVICES = msgspec.json.Decoder(list[_Named])


def _services(payload: bytes) -> list[Any]:
    return [event.service for event in _SERVICES.decode(payload)]


class Operyn(Dialect):
    """The Operyn ingestion API (see the module docstring)."""

    name = "operyn"
    event_datasets_only = True

    def routes(self) -> list[IngestRoute]:
        """One-event and batch routes of each event kind."""
        out: list[IngestRoute] = []
        for dataset, kind in KINDS:
            out.append(IngestRoute(f"/events/{dataset}", f"operyn_{kind}", self, batch=False,
                                   dataset=dataset, label=kind))
            out.append(IngestRoute(f"/events/{dataset}/batch", f"operyn_{kind}_batch", self,
                                   batch=True, dataset=dataset, label=kind))
        return out

    async def principal(self, request: Request, ctx: AppContext) -> Principal:
        """The key's principal (``x-api-key``, else Bearer), the open project's anonymous
        user when open mode is on and no key is sent, else 401; 403 when
        ``x-organization-id`` names another project."""
        headers = request.headers
        token = headers.get("x-api-key") or bearer_token(request)
        if token is None:
            open_project = ctx.settings.open_project
            if open_project is None or "x-api-key" in headers or "authorization" in headers:
                raise UNAUTHORIZED
            principal = Principal(project_id=open_project, user_id=ANONYMOUS_USER, key_id="")
        else:
            principal = await _verify(ctx, token.strip())
        org = headers.get("x-organization-id")
        if org is not None and org != principal.project_id:
            raise ORG_MISMATCH
        return principal

    def dataset(self, request: Request, route: IngestRoute, path_params: Mapping[str, str]
                ) -> str:
        """The route's own dataset."""
        assert route.dataset is not None
        return route.dataset

    def rewrite(self, route: IngestRoute, payload: bytes) -> bytes | None:
        """The body with every ``service`` trimmed, when one needs it (re-serialized: the
        only case where strictgate stores other bytes than the client sent)."""
        services = _services(payload)
        if all(not isinstance(s, str) or s == s.strip() for s in services):
            return None
        events: list[dict[str, Any]] = orjson.loads(payload)
        for event in events:
            service = event.get("service")
            if isinstance(service, str):
                event["service"] = service.strip()
        return orjson.dumps(events if route.batch else events[0])

    async def check(self, ctx: AppContext, principal: Principal, route: IngestRoute,
                    payload: bytes) -> None:
        """The open project takes events from at most :data:`OPEN_PROJECT_SERVICES`
        services (a keyed caller is not limited)."""
        if principal.key_id or principal.user_id != ANONYMOUS_USER:
            return
        services = sorted({s for s in _services(payload) if isinstance(s, str)})
        async with redis_step(ctx.settings.redis_deadline_s):
            admitted = await ctx.redis.eval(
                _OPEN_SERVICES_LUA, 1, keys.open_services_key(principal.project_id),
                OPEN_PROJECT_SERVICES, *services)
        if not int(admitted):
            raise ApiError(
                403, f"The open project takes events from at most {OPEN_PROJECT_SERVICES}"
                " services; send an API key (x-api-key) to use more", "open_service_limit",
                field="service",
            )

    def accepted(self, route: IngestRoute, outcome: Outcome, headers: dict[str, str]
                 ) -> Response:
        """202 ``{"id", "queued": true}``, or ``{"accepted": n}`` for a batch; under the
        ``quarantine`` policy also ``quarantined`` and the errors (a quarantined single event:
        ``{"id": null, "queued": false, ...}``)."""
        body: dict[str, Any] = {"accepted": outcome.count} if route.batch else {
            "id": outcome.ids[0] if outcome.ids else None, "queued": bool(outcome.ids)}
        if outcome.quarantined is not None:
            body.update(outcome.quarantined.answer())
        return json_response(body, 202, headers)

    def error(self, route: IngestRoute | None, err: ApiError) -> Response:
        """``{"statusCode", "message"}`` (+ ``errors`` and any details of ours)."""
        if err.status == 401 or err.code in _EXACT_SHAPE:
            body: dict[str, Any] = {"statusCode": err.status, "message": err.message}
            return json_response(body, err.status, err.headers)
        message = err.message
        if err.status == 400 and route is not None:
            message = f"Invalid {route.label} event: {_first_error(err)}"
        body = {"statusCode": err.status, "message": message, **err.body()}
        del body["success"], body["error"]
        return json_response(body, err.status, err.headers)


def _first_error(err: ApiError) -> str:
    """The first error in the strictgate grammar: ``[index] field: message``."""
    item = (err.errors or [{}])[0]
    field = item.get("field", err.field)
    text = str(item.get("message", err.message))
    where = f"{field}: " if field and not text.startswith(str(field)) else ""
    index = f"[{item['index']}] " if "index" in item else ""
    return clip(f"{index}{where}{text}")


async def _verify(ctx: AppContext, token: str) -> Principal:
    try:
        return await verify_key(ctx, token)
    except AuthError:
        raise UNAUTHORIZED from None

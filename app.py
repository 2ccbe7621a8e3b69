"""Wiring only: settings -> Redis -> registry -> routes -> lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota.admission import QuotaService
from strictgate.context import AppContext, utc_now
from strictgate.embedded import EmbeddedServer
from strictgate.errors import ApiError, error_response, json_response
from strictgate.secrets import load_or_create_secret
from strictgate.settings import Settings, load_settings

log = logging.getLogger("strictgate")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Never a stack trace to a client: log it, answer with the grammar.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ApiError(500, "Internal server error", "internal_error"))


def resolve_admin_token(settings: Settings) -> str:
    """The admin token from settings, else from (or generated into) the data dir."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_dir / "admin-token"
    token, created = load_or_create_secret(path)
    if created:
        print(f"strictgate: generated admin token, stored in {path.resolve()}", flush=True)
    else:
        print(f"strictgate: admin token is in {path.resolve()}", flush=True)
    return token


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app. Redis (embedded when no ``REDIS_URL``) starts in the lifespan."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        embedded: EmbeddedServer | None = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedServer(settings.data_dir / "redis").start()
            url = embedded.url
        client = aioredis.Redis.from_url(url)
        app.state.ctx = AppContext(
            settings=settings, redis=client, admin_token=resolve_admin_token(settings),
            quota=QuotaService(client, default_limit=settings.default_monthly_quota,
                deadline_s=settings.redis_deadline_s, clock=utc_now,
            ),
        )
        try:
            yield
        finally:
            await client.aclose()
            if embedded is not None:
                embedded.stop()

    routes = [Route("/healthz", healthz, methods=["GET"])]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, Exception: _internal_error},
    )

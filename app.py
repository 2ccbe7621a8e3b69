"""Wiring only: settings -> Redis -> registry -> routes -> lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from quota.admission import QuotaService
from strictgate import docs as docs_ui
from strictgate.access_log import AccessLog, flushing_at_shutdown
from strictgate.admin import datasets as admin_datasets
from strictgate.admin import keys as admin_keys
from strictgate.admin import quarantine as admin_quarantine
from strictgate.admin import quarantine_replay as admin_quarantine_replay
from strictgate.admin import quota as admin_quota
from strictgate.admin import settings as admin_settings
from strictgate.context import AppContext, context_of, utc_now
from strictgate.dialects import onesight_query
from strictgate.durability import DurabilityReport
from strictgate.embedded import EmbeddedServer
from strictgate.errors import ApiError, error_response, json_response
from strictgate.ingest import records as ingest_records
from strictgate.ingest.front import ingest_lane, serve_ingest, starlette_routes
from strictgate.lake.config import lake_config
from strictgate.lake.reader import LakeReader
from strictgate.malloc import limit_malloc_arenas
from strictgate.metrics import CONTENT_TYPE_LATEST, Metrics
from strictgate.openapi import openapi_document
from strictgate.redis_client import connect, keep_slot_map_fresh
from strictgate.redis_health import watch as watch_redis
from strictgate.registry.apikeys import KeyService
from strictgate.registry.store import Registry
from strictgate.request_id import HEADER, new_request_id
from strictgate.secrets import load_or_create_secret
from strictgate.settings import Settings, load_settings
from strictgate.supervisor import Supervisor
from strictgate.unavailable import REDIS_FAILURES, unavailable
from strictgate.worker.health import SinkHealth
from strictgate.worker.service import start_background_tasks

log = logging.getLogger("strictgate")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: Redis answers within the deadline, the registry is loaded and the
    in-process worker's sink (if any) can write."""
    ctx = context_of(request)
    try:
        await asyncio.wait_for(ctx.redis.ping(), ctx.settings.redis_deadline_s)
        ready = await asyncio.wait_for(ctx.registry.ready(), ctx.settings.redis_deadline_s)
    except REDIS_FAILURES:
        raise unavailable() from None
    if not ready:
        raise unavailable()
    sink_health: SinkHealth | None = getattr(request.app.state, "sink_health", None)
    if sink_health is not None and not sink_health.ok:
        # records are still admitted and stay queued: say why they are not written
        raise ApiError(503, f"Output sink cannot write: {sink_health.reason}",
                       "sink_unavailable", headers={"Retry-After": "5"})
    return json_response({"status": "ready", "durability": request.app.state.durability.fields()})


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    """The OpenAPI 3.1 document."""
    return json_response(request.app.state.openapi)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Never a stack trace to a client: log it, answer with the grammar.
    log.exception("unhandled error on %s %s", request.method, request.url.path[:256])
    # Rendered outside the access-log middleware: add the id it settled on here.
    request_id = getattr(request.state, "request_id", None) or new_request_id()
    return error_response(ApiError(500, "Internal server error", "internal_error",
                                   headers={HEADER: request_id}))


def _secret(configured: str | None, settings: Settings, name: str) -> str:
    if configured:
        return configured
    path = settings.data_dir / name
    value, created = load_or_create_secret(path)
    verb = "generated" if created else "using"
    print(f"strictgate: {verb} {name} at {path.resolve()}", flush=True)
    return value


def resolve_admin_token(settings: Settings) -> str:
    """The admin token from settings, else from (or generated into) the data dir."""
    return _secret(settings.admin_token, settings, "admin-token")


def resolve_jwt_secret(settings: Settings) -> str:
    """The API key signing secret from settings, else from (or generated into) the data dir."""
    return _secret(settings.jwt_secret, settings, "jwt-secret")


class StrictgateApp(Starlette):
    """The Starlette app, except that ingest requests take the short way in
    (:mod:`strictgate.ingest.front`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection or lifespan."""
        lane = ingest_lane(scope)
        if lane is None:
            if scope["type"] == "lifespan":  # held access lines out before the shutdown ends
                send = flushing_at_shutdown(send)
            await super().__call__(scope, receive, send)
        else:
            await serve_ingest(self, scope, receive, send, *lane)


# gen-0 collections every this many net allocations (CPython's default: 700)
GC_GEN0_THRESHOLD = 20_000


def create_app(settings: Settings | None = None) -> StrictgateApp:
    """Build the ASGI app. Redis (embedded when no ``REDIS_URL``) starts in the lifespan."""
    limit_malloc_arenas()  # before the worker's and DuckDB's threads start
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        embedded: EmbeddedServer | None = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedServer.for_service(settings.data_dir, settings.redis_fsync).start()
            url = embedded.auth_url  # password included: never log it
            # lets the CLI reach the embedded server of a running service (no password in
            # it: the CLI reads <data dir>/redis-password)
            (settings.data_dir / "redis.url").write_text(embedded.url + "\n")
        client = connect(
            url, cluster=settings.redis_cluster,
            socket_timeout=settings.redis_deadline_s,
            socket_connect_timeout=settings.redis_deadline_s,
        )
        # The admission path enforces its own deadline (asyncio.timeout_at around the whole
        # call), so its client has no socket timeout: redis-py would otherwise wrap every
        # send in asyncio.wait_for, one extra task per request.
        hot_client = connect(
            url, cluster=settings.redis_cluster, socket_timeout=None,
            socket_connect_timeout=settings.redis_deadline_s,
        )
        clock = utc_now
        jwt_secret = resolve_jwt_secret(settings)
        ctx = AppContext(
            settings=settings,
            redis=client,
            admin_token=resolve_admin_token(settings),
            registry=Registry(client, clock=clock),
            keys=KeyService(client, jwt_secret, clock=clock),
            quota=QuotaService(
                hot_client, default_limit=settings.default_monthly_quota,
                deadline_s=settings.redis_deadline_s, clock=clock,
                max_queue_records=settings.max_queue_records,
                wait_replicas=settings.redis_wait_replicas,
            ),
        )
        app.state.ctx = ctx
        # the read route's lake connection (opened on the first read); none with the
        # jsonl sink, where records are files
        app.state.records_reader = ingest_records.RecordsReader(LakeReader(
            lake_config(settings), ingest_records.cursor_secret(jwt_secret))
        ) if settings.sink == "lake" else None
        stop = asyncio.Event()
        # queue gauges whatever RUN_WORKER is; the worker (and its sink's health) if set
        background = start_background_tasks(
            client, settings, clock, app.state.metrics, stop, worker=settings.run_worker)
        app.state.sink_health = background.sink_health
        tasks = background.tasks
        # Redis outages logged once per change; durability warned at start and re-read on
        # every reconnect; the embedded server restarted if it dies
        app.state.durability = DurabilityReport(
            client, settings.redis_deadline_s, embedded=embedded is not None)
        await app.state.durability.refresh()
        tasks.append(asyncio.create_task(keep_slot_map_fresh([client, hot_client], stop)))
        tasks.append(asyncio.create_task(watch_redis(
            client, stop, settings.redis_deadline_s, on_up=app.state.durability.refresh)))
        if embedded is not None:
            tasks.append(asyncio.create_task(Supervisor(embedded).run(stop)))
        # Everything built so far lives as long as the process: move it out of the cyclic
        # GC's view, and collect the young generation less often, so a full collection does
        # not stall the event loop for tens of milliseconds under load (p99 latency).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)
            await client.aclose()
            await hot_client.aclose()
            if app.state.records_reader is not None:
                app.state.records_reader.close()
            if embedded is not None:
                # a clean stop leaves no URL: the CLI says "no running service"
                (settings.data_dir / "redis.url").unlink(missing_ok=True)
                embedded.stop()

    routes = [
        # the data plane first: the router tries routes in order on every request
        *starlette_routes(),
        *ingest_records.routes(),
        *onesight_query.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        # /api and /docs (Swagger UI), /reference (Redoc), /api/static/<asset>
        *docs_ui.routes(),
        *admin_datasets.routes(),
        *admin_settings.routes(),
        *admin_keys.routes(),
        *admin_quota.routes(),
        *admin_quarantine.routes(),
        *admin_quarantine_replay.routes(),
    ]
    app = StrictgateApp(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessLog)],
        exception_handlers={ApiError: _api_error, Exception: _internal_error},
    )
    app.state.metrics = Metrics()
    app.state.openapi = openapi_document()
    return app

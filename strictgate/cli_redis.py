"""How CLI commands find Redis: ``REDIS_URL``, else the embedded server of a running
``make run`` (its URL is written to ``<data dir>/redis.url``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from strictgate.settings import Settings, load_settings


class NoRedisError(RuntimeError):
    """Neither REDIS_URL nor a running embedded server."""


def cli_redis_url(settings: Settings) -> str:
    """The Redis URL a CLI command should use."""
    if settings.redis_url:
        return settings.redis_url
    path = settings.data_dir / "redis.url"
    if path.exists():
        return path.read_text().strip()
    raise NoRedisError(
        "no Redis to talk to: set REDIS_URL, or start the service (make run) so its "
        f"embedded server's URL is written to {path}"
    )


def fail(message: str) -> int:
    """Print ``message`` as a CLI error; the exit status 1."""
    print(f"strictgate: {message}", file=sys.stderr)
    return 1


def run_with_redis(
    body: Callable[[Settings, aioredis.Redis], Awaitable[int]],
    errors: tuple[type[BaseException], ...],
) -> int:
    """Run ``body`` with the settings and a client on the CLI's Redis; ``errors`` (and OS
    errors) become a one-line message and exit status 1 instead of a traceback."""
    settings = load_settings()
    try:
        url = cli_redis_url(settings)
    except NoRedisError as exc:
        return fail(str(exc))

    async def main() -> int:
        # an operator's command may wait longer than a request would
        client = aioredis.Redis.from_url(
            url, socket_timeout=settings.redis_deadline_s * 5,
            socket_connect_timeout=settings.redis_deadline_s * 5,
        )
        try:
            return await body(settings, client)
        finally:
            await client.aclose()

    handled: tuple[type[BaseException], ...] = (*errors, OSError)
    try:
        return asyncio.run(main())
    except handled as exc:
        return fail(f"{type(exc).__name__}: {exc}")

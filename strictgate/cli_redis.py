"""How CLI commands find Redis: ``REDIS_URL``, else the embedded server of a running
``make run`` (its URL is written to ``<data dir>/redis.url``, its password is in
``<data dir>/redis-password``)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from strictgate.datadir import REDIS_URL_FILE
from strictgate.embedded import password_path, service_auth_url
from strictgate.redis_client import connect
from strictgate.settings import Settings, load_settings


class NoRedisError(RuntimeError):
    """Neither REDIS_URL nor a running embedded server."""


def no_service(settings: Settings) -> NoRedisError:
    """The error of a CLI command run without REDIS_URL while no service runs."""
    return NoRedisError(
        f"no running service for {settings.data_dir.resolve()} "
        "(start it with `make run`, or set REDIS_URL)"
    )


def _answers(url: str) -> bool:
    """Whether something accepts connections at the embedded server's address: a
    ``redis.url`` left by a killed service names a closed port."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(parts.path)
        else:
            socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                     timeout=2.0).close()
    except (OSError, ValueError):
        return False
    return True


def cli_redis_url(settings: Settings) -> str:
    """The Redis URL a CLI command should use: ``REDIS_URL``, else the embedded server of
    the service running on the data dir (:func:`no_service` when there is none)."""
    if settings.redis_url:
        return settings.redis_url
    try:
        url = (settings.data_dir / REDIS_URL_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        raise no_service(settings) from None
    if not _answers(url):
        raise no_service(settings)
    try:
        return service_auth_url(settings.data_dir, url)
    except PermissionError:
        raise NoRedisError(f"cannot read {password_path(settings.data_dir).resolve()}: run "
                           "the command as the user of the service") from None


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
        client = connect(
            url, cluster=settings.redis_cluster, socket_timeout=settings.redis_deadline_s * 5,
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

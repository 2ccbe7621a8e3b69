"""How CLI commands find Redis: ``REDIS_URL``, else the embedded server of a running
``make run`` (its URL is written to ``<data dir>/redis.url``)."""

from __future__ import annotations

from strictgate.settings import Settings


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

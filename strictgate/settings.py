"""Typed service settings read from the environment.

Every setting has one environment variable. Unknown ``STRICTGATE_*`` variables are rejected so
that a typo (``STRICTGATE_PROT=9000``) fails loudly at start instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from quota.keys import ID_PATTERN
from strictgate.redact import redacted


class SettingsError(ValueError):
    """Raised when the environment holds an unknown or malformed setting."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """All configuration of one strictgate process."""

    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = None
    data_dir: Path = Path("./var")
    admin_token: str | None = None
    jwt_secret: str | None = None
    default_monthly_quota: int = -1
    redis_deadline_ms: int = 1000
    max_body_bytes: int = 10_000_000
    max_records: int = 10_000
    run_worker: bool = True
    log_level: str = "info"
    # A client must send a request's whole head within this many seconds of opening the
    # connection (or of its first byte, for the next request on a kept-alive connection):
    # slow-loris and never-speaking connections are closed instead of held forever.
    header_timeout_s: float = 10.0
    # An idle kept-alive connection is closed after this many seconds.
    keepalive_timeout_s: float = 5.0
    # Open connections above which a request is answered 503 (server_busy); None: half the
    # open-file limit, so the connections answered 503 still find a descriptor.
    max_connections: int | None = None
    # Read by validator/compiled.py itself at import (it is imported before settings are
    # loaded); here so that the value is checked at start like every other.
    scanner: bool = True
    # appendfsync of the embedded valkey (ignored with REDIS_URL): "always" makes a 2xx
    # survive power loss; see README "Durability" for the trade-off.
    redis_fsync: str = "always"
    # Where the worker writes: "lake" (DuckLake tables) or "jsonl" (JSON Lines files).
    sink: str = "lake"
    # DuckLake catalog (what follows "ducklake:" in an ATTACH) and data path; None: the
    # embedded default under <data dir>/lake (see lake_config).
    lake_catalog: str | None = None
    lake_data_path: str | None = None
    # Records queued and not yet written, per dataset queue, above which admission answers
    # 503 + Retry-After (backpressure instead of Redis running out of memory).
    max_queue_records: int = 5_000_000
    # How long old lake snapshots are kept (time travel) before compaction expires them.
    lake_snapshot_retention_s: float = 7 * 86400.0
    # Operyn's open mode, for local development: requests without an API key go to this
    # project (user "anonymous", at most OPEN_PROJECT_SERVICES services). None: keys required.
    open_project: str | None = None

    @property
    def redis_deadline_s(self) -> float:
        """The Redis deadline in seconds."""
        return self.redis_deadline_ms / 1000.0


# env var -> (field name, parser)
_ENV: dict[str, str] = {
    "STRICTGATE_HOST": "host",
    "STRICTGATE_PORT": "port",
    "REDIS_URL": "redis_url",
    "STRICTGATE_DATA_DIR": "data_dir",
    "STRICTGATE_ADMIN_TOKEN": "admin_token",
    "STRICTGATE_JWT_SECRET": "jwt_secret",
    "STRICTGATE_DEFAULT_MONTHLY_QUOTA": "default_monthly_quota",
    "STRICTGATE_REDIS_DEADLINE_MS": "redis_deadline_ms",
    "STRICTGATE_MAX_BODY_BYTES": "max_body_bytes",
    "STRICTGATE_MAX_RECORDS": "max_records",
    "STRICTGATE_RUN_WORKER": "run_worker",
    "STRICTGATE_LOG_LEVEL": "log_level",
    "STRICTGATE_HEADER_TIMEOUT_S": "header_timeout_s",
    "STRICTGATE_KEEPALIVE_TIMEOUT_S": "keepalive_timeout_s",
    "STRICTGATE_MAX_CONNECTIONS": "max_connections",
    "STRICTGATE_SCANNER": "scanner",
    "STRICTGATE_REDIS_FSYNC": "redis_fsync",
    "STRICTGATE_SINK": "sink",
    "STRICTGATE_LAKE_CATALOG": "lake_catalog",
    "STRICTGATE_LAKE_DATA_PATH": "lake_data_path",
    "STRICTGATE_MAX_QUEUE_RECORDS": "max_queue_records",
    "STRICTGATE_LAKE_SNAPSHOT_RETENTION_S": "lake_snapshot_retention_s",
    "STRICTGATE_OPEN_PROJECT": "open_project",
}

ENV_VARS: tuple[str, ...] = tuple(_ENV)

LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug")
"""Values of ``STRICTGATE_LOG_LEVEL`` (any case)."""

REDIS_URL_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")
"""Schemes ``REDIS_URL`` may use (those redis-py's ``from_url`` knows)."""

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")

REDIS_FSYNC_CHOICES: tuple[str, ...] = ("always", "everysec", "no")
"""Values of ``STRICTGATE_REDIS_FSYNC`` (valkey's ``appendfsync``)."""

SINKS: tuple[str, ...] = ("lake", "jsonl")
"""Values of ``STRICTGATE_SINK``."""

LAKE_CATALOG_PREFIXES: tuple[str, ...] = ("sqlite:", "postgres:", "postgresql:")
"""What ``STRICTGATE_LAKE_CATALOG`` may start with (a DuckDB-file catalog is refused: while
one process holds it no other can read it)."""


def _parse_int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0/true/false), got {raw[:40]!r}")


def _parse_float(name: str, raw: str, minimum: float, maximum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw[:40]!r}") from None
    # "not <=" also refuses nan
    if not minimum < value <= maximum:
        raise SettingsError(f"{name} must be > {minimum:g} and <= {maximum:g}, got {raw[:40]!r}")
    return value


def _parse_log_level(name: str, raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise SettingsError(f"{name} must be one of {'/'.join(LOG_LEVELS)}, got {raw[:40]!r}")
    return level


def _parse_host(name: str, raw: str) -> str:
    """A literal IP address, or a host name that is well formed and resolves (the address
    to listen on: better refused now than after the embedded server and worker started)."""
    host = raw.strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise SettingsError(f"{name} must be an IP address or a host name, got {raw[:40]!r}")
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "invalid name"
        raise SettingsError(f"{name} {host[:60]!r} does not resolve: {reason}") from None
    return host


def _shown_url(raw: str) -> str:
    # a URL or a connection string may carry a password: never quote it. Without a scheme
    # (a malformed REDIS_URL) everything before the last "@" may be one.
    value = raw.strip()
    if "@" in value and "://" not in value:
        value = "***@" + value.rsplit("@", 1)[1]
    return redacted(value)[:80]


def _parse_redis_url(name: str, raw: str) -> str:
    """A URL redis-py's ``from_url`` can connect with: ``redis://host[:port][/db]``,
    ``rediss://...`` or ``unix:///path[?db=n]``."""
    url = raw.strip()
    shown = _shown_url(raw)
    parts = urlsplit(url)
    if "://" not in url or parts.scheme not in REDIS_URL_SCHEMES:
        raise SettingsError(
            f"{name} must be a redis://, rediss:// or unix:// URL, got {shown!r}")
    if parts.scheme == "unix":
        if not parts.path:
            raise SettingsError(f"{name} must name a socket path (unix:///path), got {shown!r}")
        return url
    try:
        port = parts.port
    except ValueError:
        raise SettingsError(f"{name} has an invalid port: {shown!r}") from None
    if not parts.hostname:
        raise SettingsError(f"{name} must name a host (redis://host:port/db), got {shown!r}")
    if port == 0:
        raise SettingsError(f"{name} has an invalid port: {shown!r}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise SettingsError(f"{name} database must be a number (redis://host:port/0), "
                            f"got {shown!r}")
    return url


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: ``os.environ``).

    Empty values count as unset. Raises :class:`SettingsError` for unknown ``STRICTGATE_*``
    variables and malformed values.
    """
    env = os.environ if environ is None else environ
    unknown = sorted(k for k in env if k.startswith("STRICTGATE_") and k not in _ENV)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    values: dict[str, object] = {}
    for name, field in _ENV.items():
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        if field in ("port",):
            port = _parse_int(name, raw, 0)
            if port > 65535:
                raise SettingsError(f"{name} must be <= 65535, got {port}")
            values[field] = port
        elif field == "default_monthly_quota":
            values[field] = _parse_int(name, raw, -1)
        elif field in ("redis_deadline_ms", "max_body_bytes", "max_records"):
            values[field] = _parse_int(name, raw, 1)
        elif field in ("run_worker", "scanner"):
            values[field] = _parse_bool(name, raw)
        elif field in ("redis_fsync", "sink"):
            choices = REDIS_FSYNC_CHOICES if field == "redis_fsync" else SINKS
            if raw.strip() not in choices:
                raise SettingsError(f"{name} must be one of {'/'.join(choices)}, "
                                    f"got {raw[:40]!r}")
            values[field] = raw.strip()
        elif field == "lake_catalog":
            if not raw.strip().startswith(LAKE_CATALOG_PREFIXES):
                raise SettingsError(
                    f"{name} must start with {', '.join(LAKE_CATALOG_PREFIXES)} "
                    f"(e.g. postgres:dbname=lake host=127.0.0.1), got {_shown_url(raw)[:40]!r}")
            values[field] = raw.strip()
        elif field == "max_queue_records":
            values[field] = _parse_int(name, raw, 1)
        elif field == "lake_snapshot_retention_s":
            values[field] = _parse_float(name, raw, 0.0, 10 * 365 * 86400.0)
        elif field == "open_project":
            if not ID_PATTERN.match(raw):
                raise SettingsError(f"{name} must be a project id (letters, digits, '_', '-', "
                                    f"'.'), got {raw[:40]!r}")
            values[field] = raw
        elif field == "data_dir":
            values[field] = Path(raw)
        elif field in ("header_timeout_s", "keepalive_timeout_s"):
            values[field] = _parse_float(name, raw, 0.0, 3600.0)
        elif field == "max_connections":
            values[field] = _parse_int(name, raw, 1)
        elif field == "log_level":
            values[field] = _parse_log_level(name, raw)
        elif field == "host":
            values[field] = _parse_host(name, raw)
        elif field == "redis_url":
            values[field] = _parse_redis_url(name, raw)
        else:
            values[field] = raw
    return Settings(**values)  # type: ignore[arg-type]

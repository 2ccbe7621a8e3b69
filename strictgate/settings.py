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
    # REDIS_URL names one node of a Redis (or Valkey) Cluster: the client learns the others
    # from it and follows the slot map (README "Scale-out").
    redis_cluster: bool = False
    # On a cluster: replicas that must confirm an admission (WAIT) before its 2xx, so a
    # master's failover cannot lose acknowledged records; 0: do not wait (README "Scale-out").
    redis_wait_replicas: int = 0
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
    # None: one process serves the API with the worker inside it. N: `strictgate serve`
    # supervises N API processes sharing the port and one worker process (README
    # "Configuration").
    api_processes: int | None = None
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
    # How long a OneSight event_id is remembered (a resend within it is a no-op); each id
    # costs Redis memory for that long (README "OneSight").
    event_id_window_s: int = 7 * 86400
    # How long a Definite ``wait: true`` request waits for the lake commit of its rows
    # before answering that they are queued and will be committed (snapshot_id null).
    commit_wait_s: float = 30.0
    # How long the worker waits, after a pass that wrote entries but found no full batch
    # waiting, before it reads the queues again: a lake commit costs tens of ms of CPU
    # whatever its size, so under a steady trickle of small requests fewer, larger commits
    # cost the machine less (README "Configuration"). Under such a trickle a record is in
    # the lake about this plus one commit after its 2xx; a lone request after a quiet
    # spell, a full batch, or requests while somebody waits for commits (Definite
    # ``wait: true``) are written at once.
    commit_interval_s: float = 0.5
    # S3-compatible object storage, read only with an s3:// lake data path: credentials from
    # the usual AWS_* variables (the secret parts left out of repr, so never logged), and the
    # endpoint (host[:port], TLS unless given as http://) of a store other than AWS.
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    aws_session_token: str | None = dataclasses.field(default=None, repr=False)
    aws_region: str | None = None
    s3_endpoint: str | None = None
    s3_use_ssl: bool = True
    # "path" (bucket in the path) or "vhost" (bucket in the host name); None: DuckDB's
    # default (vhost, as AWS wants), "path" when an endpoint is set
    s3_url_style: str | None = None

    @property
    def redis_deadline_s(self) -> float:
        """The Redis deadline in seconds."""
        return self.redis_deadline_ms / 1000.0


# env var -> (field name, parser)
_ENV: dict[str, str] = {
    "STRICTGATE_HOST": "host",
    "STRICTGATE_PORT": "port",
    "REDIS_URL": "redis_url",
    "STRICTGATE_REDIS_CLUSTER": "redis_cluster",
    "STRICTGATE_REDIS_WAIT_REPLICAS": "redis_wait_replicas",
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
    "STRICTGATE_API_PROCESSES": "api_processes",
    "STRICTGATE_SCANNER": "scanner",
    "STRICTGATE_REDIS_FSYNC": "redis_fsync",
    "STRICTGATE_SINK": "sink",
    "STRICTGATE_LAKE_CATALOG": "lake_catalog",
    "STRICTGATE_LAKE_DATA_PATH": "lake_data_path",
    "STRICTGATE_MAX_QUEUE_RECORDS": "max_queue_records",
    "STRICTGATE_LAKE_SNAPSHOT_RETENTION_S": "lake_snapshot_retention_s",
    "STRICTGATE_OPEN_PROJECT": "open_project",
    "STRICTGATE_EVENT_ID_WINDOW_S": "event_id_window_s",
    "STRICTGATE_COMMIT_WAIT_S": "commit_wait_s",
    "STRICTGATE_COMMIT_INTERVAL_S": "commit_interval_s",
}

# read by :func:`s3_settings`, and only with an s3:// lake data path
_S3_ENV: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_REGION": "aws_region",
    "STRICTGATE_S3_ENDPOINT": "s3_endpoint",
    "STRICTGATE_S3_URL_STYLE": "s3_url_style",
}

ENV_VARS: tuple[str, ...] = (*_ENV, *_S3_ENV)

LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug")
"""Values of ``STRICTGATE_LOG_LEVEL`` (any case)."""

REDIS_URL_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")
"""Schemes ``REDIS_URL`` may use (those redis-py's ``from_url`` knows)."""

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")

REDIS_FSYNC_CHOICES: tuple[str, ...] = ("always", "everysec", "no")
"""Values of ``STRICTGATE_REDIS_FSYNC`` (valkey's ``appendfsync``)."""

SINKS: tuple[str, ...] = ("lake", "jsonl")
"""Values of ``STRICTGATE_SINK``."""

MAX_API_PROCESSES = 64
"""Upper bound of ``STRICTGATE_API_PROCESSES``: each process holds the whole app (about
200 MB), so a typo must not start a thousand of them."""

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


S3_SCHEMES: tuple[str, ...] = ("s3://", "s3a://")
"""Lake data paths that the S3 settings apply to (those a DuckDB secret of type s3 covers)."""

S3_URL_STYLES: tuple[str, ...] = ("path", "vhost")
"""Values of ``STRICTGATE_S3_URL_STYLE``."""

_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def parse_s3_endpoint(name: str, raw: str) -> tuple[str, bool]:
    """``host[:port]``, ``http://host[:port]`` or ``https://host[:port]`` as (``host[:port]``,
    TLS or not): without a scheme, TLS, as AWS and most stores want. No path, no credentials
    in it (they are ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) and no DNS lookup (a
    store's name may resolve only once the network around it is up)."""
    text = raw.strip()
    shown = _shown_url(raw)
    use_ssl = True
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise SettingsError(f"{name} must be host[:port], http://host[:port] or "
                                f"https://host[:port], got {shown!r}")
        use_ssl = scheme.lower() == "https"
        text = text.removesuffix("/")
    if "@" in text:
        raise SettingsError(f"{name} must not hold credentials (set AWS_ACCESS_KEY_ID and "
                            f"AWS_SECRET_ACCESS_KEY), got {shown!r}")
    if not text or any(c in "/?#\\" or c.isspace() for c in text):
        raise SettingsError(f"{name} must be host[:port] with nothing after it, got {shown!r}")
    parts = urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise SettingsError(f"{name} has an invalid port: {shown!r}") from None
    if port == 0 or text.endswith(":") or not _is_host(parts.hostname or ""):
        raise SettingsError(f"{name} must be host[:port] (a host name or an IP address, "
                            f"a port from 1 to 65535), got {shown!r}")
    return text, use_ssl


def s3_settings(env: Mapping[str, str], lake_data_path: str | None) -> dict[str, object]:
    """The S3 fields of :class:`Settings` from ``env`` (empty values count as unset). Read
    and checked only when ``lake_data_path`` is an ``s3://`` URL: ``AWS_*`` variables set
    for other programs are none of the lake's business, while ``STRICTGATE_S3_*`` beside
    another data path is a mistake, refused. No message quotes a credential."""
    raw = {field: env.get(name) or None for name, field in _S3_ENV.items()}
    path = lake_data_path or ""
    if not path.startswith(S3_SCHEMES):
        stray = [n for n in _S3_ENV if n.startswith("STRICTGATE_") and env.get(n)]
        if stray:
            raise SettingsError(f"{', '.join(stray)} applies only to an s3:// "
                                "STRICTGATE_LAKE_DATA_PATH")
        return {}
    if not path.partition("://")[2].split("/", 1)[0]:
        raise SettingsError("STRICTGATE_LAKE_DATA_PATH must name a bucket "
                            f"(s3://bucket/prefix/), got {_shown_url(path)!r}")
    if (raw["aws_access_key_id"] is None) != (raw["aws_secret_access_key"] is None):
        raise SettingsError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
    if raw["aws_session_token"] is not None and raw["aws_access_key_id"] is None:
        raise SettingsError(
            "AWS_SESSION_TOKEN needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    values: dict[str, object] = {
        field: raw[field]
        for field in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
        if raw[field] is not None}
    region = raw["aws_region"]
    if region is not None:
        if not _REGION.match(region.strip()):
            raise SettingsError(f"AWS_REGION must be a region name (e.g. us-east-1), "
                                f"got {region[:40]!r}")
        values["aws_region"] = region.strip()
    endpoint = raw["s3_endpoint"]
    if endpoint is not None:
        values["s3_endpoint"], values["s3_use_ssl"] = parse_s3_endpoint(
            "STRICTGATE_S3_ENDPOINT", endpoint)
    style = raw["s3_url_style"]
    if style is not None:
        if style.strip().lower() not in S3_URL_STYLES:
            raise SettingsError(f"STRICTGATE_S3_URL_STYLE must be one of "
                                f"{'/'.join(S3_URL_STYLES)}, got {style[:40]!r}")
        values["s3_url_style"] = style.strip().lower()
    elif endpoint is not None:
        # a store of one's own rarely has a DNS name per bucket
        values["s3_url_style"] = "path"
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: ``os.environ``).

    Empty values count as unset. Raises :class:`SettingsError` for unknown ``STRICTGATE_*``
    variables and malformed values.
    """
    env = os.environ if environ is None else environ
    unknown = sorted(k for k in env if k.startswith("STRICTGATE_") and k not in ENV_VARS)
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
        elif field in ("run_worker", "scanner", "redis_cluster"):
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
        elif field == "redis_wait_replicas":
            values[field] = _parse_int(name, raw, 0)
        elif field in ("max_queue_records", "event_id_window_s"):
            values[field] = _parse_int(name, raw, 1)
        elif field == "lake_snapshot_retention_s":
            values[field] = _parse_float(name, raw, 0.0, 10 * 365 * 86400.0)
        elif field == "commit_wait_s":
            values[field] = _parse_float(name, raw, 0.0, 600.0)
        elif field == "commit_interval_s":
            values[field] = _parse_float(name, raw, 0.0, 10.0)
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
        elif field == "api_processes":
            count = _parse_int(name, raw, 1)
            if count > MAX_API_PROCESSES:
                raise SettingsError(f"{name} must be <= {MAX_API_PROCESSES}, got {count}")
            values[field] = count
        elif field == "log_level":
            values[field] = _parse_log_level(name, raw)
        elif field == "host":
            values[field] = _parse_host(name, raw)
        elif field == "redis_url":
            values[field] = _parse_redis_url(name, raw)
        else:
            values[field] = raw
    if values.get("redis_cluster") and "redis_url" not in values:
        raise SettingsError("STRICTGATE_REDIS_CLUSTER=1 needs REDIS_URL (a node of the cluster)")
    if values.get("redis_cluster") and str(values["redis_url"]).startswith("unix:"):
        raise SettingsError("STRICTGATE_REDIS_CLUSTER=1 needs a redis:// or rediss:// REDIS_URL")
    if values.get("redis_wait_replicas") and not values.get("redis_cluster"):
        raise SettingsError("STRICTGATE_REDIS_WAIT_REPLICAS needs STRICTGATE_REDIS_CLUSTER=1 "
                            "(a standalone server has no failover to wait for)")
    lake_data_path = values.get("lake_data_path")
    values.update(s3_settings(env, lake_data_path if isinstance(lake_data_path, str) else None))
    return Settings(**values)  # type: ignore[arg-type]

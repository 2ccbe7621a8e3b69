"""Typed service settings read from the environment.

Every setting has one environment variable. Unknown ``STRICTGATE_*`` variables are rejected so
that a typo (``STRICTGATE_PROT=9000``) fails loudly at start instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path


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
    # Read by validator/compiled.py itself at import (it is imported before settings are
    # loaded); here so that the value is checked at start like every other.
    scanner: bool = True

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
    "STRICTGATE_SCANNER": "scanner",
}

ENV_VARS: tuple[str, ...] = tuple(_ENV)


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
        elif field == "data_dir":
            values[field] = Path(raw)
        else:
            values[field] = raw
    return Settings(**values)  # type: ignore[arg-type]

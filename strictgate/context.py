"""The per-process application context: what handlers need, built once by ``app.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from strictgate.registry.settings import DatasetSettingsStore, ProjectSettingsStore
from strictgate.settings import Settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from quota.admission import QuotaService
    from strictgate.registry.apikeys import KeyService
    from strictgate.registry.store import Registry


def utc_now() -> datetime:
    """The real clock (UTC, aware). Everything takes a clock so tests can fix it."""
    return datetime.now(UTC)


@dataclasses.dataclass
class AppContext:
    """Shared objects of one process; stored on ``app.state.ctx``."""

    settings: Settings
    redis: aioredis.Redis
    admin_token: str
    registry: Registry
    keys: KeyService
    quota: QuotaService
    clock: Callable[[], datetime] = utc_now
    dataset_settings: DatasetSettingsStore = dataclasses.field(init=False)
    """Per-dataset settings (``on_invalid``, ``quarantine_retention_days``), cached: the
    ingest path reads them with ``await ctx.dataset_settings.get(project, dataset)``."""

    def __post_init__(self) -> None:
        self.dataset_settings = DatasetSettingsStore(self.redis)

    @property
    def project_settings(self) -> ProjectSettingsStore:
        """Per-project settings (``unknown_datasets``), held and cached by the registry."""
        return self.registry.settings


def context_of(conn: HTTPConnection) -> AppContext:
    """The :class:`AppContext` of the app serving ``conn``."""
    ctx: AppContext = conn.app.state.ctx
    return ctx

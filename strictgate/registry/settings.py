"""Per-project settings in Redis, with a per-process cache so the ingest path reads them
from memory.

One setting exists: ``unknown_datasets``, what a dialect that names its datasets in the
body (OrcaSheets' ``metric_name``) does with a dataset the project never registered:
``reject`` (the default: "Dataset schema not found") or ``infer`` (schema on first write,
:mod:`strictgate.registry.inference`).

Stored as one hash per project (:func:`quota.keys.project_settings_key`, under the project's
hash tag); a setting not stored has its default. Every change bumps ``registry:generation``,
so every process's cache drops it within the poll interval (0.5 s), as the registry's own
caches do (:mod:`strictgate.registry.generation`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from quota.keys import check_id, project_settings_key
from strictgate.errors import clip
from strictgate.registry.generation import GenerationPoll, bump_generation

UNKNOWN_DATASETS = "unknown_datasets"
REJECT = "reject"
INFER = "infer"
CHOICES: dict[str, tuple[str, ...]] = {UNKNOWN_DATASETS: (REJECT, INFER)}
"""Every setting with its allowed values, the default first."""
MAX_CACHED = 10_000
MAX_PROBLEMS = 20


class InvalidSettingError(ValueError):
    """A settings change names an unknown setting or a value it cannot take.

    ``problems`` lists ``(code, field, message)``: ``unknown_setting``, ``invalid_setting``
    or ``invalid_body`` (nothing to set); the first one is the error's message."""

    def __init__(self, problems: list[tuple[str, str | None, str]]) -> None:
        super().__init__(problems[0][2])
        self.problems = problems[:MAX_PROBLEMS]

    @property
    def message(self) -> str:
        """The first problem's message."""
        return self.problems[0][2]


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectSettings:
    """The settings in force for one project (defaults included)."""

    project_id: str
    unknown_datasets: str = REJECT

    @property
    def infer(self) -> bool:
        """Whether datasets nobody registered are inferred from their first rows."""
        return self.unknown_datasets == INFER

    def to_json(self) -> dict[str, Any]:
        """The admin API's and the CLI's shape."""
        return {"project_id": self.project_id, UNKNOWN_DATASETS: self.unknown_datasets}


def parse_changes(document: Mapping[str, Any]) -> dict[str, str]:
    """The settings a change sets, checked; :class:`InvalidSettingError` lists every
    problem (unknown names, values outside their choices, nothing named)."""
    problems: list[tuple[str, str | None, str]] = []
    changes: dict[str, str] = {}
    for name, value in document.items():
        choices = CHOICES.get(name)
        if choices is None:
            shown = clip(str(name), 100)
            problems.append(("unknown_setting", shown,
                             f"Unknown setting: {shown} (known: {', '.join(CHOICES)})"))
        elif not isinstance(value, str) or value not in choices:
            allowed = " or ".join(f'"{c}"' for c in choices)
            problems.append(("invalid_setting", name, f"{name} must be {allowed}"))
        else:
            changes[name] = value
    if not document:
        problems.append(("invalid_body", None,
                         f"Name at least one setting to change: {', '.join(CHOICES)}"))
    if problems:
        raise InvalidSettingError(problems)
    return changes


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _from_hash(project_id: str, raw: Mapping[Any, Any]) -> ProjectSettings:
    """Settings from a stored hash; anything unknown or out of its choices (written by
    hand, or by a newer version) reads as the default."""
    stored = {_text(k): _text(v) for k, v in raw.items()}
    value = stored.get(UNKNOWN_DATASETS, REJECT)
    return ProjectSettings(
        project_id, value if value in CHOICES[UNKNOWN_DATASETS] else REJECT)


class ProjectSettingsStore:
    """Project settings in Redis plus this process's cache of them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        refresh_interval_s: float = 0.5,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._redis = redis
        self._max_cached = max_cached
        self._cache: collections.OrderedDict[str, ProjectSettings] = collections.OrderedDict()
        self._poll = GenerationPoll(redis, interval_s=refresh_interval_s)

    def cached(self, project_id: str) -> ProjectSettings | None:
        """The project's settings when the cache can answer with no Redis call, else
        None (then await :meth:`get`)."""
        if not self._poll.fresh():
            return None
        found = self._cache.get(project_id)
        if found is not None:
            self._cache.move_to_end(project_id)
        return found

    async def get(self, project_id: str) -> ProjectSettings:
        """The project's settings (defaults for those never set), from the cache when
        fresh."""
        check_id(project_id)
        await self._poll.maybe_refresh(self._revalidate)
        found = self._cache.get(project_id)
        if found is not None:
            self._cache.move_to_end(project_id)
            return found
        epoch = self._poll.epoch
        settings = await self.read(project_id)
        # A read that overlapped a refresh may be older than the refresh: serve, don't keep.
        if epoch == self._poll.epoch:
            self._cache[project_id] = settings
            if len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return settings

    async def unknown_datasets(self, project_id: str) -> str:
        """The project's ``unknown_datasets`` policy: ``reject`` or ``infer`` (no Redis
        call while the cache is fresh)."""
        found = self.cached(project_id)
        if found is None:
            found = await self.get(project_id)
        return found.unknown_datasets

    async def set(self, project_id: str, changes: Mapping[str, Any]) -> ProjectSettings:
        """Set the settings ``changes`` names (others keep their values) and return what is
        now stored. :class:`InvalidSettingError` (nothing stored) for a bad change."""
        check_id(project_id)
        values = parse_changes(changes)
        # a dict is invariant in its key type; redis-py's Mapping wants a union of them
        await self._redis.hset(project_settings_key(project_id),
                               mapping=values)  # type: ignore[arg-type]
        # this process sees its change at once; the others within the poll interval
        self._cache.pop(project_id, None)
        await bump_generation(self._redis)
        return await self.read(project_id)

    async def read(self, project_id: str) -> ProjectSettings:
        """The project's settings as stored now (no cache: what the admin API answers)."""
        return _from_hash(project_id, await self._redis.hgetall(project_settings_key(project_id)))

    async def _revalidate(self) -> None:
        """Re-read every cached project (one pipeline) and keep what is current."""
        projects = list(self._cache)
        if not projects:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for project_id in projects:
                pipe.hgetall(project_settings_key(project_id))
            rows = await pipe.execute()
        for project_id, raw in zip(projects, rows, strict=True):
            if project_id in self._cache:
                self._cache[project_id] = _from_hash(project_id, raw)

"""Settings of projects and of datasets in Redis, with a per-process cache so the ingest
path reads them from memory.

Project settings: ``unknown_datasets``, what a dialect that names its datasets in the body
(OrcaSheets' ``metric_name``) does with a dataset the project never registered: ``reject``
(the default: "Dataset schema not found") or ``infer`` (schema on first write,
:mod:`strictgate.registry.inference`).

Dataset settings: ``on_invalid``, what a batch holding invalid records does: ``reject`` (the
default: the whole batch is refused) or ``quarantine`` (valid records are admitted, invalid
ones kept with their errors); ``quarantine_retention_days`` (1 to 3650, default 30), how
long quarantined records are kept.

Both are one hash per scope under the project's hash tag
(:func:`quota.keys.project_settings_key`, :func:`quota.keys.dataset_settings_key`); a
dataset's hash is apart from its versions, so a new version keeps it. A setting not stored
has its default. Every change bumps ``registry:generation``, so every process's cache drops
it within the poll interval (0.5 s), as the registry's own caches do
(:mod:`strictgate.registry.generation`). One :class:`SettingsCache` serves both scopes; the
two stores only name their keys and their dataclass.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis

import schemas
from quota.keys import (
    check_id,
    dataset_settings_key,
    datasets_index_key,
    project_settings_key,
)
from strictgate.errors import clip
from strictgate.registry.generation import GenerationPoll, bump_generation

MAX_CACHED = 10_000
MAX_PROBLEMS = 20
MAX_INT_DIGITS = 10

Value = str | int
Scope = tuple[str, ...]
Guard = tuple[str, str]
"""A hash key and a field it must hold for a change to be stored (the dataset exists)."""
S = TypeVar("S")

# Set the settings only while the guard holds, in one step: a dataset deleted meanwhile
# does not get settings a later dataset of the same name would inherit.
_GUARDED_HSET = """
-- KEYS[1] the settings hash; KEYS[2], when given, a hash that must hold field ARGV[1].
-- ARGV[2..] name/value pairs. Returns 1 if stored, 0 if the guard failed.
if #KEYS > 1 and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


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
class Setting:
    """One setting: its name, its default and the values it may take (``choices`` for a
    text setting, ``minimum..maximum`` for an integer one)."""

    name: str
    default: Value
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = 0

    @classmethod
    def one_of(cls, name: str, *choices: str) -> Setting:
        """A text setting taking one of ``choices``; the first is the default."""
        return cls(name, choices[0], choices=choices)

    @classmethod
    def integer(cls, name: str, default: int, minimum: int, maximum: int) -> Setting:
        """An integer setting from ``minimum`` to ``maximum``."""
        return cls(name, default, minimum=minimum, maximum=maximum)

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (as JSON decodes it: ``true`` is no integer) may be set."""
        if isinstance(self.default, int):
            return type(value) is int and self.minimum <= value <= self.maximum
        return isinstance(value, str) and value in self.choices

    def must_be(self) -> str:
        """The message of a value it does not accept."""
        if isinstance(self.default, int):
            return f"{self.name} must be an integer from {self.minimum} to {self.maximum}"
        return f"{self.name} must be " + " or ".join(f'"{c}"' for c in self.choices)

    def describe(self) -> str:
        """Its values and default, for help texts."""
        if isinstance(self.default, int):
            return f"{self.minimum} to {self.maximum} (default {self.default})"
        return f"{' or '.join(self.choices)} (default {self.default})"

    def from_text(self, text: str) -> Any:
        """A value written as text (stored in Redis, typed on a command line): digits are
        an integer setting's number; anything else stays text (and is refused by
        :meth:`accepts` if the setting wants a number)."""
        if (isinstance(self.default, int) and len(text) <= MAX_INT_DIGITS
                and text.isascii() and text.isdigit()):
            return int(text)
        return text


class SettingsSchema:
    """The settings of one scope (a project, a dataset)."""

    def __init__(self, *settings: Setting) -> None:
        self._settings = {setting.name: setting for setting in settings}

    @property
    def names(self) -> tuple[str, ...]:
        """Every setting's name, in order."""
        return tuple(self._settings)

    def describe(self) -> str:
        """``name: values (default x); ...`` for help texts."""
        return "; ".join(f"{s.name}: {s.describe()}" for s in self._settings.values())

    def parse(self, document: Mapping[str, Any]) -> dict[str, Value]:
        """The settings a change sets, checked; :class:`InvalidSettingError` lists every
        problem (unknown names, values a setting does not take, nothing named)."""
        problems: list[tuple[str, str | None, str]] = []
        changes: dict[str, Value] = {}
        for name, value in document.items():
            setting = self._settings.get(name)
            if setting is None:
                shown = clip(str(name), 100)
                problems.append(("unknown_setting", shown, f"Unknown setting: {shown} "
                                 f"(known: {', '.join(self._settings)})"))
            elif not setting.accepts(value):
                problems.append(("invalid_setting", name, setting.must_be()))
            else:
                changes[name] = value
        if not document:
            problems.append(("invalid_body", None, "Name at least one setting to change: "
                             f"{', '.join(self._settings)}"))
        if problems:
            raise InvalidSettingError(problems)
        return changes

    def from_texts(self, pairs: Mapping[str, str]) -> dict[str, Any]:
        """A change typed as ``NAME=VALUE`` texts (the CLI), each value as :meth:`parse`
        expects it; unknown names are kept for :meth:`parse` to report."""
        return {name: (self._settings[name].from_text(text) if name in self._settings
                       else text) for name, text in pairs.items()}

    def from_hash(self, raw: Mapping[Any, Any]) -> dict[str, Value]:
        """Every setting's value from a stored hash; anything missing, unknown or not
        accepted (written by hand, or by a newer version) reads as its default."""
        stored = {_text(k): _text(v) for k, v in raw.items()}
        values: dict[str, Value] = {}
        for name, setting in self._settings.items():
            value = setting.from_text(stored[name]) if name in stored else setting.default
            values[name] = value if setting.accepts(value) else setting.default
        return values


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class SettingsCache(Generic[S]):
    """Settings of one kind of scope in Redis plus this process's cache of them.

    A scope is a tuple of ids (``(project,)``, ``(project, dataset)``); ``key_of`` names its
    hash and ``build`` turns its values into the settings object ``S``. Scopes never set are
    cached too (with their defaults), so the common case is a memory hit.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        schema: SettingsSchema,
        key_of: Callable[[Scope], str],
        build: Callable[[Scope, dict[str, Value]], S],
        *,
        refresh_interval_s: float = 0.5,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._redis = redis
        self.schema = schema
        self._key_of = key_of
        self._build = build
        self._max_cached = max_cached
        self._cache: collections.OrderedDict[Scope, S] = collections.OrderedDict()
        self._poll = GenerationPoll(redis, interval_s=refresh_interval_s)
        self._hset = redis.register_script(_GUARDED_HSET)

    def cached(self, scope: Scope) -> S | None:
        """The settings when the cache can answer with no Redis call, else None."""
        if not self._poll.fresh():
            return None
        found = self._cache.get(scope)
        if found is not None:
            self._cache.move_to_end(scope)
        return found

    async def get(self, scope: Scope) -> S:
        """The settings in force (defaults for those never set), from the cache when
        fresh."""
        await self._poll.maybe_refresh(self._revalidate)
        found = self._cache.get(scope)
        if found is not None:
            self._cache.move_to_end(scope)
            return found
        epoch = self._poll.epoch
        settings = self._build(scope, self.schema.from_hash(
            await self._redis.hgetall(self._key_of(scope))))
        # A read that overlapped a refresh may be older than the refresh: serve, don't keep.
        if epoch == self._poll.epoch:
            self._cache[scope] = settings
            if len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return settings

    async def read(self, scope: Scope, guard: Guard | None = None) -> S | None:
        """The settings as stored now (no cache: what the admin API answers); None when
        ``guard``'s hash does not hold its field."""
        async with self._redis.pipeline(transaction=False) as pipe:
            if guard is not None:
                pipe.hexists(*guard)
            pipe.hgetall(self._key_of(scope))
            rows = await pipe.execute()
        if guard is not None and not rows[0]:
            return None
        return self._build(scope, self.schema.from_hash(rows[-1]))

    async def set(self, scope: Scope, changes: Mapping[str, Any],
                  guard: Guard | None = None) -> S | None:
        """Set the settings ``changes`` names (others keep their values) and return what is
        now stored; None (nothing stored) when ``guard``'s hash does not hold its field.
        :class:`InvalidSettingError` (nothing stored) for a bad change."""
        values = self.schema.parse(changes)
        pairs = [str(item) for pair in values.items() for item in pair]
        keys = [self._key_of(scope)] if guard is None else [self._key_of(scope), guard[0]]
        field = "" if guard is None else guard[1]
        if not await self._hset(keys=keys, args=[field, *pairs]):
            return None
        # this process sees its change at once; the others within the poll interval
        self._cache.pop(scope, None)
        await bump_generation(self._redis)
        return await self.read(scope)

    async def _revalidate(self) -> None:
        """Re-read every cached scope (one pipeline) and keep what is current."""
        scopes = list(self._cache)
        if not scopes:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hgetall(self._key_of(scope))
            rows = await pipe.execute()
        for scope, raw in zip(scopes, rows, strict=True):
            if scope in self._cache:
                self._cache[scope] = self._build(scope, self.schema.from_hash(raw))


# --- project settings ---------------------------------------------------------------------------

UNKNOWN_DATASETS = "unknown_datasets"
REJECT = "reject"
INFER = "infer"
PROJECT_SETTINGS = SettingsSchema(Setting.one_of(UNKNOWN_DATASETS, REJECT, INFER))


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


def _project_settings(scope: Scope, values: dict[str, Value]) -> ProjectSettings:
    return ProjectSettings(scope[0], str(values[UNKNOWN_DATASETS]))


def _project_key(scope: Scope) -> str:
    return project_settings_key(scope[0])


class ProjectSettingsStore:
    """Project settings in Redis plus this process's cache of them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        refresh_interval_s: float = 0.5,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._settings = SettingsCache(redis, PROJECT_SETTINGS, _project_key,
                                       _project_settings,
                                       refresh_interval_s=refresh_interval_s,
                                       max_cached=max_cached)

    def cached(self, project_id: str) -> ProjectSettings | None:
        """The project's settings when the cache can answer with no Redis call, else
        None (then await :meth:`get`)."""
        return self._settings.cached((project_id,))

    async def get(self, project_id: str) -> ProjectSettings:
        """The project's settings (defaults for those never set), from the cache when
        fresh."""
        return await self._settings.get((check_id(project_id),))

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
        stored = await self._settings.set((check_id(project_id),), changes)
        assert stored is not None  # no guard: a project always has settings
        return stored

    async def read(self, project_id: str) -> ProjectSettings:
        """The project's settings as stored now (no cache: what the admin API answers)."""
        stored = await self._settings.read((check_id(project_id),))
        assert stored is not None
        return stored


# --- dataset settings ---------------------------------------------------------------------------

ON_INVALID = "on_invalid"
QUARANTINE = "quarantine"
QUARANTINE_RETENTION_DAYS = "quarantine_retention_days"
DEFAULT_RETENTION_DAYS = 30
DATASET_SETTINGS = SettingsSchema(
    Setting.one_of(ON_INVALID, REJECT, QUARANTINE),
    Setting.integer(QUARANTINE_RETENTION_DAYS, DEFAULT_RETENTION_DAYS, 1, 3650),
)


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetSettings:
    """The settings in force for one dataset (defaults included)."""

    project_id: str
    dataset_id: str
    on_invalid: str = REJECT
    quarantine_retention_days: int = DEFAULT_RETENTION_DAYS

    @property
    def quarantine(self) -> bool:
        """Whether invalid records are quarantined (and the valid ones of their batch
        admitted) instead of the whole batch refused."""
        return self.on_invalid == QUARANTINE

    def to_json(self) -> dict[str, Any]:
        """The admin API's and the CLI's shape."""
        return {"project_id": self.project_id, "dataset_id": self.dataset_id,
                ON_INVALID: self.on_invalid,
                QUARANTINE_RETENTION_DAYS: self.quarantine_retention_days}


def _dataset_settings(scope: Scope, values: dict[str, Value]) -> DatasetSettings:
    return DatasetSettings(scope[0], scope[1], str(values[ON_INVALID]),
                           int(values[QUARANTINE_RETENTION_DAYS]))


def _dataset_key(scope: Scope) -> str:
    return dataset_settings_key(scope[0], scope[1])


def _exists(project_id: str, dataset_id: str) -> Guard | None:
    """What must hold for the dataset to exist: an entry in the project's index, or
    nothing for a built-in one (every project has those)."""
    if dataset_id in schemas.BUILTIN_DATASETS:
        return None
    return datasets_index_key(project_id), dataset_id


class DatasetSettingsStore:
    """Dataset settings in Redis plus this process's cache of them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        refresh_interval_s: float = 0.5,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._settings = SettingsCache(redis, DATASET_SETTINGS, _dataset_key,
                                       _dataset_settings,
                                       refresh_interval_s=refresh_interval_s,
                                       max_cached=max_cached)

    def cached(self, project_id: str, dataset_id: str) -> DatasetSettings | None:
        """The dataset's settings when the cache can answer with no Redis call, else None
        (then await :meth:`get`)."""
        return self._settings.cached((project_id, dataset_id))

    async def get(self, project_id: str, dataset_id: str) -> DatasetSettings:
        """The dataset's settings (defaults for those never set, or for a dataset that does
        not exist), from the cache when fresh: the ingest path's read."""
        found = self._settings.cached((project_id, dataset_id))
        if found is not None:
            return found
        return await self._settings.get((check_id(project_id), check_id(dataset_id)))

    async def set(self, project_id: str, dataset_id: str,
                  changes: Mapping[str, Any]) -> DatasetSettings | None:
        """Set the settings ``changes`` names (others keep their values) and return what is
        now stored; None (nothing stored) when the project has no such dataset, registered
        or built-in. :class:`InvalidSettingError` (nothing stored) for a bad change."""
        scope = (check_id(project_id), check_id(dataset_id))
        return await self._settings.set(scope, changes, _exists(project_id, dataset_id))

    async def read(self, project_id: str, dataset_id: str) -> DatasetSettings | None:
        """The dataset's settings as stored now (no cache: what the admin API answers), or
        None when the project has no such dataset."""
        scope = (check_id(project_id), check_id(dataset_id))
        return await self._settings.read(scope, _exists(project_id, dataset_id))

"""Dataset definitions per project in Redis, versioned, with a per-process validator cache.

Layout (names from :mod:`quota.keys`): ``registry:datasets:{p:<project>}`` maps dataset id ->
latest version; ``registry:dataset:{p:<project>}:<dataset>`` maps version -> a JSON document
``{"definition", "created_at", "dataset_created_at", "digest"}``, plus a ``seq`` counter that
survives a delete. A new version is written by one Lua script that refuses if another writer
claimed the version first (the caller re-reads and retries), so two concurrent PUTs can never
both create version N.

Built-in datasets (``schemas.BUILTIN_DATASETS``: Operyn's ``logs``, ``metrics``,
``deployments``) exist in every project without being stored: a project with no stored
definition of one resolves to its built-in definition as version 0 (nothing is written, so
the hot path stays read-only). A PUT of one stores version 1 (its evolution report compares
with the built-in), which then wins; deleting the stored dataset falls back to the built-in.
Version 0 stays readable for the worker whatever is stored (entries queued under it).

Inferred definitions (schema on first write, :meth:`Registry.infer`, for projects whose
``unknown_datasets`` setting is ``infer``: :mod:`strictgate.registry.settings`) are ordinary
versions whose document also says ``"inferred": true``. Only a dataset whose latest version
is inferred grows with new columns; an admin's PUT of another definition stores a version
without the mark, and the dataset is then held to it like any registered one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

import schemas
from quota.keys import (
    ID_PATTERN,
    check_id,
    dataset_settings_key,
    dataset_versions_key,
    datasets_index_key,
)
from strictgate.registry.evolution import breaking_changes
from strictgate.registry.generation import GenerationPoll, bump_generation
from strictgate.registry.inference import (
    InferenceError,
    Seen,
    Shape,
    extend_definition,
    needs_inference,
    new_definition,
    observe,
    shape_of,
)
from strictgate.registry.settings import ProjectSettingsStore
from strictgate.registry.timestamps import iso
from validator import CompiledDataset, DefinitionError, compile_dataset

MAX_CACHED = 10_000
MAX_PUT_ATTEMPTS = 20
MAX_INFER_ATTEMPTS = 50
"""Version claims an inference may lose to other instances before giving up (each lost
claim means another writer stored a version, so a few always suffice in practice)."""
BUILTIN_VERSION = 0


class RegistryConflictError(RuntimeError):
    """Too many concurrent writers on one dataset; the caller may retry."""


def digest_of(definition: Any) -> str:
    """A digest of a normalized definition: equal digests mean the same definition."""
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class ResolvedDataset:
    """What the ingest hot path needs: the compiled validator of the latest version."""

    project_id: str
    dataset_id: str
    version: int
    validator: CompiledDataset
    builtin: bool = False
    """The built-in definition (version 0): the project has stored none of its own."""
    shape: Shape | None = None
    """Of an inferred definition: what rows could bring that it lacks
    (:func:`strictgate.registry.inference.needs_inference`); None for a definition that
    does not grow (registered, built-in)."""
    provisional: bool = False
    """Returned by :meth:`Registry.infer` when some row does not fit the definition it
    inferred: nothing was stored, and validating the rows against it fails (the errors name
    the rows). Never admit records under a provisional definition."""

    def grows_with(self, rows: Sequence[Any]) -> bool:
        """Whether ``rows`` bring something this inferred definition lacks (new columns or
        members, a first non-null value): then :meth:`Registry.infer` must see them. Memory
        only."""
        return self.shape is not None and needs_inference(self.shape, rows)

    @property
    def envelope(self) -> str:
        """The definition's envelope (``loguro``, ``none`` or ``event``)."""
        return self.validator.envelope


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One version of a definition (stored, or the built-in version 0)."""

    project_id: str
    dataset_id: str
    version: int
    definition: dict[str, Any]
    created_at: str | None
    """None for a built-in definition (shipped, never stored)."""
    builtin: bool = False

    def to_json(self) -> dict[str, Any]:
        """The admin API's shape."""
        return {
            "project_id": self.project_id, "dataset_id": self.dataset_id,
            "version": self.version, "definition": self.definition,
            "created_at": self.created_at, "builtin": self.builtin,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetInfo:
    """The latest version of a dataset; ``created_at`` is when the dataset was created
    (None for a built-in definition, version 0, which was never stored)."""

    project_id: str
    dataset_id: str
    version: int
    definition: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    builtin: bool = False

    def to_json(self, *, with_definition: bool = True) -> dict[str, Any]:
        """The admin API's shape."""
        body: dict[str, Any] = {
            "project_id": self.project_id, "dataset_id": self.dataset_id,
            "version": self.version, "created_at": self.created_at,
            "updated_at": self.updated_at, "builtin": self.builtin,
        }
        if with_definition:
            body["definition"] = self.definition
        return body


@dataclasses.dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of a PUT (or of a dry run: what it would do)."""

    project_id: str
    dataset_id: str
    version: int
    created: bool
    """True when this PUT stored the project's first definition of the dataset (over a
    built-in one too)."""
    changed: bool
    """False when the definition equals the latest version (no new version)."""
    dry_run: bool
    previous_version: int | None
    breaking_changes: list[dict[str, str]]
    json_schema: dict[str, Any]
    created_at: str | None
    updated_at: str | None

    def to_json(self) -> dict[str, Any]:
        """The admin API's shape."""
        return {
            "project_id": self.project_id, "dataset_id": self.dataset_id,
            "version": self.version, "created": self.created, "changed": self.changed,
            "dry_run": self.dry_run, "previous_version": self.previous_version,
            "breaking_changes": self.breaking_changes, "json_schema": self.json_schema,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


@dataclasses.dataclass(slots=True)
class _Entry:
    version: int  # the latest stored version; 0: none stored (then built-in, or no dataset)
    resolved: ResolvedDataset | None


def builtin_definition(dataset_id: str) -> dict[str, Any] | None:
    """The built-in definition of ``dataset_id`` as shipped, or None (a fresh copy)."""
    definition: dict[str, Any] | None = schemas.builtin(dataset_id)
    return definition


@functools.cache
def _builtin_compiled(dataset_id: str) -> CompiledDataset | None:
    """The compiled built-in definition (once per process, shared by every project)."""
    definition = builtin_definition(dataset_id)
    return None if definition is None else compile_dataset(definition)


def _builtin_info(project_id: str, dataset_id: str) -> DatasetInfo | None:
    definition = builtin_definition(dataset_id)
    if definition is None:
        return None
    return DatasetInfo(project_id, dataset_id, BUILTIN_VERSION, definition,
                       created_at=None, updated_at=None, builtin=True)


def _script(name: str) -> str:
    return resources.files("strictgate.registry").joinpath(name).read_text("utf-8")


def _info(project_id: str, dataset_id: str, version: int, document: dict[str, Any]) -> DatasetInfo:
    return DatasetInfo(
        project_id, dataset_id, version, document["definition"],
        created_at=document["dataset_created_at"], updated_at=document["created_at"],
    )


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _doc(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    document: dict[str, Any] = orjson.loads(raw)
    return document


class Registry:
    """Dataset definitions in Redis plus this process's cache of compiled validators."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        clock: Callable[[], datetime],
        refresh_interval_s: float = 0.5,
        max_cached: int = MAX_CACHED,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._max_cached = max_cached
        self._cache: collections.OrderedDict[tuple[str, str], _Entry] = (
            collections.OrderedDict()
        )
        self._poll = GenerationPoll(redis, interval_s=refresh_interval_s)
        self._put_script = redis.register_script(_script("put_version.lua"))
        self._delete_script = redis.register_script(_script("delete_dataset.lua"))
        self._infer_locks = _KeyedLocks()
        self.settings = ProjectSettingsStore(redis, refresh_interval_s=refresh_interval_s)
        """The projects' settings (``unknown_datasets``), cached like the definitions."""

    # --- writes ---------------------------------------------------------------------------

    async def put(
        self,
        project_id: str,
        dataset_id: str,
        definition: Mapping[str, Any],
        *,
        dry_run: bool = False,
    ) -> PutResult:
        """Store ``definition`` as the next version unless it equals the latest.

        Raises :class:`validator.DefinitionError` for a bad definition (nothing stored).
        """
        check_id(project_id)
        check_id(dataset_id)
        raw_definition = dict(definition)
        compiled = compile_dataset(raw_definition)
        digest = digest_of(compiled.definition)
        index = datasets_index_key(project_id)
        versions = dataset_versions_key(project_id, dataset_id)
        builtin = _builtin_compiled(dataset_id)
        for _ in range(MAX_PUT_ATTEMPTS):
            latest = int(await self._redis.hget(index, dataset_id) or 0)
            raw_previous, raw_seq = await self._redis.hmget(versions, [str(latest), "seq"])
            previous = _doc(raw_previous) if latest else None
            if previous is not None and previous.get("digest") == digest:
                return PutResult(
                    project_id, dataset_id, latest, created=False, changed=False,
                    dry_run=dry_run, previous_version=latest, breaking_changes=[],
                    json_schema=compiled.json_schema,
                    created_at=previous["dataset_created_at"],
                    updated_at=previous["created_at"],
                )
            if previous is None and builtin is not None and \
                    digest_of(builtin.definition) == digest:
                # The built-in definition itself: it is in force already, nothing to store.
                return PutResult(
                    project_id, dataset_id, BUILTIN_VERSION, created=False, changed=False,
                    dry_run=dry_run, previous_version=BUILTIN_VERSION, breaking_changes=[],
                    json_schema=compiled.json_schema, created_at=None, updated_at=None,
                )
            base = previous["definition"] if previous is not None else (
                builtin.definition if builtin is not None else None)
            changes = (
                breaking_changes(_normalized(base), compiled.definition)
                if base is not None else []
            )
            now = iso(self._clock())
            dataset_created_at: str = previous["dataset_created_at"] if previous else now
            document = {
                "definition": raw_definition, "created_at": now, "digest": digest,
                "dataset_created_at": dataset_created_at,
            }
            version = int(raw_seq or 0) + 1
            if not dry_run:
                version = int(await self._put_script(
                    keys=[index, versions], args=[dataset_id, latest, orjson.dumps(document)]
                ))
                if version == 0:
                    continue  # another writer claimed the version first: read, compare again
                # this instance sees its own change at once; the others within the poll
                self._cache.pop((project_id, dataset_id), None)
                await bump_generation(self._redis)
            previous_version = latest or (BUILTIN_VERSION if builtin is not None else None)
            return PutResult(
                project_id, dataset_id, version, created=previous is None, changed=True,
                dry_run=dry_run, previous_version=previous_version, breaking_changes=changes,
                json_schema=compiled.json_schema,
                created_at=dataset_created_at, updated_at=now,
            )
        raise RegistryConflictError("too many concurrent updates of this dataset; retry")

    async def delete(self, project_id: str, dataset_id: str) -> bool:
        """Remove the dataset, all its stored versions and its settings (a re-created one
        starts with the defaults); False if none was stored (a
        built-in dataset cannot be deleted: removing the project's own definition of one
        brings the built-in back).

        Only the version counter is kept, so a re-created dataset continues the numbering.
        """
        removed = await self._delete_script(
            keys=[datasets_index_key(project_id), dataset_versions_key(project_id, dataset_id),
                  dataset_settings_key(project_id, dataset_id)],
            args=[dataset_id],
        )
        self._cache.pop((project_id, dataset_id), None)
        if removed:
            await bump_generation(self._redis)
        return bool(removed)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, project_id: str, dataset_id: str) -> DatasetInfo | None:
        """The latest version with its timestamps (the built-in version 0 when none is
        stored), or None."""
        latest = await self._redis.hget(datasets_index_key(project_id), dataset_id)
        if latest is not None:
            last = _doc(await self._redis.hget(
                dataset_versions_key(project_id, dataset_id), _text(latest)
            ))
            if last is not None:  # else deleted between the two reads
                return _info(project_id, dataset_id, int(latest), last)
        return _builtin_info(project_id, dataset_id)

    async def get_version(
        self, project_id: str, dataset_id: str, n: int
    ) -> DatasetVersion | None:
        """Version ``n`` of a dataset (0: the built-in definition, if it has one), or
        None."""
        if n == BUILTIN_VERSION:
            definition = builtin_definition(dataset_id)
            if definition is None:
                return None
            return DatasetVersion(project_id, dataset_id, n, definition, None, builtin=True)
        document = _doc(await self._redis.hget(
            dataset_versions_key(project_id, dataset_id), str(n)
        ))
        if document is None:
            return None
        return DatasetVersion(
            project_id, dataset_id, n, document["definition"], document["created_at"]
        )

    async def list(self, project_id: str) -> list[DatasetInfo]:
        """Every dataset of a project (latest versions; the built-in ones it has not
        stored its own definition of as version 0), by dataset id."""
        index = await self._redis.hgetall(datasets_index_key(project_id))
        names = sorted((_text(k), _text(v)) for k, v in index.items())
        async with self._redis.pipeline(transaction=False) as pipe:
            for dataset_id, latest in names:
                pipe.hget(dataset_versions_key(project_id, dataset_id), latest)
            rows = await pipe.execute()
        found = {
            dataset_id: _info(project_id, dataset_id, int(latest), document)
            for (dataset_id, latest), document in zip(names, map(_doc, rows), strict=True)
            if document is not None
        }
        for dataset_id in schemas.BUILTIN_DATASETS:
            if dataset_id not in found:
                info = _builtin_info(project_id, dataset_id)
                if info is not None:
                    found[dataset_id] = info
        return [found[dataset_id] for dataset_id in sorted(found)]

    # --- schema on first write -------------------------------------------------------------

    async def infer(
        self,
        project_id: str,
        dataset_id: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        flat: bool,
    ) -> ResolvedDataset:
        """The definition to validate ``rows`` (decoded JSON objects) of a dataset against,
        inferring or growing it first when the rows need it (the rules:
        :mod:`strictgate.registry.inference`). The caller has checked that the project's
        ``unknown_datasets`` setting is ``infer``.

        - The dataset has a definition that does not grow (registered by an admin, or
          built-in): that definition, as it is.
        - Its latest definition covers the rows (the hot path): it, from this process's
          cache, with no Redis call.
        - No definition: version 1 inferred from the rows; an inferred one the rows add to:
          a new version with their new columns (optional) and first non-null types. Each is
          claimed atomically (``put_version.lua`` with the version read); a lost claim
          re-reads and merges, so concurrent first writes make one definition and the same
          column added at once makes one version.
        - A definition (new or grown) that some row does not fit (e.g. the rows disagree on
          a new column's type): nothing is stored; it is returned ``provisional`` and fails
          those rows (the validator names them).

        Values that do not fit a column's existing type are the validator's business: the
        current definition is returned. Raises :class:`InferenceError` (400: a nested value
        in a ``flat`` row, a bad column name, too many fields, an invalid dataset id) and
        :class:`RegistryConflictError` (too many concurrent writers; retry), besides Redis
        errors.
        """
        check_id(project_id)
        if not isinstance(dataset_id, str) or not ID_PATTERN.match(dataset_id):
            shown = dataset_id[:100] if isinstance(dataset_id, str) else repr(dataset_id)
            raise InferenceError(
                "invalid_dataset_id", f"Invalid dataset ID: {shown!r} (letters, digits, '.',"
                " '_', '-', starting with a letter or digit; up to 128)")
        current = await self.resolve(project_id, dataset_id)
        if current is not None and not current.grows_with(rows):
            return current
        # Requests that find no definition race to create it: they define it together.
        co_first = current is None
        root = observe(rows, flat=flat)
        key = (project_id, dataset_id)
        async with self._infer_locks.hold(key):
            # Another task of this process may have stored what these rows need meanwhile
            # (a racing first write must still see Redis: its missing columns may need to
            # become optional).
            fresh, cached = self.cached(project_id, dataset_id)
            if fresh and cached is not None and not co_first and not cached.grows_with(rows):
                return cached
            return await self._infer(key, rows, root, flat=flat, co_first=co_first)

    async def preview_infer(self, project_id: str, dataset_id: str,
                            rows: Sequence[Mapping[str, Any]], *, flat: bool
                            ) -> ResolvedDataset:
        """What :meth:`infer` would validate ``rows`` against, storing nothing (a dry run):
        the current definition when the rows need no new one, else the definition they
        would infer or grow, as the version it would be stored as. Raises
        :class:`InferenceError` as :meth:`infer` does."""
        check_id(project_id)
        if not isinstance(dataset_id, str) or not ID_PATTERN.match(dataset_id):
            raise InferenceError("invalid_dataset_id", "Invalid dataset ID")
        current = await self.resolve(project_id, dataset_id)
        if current is not None and (current.shape is None or not current.grows_with(rows)):
            return current
        root = observe(rows, flat=flat)
        latest = int(await self._redis.hget(datasets_index_key(project_id), dataset_id) or 0)
        document = _doc(await self._redis.hget(dataset_versions_key(project_id, dataset_id),
                                               str(latest))) if latest else None
        candidate = (new_definition(root, flat=flat) if document is None
                     else extend_definition(document["definition"], root, flat=flat,
                                            co_first=False))
        if candidate is None:
            assert current is not None  # an inferred definition that covers the rows
            return current
        return ResolvedDataset(project_id, dataset_id, latest + 1,
                               _compile_inferred(candidate))

    async def _infer(self, key: tuple[str, str], rows: Sequence[Mapping[str, Any]],
                     root: Seen, *, flat: bool, co_first: bool) -> ResolvedDataset:
        project_id, dataset_id = key
        index = datasets_index_key(project_id)
        versions = dataset_versions_key(project_id, dataset_id)
        for _ in range(MAX_INFER_ATTEMPTS):
            epoch = self._poll.epoch
            latest = int(await self._redis.hget(index, dataset_id) or 0)
            document = _doc(await self._redis.hget(versions, str(latest))) if latest else None
            if document is None:
                builtin = _builtin_compiled(dataset_id)
                if builtin is not None:
                    return ResolvedDataset(project_id, dataset_id, BUILTIN_VERSION, builtin,
                                           builtin=True)
                candidate: dict[str, Any] | None = new_definition(root, flat=flat)
            elif not document.get("inferred"):
                return self._remember(key, latest, document, epoch)  # it does not grow
            else:
                candidate = extend_definition(document["definition"], root, flat=flat,
                                              co_first=co_first)
            if candidate is None:
                assert document is not None  # a first version always has fields
                return self._remember(key, latest, document, epoch)
            compiled = _compile_inferred(candidate)
            # Stored only from rows that all fit it: the first accepted request defines it.
            if any(compiled.validate(row) for row in rows):
                return ResolvedDataset(project_id, dataset_id, latest, compiled,
                                       provisional=True)
            now = iso(self._clock())
            stored = {
                "definition": candidate, "created_at": now,
                "digest": digest_of(compiled.definition), "inferred": True,
                "dataset_created_at": document["dataset_created_at"] if document else now,
            }
            version = int(await self._put_script(
                keys=[index, versions], args=[dataset_id, latest, orjson.dumps(stored)]))
            if version == 0:
                continue  # another writer claimed the version: read it and merge again
            resolved = ResolvedDataset(project_id, dataset_id, version, compiled,
                                       shape=shape_of(compiled.definition))
            self._keep(key, _Entry(version, resolved), epoch)
            await bump_generation(self._redis)
            return resolved
        raise RegistryConflictError("too many concurrent updates of this dataset; retry")

    def _remember(self, key: tuple[str, str], version: int, document: dict[str, Any],
                  epoch: int) -> ResolvedDataset:
        """The resolved form of a stored version just read (cached for the next call)."""
        entry = self._cache.get(key)
        if entry is None or entry.version != version or entry.resolved is None:
            entry = _entry_of(key[0], key[1], version, document)
            self._keep(key, entry, epoch)
        assert entry.resolved is not None
        return entry.resolved

    # --- hot path -------------------------------------------------------------------------

    def cached(self, project_id: str, dataset_id: str) -> tuple[bool, ResolvedDataset | None]:
        """``(True, answer of resolve)`` when the cache can answer with no Redis call, else
        ``(False, None)``. The hot path asks this first: no coroutine, no deadline."""
        if not self._poll.fresh():
            return False, None
        key = (project_id, dataset_id)
        entry = self._cache.get(key)
        if entry is None:
            return False, None
        self._cache.move_to_end(key)
        return True, entry.resolved

    async def resolve(self, project_id: str, dataset_id: str) -> ResolvedDataset | None:
        """The compiled validator of a dataset's latest version, from the cache when fresh."""
        await self._poll.maybe_refresh(self._revalidate)
        key = (project_id, dataset_id)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            return entry.resolved
        epoch = self._poll.epoch
        entry = await self._load(project_id, dataset_id)
        # A fill that overlapped a refresh may hold pre-change data: serve it, don't keep it.
        if epoch == self._poll.epoch:
            self._cache[key] = entry
            if len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return entry.resolved

    async def _load(self, project_id: str, dataset_id: str) -> _Entry:
        latest = await self._redis.hget(datasets_index_key(project_id), dataset_id)
        document = None if latest is None else _doc(await self._redis.hget(
            dataset_versions_key(project_id, dataset_id), latest
        ))
        if latest is None or document is None:
            builtin = _builtin_compiled(dataset_id)
            return _Entry(0, None if builtin is None else ResolvedDataset(
                project_id, dataset_id, BUILTIN_VERSION, builtin, builtin=True))
        return _entry_of(project_id, dataset_id, int(latest), document)

    def _keep(self, key: tuple[str, str], entry: _Entry, epoch: int) -> None:
        """Cache ``entry`` unless a refresh ran since ``epoch`` (it may be older than that
        refresh's view: drop it instead)."""
        if epoch != self._poll.epoch:
            self._cache.pop(key, None)
            return
        self._cache[key] = entry
        self._cache.move_to_end(key)
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    async def _revalidate(self) -> None:
        """Drop every cached entry whose latest version changed in Redis."""
        keys = list(self._cache)
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for project_id, dataset_id in keys:
                pipe.hget(datasets_index_key(project_id), dataset_id)
            latest = await pipe.execute()
        for key, value in zip(keys, latest, strict=True):
            entry = self._cache.get(key)
            if entry is not None and entry.version != int(value or 0):
                del self._cache[key]

    async def ready(self) -> bool:
        """Whether the registry can be read."""
        return await self._poll.ping()


def _entry_of(project_id: str, dataset_id: str, version: int, document: dict[str, Any]
              ) -> _Entry:
    """A cache entry of a stored version (an inferred one with its shape)."""
    compiled = compile_dataset(document["definition"])
    shape = shape_of(compiled.definition) if document.get("inferred") else None
    return _Entry(version, ResolvedDataset(project_id, dataset_id, version, compiled,
                                           shape=shape))


def _compile_inferred(definition: dict[str, Any]) -> CompiledDataset:
    """Compile an inferred definition; the inference checks what the definition language
    refuses (names, counts, depth), so a refusal here is reported, not raised raw."""
    try:
        return compile_dataset(definition)
    except DefinitionError as exc:
        where, message = exc.problems[0]
        raise InferenceError(
            "not_inferable", f"Cannot infer a definition from these rows: {where}: "
            f"{message[:200]}") from None


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it: inferences of
    one dataset in one process run one at a time (the later ones then usually find what
    they need stored), while other instances race through the version claim."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Hold the lock of ``key``."""
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


def _normalized(definition: Any) -> dict[str, Any]:
    """A stored definition in the compiler's normalized form (for the evolution report)."""
    try:
        normalized: dict[str, Any] = compile_dataset(definition).definition
    except DefinitionError:
        # Stored under an older, looser language: compare it as written rather than refuse
        # the new definition because of the old one.
        return dict(definition)
    return normalized

"""``strictgate datasets check|put|get|list|delete``, ``strictgate datasets settings get|set``
(dataset settings), ``strictgate keys create|list|revoke`` and ``strictgate projects get|set``
(project settings).

They use the same :class:`Registry` and :class:`KeyService` as the service, on ``REDIS_URL`` or
the embedded server of a running ``make run`` (see :func:`strictgate.cli_redis.cli_redis_url`).
Output is one JSON document on stdout; errors go to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from quota.keys import InvalidIdError, check_id
from strictgate.cli_redis import fail, run_with_redis
from strictgate.context import utc_now
from strictgate.registry.apikeys import KeyService
from strictgate.registry.settings import (
    DATASET_SETTINGS,
    PROJECT_SETTINGS,
    DatasetSettingsStore,
    InvalidSettingError,
    ProjectSettingsStore,
)
from strictgate.registry.store import Registry, RegistryConflictError
from strictgate.secrets import load_or_create_secret
from strictgate.settings import Settings
from validator import DefinitionError, compile_dataset

JWT_SECRET_FILE = "jwt-secret"  # the name app.resolve_jwt_secret uses in the data dir


def _print(document: Any) -> None:
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def jwt_secret(settings: Settings) -> str:
    """``STRICTGATE_JWT_SECRET``, else the data dir's secret (created 0600 if absent), like
    the service, so keys made here verify there."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.data_dir / JWT_SECRET_FILE
    value, created = load_or_create_secret(path)
    if created:
        print(f"strictgate: generated {JWT_SECRET_FILE} at {path.resolve()}", file=sys.stderr)
    return value


def _run(body: Callable[[Settings, aioredis.Redis], Awaitable[int]]) -> int:
    return run_with_redis(body, (RedisError, RegistryConflictError))


def _registry(client: aioredis.Redis) -> Registry:
    return Registry(client, clock=utc_now)


def _keys(settings: Settings, client: aioredis.Redis) -> KeyService:
    return KeyService(client, jwt_secret(settings), clock=utc_now)


def _read_definition(path: Path) -> dict[str, Any] | str:
    """The JSON object in ``path``, or the one-line reason it is not one."""
    try:
        definition = orjson.loads(path.read_bytes())
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    except orjson.JSONDecodeError as exc:
        return f"{path} is not valid JSON: {exc}"
    if not isinstance(definition, dict):
        return f"{path} must hold a JSON object"
    return definition


def _definition_failed(exc: DefinitionError) -> int:
    for pointer, message in exc.problems:
        print(f"strictgate: {pointer or '/'}: {message}", file=sys.stderr)
    return fail("Invalid dataset definition")


def _cmd_datasets_check(args: argparse.Namespace) -> int:
    definition = _read_definition(Path(args.file))
    if isinstance(definition, str):
        return fail(definition)
    try:
        compiled = compile_dataset(definition)
    except DefinitionError as exc:
        return _definition_failed(exc)
    _print({"valid": True, "json_schema": compiled.json_schema})
    return 0


def _cmd_datasets_put(args: argparse.Namespace) -> int:
    definition = _read_definition(Path(args.file))
    if isinstance(definition, str):
        return fail(definition)

    async def body(settings: Settings, client: aioredis.Redis) -> int:
        try:
            result = await _registry(client).put(
                args.project_id, args.dataset_id, definition, dry_run=args.dry_run
            )
        except DefinitionError as exc:
            return _definition_failed(exc)
        _print(result.to_json())
        return 0

    return _run(body)


def _cmd_datasets_get(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        registry = _registry(client)
        if args.version is None:
            info = await registry.get(args.project_id, args.dataset_id)
            found = None if info is None else info.to_json()
        else:
            version = await registry.get_version(args.project_id, args.dataset_id, args.version)
            found = None if version is None else version.to_json()
        if found is None:
            return fail("Dataset not found" if args.version is None else
                         "Dataset version not found")
        _print(found)
        return 0

    return _run(body)


def _cmd_datasets_list(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        infos = await _registry(client).list(args.project_id)
        _print({"project_id": args.project_id,
                "datasets": [i.to_json(with_definition=False) for i in infos]})
        return 0

    return _run(body)


def _cmd_datasets_delete(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        if not await _registry(client).delete(args.project_id, args.dataset_id):
            return fail("Dataset not found")
        _print({"project_id": args.project_id, "dataset_id": args.dataset_id, "deleted": True})
        return 0

    return _run(body)


def _cmd_keys_create(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        created = await _keys(settings, client).create(args.project_id, args.user)
        _print({"key_id": created.key_id, "api_key": created.api_key,
                "project_id": args.project_id, "user_id": args.user})
        return 0

    return _run(body)


def _cmd_keys_list(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        infos = await _keys(settings, client).list(args.project_id)
        _print({"project_id": args.project_id, "keys": [i.to_json() for i in infos]})
        return 0

    return _run(body)


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        if not await _keys(settings, client).revoke(args.project_id, args.key_id):
            return fail("API key not found")
        _print({"project_id": args.project_id, "key_id": args.key_id, "revoked": True})
        return 0

    return _run(body)


class _Shown(Protocol):
    """Project or dataset settings: what the settings commands print."""

    def to_json(self) -> dict[str, Any]: ...


def _settings_command(action: Callable[[aioredis.Redis], Awaitable[_Shown | None]]) -> int:
    """Run a settings read or change and print what is in force; None from ``action``
    means the dataset does not exist."""
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        try:
            found = await action(client)
        except InvalidSettingError as exc:
            for _code, _field, message in exc.problems[1:]:
                print(f"strictgate: {message}", file=sys.stderr)
            return fail(exc.message)
        if found is None:
            return fail("Dataset schema not found")
        _print(found.to_json())
        return 0

    return _run(body)


def _cmd_projects_get(args: argparse.Namespace) -> int:
    return _settings_command(lambda client: ProjectSettingsStore(client).read(args.project_id))


def _cmd_projects_set(args: argparse.Namespace) -> int:
    changes = PROJECT_SETTINGS.from_texts(dict(args.settings))
    return _settings_command(
        lambda client: ProjectSettingsStore(client).set(args.project_id, changes))


def _cmd_dataset_settings_get(args: argparse.Namespace) -> int:
    return _settings_command(lambda client: DatasetSettingsStore(client).read(
        args.project_id, args.dataset_id))


def _cmd_dataset_settings_set(args: argparse.Namespace) -> int:
    changes = DATASET_SETTINGS.from_texts(dict(args.settings))
    return _settings_command(lambda client: DatasetSettingsStore(client).set(
        args.project_id, args.dataset_id, changes))


def _setting(value: str) -> tuple[str, str]:
    name, equals, setting = value.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value[:130]!r}")
    return name, setting


def _id(kind: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            return check_id(value)
        except InvalidIdError:
            raise argparse.ArgumentTypeError(f"invalid {kind} id {value[:130]!r}") from None

    parse.__name__ = f"{kind} id"
    return parse


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"invalid version {value[:20]!r}")
    return int(value)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``datasets``, ``keys`` and ``projects`` subcommands."""
    ids = "letters, digits, '.', '_', '-'; up to 128"
    datasets = sub.add_parser(
        "datasets", help="dataset definitions of projects",
        description="Dataset definitions of projects: the fields a dataset's records must "
                    "have. Every change is a new version; output is one JSON document.",
    )
    ds = datasets.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    check = ds.add_parser(
        "check", help="check a definition file offline (no service needed)",
        description="Compile a definition file as the service would and print its JSON "
                    "Schema; every problem is listed and the exit status is 1 when invalid.",
    )
    check.add_argument("file", help="the definition, e.g. schemas/examples/seed.json")
    check.set_defaults(func=_cmd_datasets_check)
    put = ds.add_parser(
        "put", help="create or update a definition from a JSON file",
        description="Create a dataset, or add a version of it, from a definition file. "
                    "Refused, with every problem listed, when the definition is invalid.",
    )
    put.add_argument("project_id", type=_id("project"), help=f"the project ({ids})")
    put.add_argument("dataset_id", type=_id("dataset"), help=f"the dataset ({ids})")
    put.add_argument("file", help="the definition, e.g. schemas/examples/seed.json")
    put.add_argument("--dry-run", action="store_true",
                     help="report the breaking changes and JSON Schema; store nothing")
    put.set_defaults(func=_cmd_datasets_put)
    get = ds.add_parser("get", help="the latest definition (or --version N)",
                        description="Print a dataset's latest definition, or version N.")
    get.add_argument("project_id", type=_id("project"), help="the project")
    get.add_argument("dataset_id", type=_id("dataset"), help="the dataset")
    get.add_argument("--version", type=_positive, default=None, metavar="N",
                     help="print version N (1, 2, ...) instead of the latest")
    get.set_defaults(func=_cmd_datasets_get)
    lst = ds.add_parser("list", help="the datasets of a project",
                        description="List the datasets of a project (without definitions).")
    lst.add_argument("project_id", type=_id("project"), help="the project")
    lst.set_defaults(func=_cmd_datasets_list)
    delete = ds.add_parser(
        "delete", help="delete a dataset (queued and written data stay)",
        description="Delete a dataset and its versions: new records for it are refused; "
                    "records already queued or written stay.",
    )
    delete.add_argument("project_id", type=_id("project"), help="the project")
    delete.add_argument("dataset_id", type=_id("dataset"), help="the dataset")
    delete.set_defaults(func=_cmd_datasets_delete)
    _register_dataset_settings(ds, ids)

    keys = sub.add_parser(
        "keys", help="project API keys",
        description="API keys: each lets a client send records to a project's datasets, "
                    "counted against one user's quota.",
    )
    ks = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = ks.add_parser(
        "create", help="create a key (the token is printed once)",
        description="Create an API key; its token is printed once and never stored.",
    )
    create.add_argument("project_id", type=_id("project"), help=f"the project ({ids})")
    create.add_argument("--user", required=True, type=_id("user"),
                        help="the user whose quota the key's records count against")
    create.set_defaults(func=_cmd_keys_create)
    klist = ks.add_parser("list", help="the live keys of a project (no secrets)",
                          description="List the live keys of a project (ids, users; no "
                                      "tokens).")
    klist.add_argument("project_id", type=_id("project"), help="the project")
    klist.set_defaults(func=_cmd_keys_list)
    revoke = ks.add_parser(
        "revoke", help="revoke a key (every instance within a second)",
        description="Revoke an API key: every instance refuses it within a second.",
    )
    revoke.add_argument("project_id", type=_id("project"), help="the project")
    revoke.add_argument("key_id", type=_id("key"), help="the key's id (from keys list)")
    revoke.set_defaults(func=_cmd_keys_revoke)

    projects = sub.add_parser(
        "projects", help="project settings",
        description="Settings of a project. unknown_datasets says what happens to records "
                    "for a dataset nobody registered (OrcaSheets' metric_name): reject (a "
                    "400 \"Dataset schema not found\") or infer (the first rows define it, "
                    "later rows may add optional columns).",
    )
    ps = projects.add_subparsers(dest="projects_command", required=True, metavar="COMMAND")
    pget = ps.add_parser("get", help="a project's settings (defaults included)",
                         description="Print a project's settings, defaults included.")
    pget.add_argument("project_id", type=_id("project"), help=f"the project ({ids})")
    pget.set_defaults(func=_cmd_projects_get)
    pset = ps.add_parser(
        "set", help="change settings, e.g. unknown_datasets=infer",
        description="Set the named settings of a project (the others keep their values); "
                    "in force on every instance within a second. Settings: "
                    f"{PROJECT_SETTINGS.describe()}.",
    )
    pset.add_argument("project_id", type=_id("project"), help=f"the project ({ids})")
    pset.add_argument("settings", nargs="+", type=_setting, metavar="NAME=VALUE",
                      help="e.g. unknown_datasets=infer")
    pset.set_defaults(func=_cmd_projects_set)


def _register_dataset_settings(
    ds: argparse._SubParsersAction[argparse.ArgumentParser], ids: str,
) -> None:
    """Add ``datasets settings get|set``."""
    settings = ds.add_parser(
        "settings", help="a dataset's settings (what happens to invalid records)",
        description="Settings of a dataset, kept across its versions. on_invalid says what "
                    "a batch holding invalid records does: reject (refused whole) or "
                    "quarantine (the valid records are admitted, the invalid ones kept with "
                    "their errors); quarantine_retention_days, how long quarantined records "
                    "are kept.",
    )
    ss = settings.add_subparsers(dest="settings_command", required=True, metavar="COMMAND")
    sget = ss.add_parser("get", help="a dataset's settings (defaults included)",
                         description="Print a dataset's settings, defaults included.")
    sget.add_argument("project_id", type=_id("project"), help=f"the project ({ids})")
    sget.add_argument("dataset_id", type=_id("dataset"), help=f"the dataset ({ids})")
    sget.set_defaults(func=_cmd_dataset_settings_get)
    sset = ss.add_parser(
        "set", help="change settings, e.g. on_invalid=quarantine",
        description="Set the named settings of a dataset (the others keep their values); "
                    "in force on every instance within a second. Settings: "
                    f"{DATASET_SETTINGS.describe()}.",
    )
    sset.add_argument("project_id", type=_id("project"), help=f"the project ({ids})")
    sset.add_argument("dataset_id", type=_id("dataset"), help=f"the dataset ({ids})")
    sset.add_argument("settings", nargs="+", type=_setting, metavar="NAME=VALUE",
                      help="e.g. on_invalid=quarantine quarantine_retention_days=7")
    sset.set_defaults(func=_cmd_dataset_settings_set)

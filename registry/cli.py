"""``strictgate datasets put|get|list|versions|delete`` and ``strictgate keys create|list|revoke``.

They use the same :class:`Registry` and :class:`KeyService` as the service, on ``REDIS_URL`` or
the embedded server of a running ``make run`` (see :func:`strictgate.cli_redis.cli_redis_url`).
Output is one JSON document on stdout; errors go to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from quota.keys import InvalidIdError, check_id
from registry.apikeys import KeyService
from registry.store import Registry, RegistryConflictError
from strictgate.cli_redis import fail, run_with_redis
from strictgate.context import utc_now
from strictgate.secrets import load_or_create_secret
from strictgate.settings import Settings
from validator import DefinitionError

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


def _cmd_datasets_put(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        definition = orjson.loads(path.read_bytes())
    except OSError as exc:
        return fail(f"cannot read {path}: {exc.strerror}")
    except orjson.JSONDecodeError as exc:
        return fail(f"{path} is not valid JSON: {exc}")
    if not isinstance(definition, dict):
        return fail(f"{path} must hold a JSON object")

    async def body(settings: Settings, client: aioredis.Redis) -> int:
        try:
            result = await _registry(client).put(
                args.project_id, args.dataset_id, definition, dry_run=args.dry_run
            )
        except DefinitionError as exc:
            for pointer, message in exc.problems:
                print(f"strictgate: {pointer or '/'}: {message}", file=sys.stderr)
            return fail("Invalid dataset definition")
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
    """Add the ``datasets`` and ``keys`` subcommands."""
    datasets = sub.add_parser("datasets", help="dataset definitions of projects")
    ds = datasets.add_subparsers(dest="datasets_command", required=True)
    put = ds.add_parser("put", help="create or update a definition from a JSON file")
    put.add_argument("project_id", type=_id("project"))
    put.add_argument("dataset_id", type=_id("dataset"))
    put.add_argument("file", help="the definition, e.g. schemas/examples/seed.json")
    put.add_argument("--dry-run", action="store_true",
                     help="report the breaking changes and JSON Schema; store nothing")
    put.set_defaults(func=_cmd_datasets_put)
    get = ds.add_parser("get", help="the latest definition (or --version N)")
    get.add_argument("project_id", type=_id("project"))
    get.add_argument("dataset_id", type=_id("dataset"))
    get.add_argument("--version", type=_positive, default=None)
    get.set_defaults(func=_cmd_datasets_get)
    lst = ds.add_parser("list", help="the datasets of a project")
    lst.add_argument("project_id", type=_id("project"))
    lst.set_defaults(func=_cmd_datasets_list)
    delete = ds.add_parser("delete", help="delete a dataset (queued and written data stay)")
    delete.add_argument("project_id", type=_id("project"))
    delete.add_argument("dataset_id", type=_id("dataset"))
    delete.set_defaults(func=_cmd_datasets_delete)

    keys = sub.add_parser("keys", help="project API keys")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    create = ks.add_parser("create", help="create a key (the token is printed once)")
    create.add_argument("project_id", type=_id("project"))
    create.add_argument("--user", required=True, type=_id("user"),
                        help="the user whose quota the key's records count against")
    create.set_defaults(func=_cmd_keys_create)
    klist = ks.add_parser("list", help="the live keys of a project (no secrets)")
    klist.add_argument("project_id", type=_id("project"))
    klist.set_defaults(func=_cmd_keys_list)
    revoke = ks.add_parser("revoke", help="revoke a key (every instance within a second)")
    revoke.add_argument("project_id", type=_id("project"))
    revoke.add_argument("key_id", type=_id("key"))
    revoke.set_defaults(func=_cmd_keys_revoke)

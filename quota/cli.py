"""``strictgate usage flush`` and ``strictgate quota set|get``.

They talk to ``REDIS_URL``, or to the embedded server of a running ``make run`` (its URL is in
``<data dir>/redis.url``); see :func:`strictgate.cli_redis.cli_redis_url`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as aioredis

from quota.admission import MAX_LIMIT, QuotaService, QuotaUnavailableError
from quota.flush import FlushBusyError, flush_usage
from quota.keys import InvalidIdError, check_id
from strictgate.cli_redis import fail, run_with_redis
from strictgate.context import utc_now
from strictgate.settings import Settings

LEDGER_NAME = "usage-ledger.jsonl"


def _run(body: Callable[[Settings, aioredis.Redis], Awaitable[int]]) -> int:
    return run_with_redis(body, (QuotaUnavailableError, FlushBusyError))


def _service(settings: Settings, client: aioredis.Redis) -> QuotaService:
    return QuotaService(
        client, default_limit=settings.default_monthly_quota,
        deadline_s=settings.redis_deadline_s * 5, clock=utc_now,
    )


def _cmd_flush(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        report = await flush_usage(client, settings.data_dir / LEDGER_NAME, utc_now)
        print(orjson.dumps({
            "flush_id": report.flush_id, "rows": report.rows, "records": report.records,
            "replayed_rows": report.replayed_rows, "replayed_records": report.replayed_records,
            "ledger": str(settings.data_dir / LEDGER_NAME),
        }).decode())
        return 0

    return _run(body)


def _cmd_quota_set(args: argparse.Namespace) -> int:
    limit: int = args.limit
    if not -1 <= limit <= MAX_LIMIT:
        return fail(f"limit must be an integer from -1 (unlimited) to {MAX_LIMIT}")

    async def body(settings: Settings, client: aioredis.Redis) -> int:
        await _service(settings, client).set_limit(args.user_id, limit)
        print(orjson.dumps({"user_id": args.user_id, "monthly_limit": limit}).decode())
        return 0

    return _run(body)


def _cmd_quota_get(args: argparse.Namespace) -> int:
    async def body(settings: Settings, client: aioredis.Redis) -> int:
        service = _service(settings, client)
        limit = await service.get_limit(args.user_id)
        usage = await service.usage(args.user_id)
        print(orjson.dumps({
            "user_id": args.user_id, "monthly_limit": limit, "period": usage.period,
            "used": usage.used, "remaining": usage.remaining,
            "flushed": usage.flushed, "unflushed": usage.unflushed,
        }).decode())
        return 0

    return _run(body)


def _user_id(value: str) -> str:
    try:
        return check_id(value)
    except InvalidIdError:
        raise argparse.ArgumentTypeError(f"invalid user id {value[:130]!r}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``usage`` and ``quota`` subcommands."""
    usage = sub.add_parser(
        "usage", help="the usage ledger (records counted per user and month)",
        description="The usage ledger: records admitted per user and month, moved from Redis "
                    f"into <data dir>/{LEDGER_NAME} (the running service does it every minute).",
    )
    usage_sub = usage.add_subparsers(dest="usage_command", required=True, metavar="COMMAND")
    flush = usage_sub.add_parser(
        "flush", help=f"move the usage counted in Redis into <data dir>/{LEDGER_NAME} now",
        description=f"Move the usage counted in Redis into <data dir>/{LEDGER_NAME} now; "
                    "prints what was written as one JSON object. Safe to run while the "
                    "service runs: every record is counted in the ledger exactly once.",
    )
    flush.set_defaults(func=_cmd_flush)

    quota = sub.add_parser(
        "quota", help="monthly record quotas of users",
        description="Monthly record quotas of users: every record accepted for a user's API "
                    "key counts against that user's limit for the current UTC month.",
    )
    quota_sub = quota.add_subparsers(dest="quota_command", required=True, metavar="COMMAND")
    set_cmd = quota_sub.add_parser(
        "set", help="set a user's monthly limit (-1 = unlimited)",
        description="Set a user's monthly record limit; it applies at once on every instance.",
    )
    set_cmd.add_argument("user_id", type=_user_id,
                         help="the user (letters, digits, '.', '_', '-'; up to 128)")
    set_cmd.add_argument("limit", type=int,
                         help=f"records per month, 0 to {MAX_LIMIT}, or -1 for unlimited")
    set_cmd.set_defaults(func=_cmd_quota_set)
    get_cmd = quota_sub.add_parser(
        "get", help="a user's limit and this month's usage",
        description="Print a user's monthly limit and this month's usage as one JSON object.",
    )
    get_cmd.add_argument("user_id", type=_user_id, help="the user")
    get_cmd.set_defaults(func=_cmd_quota_get)

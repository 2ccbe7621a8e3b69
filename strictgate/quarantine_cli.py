"""``strictgate quarantine list|stats|replay|purge``: a dataset's quarantined records for operators.

``list`` and ``stats`` read the lake the settings name in this process, as ``strictgate sql``
does: no running service is needed, and the answers are the admin API's
(:mod:`strictgate.admin.quarantine`): ``list`` prints one JSON object per line, every page
followed, ``stats`` one JSON object. They do not ask the registry whether the dataset
exists: a dataset with nothing quarantined (or unknown) lists nothing.

``purge`` deletes now what the worker's periodic purge would (quarantined records older
than their dataset's ``quarantine_retention_days``), for one dataset or for every dataset
with quarantined records; the retention is read from Redis (``REDIS_URL`` or the running
service's), so it needs one. Errors are one line on stderr with exit status 1 (2 for a bad
argument), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import redis.asyncio as aioredis

from strictgate.cli_redis import run_with_redis
from strictgate.lake.config import lake_config
from strictgate.lake.engine import LakeConfig, LakeError, connect
from strictgate.lake.maintenance import purge_quarantine, quarantined_datasets
from strictgate.lake.reader import (
    MAX_LIMIT,
    LakeReader,
    LakeUnavailable,
    QuarantinePage,
    ReadError,
    parse_bound,
)
from strictgate.quarantine_replay import add_replay_command
from strictgate.redact import redacted
from strictgate.registry.settings import DatasetSettingsStore
from strictgate.settings import Settings, load_settings


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"strictgate quarantine {command}: {message.strip().splitlines()[0][:500]}",
          file=sys.stderr)
    return status


def _codes(given: list[str] | None) -> list[str] | None:
    """The ``--code`` options (each may be a comma-separated list), or None: every code."""
    if not given:
        return None
    return sorted({code for option in given for code in option.split(",") if code})


def pages(reader: LakeReader, project: str, dataset: str, *, codes: list[str] | None,
          limit: int | None, since: datetime | None,
          until: datetime | None) -> Iterator[dict[str, Any]]:
    """The dataset's quarantined records in receipt order, at most ``limit`` (None: all),
    read page after page."""
    left = limit
    cursor: str | None = None
    while left is None or left > 0:
        size = MAX_LIMIT if left is None else min(left, MAX_LIMIT)
        page: QuarantinePage = reader.quarantine(project, dataset, limit=size, cursor=cursor,
                                                 codes=codes, since=since, until=until)
        yield from page.records
        if left is not None:
            left -= len(page.records)
        cursor = page.next_cursor
        if cursor is None:
            return


def _reader() -> LakeReader:
    # cursors never leave this process: any key will do
    return LakeReader(lake_config(load_settings()), os.urandom(32))


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        since = parse_bound("from", args.since, end=False)
        until = parse_bound("to", args.until, end=True)
    except ReadError as exc:
        return _fail("list", str(exc), 2)
    reader = _reader()
    try:
        for record in pages(reader, args.project, args.dataset, codes=_codes(args.code),
                            limit=args.limit, since=since, until=until):
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
    except (LakeUnavailable, duckdb.Error, LakeError) as exc:
        return _fail("list", redacted(str(exc)))
    finally:
        reader.close()
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    reader = _reader()
    try:
        total, by_code = reader.quarantine_stats(args.project, args.dataset)
    except (LakeUnavailable, duckdb.Error, LakeError) as exc:
        return _fail("stats", redacted(str(exc)))
    finally:
        reader.close()
    print(orjson.dumps({"total": total, "by_code": by_code}).decode())
    return 0


def _lake_exists(config: LakeConfig) -> bool:
    return not config.is_sqlite or Path(config.catalog.removeprefix("sqlite:")).exists()


def _cmd_purge(args: argparse.Namespace) -> int:
    if (args.project is None) != (args.dataset is None):
        return _fail("purge", "name both a project and a dataset, or neither", 2)

    async def body(settings: Settings, client: aioredis.Redis) -> int:
        config = lake_config(settings)
        if not _lake_exists(config):
            # not an error, and no empty lake created as a side effect
            print(orjson.dumps({"deleted": 0, "datasets": 0}).decode())
            return 0
        store = DatasetSettingsStore(client)
        con = connect(config)
        try:
            datasets = ([(args.project, args.dataset)] if args.project is not None
                        else quarantined_datasets(con))
            retention = {(p, d): (await store.get(p, d)).quarantine_retention_days
                         for p, d in datasets}
            deleted = purge_quarantine(con, retention)
        finally:
            con.close()
        print(orjson.dumps({"deleted": deleted, "datasets": len(retention)}).decode())
        return 0

    return run_with_redis(body, (duckdb.Error, LakeError, ValueError))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text[:20]!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``quarantine`` subcommand."""
    quarantine = sub.add_parser(
        "quarantine", help="a dataset's quarantined (invalid) records",
        description="Read or purge the records a dataset with on_invalid=quarantine kept "
                    "aside. list and stats read the lake directly (no running service "
                    "needed); purge also reads the retention settings from Redis.",
    )
    commands = quarantine.add_subparsers(dest="quarantine_command", required=True,
                                         metavar="COMMAND")
    listing = commands.add_parser(
        "list", help="print quarantined records as JSON lines, in receipt order",
        description="Print the dataset's quarantined records, one JSON object per line "
                    "(record as sent, errors, dataset_version, trace_id, received_at, "
                    "entry_id, seq, index), in receipt order, following every page.",
    )
    listing.add_argument("project", help="the project id")
    listing.add_argument("dataset", help="the dataset id")
    listing.add_argument("--code", action="append", metavar="CODE",
                         help="only records having this error code (repeat it, or give a "
                              "comma-separated list)")
    listing.add_argument("--limit", type=_positive, metavar="N",
                         help="print at most N records (default: all)")
    listing.add_argument("--from", dest="since", metavar="TIME",
                         help="received at or after TIME (RFC 3339 or YYYY-MM-DD)")
    listing.add_argument("--to", dest="until", metavar="TIME",
                         help="received before TIME (a date includes that whole day)")
    listing.set_defaults(func=_cmd_list)
    stats = commands.add_parser(
        "stats", help="count quarantined records, in all and per error code",
        description='Print {"total": n, "by_code": {code: records having it}}.',
    )
    stats.add_argument("project", help="the project id")
    stats.add_argument("dataset", help="the dataset id")
    stats.set_defaults(func=_cmd_stats)
    add_replay_command(commands)
    purge = commands.add_parser(
        "purge", help="delete quarantined records older than their retention now",
        description="Delete the quarantined records older than their dataset's "
                    "quarantine_retention_days (the worker does it every hour), for the "
                    "dataset named or for every dataset; prints what it deleted as JSON.",
    )
    purge.add_argument("project", nargs="?",
                       help="the dataset's project (default: every dataset with "
                            "quarantined records)")
    purge.add_argument("dataset", nargs="?", help="the dataset (with its project)")
    purge.set_defaults(func=_cmd_purge)

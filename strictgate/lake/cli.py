"""``strictgate sql`` and ``strictgate lake compact``: the lake for operators.

Both open the lake the settings name (:func:`strictgate.lake.config.lake_config`) in this process:
no running service is needed, and with the SQLite catalog they work beside one (several
processes may open it). Errors are one line on stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from strictgate.lake.config import lake_config
from strictgate.lake.engine import LakeError
from strictgate.lake.maintenance import compact_lake
from strictgate.lake.reader import LakeEmpty, LakeReader, NotARead
from strictgate.redact import redacted
from strictgate.settings import load_settings

# a table cell longer than this is cut (the JSON output is never cut)
MAX_CELL = 80


def _fail(command: str, message: str) -> int:
    # the first line only: DuckDB adds a caret diagram and hints below it
    print(f"strictgate {command}: {message.strip().splitlines()[0][:500]}", file=sys.stderr)
    return 1


def cell(value: Any) -> str:
    """One value as table text: NULL for None, ISO 8601 for times, one line."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime | date | time):
        text = value.isoformat()
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def render_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table: numbers right-aligned, everything else left-aligned."""
    cells = [[cell(v) for v in row] for row in rows]
    header = [cell(n) for n in names]
    widths = [max([len(header[i])] + [len(r[i]) for r in cells]) for i in range(len(names))]
    numeric = [bool(rows) and all(_is_number(r[i]) for r in rows) for i in range(len(names))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out)


def _json_default(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # Decimal, UUID, intervals: their text


def _cmd_sql(args: argparse.Namespace) -> int:
    settings = load_settings()
    # cursors are not used here: any key will do
    reader = LakeReader(lake_config(settings), os.urandom(32))
    try:
        names, rows = reader.sql(args.query, max_rows=args.max_rows + 1)
    except LakeEmpty:
        return _fail("sql", "the lake has no data yet (nothing was written to it)")
    except NotARead as exc:
        return _fail("sql", redacted(str(exc)))
    except (duckdb.Error, LakeError) as exc:
        return _fail("sql", redacted(str(exc)))
    finally:
        reader.close()
    cut = len(rows) > args.max_rows
    rows = rows[:args.max_rows]
    if args.json:
        document = [dict(zip(names, row, strict=True)) for row in rows]
        sys.stdout.write(orjson.dumps(document, default=_json_default,
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_table(names, rows))
    if cut:
        print(f"strictgate sql: only the first {args.max_rows} rows are shown (--max-rows)",
              file=sys.stderr)
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    settings = load_settings()
    config = lake_config(settings)
    if config.is_sqlite and not Path(config.catalog.removeprefix("sqlite:")).exists():
        # not an error, and no empty lake created as a side effect
        print("strictgate lake compact: nothing to compact, the lake has no data yet")
        return 0
    try:
        report = compact_lake(
            config,
            keep_snapshots=timedelta(seconds=settings.lake_snapshot_retention_s))
    except (duckdb.Error, LakeError) as exc:
        return _fail("lake compact", redacted(str(exc)))
    print(orjson.dumps({
        "files_merged": report.files_merged,
        "snapshots_expired": report.snapshots_expired,
        "files_deleted": report.files_deleted,
        "orphans_deleted": report.orphans_deleted,
        "ledger_pruned": report.ledger_pruned,
        "seconds": round(report.seconds, 3),
    }, option=orjson.OPT_INDENT_2).decode())
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text[:20]!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sql`` and ``lake`` subcommands."""
    sql = sub.add_parser(
        "sql", help="run one read-only SQL query over the lake",
        description="Run one read-only SQL statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) "
                    "over the lake of STRICTGATE_DATA_DIR (or STRICTGATE_LAKE_CATALOG / "
                    "STRICTGATE_LAKE_DATA_PATH); tables are named <project>.<dataset>, e.g. "
                    "SELECT count(*) FROM p1.billing. Writes, file access and settings are "
                    "refused. Needs no running service.",
    )
    sql.add_argument("query", help="the SQL statement (quote it for the shell)")
    sql.add_argument("--json", action="store_true",
                     help="print a JSON array of row objects instead of a table")
    sql.add_argument("--max-rows", type=_positive, default=10_000, metavar="N",
                     help="print at most N rows (default 10000)")
    sql.set_defaults(func=_cmd_sql)
    lake = sub.add_parser(
        "lake", help="lake maintenance",
        description="Maintenance of the DuckLake lake (the worker also runs it on a schedule).",
    )
    lake_sub = lake.add_subparsers(dest="lake_command", required=True, metavar="COMMAND")
    compact = lake_sub.add_parser(
        "compact", help="merge small files, expire old snapshots, delete unused files",
        description="One compaction pass over the lake: merge adjacent small Parquet files, "
                    "expire snapshots older than STRICTGATE_LAKE_SNAPSHOT_RETENTION_S, delete "
                    "files no snapshot needs and orphaned files older than an hour; prints "
                    "what it did as JSON. Safe beside a running service and worker.",
    )
    compact.set_defaults(func=_cmd_compact)

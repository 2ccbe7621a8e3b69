"""The ``strictgate`` console script."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from strictgate.cli_redis import NoRedisError
from strictgate.datadir import DataDirError
from strictgate.embedded import EmbeddedServerError
from strictgate.malloc import limit_malloc_arenas, reexec_with_arena_cap
from strictgate.server import CannotListenError
from strictgate.settings import SettingsError, load_settings

DESCRIPTION = (
    "Self-hosted ingest gateway: strict per-dataset JSON validation, exact monthly quotas, "
    "durable queueing. `strictgate serve` runs the API (and the worker); the other commands "
    "manage datasets, API keys, quotas and usage of a running service."
)
EPILOG = (
    "Configuration comes from environment variables (STRICTGATE_PORT, STRICTGATE_DATA_DIR, "
    "REDIS_URL, ...; see the README). Commands other than serve and worker talk to REDIS_URL, "
    "or to the embedded server of the service running on STRICTGATE_DATA_DIR."
)


def package_version() -> str:
    """The installed package's version (pyproject's ``version``)."""
    try:
        return version("strictgate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Plain lines to stderr; the access log lines are JSON objects of their own, in the
    same format, written in chunks (:func:`strictgate.access_log.write_lines_to`)."""
    from strictgate.access_log import write_lines_to

    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    write_lines_to(sys.stderr, LOG_FORMAT)


def _serve(args: argparse.Namespace) -> int:
    from strictgate.server import serve

    settings = load_settings()
    configure_logging(settings.log_level)
    return serve(settings)


def build_parser(*, serve_only: bool = False) -> argparse.ArgumentParser:
    """The argument parser with every subcommand (``serve_only``: with ``serve`` alone)."""
    parser = argparse.ArgumentParser(prog="strictgate", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve", help="serve the API (and the worker) on STRICTGATE_HOST:STRICTGATE_PORT",
        description=(
            "Serve the HTTP API on STRICTGATE_HOST:STRICTGATE_PORT, with the queue worker in "
            "the same process (STRICTGATE_RUN_WORKER) and, without REDIS_URL, an embedded "
            "Redis-compatible server whose data lives in STRICTGATE_DATA_DIR. With "
            "STRICTGATE_API_PROCESSES=N, N API processes share the port and the worker runs "
            "in a process of its own, all kept running by this one. One service per data "
            "dir: a second one exits at once. Stop with Ctrl-C or SIGTERM."
        ),
    )
    serve.set_defaults(func=_serve)
    if serve_only:
        return parser
    # imported here: the other commands pull in the validator (its compiled scanner), which
    # `strictgate serve` as the parent of API processes would hold for nothing (~160 MB)
    from quota.cli import register as register_quota
    from strictgate.lake.cli import register as register_lake
    from strictgate.quarantine_cli import register as register_quarantine
    from strictgate.registry.cli import register as register_registry
    from strictgate.worker.cli import register as register_worker

    register_quota(sub)
    register_registry(sub)
    register_worker(sub)
    register_lake(sub)
    register_quarantine(sub)
    return parser


LONG_RUNNING = ("serve", "worker")
"""Commands that run for days: their malloc arenas are capped from the first allocation."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(serve_only=words[:1] == ["serve"])
    args = parser.parse_args(words)
    if argv is None and args.command in LONG_RUNNING:
        reexec_with_arena_cap()  # returns only once the cap is in force
    limit_malloc_arenas()
    try:
        result: int = args.func(args)
    except SettingsError as exc:
        print(f"strictgate: {exc}", file=sys.stderr)
        return 2
    except (DataDirError, CannotListenError, NoRedisError, EmbeddedServerError) as exc:
        print(f"strictgate: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (`strictgate ... | head`): no traceback, and none again when
        # Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``strictgate`` console script."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from quota.cli import register as register_quota
from registry.cli import register as register_registry
from strictgate.settings import SettingsError, load_settings
from worker.cli import register as register_worker


def configure_logging(level: str) -> None:
    """Plain lines to stderr; the access log lines are JSON objects of their own."""
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app import create_app

    settings = load_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="strictgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API (and the worker) on STRICTGATE_PORT")
    serve.set_defaults(func=_serve)
    register_quota(sub)
    register_registry(sub)
    register_worker(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except SettingsError as exc:
        print(f"strictgate: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())

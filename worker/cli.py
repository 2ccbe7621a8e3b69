"""``strictgate worker``: run the queue worker (and usage flushes) on its own."""

from __future__ import annotations

import argparse
import asyncio
import signal

import redis.asyncio as aioredis

from strictgate.cli_redis import cli_redis_url
from strictgate.settings import load_settings


async def _run_worker() -> int:
    from strictgate.context import utc_now
    from worker.service import run_worker_tasks

    settings = load_settings()
    client = aioredis.Redis.from_url(cli_redis_url(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = run_worker_tasks(client, settings, utc_now, None, stop)
    print("strictgate worker: running (Ctrl-C to stop)", flush=True)
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    return asyncio.run(_run_worker())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``worker`` subcommand."""
    parser = sub.add_parser("worker", help="run the queue worker alone (several may run)")
    parser.set_defaults(func=_cmd_worker)

"""``strictgate worker``: run the queue worker (and usage flushes) on its own."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from strictgate.cli_redis import cli_redis_url
from strictgate.redis_client import connect, keep_slot_map_fresh
from strictgate.settings import load_settings


async def _run_worker(metrics_host: str, metrics_port: int | None) -> int:
    from prometheus_client import start_http_server

    from strictgate.cli import configure_logging
    from strictgate.context import utc_now
    from strictgate.metrics import Metrics
    from strictgate.worker.service import start_background_tasks

    settings = load_settings()
    configure_logging(settings.log_level)
    metrics: Metrics | None = None
    server = None
    if metrics_port is not None:
        metrics = Metrics()
        try:
            # a daemon thread: scrapes never wait on the worker's event loop
            server, _ = start_http_server(metrics_port, metrics_host, metrics.registry)
        except OSError as exc:
            print(f"strictgate worker: cannot serve metrics on {metrics_host}:{metrics_port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"strictgate worker: metrics on http://{metrics_host}:{server.server_port}"
              "/metrics", flush=True)
    client = connect(cli_redis_url(settings), cluster=settings.redis_cluster,
                     socket_timeout=None, socket_connect_timeout=settings.redis_deadline_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    background = start_background_tasks(client, settings, utc_now, metrics, stop, worker=True,
                                        alone=True)
    background.tasks.append(asyncio.create_task(keep_slot_map_fresh([client], stop)))
    print("strictgate worker: running (Ctrl-C to stop)", flush=True)
    await stop.wait()
    await asyncio.gather(*background.tasks, return_exceptions=True)
    await client.aclose()
    if server is not None:
        server.shutdown()
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    return asyncio.run(_run_worker(args.metrics_host, args.metrics_port))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``worker`` subcommand."""
    parser = sub.add_parser(
        "worker", help="run the queue worker alone (several may run)",
        description="Run the queue worker (and the periodic usage flush) without the API: "
                    "writes queued records to the lake (STRICTGATE_SINK=lake, the default) or as "
                    "JSON Lines under <data dir>/output (jsonl). Talks to REDIS_URL, or "
                    "to the embedded server of the service running on STRICTGATE_DATA_DIR. "
                    "Stop with Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus metrics (queue length, lag, sink state, records written) on "
             "http://HOST:PORT/metrics; 0 picks a free port (printed); default: no metrics",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST",
        help="address the metrics server binds (default 127.0.0.1)",
    )
    parser.set_defaults(func=_cmd_worker)

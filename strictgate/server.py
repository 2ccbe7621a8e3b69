"""``strictgate serve``: checks, then the port, then the data dir's lock, then uvicorn.

Everything that can refuse to start does so before the app's lifespan starts the embedded
server and the worker: a second process on the same port or data dir exits touching nothing
(otherwise a second ``make run`` that fails to bind would already have started a valkey on
the first one's files, run a worker and flushed usage).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
from typing import TYPE_CHECKING

from strictgate.datadir import lock_data_dir
from strictgate.embedded import EmbeddedServer
from strictgate.settings import Settings, SettingsError

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("strictgate")

RESERVED_FDS = 256
"""Descriptors kept for what is not a client connection: Redis pools, output and ledger
files, logs, the embedded server's pipes."""

UNLIMITED_FDS = 1 << 20
"""What an unlimited open-file limit counts as (Linux's default fs.nr_open)."""

STARTUP_FAILURE = 3  # uvicorn's exit status when the lifespan fails


class CannotListenError(RuntimeError):
    """The host:port could not be bound."""


def raise_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
            pass
    # "unlimited" still ends at the kernel's per-process maximum: count with a finite one
    return UNLIMITED_FDS if soft == resource.RLIM_INFINITY else soft


def check_cap(settings: Settings, file_limit: int) -> int:
    """The connection cap: ``STRICTGATE_MAX_CONNECTIONS``, else half the file limit. Over the
    cap, connections are still accepted (to be answered 503), so it must leave room."""
    ceiling = file_limit - RESERVED_FDS
    if settings.max_connections is None:
        return max(1, min(ceiling, file_limit // 2))
    if settings.max_connections > ceiling:
        raise SettingsError(
            f"STRICTGATE_MAX_CONNECTIONS must be <= {ceiling} (the open-file limit "
            f"{file_limit} less {RESERVED_FDS}), got {settings.max_connections}"
        )
    return settings.max_connections


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or :class:`CannotListenError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CannotListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        # as uvicorn does: a restart does not wait for the old connections' TIME_WAIT
        # (a port another process listens on is still refused)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CannotListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(False)
    return sock


def uvicorn_server(settings: Settings, cap: int) -> uvicorn.Server:
    """The uvicorn server of the app with ``settings``, at most ``cap`` connections served
    (run it with ``.run(sockets=[...])``)."""
    import uvicorn

    from app import create_app
    from strictgate.connections import ConnectionGuard, guarded_protocol

    guard = ConnectionGuard(max_connections=cap, header_timeout_s=settings.header_timeout_s)
    config = uvicorn.Config(
        create_app(settings),
        http=guarded_protocol(guard),
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        lifespan="on",
        # Nothing reads the client's address, so a balancer's X-Forwarded-* headers would
        # only cost a middleware call per request (about 2% of one's CPU); and the answer
        # does not name the server software.
        proxy_headers=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def run_uvicorn(server: uvicorn.Server, sock: socket.socket) -> int:
    """Serve on ``sock`` until SIGINT/SIGTERM; 0, or 3 when the app did not start."""
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
        server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM. Raises :class:`CannotListenError`,
    :class:`strictgate.datadir.DataDirInUseError`, :class:`SettingsError` or
    :class:`strictgate.embedded.EmbeddedServerError` before anything is started. With
    ``STRICTGATE_API_PROCESSES``, after the same checks, this process supervises the API
    and worker processes (:mod:`strictgate.process_group`) instead of serving itself."""
    file_limit = raise_file_limit()
    cap = check_cap(settings, file_limit)
    sock = bind(settings.host, settings.port)
    try:
        lock = lock_data_dir(settings.data_dir)
    except BaseException:
        sock.close()
        raise
    try:
        if settings.redis_url is None:
            # the valkey of a service killed a moment ago may still be shutting down
            EmbeddedServer(settings.data_dir / "redis").wait_for_previous_server()
    except BaseException:
        sock.close()
        lock.release()
        raise
    try:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        where = (f"http://{host}:{sock.getsockname()[1]} (data dir "
                 f"{settings.data_dir.resolve()}, connection cap {cap}")
        if settings.api_processes is not None:
            from strictgate.process_group import serve_processes

            worker = " and a worker process" if settings.run_worker else ""
            log.info("listening on %s per process, open-file limit %d; %d API process(es)%s)",
                     where, file_limit, settings.api_processes, worker)
            return serve_processes(settings, sock)
        server = uvicorn_server(settings, cap)
        log.info("listening on %s, open-file limit %d)", where, file_limit)
        return run_uvicorn(server, sock)
    finally:
        sock.close()
        lock.release()

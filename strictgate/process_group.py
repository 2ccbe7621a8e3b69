"""``strictgate serve`` with ``STRICTGATE_API_PROCESSES=N``: a small parent process that owns
the port, the data dir's lock and the embedded valkey, and keeps N API processes and one
worker process running.

Why: one Python process runs its requests on one core (the GIL), and the worker's batches
(validation of nothing, but encoding and the lake's commits) share that core with the API.
Here each API process is a uvicorn server of the same app with the worker off, and the worker
is ``strictgate worker`` in a process of its own.

- The parent imports no app code (it stays small) and runs :func:`serve_processes` after
  ``strictgate serve`` made every start-up check (settings, port, data-dir lock).
- The port: the parent makes one listening socket per API process, each with SO_REUSEPORT, so
  the kernel spreads new connections over them by hash, and keeps them all for its life: a
  second ``strictgate serve`` on the port is refused whatever its children are doing, and a
  connection that arrives while its API process is being restarted waits in that socket's
  backlog instead of being refused.
- Redis: without ``REDIS_URL`` the parent starts the embedded valkey (and restarts it, see
  :mod:`strictgate.supervisor`) and gives its URL, password included, to the children in
  their environment only (``REDIS_URL``): never in argv, never in a log line.
- A child that exits is started again, at once the first time, then with backoff (up to
  10 s; back to at once after 30 s up), logged once per exit with its status. An API process
  exiting with uvicorn's start-up failure status stops the service with that status: its
  settings or data dir cannot work, and every new one would fail the same way.
- SIGTERM/SIGINT: the API processes stop first (uvicorn lets in-flight requests finish),
  then the worker (it writes what they queued and flushes usage), then valkey.
- Each child gets SIGTERM from the kernel when the parent dies (PR_SET_PDEATHSIG), so a
  ``kill -9`` of the parent leaves no process holding the port or the AOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from strictgate.datadir import REDIS_URL_FILE
from strictgate.embedded import EmbeddedServer, EmbeddedServerError, exit_description
from strictgate.server import STARTUP_FAILURE, CannotListenError
from strictgate.settings import Settings
from strictgate.supervisor import FIRST_BACKOFF_S, MAX_BACKOFF_S, STABLE_S, Supervisor

log = logging.getLogger("strictgate.processes")

POLL_S = 0.2  # how often the parent looks for children that exited
API_STOP_S = 30.0  # in-flight requests get this long to finish before SIGKILL
WORKER_STOP_S = 60.0  # the worker's batch in progress (a lake commit) gets this long
LISTEN_BACKLOG = 2048  # as server.bind

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        return None


# Loaded in the parent: the child between fork and exec must not import anything.
_PRCTL = _load_prctl()


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the parent dies. If it died already (between
    the fork and now), nobody would send it: exit at once."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def reuseport_sockets(checked: socket.socket, count: int) -> list[socket.socket]:
    """``count`` listening sockets on the address ``checked`` is bound to, sharing it with
    SO_REUSEPORT; ``checked`` (bound without it by :func:`strictgate.server.bind`, which is
    what refuses a taken port) is closed first. Raises :class:`CannotListenError`."""
    family, address = checked.family, checked.getsockname()
    checked.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise CannotListenError(f"cannot listen on {address[0]}:{address[1]} with "
                                f"SO_REUSEPORT: {exc.strerror or exc}") from None
    return sockets


class Child:
    """One child process, started again whenever it exits."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 pass_fds: Sequence[int] = (), fatal_status: int | None = None) -> None:
        self.name = name
        self.fatal_status = fatal_status
        """An exit status that means "cannot start": not restarted, the service stops."""
        self.argv = list(argv)
        self.env = dict(env)
        self.pass_fds = tuple(pass_fds)
        self.process: subprocess.Popen[bytes] | None = None
        self._delay = 0.0
        self._started_at = 0.0

    def spawn(self) -> None:
        """Start the process (output to the parent's, a session of its own: Ctrl-C in a
        terminal reaches the parent only, which stops the children in order)."""
        parent = os.getpid()
        self.process = subprocess.Popen(
            self.argv, env=self.env, pass_fds=self.pass_fds, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=lambda: _die_with_parent(parent))
        self._started_at = time.monotonic()

    def _backoff(self) -> float:
        if time.monotonic() - self._started_at >= STABLE_S:
            self._delay = 0.0
        delay = self._delay
        self._delay = min(max(delay * 2, FIRST_BACKOFF_S), MAX_BACKOFF_S)
        return delay

    async def keep_alive(self, stop: asyncio.Event,
                         on_fatal: Callable[[Child], None]) -> None:
        """Start the process again each time it exits, until ``stop``; an exit with
        :attr:`fatal_status` calls ``on_fatal`` instead (and ends the watch)."""
        while not stop.is_set():
            proc = self.process
            if proc is not None and proc.poll() is not None:
                if proc.returncode == self.fatal_status:
                    log.error("%s (pid %d) %s: it cannot start; stopping", self.name,
                              proc.pid, exit_description(proc.returncode))
                    on_fatal(self)
                    return
                delay = self._backoff()
                log.error("%s (pid %d) %s; restarting it%s", self.name, proc.pid,
                          exit_description(proc.returncode),
                          f" in {delay:.1f} s" if delay else "")
                if delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        return
                # Popen in the event loop's thread, never another: Linux sends the
                # parent-death signal when the *thread* that forked the child ends.
                self.spawn()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM), not waiting."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        """Wait until the process has exited; SIGKILL it at ``deadline`` (monotonic)."""
        proc = self.process
        if proc is None:
            return
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) did not stop in time; killing it", self.name, proc.pid)
            proc.kill()
            proc.wait()


def child_environment(redis_url: str | None) -> dict[str, str]:
    """The environment of every child: the parent's, without ``STRICTGATE_API_PROCESSES``
    (a child is one process), with ``REDIS_URL`` of the embedded server when there is one."""
    env = {k: v for k, v in os.environ.items() if k != "STRICTGATE_API_PROCESSES"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def api_children(sockets: Sequence[socket.socket], env: Mapping[str, str]) -> list[Child]:
    """One API process per socket: :mod:`strictgate.api_process`, the worker off."""
    api_env = {**env, "STRICTGATE_RUN_WORKER": "0"}
    return [Child(f"api process {i}",
                  [sys.executable, "-m", "strictgate.api_process", str(sock.fileno())],
                  api_env, pass_fds=[sock.fileno()], fatal_status=STARTUP_FAILURE)
            for i, sock in enumerate(sockets, 1)]


def worker_child(env: Mapping[str, str]) -> Child:
    """The worker process: ``strictgate worker``."""
    return Child("worker process", [sys.executable, "-m", "strictgate.cli", "worker"], env)


async def _supervise(settings: Settings, sockets: Sequence[socket.socket]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    embedded: EmbeddedServer | None = None
    apis: list[Child] = []
    worker: Child | None = None
    failed: list[Child] = []
    tasks: list[asyncio.Task[None]] = []
    url_file = settings.data_dir / REDIS_URL_FILE
    try:
        if settings.redis_url is None:
            embedded = EmbeddedServer.for_service(settings.data_dir, settings.redis_fsync)
            try:
                embedded.start()
            except EmbeddedServerError as exc:  # as the lifespan's failure: status 3
                log.error("embedded valkey did not start: %s", exc)
                return STARTUP_FAILURE
            # the CLI's way to the running service (no password in it)
            url_file.write_text(embedded.url + "\n")
            tasks.append(asyncio.create_task(Supervisor(embedded).run(stop)))
        env = child_environment(embedded.auth_url if embedded else None)
        apis = api_children(sockets, env)
        worker = worker_child(env) if settings.run_worker else None

        def fatal(child: Child) -> None:
            failed.append(child)
            stop.set()

        for child in [*apis, *([worker] if worker else [])]:
            child.spawn()
            tasks.append(asyncio.create_task(child.keep_alive(stop, fatal)))
        await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        _stop_in_order(apis, worker, embedded, url_file)
    return STARTUP_FAILURE if failed else 0


def _stop_in_order(apis: Sequence[Child], worker: Child | None,
                   embedded: EmbeddedServer | None, url_file: Path) -> None:
    """API processes (in-flight requests finish), then the worker (it writes what they
    queued, then flushes usage), then valkey."""
    for child in apis:
        child.terminate()
    deadline = time.monotonic() + API_STOP_S
    for child in apis:
        child.wait_stopped(deadline)
    if worker is not None:
        worker.terminate()
        worker.wait_stopped(time.monotonic() + WORKER_STOP_S)
    if embedded is not None:
        # a clean stop leaves no URL: the CLI says "no running service"
        url_file.unlink(missing_ok=True)
        embedded.stop()


def serve_processes(settings: Settings, checked: socket.socket) -> int:
    """Serve with ``settings.api_processes`` API processes and a worker process until
    SIGINT/SIGTERM; the exit status (0, or 3 when an API process or valkey cannot start).
    ``checked``: the socket :func:`strictgate.server.bind` bound (it is replaced by the API
    processes' own); the caller holds the data dir's lock."""
    assert settings.api_processes is not None
    sockets = reuseport_sockets(checked, settings.api_processes)
    try:
        return asyncio.run(_supervise(settings, sockets))
    finally:
        for sock in sockets:
            sock.close()

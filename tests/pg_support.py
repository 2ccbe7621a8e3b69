"""One PostgreSQL server for the tests of the lake on a PostgreSQL catalog.

:func:`session_server` gives the machine's own server when one answers on 127.0.0.1:5432
(user ``postgres``, trust auth), else a private one that :func:`private_server` starts from
the server binaries of Debian's ``postgresql`` package (the highest version under
``/usr/lib/postgresql``; else ``initdb`` on ``PATH``, as a wheel of the binaries would put
it): a fresh cluster in a temporary directory, trust auth for user ``postgres``, no TCP:
only its unix socket, in a 0700 directory of its own, so no other local user can log in. PostgreSQL
refuses to run as root, so where the tests do, the cluster's files belong to the
``postgres`` system user and its programs run as that user. The private server is stopped
(a fast shutdown, then a kill) and its directory removed when the process ends.

``SG_TEST_PG=private`` takes the private server even where the machine's answers (to test
the fallback on a machine that has one), ``SG_TEST_PG=machine`` only the machine's. When no
server can be had, :class:`PgUnavailable` says what is missing (the tests skip with it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "postgres"
MACHINE_HOST = "127.0.0.1"
MACHINE_PORT = 5432
CHOICE_VARIABLE = "SG_TEST_PG"
CHOICES = ("private", "machine")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# settings of a throwaway cluster: reachable from this machine's loopback only, its socket
# for the owner only, and no durability (its data dies with the test session)
PRIVATE_SETTINGS = {
    # no TCP at all: with trust auth any local user could log in on a port; the socket's
    # 0700 directory lets in the cluster's own user (and root) only
    "listen_addresses": "''",
    "unix_socket_permissions": "0700",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PgUnavailable(Exception):
    """No PostgreSQL server can be had for the tests; the message says what is missing."""


@dataclass(frozen=True)
class PgServer:
    """A running PostgreSQL server the tests may use: where it listens, who to log in as
    (trust auth: no password), and where its client programs are."""

    host: str
    port: int
    user: str = PG_USER
    bindir: Path | None = None
    """The directory of its ``psql``; None: ``psql`` on ``PATH``."""

    def dsn(self, dbname: str) -> str:
        """The libpq connection string of database ``dbname``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def uri(self, dbname: str, password: str) -> str:
        """The ``postgresql://`` URI form of :meth:`dsn`, with a password (which trust auth
        ignores); a socket directory goes in the query, as libpq wants it."""
        if self.host.startswith("/"):
            return (f"postgresql://{self.user}:{password}@/{dbname}?host={self.host}"
                    f"&port={self.port}")
        return f"postgresql://{self.user}:{password}@{self.host}:{self.port}/{dbname}"

    def psql_args(self, dbname: str = "postgres") -> list[str]:
        """The start of a ``psql`` command line connected to ``dbname``; add ``-c SQL``."""
        psql = str(self.bindir / "psql") if self.bindir else "psql"
        return [psql, "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", dbname,
                "-X", "-q", "-v", "ON_ERROR_STOP=1"]


@dataclass(frozen=True)
class PrivateCluster:
    """A server started here: the server, the directory holding all of it, its postmaster."""

    server: PgServer
    root: Path
    pid: int

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory of its unix socket."""
        return self.root / "socket"


def server_bindir() -> Path | None:
    """The directory of ``initdb``, ``postgres`` and ``psql``: Debian's highest version,
    else the one of ``initdb`` on ``PATH``; None when there is none."""
    def complete(bindir: Path) -> bool:
        return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))

    versions = sorted((d for d in DEBIAN_ROOT.glob("*/bin") if d.parent.name.isdigit()),
                      key=lambda d: int(d.parent.name), reverse=True)
    for bindir in versions:
        if complete(bindir):
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if complete(bindir):
            return bindir
    return None


def machine_answers() -> bool:
    """Whether something accepts connections on 127.0.0.1:5432."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((MACHINE_HOST, MACHINE_PORT)) == 0


def machine_server() -> PgServer:
    """The machine's own server; its ``psql`` from ``PATH``, else from the server binaries."""
    if not machine_answers():
        raise PgUnavailable(f"no PostgreSQL answers on {MACHINE_HOST}:{MACHINE_PORT}")
    bindir = None if shutil.which("psql") else server_bindir()
    return PgServer(host=MACHINE_HOST, port=MACHINE_PORT, bindir=bindir)


@dataclass(frozen=True)
class _RunAs:
    """Who the cluster's programs run as: ``None`` ids keep this process's user."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_this_process(cls) -> _RunAs:
        """This process's user, or the ``postgres`` system user when this is root."""
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(PG_USER)
        except KeyError:
            raise PgUnavailable(
                "the tests run as root, which PostgreSQL refuses, and there is no "
                f"'{PG_USER}' system user to run it as (Debian's postgresql package makes "
                "it)") from None
        return cls(entry.pw_uid, entry.pw_gid)

    @property
    def extra_groups(self) -> list[int] | None:
        """None keeps this process's supplementary groups; root's are dropped."""
        return None if self.uid is None else []

    def own(self, path: Path) -> None:
        """Give ``path`` to this user."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((MACHINE_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(log: Path) -> str:
    try:
        return log.read_bytes()[-600:].decode(errors="replace").strip()
    except OSError:
        return ""


def _init_cluster(bindir: Path, root: Path, run_as: _RunAs) -> None:
    """initdb into ``root/data`` (trust auth for :data:`PG_USER`), then the settings."""
    data = root / "data"
    done = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E",
         "UTF8", "--no-locale", "--no-sync"],
        cwd=root, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False,
        stdin=subprocess.DEVNULL, user=run_as.uid, group=run_as.gid,
        extra_groups=run_as.extra_groups)
    if done.returncode != 0:
        raise PgUnavailable(f"initdb ({bindir}) failed: "
                            f"{(done.stderr or done.stdout).strip()[-600:]}")
    settings = {**PRIVATE_SETTINGS,
                "unix_socket_directories": f"'{root / 'socket'}'"}
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/pg_support.py\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


def _ready(data: Path, port: int) -> bool:
    """postmaster.pid says the server on ``port`` accepts connections."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[3].strip() == str(port) and lines[7].strip() == "ready"


def _start(bindir: Path, root: Path, run_as: _RunAs) -> tuple[subprocess.Popen[bytes], int]:
    """The postmaster on a free port; tried again on another port when one was taken
    between choosing it and binding it."""
    log_path = root / "postgres.log"
    for _ in range(3):
        port = _free_port()
        with log_path.open("ab") as log:
            run_as.own(log_path)
            # a session of its own: a Ctrl-C at the terminal is for the tests, which then
            # stop it in order
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port)],
                cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, user=run_as.uid, group=run_as.gid,
                extra_groups=run_as.extra_groups)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and not _ready(root / "data", port):
            if time.monotonic() > deadline:
                _stop(proc)
                raise PgUnavailable(f"PostgreSQL did not start within {START_TIMEOUT_S:.0f} "
                                    f"s: {_log_tail(log_path)}")
            time.sleep(0.05)
        if proc.returncode is None:
            return proc, port
        if "already in use" not in _log_tail(log_path):
            break
    raise PgUnavailable(f"PostgreSQL ({bindir}) exited with status {proc.returncode}: "
                        f"{_log_tail(log_path)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """A fast shutdown (SIGINT, what ``pg_ctl stop -m fast`` sends: sessions ended, the
    server waits for its processes), then a kill of what is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def private_server() -> Iterator[PrivateCluster]:
    """A new cluster in a new temporary directory, running for the ``with`` block; stopped
    and its directory removed at the end. Raises :class:`PgUnavailable` saying what is
    missing."""
    bindir = server_bindir()
    if bindir is None:
        raise PgUnavailable(
            "no PostgreSQL server binaries to start one: Debian's postgresql package "
            f"({DEBIAN_ROOT}/<version>/bin/initdb) is not installed and no initdb is on PATH")
    run_as = _RunAs.for_this_process()
    # short, so the socket's path stays under the 107 bytes a unix socket may have
    root = Path(tempfile.mkdtemp(prefix="sg-pg-", dir="/tmp" if Path("/tmp").is_dir()
                                 else None))
    try:
        run_as.own(root)  # mkdtemp made it 0700: the cluster's user alone gets in
        (root / "socket").mkdir(mode=0o700)
        run_as.own(root / "socket")
        _init_cluster(bindir, root, run_as)
        proc, port = _start(bindir, root, run_as)
        try:
            yield PrivateCluster(PgServer(host=str(root / "socket"), port=port, bindir=bindir),
                                 root, proc.pid)
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


_lock = threading.Lock()
_session: PgServer | PgUnavailable | None = None
_session_stack = contextlib.ExitStack()


def session_server() -> PgServer:
    """The server for this process, chosen and started on the first call (see the module's
    text); a private one is stopped when the process ends. Raises :class:`PgUnavailable`
    (again on every call) when none can be had."""
    global _session
    with _lock:
        if _session is None:
            try:
                _session = _choose()
            except PgUnavailable as exc:
                _session = exc
        if isinstance(_session, PgUnavailable):
            raise _session
        return _session


def stop_session_server() -> None:
    """Stop this process's private server now, if one was started (at exit otherwise)."""
    _session_stack.close()


def _choose() -> PgServer:
    choice = os.environ.get(CHOICE_VARIABLE, "").strip()
    if choice and choice not in CHOICES:
        raise PgUnavailable(f"{CHOICE_VARIABLE}={choice!r}: expected one of "
                            f"{', '.join(CHOICES)} or nothing")
    if choice != "private" and machine_answers():
        return machine_server()
    if choice == "machine":
        raise PgUnavailable(f"{CHOICE_VARIABLE}=machine, and no PostgreSQL answers on "
                            f"{MACHINE_HOST}:{MACHINE_PORT}")
    try:
        cluster = _session_stack.enter_context(private_server())
    except PgUnavailable as exc:
        why = ("" if choice == "private" else
               f"no PostgreSQL answers on {MACHINE_HOST}:{MACHINE_PORT} and ")
        raise PgUnavailable(f"{why}{exc}") from None
    atexit.register(stop_session_server)
    return cluster.server


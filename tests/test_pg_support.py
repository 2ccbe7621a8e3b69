"""The tests' private PostgreSQL (``tests/pg_support.py``), the fallback where the machine has
no server of its own: started from Debian's server binaries, it holds a DuckLake catalog that
strictgate's lake engine writes and reads, is open to nobody else on the machine, and leaves
no process and no file behind; ``SG_TEST_PG`` picks the server a test process gets."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from strictgate.lake.engine import LakeConfig, connect
from tests.pg_support import (
    CHOICE_VARIABLE,
    DEBIAN_ROOT,
    MACHINE_PORT,
    PG_USER,
    PgServer,
    PgUnavailable,
    PrivateCluster,
    machine_answers,
    private_server,
    server_bindir,
)

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def started() -> Iterator[PrivateCluster]:
    """A private server for one test; skip, saying what is missing, where none can start."""
    if server_bindir() is None:
        pytest.skip(f"Debian's postgresql package is not installed (no {DEBIAN_ROOT}/"
                    "<version>/bin/initdb, no initdb on PATH)")
    stack = contextlib.ExitStack()
    try:
        cluster = stack.enter_context(private_server())
    except PgUnavailable as exc:
        pytest.skip(str(exc))
    with stack:
        yield cluster


def psql(server: PgServer, sql: str, dbname: str = "postgres") -> str:
    """One statement through the server's psql; its unaligned output."""
    done = subprocess.run([*server.psql_args(dbname), "-At", "-c", sql], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended: only its entry waits for a parent
    to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the postmaster's checkpointer, walwriter...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def running_in(root: Path) -> list[int]:
    """Live processes whose command line names a path under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(root).encode() in (entry / "cmdline").read_bytes() and alive(
                        int(entry.name)):
                    found.append(int(entry.name))
    return found


def private_only(path: Path) -> bool:
    """Neither the group nor others may read, write or enter ``path``."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_a_private_server_holds_a_lake_catalog_then_leaves_nothing_behind(
        tmp_path: Path) -> None:
    with started() as cluster:
        server = cluster.server
        assert server.port != MACHINE_PORT and server.user == PG_USER
        psql(server, "CREATE DATABASE sg_catalog")
        lake = LakeConfig(catalog="postgres:" + server.dsn("sg_catalog"),
                          data_path=f"{tmp_path / 'data'}/")
        con = connect(lake)
        try:
            con.execute("CREATE TABLE notes (id INTEGER, body VARCHAR)")
            con.execute("INSERT INTO notes VALUES (1, 'kept in the private server')")
        finally:
            con.close()
        reader = connect(lake, read_only=True)
        try:
            assert reader.execute("SELECT id, body FROM notes").fetchall() == [
                (1, "kept in the private server")]
        finally:
            reader.close()
        # the catalog is in that database, the row in a Parquet file of the data path
        assert psql(server, "SELECT table_name FROM ducklake_table WHERE end_snapshot IS NULL",
                    "sg_catalog") == "notes"
        assert list((tmp_path / "data").rglob("*.parquet"))
        processes = [cluster.pid, *children(cluster.pid)]
        assert len(processes) > 1 and all(alive(pid) for pid in processes)
    assert not any(alive(pid) for pid in processes)
    assert not cluster.root.exists()


def test_a_private_server_is_closed_to_other_users() -> None:
    with started() as cluster:
        port = cluster.server.port
        sockets = list(cluster.socket_dir.glob(f".s.PGSQL.{port}"))
        assert sockets and stat.S_ISSOCK(sockets[0].stat().st_mode)
        for path in (cluster.root, cluster.data_dir, cluster.socket_dir, sockets[0]):
            assert private_only(path), f"{path} is open to others"
        if os.geteuid() == 0:  # PostgreSQL refuses root: the postgres system user runs it
            owner = pwd.getpwnam(PG_USER).pw_uid
            assert {p.stat().st_uid for p in (cluster.root, cluster.data_dir)} == {owner}
            assert Path(f"/proc/{cluster.pid}").stat().st_uid == owner
        assert psql(cluster.server, "SHOW listen_addresses") == ""
        # no TCP port at all: the socket in its private directory is the only way in
        for address in ("127.0.0.1", "127.0.0.2"):
            with socket.socket() as sock:
                sock.settimeout(2)
                assert sock.connect_ex((address, port)) != 0


def run_session_server(**env: str) -> subprocess.CompletedProcess[str]:
    """A Python process that takes its session server and prints its port and data
    directory (or why there is none), then exits."""
    code = ("import subprocess, sys\n"
            "from tests.pg_support import PgUnavailable, session_server\n"
            "try:\n"
            "    s = session_server()\n"
            "except PgUnavailable as exc:\n"
            "    sys.exit(f'unavailable: {exc}')\n"
            "out = subprocess.run([*s.psql_args(), '-At', '-c', 'SHOW data_directory'],\n"
            "                     capture_output=True, text=True, check=True).stdout\n"
            "print(s.port, out.strip())\n")
    environ = {k: v for k, v in os.environ.items() if k != CHOICE_VARIABLE}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**environ, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_sg_test_pg_private_starts_a_private_session_server_stopped_at_exit() -> None:
    if server_bindir() is None:
        pytest.skip("Debian's postgresql package is not installed")
    done = run_session_server(**{CHOICE_VARIABLE: "private"})
    assert done.returncode == 0, done.stderr
    port, data_dir = done.stdout.split()
    assert int(port) != MACHINE_PORT
    root = Path(data_dir).parent
    assert not root.exists() and not running_in(root)


def test_without_sg_test_pg_the_machines_server_is_taken_when_it_answers() -> None:
    if not machine_answers():
        pytest.skip(f"no PostgreSQL answers on 127.0.0.1:{MACHINE_PORT}")
    done = run_session_server()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == str(MACHINE_PORT)


def test_an_unknown_sg_test_pg_choice_is_named() -> None:
    done = run_session_server(**{CHOICE_VARIABLE: "elsewhere"})
    assert done.returncode != 0
    assert f"{CHOICE_VARIABLE}='elsewhere': expected one of private, machine" in done.stderr

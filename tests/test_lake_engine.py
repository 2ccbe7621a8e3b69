"""The lake engine: extensions loaded from their pip packages (no download), catalogs by
configuration, and the bounded retry of "database is locked" on a real SQLite lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from strictgate.lake import engine
from strictgate.lake.engine import (
    LakeConfig,
    connect,
    extension_path,
    is_retryable,
    needed_extensions,
    retry,
)
from strictgate.lake.writer import LakeWriter
from tests.lake_support import seed_definitions, seed_entries


def test_every_extension_ships_in_its_package() -> None:
    for name in engine.EXTENSION_PACKAGES:
        path = extension_path(name)
        assert path.is_file() and path.name == f"{name}.duckdb_extension"
        assert path.parent.name == "v1.5.5"


def test_which_extensions_a_config_needs(tmp_path: Path) -> None:
    local = LakeConfig.local(tmp_path)
    assert local.catalog == f"sqlite:{tmp_path}/lake/catalog.sqlite"
    assert local.data_path == f"{tmp_path}/lake/data/"
    assert needed_extensions(local) == ["ducklake", "sqlite_scanner"]
    pg = LakeConfig("postgres:dbname=lake host=db", "s3://bucket/prefix/")
    assert needed_extensions(pg) == ["ducklake", "postgres_scanner", "httpfs"]


def test_connect_offline_with_autoinstall_off(tmp_path: Path) -> None:
    con = connect(LakeConfig.local(tmp_path))
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN"
        " ('autoinstall_known_extensions', 'autoload_known_extensions', 'TimeZone',"
        " 'threads')").fetchall())
    assert settings == {"autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false", "TimeZone": "UTC",
                        "threads": "1"}
    inlining = con.execute("SELECT value FROM lake.options()"
                           " WHERE option_name = 'data_inlining_row_limit'").fetchone()
    assert inlining == ("0",)
    journal = sqlite3.connect(tmp_path / "lake" / "catalog.sqlite").execute(
        "PRAGMA journal_mode").fetchone()
    assert journal == ("wal",)
    con.close()


def test_an_unreachable_object_store_fails_at_connect(tmp_path: Path) -> None:
    """A writable connection lists the S3 data path first: an unreachable store is one
    clear error at start, not a failing commit later (the reachable case:
    tests/test_lake_scaleout.py, on a real S3 server)."""
    config = LakeConfig(f"sqlite:{tmp_path / 'c.sqlite'}", "s3://strictgate-test/lake/",
                        s3=engine.S3Options(endpoint="127.0.0.1:9", use_ssl=False,
                                            url_style="path"))
    with pytest.raises(engine.LakeError, match="cannot use the lake's data path"):
        connect(config)


def test_an_unreachable_postgres_catalog_fails_fast() -> None:
    config = LakeConfig("postgres:host=127.0.0.1 port=9 dbname=lake connect_timeout=2",
                        "/tmp/unused/")
    started = time.monotonic()
    with pytest.raises(duckdb.Error) as err:
        connect(config)
    assert not is_retryable(err.value)
    assert time.monotonic() - started < 30


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # the write lock: every commit meets "database is locked"
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def _hold_lock(catalog: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the catalog's write lock (POSIX locks are per process, so a
    lock taken in this process would not stop DuckDB's own SQLite)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(catalog), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_a_locked_catalog_is_retried_until_free(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    writer.write(seed_entries(1, 5))
    holder = _hold_lock(tmp_path / "lake" / "catalog.sqlite", 0.5)
    result = writer.write(seed_entries(2, 5, start=1))
    assert holder.wait(timeout=30) == 0
    assert result.records == 10 and result.attempts > 1
    writer.close()


def test_locked_is_retryable_and_bounded(tmp_path: Path) -> None:
    config = LakeConfig.local(tmp_path)
    writer = LakeWriter(config, seed_definitions)
    writer.write(seed_entries(1, 5))
    writer.retry_attempts = 3
    holder = _hold_lock(tmp_path / "lake" / "catalog.sqlite", 20)
    started = time.monotonic()
    with pytest.raises(duckdb.Error) as err:
        writer.write(seed_entries(1, 5, start=10))
    assert is_retryable(err.value) and "locked" in str(err.value)
    assert time.monotonic() - started < 10
    holder.kill()
    holder.wait()
    writer.close()


def test_retry_gives_up_after_its_attempts() -> None:
    calls: list[int] = []

    def locked() -> None:
        calls.append(1)
        raise duckdb.TransactionException("Failed to commit: database is locked")

    with pytest.raises(duckdb.TransactionException):
        retry(locked, attempts=3, base_delay_s=0.001)
    assert calls == [1, 1, 1]


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise duckdb.CatalogException("Table with name nope does not exist")

    with pytest.raises(duckdb.CatalogException):
        retry(fail)
    assert calls == [1]

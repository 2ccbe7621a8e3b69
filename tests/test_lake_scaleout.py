"""The lake past one machine: a PostgreSQL catalog (the tests' server, a throwaway
database per test) and Parquet files in an S3-compatible store (a real SeaweedFS started for
the session), written by the lake writer, read back by the reader, by any DuckDB and through
the HTTP API, compacted in a child process; and the S3 settings that get it there."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis
import redis.asyncio as aioredis

from strictgate.context import utc_now
from strictgate.lake.config import lake_config, s3_from_environ
from strictgate.lake.engine import (
    LakeConfig,
    LakeError,
    S3Options,
    connect,
    create_s3_secret,
    extension_path,
    s3_access_error,
    s3_options,
)
from strictgate.lake.maintenance import compact_in_child
from strictgate.lake.reader import LakeReader, LakeUnavailable
from strictgate.lake.writer import LakeWriter
from strictgate.settings import SettingsError, load_settings
from strictgate.worker.service import build_worker
from tests.ingest_fixtures import SEED_DEFINITION, SEED_SINGLE, start_service
from tests.lake_support import seed_definitions, seed_entries, seed_record
from tests.s3_support import PgDatabases, S3Store, Unavailable, seaweedfs

S3_PATH = {"STRICTGATE_LAKE_DATA_PATH": "s3://lake/prefix/"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t/VALUE+x"}


# --- the servers ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    """SeaweedFS's S3 gateway for the session, bucket ``lake``."""
    try:
        with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as store:
            yield store
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    """Throwaway databases on the tests' PostgreSQL (the machine's, else a private one:
    ``tests/pg_support.py``), dropped after the session."""
    try:
        databases = PgDatabases()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def scaleout(s3_store: S3Store, pg_databases: PgDatabases) -> LakeConfig:
    """A new lake: a fresh PostgreSQL database as its catalog, a fresh prefix for its files."""
    return LakeConfig(catalog="postgres:" + pg_databases.create(),
                      data_path=s3_store.url(secrets.token_hex(6)), s3=s3_store.options())


def any_duckdb(config: LakeConfig, store: S3Store) -> duckdb.DuckDBPyConnection:
    """A DuckDB as anyone would open the lake: the pip packages' extension files, an S3
    secret in plain SQL, the DuckLake catalog attached read-only (nothing of strictgate)."""
    def extension(name: str, package: str) -> str:
        spec = find_spec(package)
        assert spec is not None and spec.submodule_search_locations
        root = Path(spec.submodule_search_locations[0])
        return str(root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension")

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    for name in ("ducklake", "postgres_scanner", "httpfs"):
        con.execute(f"LOAD '{extension(name, 'duckdb_extension_' + name)}'")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{store.key_id}', SECRET '{store.secret}',"
                f" ENDPOINT '{store.endpoint}', USE_SSL false, URL_STYLE 'path')")
    con.execute(f"ATTACH 'ducklake:{config.catalog}' AS other (READ_ONLY)")
    return con


def stored(con: duckdb.DuckDBPyConnection, lake: str = "lake") -> list[tuple[Any, ...]]:
    """(entry id, seq, context, amount) of every row of p1.billing, sorted."""
    return sorted(con.execute(
        f'SELECT "__entryId", "__seq", context::VARCHAR, amount FROM {lake}.p1.billing'
    ).fetchall())


def ledger_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The entry ids in the ledger, sorted (duplicates kept)."""
    return sorted(str(r[0]) for r in con.execute(
        "SELECT entry_id FROM lake.__strictgate.ledger").fetchall())


# --- writer, reader, any DuckDB ------------------------------------------------------------

def test_written_to_postgres_and_s3_then_read_back_exactly_by_reader_and_any_duckdb(
        scaleout: LakeConfig, s3_store: S3Store) -> None:
    writer = LakeWriter(scaleout, seed_definitions)
    entries = seed_entries(4, 50)
    assert len(writer.write(entries).written) == 4
    # a redelivery of two of them beside a new one: only the new one is written
    again = writer.write(entries[2:] + seed_entries(1, 50, start=4))
    assert sorted(again.skipped) == sorted(e.entry_id for e in entries[2:])
    assert again.records == 50
    mine = stored(writer.con)
    assert len(mine) == len(set(mine)) == 250
    assert ledger_ids(writer.con) == sorted(e.entry_id for e in seed_entries(5, 50))
    files = writer.con.execute("SELECT file FROM glob(?)", [scaleout.data_path + "**"]).fetchall()
    assert writer.con.execute("SELECT value FROM lake.options() WHERE option_name = 'data_path'"
                              ).fetchone() == (scaleout.data_path,)
    loaded = {r[0] for r in writer.con.execute(
        "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"ducklake", "postgres_scanner", "httpfs"} <= loaded
    assert "sqlite_scanner" not in loaded
    writer.close()
    assert files and all(str(f[0]).endswith(".parquet") for f in files)

    reader = LakeReader(scaleout, os.urandom(32))
    try:
        page = reader.page("p1", "billing", limit=1000)
    finally:
        reader.close()
    assert page.next_cursor is None
    assert [{k: v for k, v in r.items() if not k.startswith("__")} for r in page.records] \
        == [seed_record(i) for i in range(250)]

    other = any_duckdb(scaleout, s3_store)
    try:
        assert stored(other, "other") == mine
    finally:
        other.close()


def test_two_writers_racing_on_the_same_entries_commit_each_once(
        scaleout: LakeConfig) -> None:
    """PostgreSQL's catalog goes through DuckLake's conflict check: the fence row makes the
    loser of a race retry and find the winner's ledger rows."""
    LakeWriter(scaleout, seed_definitions).close()  # the lake and its tables exist first
    entries = seed_entries(3, 20)
    writers = [LakeWriter(scaleout, seed_definitions) for _ in range(2)]
    start = threading.Barrier(2)
    written: list[int] = []

    def run(writer: LakeWriter) -> None:
        start.wait()
        written.append(len(writer.write(entries).written))

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(written) == 3
    rows = stored(writers[0].con)
    assert len(rows) == len(set(rows)) == 60
    assert ledger_ids(writers[0].con) == sorted(e.entry_id for e in entries)
    for writer in writers:
        writer.close()


def test_processes_opening_a_new_postgres_catalog_at_once_all_get_it(
        pg_databases: PgDatabases, tmp_path: Path) -> None:
    """The first connections to a new catalog create its tables: the losers of that race
    (a collision in PostgreSQL's type names, or a table already there) connect again and
    find the winner's tables. Ten rounds: without the retry about one in four failed."""
    for attempt in range(10):
        config = LakeConfig(catalog="postgres:" + pg_databases.create(),
                            data_path=f"{tmp_path / str(attempt)}/")
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it(config: LakeConfig = config, start: threading.Barrier = start,
                    errors: list[BaseException] = errors) -> None:
            start.wait()
            try:
                connect(config).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []


def test_the_compaction_child_merges_on_postgres_and_s3(
        scaleout: LakeConfig, s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LakeWriter(scaleout, seed_definitions)
    for n in range(4):
        writer.write(seed_entries(1, 25, start=n))
    before = stored(writer.con)
    writer.close()
    # the child is handed the catalog, the data path and the S3 options on stdin: it needs
    # no credentials in its environment (and none is put in its argv or environment)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    report = compact_in_child(scaleout, keep_snapshots=timedelta(0), timeout_s=60)
    assert report.files_merged >= 1 and report.pid != os.getpid()
    con = connect(scaleout, read_only=True)
    try:
        assert stored(con) == before
        files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'billing',"
                            " schema => 'p1')").fetchone()
    finally:
        con.close()
    assert files == (1,)


# --- wrong credentials ---------------------------------------------------------------------

def test_a_wrong_s3_secret_is_one_clear_line_without_the_secret(
        scaleout: LakeConfig, s3_store: S3Store) -> None:
    writer = LakeWriter(scaleout, seed_definitions)
    writer.write(seed_entries(1, 5))
    writer.close()
    wrong = "Wr0ng" + secrets.token_urlsafe(18)
    bad = dataclasses.replace(scaleout, s3=dataclasses.replace(scaleout.s3 or S3Options(),
                                                               secret=wrong))
    with pytest.raises(LakeError) as refused:
        LakeWriter(bad, seed_definitions)
    message = str(refused.value)
    assert "\n" not in message and len(message) <= 600
    assert "HTTP 403" in message and "SignatureDoesNotMatch" in message
    assert "AWS_SECRET_ACCESS_KEY" in message and scaleout.data_path in message
    assert wrong not in message and s3_store.secret not in message
    assert refused.value.__cause__ is None and refused.value.__context__ is not None
    # a reader (whose key may be read-only, so it is not checked at connect) fails at its
    # first read, with the store's answer: the secret is not in it either
    reader = LakeReader(bad, os.urandom(32))
    with pytest.raises(LakeUnavailable) as unread:
        reader.page("p1", "billing")
    reader.close()
    assert "HTTP 403" in str(unread.value) and wrong not in str(unread.value)
    # a bucket that does not exist
    nowhere = dataclasses.replace(scaleout, data_path="s3://no-such-bucket/x/")
    with pytest.raises(LakeError, match="NoSuchBucket"):
        connect(nowhere)


def test_an_unreachable_s3_store_is_a_clear_error_when_a_writer_connects(
        tmp_path: Path) -> None:
    config = LakeConfig(f"sqlite:{tmp_path / 'c.sqlite'}", "s3://strictgate-test/lake/",
                        s3=S3Options(endpoint="127.0.0.1:9", use_ssl=False, url_style="path"))
    with pytest.raises(LakeError, match=r"^cannot use the lake's data path "
                       r"s3://strictgate-test/lake/ on the S3 store 127\.0\.0\.1:9: .*"
                       r"Could not connect"):
        connect(config)


# --- the whole service ---------------------------------------------------------------------

def test_the_service_ingests_over_http_into_postgres_and_s3_and_reads_back(
        tmp_path: Path, redis_url: str, sync_redis: redis.Redis, s3_store: S3Store,
        pg_databases: PgDatabases) -> None:
    env = {"STRICTGATE_LAKE_CATALOG": "postgres:" + pg_databases.create(),
           "STRICTGATE_LAKE_DATA_PATH": s3_store.url("service-" + secrets.token_hex(4)),
           **s3_store.env()}
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    batch = [{**SEED_SINGLE, "amount": float(i), "context": {"n": i}} for i in range(5)]
    for svc in start_service(data_dir, redis_url, **env):
        svc.put_dataset("p1", "13", SEED_DEFINITION)
        key = svc.create_key("p1", "u1")
        r = svc.post("/datasets/13/batch", key, batch, **{"X-Request-Id": "req_s3"})
        assert r.status_code == 202, r.text

        async def drain() -> None:
            client = aioredis.Redis.from_url(redis_url)
            settings = load_settings({"REDIS_URL": redis_url,
                                      "STRICTGATE_DATA_DIR": str(data_dir), **env})
            worker = build_worker(client, settings, utc_now, None)
            try:
                await worker.drain()
            finally:
                close = getattr(worker, "close", None)
                if close is not None:
                    close()
                await client.aclose()

        asyncio.run(drain())
        page = svc.client.get("/datasets/13/records",
                              headers={"Authorization": f"Bearer {key}"}).json()
        assert [{k: v for k, v in rec.items() if not k.startswith("__")}
                for rec in page["records"]] == batch
        assert {rec["__traceId"] for rec in page["records"]} == {"req_s3"}
    # nothing of the lake on the local disk
    assert not (data_dir / "lake").exists()
    config = lake_config(load_settings({"STRICTGATE_DATA_DIR": str(data_dir), **env}))
    con = connect(config, read_only=True)
    try:
        count = con.execute('SELECT count(*) FROM lake.p1."13"').fetchone()
    finally:
        con.close()
    assert count == (5,)


# --- the S3 settings (no server needed) ----------------------------------------------------

def test_s3_settings_from_the_environment() -> None:
    settings = load_settings({**S3_PATH, **CREDENTIALS, "AWS_REGION": "eu-central-1",
                              "AWS_SESSION_TOKEN": "tok3n",
                              "STRICTGATE_S3_ENDPOINT": "http://minio.local:9000/"})
    config = lake_config(settings)
    assert config.data_path == "s3://lake/prefix/"
    assert config.s3 == S3Options(key_id="AKIDEXAMPLE", secret="s3cr3t/VALUE+x",
                                  session_token="tok3n", region="eu-central-1",
                                  endpoint="minio.local:9000", use_ssl=False, url_style="path")
    # never in a log line: neither the settings nor the options show the secret parts
    for shown in (repr(settings), repr(config)):
        assert "s3cr3t" not in shown and "tok3n" not in shown and "AKIDEXAMPLE" in shown
    # TLS unless http:// is said; path style is the default only with an endpoint
    tls = lake_config(load_settings({**S3_PATH, "STRICTGATE_S3_ENDPOINT": "s3.example.com",
                                     "STRICTGATE_S3_URL_STYLE": "VHOST"})).s3
    assert tls == S3Options(endpoint="s3.example.com", use_ssl=True, url_style="vhost")
    assert lake_config(load_settings({**S3_PATH, **CREDENTIALS})).s3 == S3Options(
        key_id="AKIDEXAMPLE", secret="s3cr3t/VALUE+x")
    # the trailing slash is added (the secret's scope and the reader's allowed prefix)
    bare = lake_config(load_settings({"STRICTGATE_LAKE_DATA_PATH": "s3://lake/p"}))
    assert bare.data_path == "s3://lake/p/"
    # a local lake has no S3 options, whatever AWS_* other programs use
    local = lake_config(load_settings({"AWS_ACCESS_KEY_ID": "only-half"}))
    assert local.s3 is None and not local.is_s3_data


@pytest.mark.parametrize(("env", "expected"), [
    ({"STRICTGATE_S3_URL_STYLE": "virtual"}, "STRICTGATE_S3_URL_STYLE must be one of path/vhost"),
    ({"STRICTGATE_S3_ENDPOINT": "ftp://h:1"}, "STRICTGATE_S3_ENDPOINT must be host[:port]"),
    ({"STRICTGATE_S3_ENDPOINT": "h:99999"}, "invalid port"),
    ({"STRICTGATE_S3_ENDPOINT": "h:0"}, "a port from 1 to 65535"),
    ({"STRICTGATE_S3_ENDPOINT": "http://h:9000/bucket"}, "with nothing after it"),
    ({"STRICTGATE_S3_ENDPOINT": "under_score:1"}, "a host name or an IP address"),
    ({"STRICTGATE_S3_ENDPOINT": "http://AKIDX:hunter2@h:9000"}, "must not hold credentials"),
    ({"AWS_ACCESS_KEY_ID": "k"}, "must be set together"),
    ({"AWS_SECRET_ACCESS_KEY": "hunter2"}, "must be set together"),
    ({"AWS_SESSION_TOKEN": "hunter2"}, "AWS_SESSION_TOKEN needs"),
    ({"AWS_REGION": "eu central"}, "AWS_REGION must be a region name"),
])
def test_a_malformed_s3_setting_is_refused_at_start(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected.replace("[", r"\[").replace("]", r"\]")) \
            as refused:
        load_settings({**S3_PATH, **env})
    assert "hunter2" not in str(refused.value) and "AKIDX" not in str(refused.value)


def test_s3_settings_beside_a_lake_not_on_s3_are_refused() -> None:
    with pytest.raises(SettingsError, match="STRICTGATE_S3_ENDPOINT applies only to an s3://"):
        load_settings({"STRICTGATE_S3_ENDPOINT": "127.0.0.1:9000"})
    with pytest.raises(SettingsError, match="must name a bucket"):
        load_settings({"STRICTGATE_LAKE_DATA_PATH": "s3:///prefix/"})


def test_the_secret_is_temporary_scoped_and_redacted_in_duckdb() -> None:
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    try:
        con.execute(f"LOAD '{extension_path('httpfs')}'")
        options = S3Options(key_id="AKIDEXAMPLE", secret="it's s3cr3t", session_token="tok3n",
                            region="eu-central-1", endpoint="127.0.0.1:9000", use_ssl=False,
                            url_style="path")
        create_s3_secret(con, options, "s3://lake/prefix/")
        row = con.execute("SELECT persistent, storage, scope, secret_string"
                          " FROM duckdb_secrets()").fetchone()
    finally:
        con.close()
    assert row is not None
    persistent, storage, scope, text = row
    assert (persistent, storage, scope) == (False, "memory", ["s3://lake/prefix/"])
    assert "s3cr3t" not in text and "tok3n" not in text
    for part in ("key_id=AKIDEXAMPLE", "endpoint=127.0.0.1:9000", "region=eu-central-1",
                 "url_style=path", "use_ssl=false", "secret=redacted"):
        assert part in text


def test_a_config_without_s3_options_takes_them_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What a compaction child gets: only the catalog and the data path on stdin."""
    for name, value in {**CREDENTIALS, "STRICTGATE_S3_ENDPOINT": "http://127.0.0.1:9000",
                        "AWS_REGION": "garage"}.items():
        monkeypatch.setenv(name, value)
    config = LakeConfig(catalog="postgres:dbname=x", data_path="s3://lake/prefix/")
    assert s3_options(config) == S3Options(
        key_id="AKIDEXAMPLE", secret="s3cr3t/VALUE+x", region="garage",
        endpoint="127.0.0.1:9000", use_ssl=False, url_style="path")
    given = S3Options(endpoint="other:1")
    assert s3_options(dataclasses.replace(config, s3=given)) is given
    monkeypatch.setenv("STRICTGATE_S3_URL_STYLE", "sideways")
    with pytest.raises(SettingsError):
        s3_from_environ(os.environ, config.data_path)


def test_an_error_creating_the_secret_is_a_lake_error_without_the_secret() -> None:
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    try:
        # no httpfs loaded: DuckDB knows no secret type s3
        with pytest.raises(LakeError, match="cannot set up the S3 credentials") as refused:
            create_s3_secret(con, S3Options(key_id="k", secret="hunter2-secret"),
                             "s3://lake/p/")
    finally:
        con.close()
    assert "hunter2" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_refusal_never_quotes_the_secret_even_if_the_store_echoed_it() -> None:
    options = S3Options(key_id="k", secret="hunter2-secret", session_token="tok3n-value")
    echoed = duckdb.HTTPException("HTTP Error: 403 for hunter2-secret and tok3n-value\n\n"
                                  "AccessDenied: nope\n\nAuthentication Failure - advice")
    message = s3_access_error(echoed, options, "s3://lake/p/")
    assert "hunter2" not in message and "tok3n" not in message
    assert message.startswith("cannot use the lake's data path s3://lake/p/ on the S3 store AWS:"
                              " HTTP Error: 403 for *** and *** AccessDenied: nope (check ")

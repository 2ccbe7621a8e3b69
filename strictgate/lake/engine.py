"""The DuckDB connection to the lake: extensions loaded from their pip packages, the DuckLake
catalog attached, and a bounded retry for the errors a concurrent commit can meet.

What DuckLake 1.5.5 does here (verified with small scripts against real files, offline):

- ``INSTALL`` needs the internet. Each ``duckdb-extension-<name>==1.5.5`` wheel ships
  ``<package>/extensions/v1.5.5/<name>.duckdb_extension``; ``LOAD '<that path>'`` works with
  ``autoinstall_known_extensions``/``autoload_known_extensions`` off. Parquet, JSON and ICU
  are built into the duckdb wheel.
- ``ATTACH 'ducklake:sqlite:<file>' AS lake (DATA_PATH '<dir>/')``: the SQLite catalog. In
  SQLite's default rollback journal any open reader blocks every commit ("database is
  locked"), so the catalog is switched to WAL before the first attach (the mode is stored
  in the file). Even in WAL, two *overlapping* transactions of different connections cannot
  both commit: the later one fails with "database is locked" (its read snapshot is stale),
  appends included. That is retryable: redo the whole transaction.
- A SQLite write lock held by another *process* makes DuckLake's commit fail with
  "database is locked" (retried); one held by Python's own ``sqlite3`` in the *same*
  process is not seen at all (POSIX locks are per process and DuckDB bundles its own
  SQLite), so this module touches the catalog with ``sqlite3`` only once per process,
  before DuckDB opens it.
- The catalog stores its DATA_PATH: attaching with another one fails ("DATA_PATH parameter
  ... does not match existing data path in the catalog"; ``OVERRIDE_DATA_PATH`` would
  force it), so a moved data directory is an explicit error, never a silent empty lake.
- With a DuckDB-file or a PostgreSQL catalog (both verified, the latter against the
  machine's PostgreSQL 15 in ``tests/test_lake_scaleout.py``) DuckLake detects conflicts
  itself, per *table*:
  concurrent appends to one table both commit, while two transactions that UPDATE/DELETE
  rows of the same table (any rows) conflict: "Transaction conflict - ... another
  transaction has deleted from it". The writer's fence row relies on this.
- Data inlining is on by default (``ducklake_default_data_inlining_row_limit`` = 10 rows:
  small inserts go into the catalog, not Parquet). It is turned off for the whole lake
  (``set_option('data_inlining_row_limit', 0)``, persisted in the catalog): inlined rows,
  deleted versions included (the fence row is updated by every commit), stay in the
  catalog until ``ducklake_flush_inlined_data``, and a flush after
  ``ducklake_expire_snapshots`` makes every later ``ducklake_merge_adjacent_files`` fail
  ("INTERNAL Error: DuckLakeCompactor: failed to find table entry for given snapshot id").
  Inlined values themselves are exact (-0.0 is stored as the text '-0.0'; beware that the
  SQL literal ``-0.0`` is a DECIMAL, i.e. 0). A tiny commit costs about the same either way
  here (40-60 ms under load: data, ledger and fence files).
- TIMESTAMPTZ holds microseconds: a cast truncates nanoseconds; ``23:59:60`` and a lowercase
  ``t``/``z`` fail to cast (see :mod:`strictgate.lake.tables` for the rules). Partition values of
  ``day(<timestamptz>)`` follow the session time zone, so every connection sets UTC.
- Two threads are slower than one for our INSERT ... SELECT read_json on this 2-core machine
  (0.35 s vs 0.17 s per 100k rows) and one leaves a core to the API: ``threads`` = 1.
- A ``READ_ONLY`` attach plus ``enable_external_access=false`` and ``lock_configuration``
  (set after the attach) refuses writes, COPY, file reads and ATTACH; the lake's own Parquet
  files must then be listed in ``allowed_directories`` (without it a scan fails with
  "file system operations are disabled", while count(*) still answers from the catalog):
  that is the operators' SQL connection.
- An ``s3://`` data path (tested against a real SeaweedFS, ``tests/test_lake_scaleout.py``):
  the credentials are a ``TEMPORARY`` secret of type s3 (in this connection's memory, never
  on disk) created with bound parameters, so no SQL text, and so no error quoting one, holds
  them; DuckDB lists it with ``secret=redacted``. ``SCOPE`` is the data path: the
  credentials go to no other URL. DuckLake adds the ``/`` after a data path without one
  (``s3://b/p`` and ``s3://b/p/`` attach the same catalog). ``allowed_directories`` matches
  ``s3://`` prefixes too. DuckDB's HTTP errors quote the URL and S3's error code
  (``SignatureDoesNotMatch``, ``NoSuchBucket``), never the credentials.
- A catalog whose files are elsewhere fails only at the first read or write of a file, so a
  writer lists one tiny prefix of the data path when it connects: wrong credentials, a
  missing bucket or an unreachable store are one clear :class:`LakeError` at start.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

from strictgate.redact import redacted

DUCKDB_VERSION = "v1.5.5"
ALIAS = "lake"
# extension name -> the pip package that ships it
EXTENSION_PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
}
# Substrings of errors that a fresh attempt of the same transaction can get past.
RETRYABLE = ("database is locked", "database is busy", "Transaction conflict",
             "could not serialize access",
             # two processes creating one table at the same moment: the loser's transaction
             # can name the winner's just-created inlined-data table ("Table with name
             # ducklake_inlined_data_5_5 does not exist"); redone, it reads the new catalog
             "ducklake_inlined_data",
             # two processes initializing a new PostgreSQL catalog at once: the loser's
             # CREATE TABLE collides in PostgreSQL's type names, or finds the winner's table
             # already there ('relation "ducklake_metadata" already exists'), and rolls
             # back; redone, its ATTACH finds the tables the winner made
             "pg_type_typname_nsp_index", 'relation "ducklake_')

T = TypeVar("T")


class LakeError(Exception):
    """The lake could not be opened or written (configuration, extension, catalog)."""


S3_SCHEMES = ("s3://", "s3a://")
"""Data paths reached with :class:`S3Options` (a DuckDB secret of type s3)."""
SECRET_NAME = "strictgate_lake"
# a prefix no file of the lake has: listing it costs one small request whatever the lake holds
_PROBE = ".strictgate-access-check-"


@dataclass(frozen=True)
class S3Options:
    """How DuckDB reaches an ``s3://`` data path: the parameters of its s3 secret; None
    leaves DuckDB's default (AWS's endpoint and region us-east-1, TLS, virtual-host URLs,
    unsigned requests without a key). The secret parts are left out of ``repr``."""

    key_id: str | None = None
    secret: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None
    """``host[:port]`` of an S3-compatible store."""
    use_ssl: bool = True
    url_style: str | None = None
    """``path`` or ``vhost``."""

    def scrubbed(self, text: str) -> str:
        """``text`` with the secret and the session token replaced by ``***``."""
        for hidden in (self.secret, self.session_token):
            if hidden:
                text = text.replace(hidden, "***")
        return text


@dataclass(frozen=True)
class LakeConfig:
    """Where the lake lives.

    ``catalog`` is what follows ``ducklake:`` in the ATTACH string: ``sqlite:<file>``,
    ``postgres:<libpq connection string>`` or a DuckDB file path; ``data_path`` a directory
    or an ``s3://bucket/prefix/`` URL, reached with ``s3`` (None: from the environment as
    :func:`strictgate.lake.config.s3_from_environ` reads it, which is how a compaction child
    that was handed only the catalog and the data path gets its parent's credentials).
    """

    catalog: str
    data_path: str
    threads: int = 1
    s3: S3Options | None = None

    @classmethod
    def local(cls, data_dir: Path | str) -> LakeConfig:
        """The embedded default: ``<data_dir>/lake/catalog.sqlite``, data in
        ``<data_dir>/lake/data/``."""
        root = Path(data_dir) / "lake"
        return cls(catalog=f"sqlite:{root / 'catalog.sqlite'}", data_path=f"{root / 'data'}/")

    @property
    def is_sqlite(self) -> bool:
        """Whether the catalog is a SQLite file."""
        return self.catalog.startswith("sqlite:")

    @property
    def is_postgres(self) -> bool:
        """Whether the catalog is a PostgreSQL database."""
        return self.catalog.startswith(("postgres:", "postgresql:"))

    @property
    def is_remote_data(self) -> bool:
        """Whether data files live in object storage (needs httpfs)."""
        return self.data_path.startswith(("s3://", "s3a://", "gs://", "gcs://", "r2://",
                                          "http://", "https://"))

    @property
    def is_s3_data(self) -> bool:
        """Whether data files live in S3 or an S3-compatible store."""
        return self.data_path.startswith(S3_SCHEMES)


def extension_path(name: str) -> Path:
    """The extension binary shipped by its pip package (no download)."""
    package = EXTENSION_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LakeError(f"extension package {package} is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension"
        if path.is_file():
            return path
    raise LakeError(f"{package} has no {DUCKDB_VERSION} binary for {name}")


def needed_extensions(config: LakeConfig) -> list[str]:
    """The extensions ``config`` needs, in load order."""
    names = ["ducklake"]
    if config.is_sqlite:
        names.append("sqlite_scanner")
    if config.is_postgres:
        names.append("postgres_scanner")
    if config.is_remote_data:
        names.append("httpfs")
    return names


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


_PREPARED: set[str] = set()
_PREPARED_LOCK = threading.Lock()


def _prepare_sqlite(config: LakeConfig) -> None:
    """Create the catalog's directory and switch a SQLite catalog to WAL (stored in the file).

    Once per process and catalog, before DuckDB opens it here: POSIX locks belong to the
    process, so closing Python's own SQLite handle on a file that DuckDB's bundled SQLite
    holds locks on would drop those locks (see sqlite.org/howtocorrupt.html, 2.2)."""
    with _PREPARED_LOCK:
        if config.catalog in _PREPARED:
            return
        _set_wal(config)
        _PREPARED.add(config.catalog)


def _set_wal(config: LakeConfig) -> None:
    path = Path(config.catalog.removeprefix("sqlite:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not config.is_remote_data:
        Path(config.data_path).mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10)
    try:
        if db.execute("PRAGMA journal_mode").fetchone() != ("wal",):
            db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


def connect(config: LakeConfig, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB with the lake attached as ``lake`` (and selected by USE).

    ``read_only`` also locks the connection down for operators' SQL: no writes, no file
    access beyond the lake, no changing settings.
    """
    if config.is_sqlite and not (read_only and not Path(config.catalog[7:]).exists()):
        retry(lambda: _prepare_sqlite(config))
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "threads": config.threads,
        # DuckDB keeps the bytes of every file it read in its buffer pool (up to 80% of the
        # machine's memory): for local files the OS page cache already does that, and in a
        # long-running worker the cache only grew the process
        "enable_external_file_cache": False,
    })
    try:
        # ICU is built in; partition values of day(<timestamptz>) follow this setting
        con.execute("SET TimeZone = 'UTC'")
        # a statement running over 2 s (a merge, a big read) would draw a progress bar on
        # stdout: into a service's log, or into a compaction child's answer to its parent
        con.execute("SET enable_progress_bar = false")
        for name in needed_extensions(config):
            con.execute(f"LOAD {_quote_literal(str(extension_path(name)))}")
        if config.is_s3_data:
            s3 = s3_options(config)
            create_s3_secret(con, s3, config.data_path)
            if not read_only:  # a reader's key may be allowed to read and not to list
                check_s3_access(con, s3, config.data_path)
        options = [f"DATA_PATH {_quote_literal(config.data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        attach = (f"ATTACH {_quote_literal('ducklake:' + config.catalog)} AS {ALIAS}"
                  f" ({', '.join(options)})")
        retry(lambda: con.execute(attach))
        con.execute(f"USE {ALIAS}")
        if read_only:
            # only the lake's data files stay readable (prefix match, also for s3:// URLs)
            con.execute(f"SET allowed_directories = [{_quote_literal(config.data_path)}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        else:
            _no_inlining(con)
    except BaseException:
        con.close()
        raise
    return con


def s3_options(config: LakeConfig) -> S3Options:
    """``config.s3``, else the options the environment gives."""
    if config.s3 is not None:
        return config.s3
    # imported here: that module imports this one
    from strictgate.lake.config import s3_from_environ

    return s3_from_environ(os.environ, config.data_path)


def create_s3_secret(con: duckdb.DuckDBPyConnection, s3: S3Options, data_path: str) -> None:
    """Give ``con`` the credentials of ``s3`` for URLs under ``data_path`` (a temporary
    secret: this connection's memory only)."""
    params: list[tuple[str, object]] = [
        (name, value) for name, value in (
            ("KEY_ID", s3.key_id), ("SECRET", s3.secret), ("SESSION_TOKEN", s3.session_token),
            ("REGION", s3.region), ("ENDPOINT", s3.endpoint), ("URL_STYLE", s3.url_style))
        if value is not None]
    params += [("USE_SSL", s3.use_ssl), ("SCOPE", data_path)]
    sql = (f"CREATE OR REPLACE TEMPORARY SECRET {SECRET_NAME} (TYPE s3, "
           + ", ".join(f"{name} ?" for name, _ in params) + ")")
    try:
        con.execute(sql, [value for _, value in params])
    except duckdb.Error as exc:
        raise LakeError("cannot set up the S3 credentials: "
                        + s3.scrubbed(redacted(str(exc)))) from None


def check_s3_access(con: duckdb.DuckDBPyConnection, s3: S3Options, data_path: str) -> None:
    """List a prefix of ``data_path`` that holds nothing: raises :class:`LakeError` naming
    the store's answer when the credentials, the bucket or the endpoint are wrong."""
    try:
        con.execute("SELECT count(*) FROM glob(?)", [data_path + _PROBE + "*"]).fetchall()
    except duckdb.Error as exc:
        raise LakeError(s3_access_error(exc, s3, data_path)) from None


def s3_access_error(exc: BaseException, s3: S3Options, data_path: str) -> str:
    """One line on why the store refused: its HTTP status and S3 error code (the first two
    paragraphs of DuckDB's message; the rest is advice repeated), and what to check. No
    credential is quoted."""
    reason = " ".join(str(exc).split("\nLINE ", 1)[0].split("\n\n")[:2])
    store = s3.endpoint or "AWS"
    return s3.scrubbed(redacted(
        f"cannot use the lake's data path {data_path} on the S3 store {store}: {reason}"
        " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, STRICTGATE_S3_ENDPOINT"
        " and that the bucket exists)"))[:600]


def _no_inlining(con: duckdb.DuckDBPyConnection) -> None:
    """Turn data inlining off for the whole lake, once (set_option is a commit)."""
    row = con.execute(
        f"SELECT value FROM {ALIAS}.options() WHERE option_name = 'data_inlining_row_limit'"
        " AND scope = 'GLOBAL'").fetchone()
    if row is None or row[0] != "0":
        retry(lambda: con.execute(f"CALL {ALIAS}.set_option('data_inlining_row_limit', 0)"))


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a lock or commit conflict that a new attempt can get past."""
    if not isinstance(exc, duckdb.Error | sqlite3.OperationalError):
        return False
    text = str(exc)
    return any(marker in text for marker in RETRYABLE)


def retry(fn: Callable[[], T], *, attempts: int = 20, base_delay_s: float = 0.005,
          max_delay_s: float = 1.0) -> T:
    """Call ``fn`` until it succeeds, retrying :func:`is_retryable` errors with jittered
    exponential backoff at most ``attempts`` times in all; the last error is raised."""
    delay = base_delay_s
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not is_retryable(exc):
                raise
        # jitter: two racing writers must not retry in lockstep
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, max_delay_s)
    raise AssertionError("unreachable")

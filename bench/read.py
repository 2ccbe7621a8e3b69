"""Read latency on a 1M-record dataset: a 100-record page (the first one, and a deep one
through a cursor) and a one-day range count.

The lake is filled with :class:`strictgate.lake.writer.LakeWriter` in big commits (``--per-commit``
entries of 1000 seed records each), the entries received over ``--days`` days, so each day
is one partition. Pages are read as the API reads them
(:meth:`strictgate.lake.reader.LakeReader.page`
plus the JSON encoding of the answer); the count runs through the operators' SQL
connection. Prints the fill time, then p50/p99 of ``--reads`` reads of each.

    .venv/bin/python bench/read.py [--records 1000000] [--days 10] [--reads 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

# Run as a script, bench/ comes first on sys.path, and bench/quota.py would shadow the quota
# package: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.lake_write import RECORDS_PER_ENTRY, SEED, seed_record  # noqa: E402
from strictgate.lake.engine import LakeConfig  # noqa: E402
from strictgate.lake.reader import LakeReader  # noqa: E402
from strictgate.lake.writer import LakeEntry, LakeWriter  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402
from strictgate.timestamps import utc_z  # noqa: E402

START = datetime(2026, 6, 1, tzinfo=UTC)


def entries(first: int, count: int, per_day: int) -> list[LakeEntry]:
    """Entries ``first``.. of 1000 records; entry ``e`` is received on day ``e // per_day``,
    spread over that day."""
    out = []
    step = timedelta(seconds=86_400 / per_day)
    for e in range(first, first + count):
        at = START + timedelta(days=e // per_day) + step * (e % per_day)
        records = [seed_record(e * RECORDS_PER_ENTRY + i) for i in range(RECORDS_PER_ENTRY)]
        out.append(LakeEntry.of(f"{1781000000000 + e}-0", QueueEntry(
            records=orjson.dumps(records), trace_id=f"trace{e}", dataset_version=1,
            received_at=utc_z(at), project_id="bench", dataset_id="billing", user_id="u")))
    return out


def fill(config: LakeConfig, n_entries: int, per_commit: int, per_day: int) -> float:
    """Write the dataset; the seconds it took (building the entries included)."""
    writer = LakeWriter(config, lambda project, dataset, version: SEED)
    started = time.perf_counter()
    for first in range(0, n_entries, per_commit):
        writer.write(entries(first, min(per_commit, n_entries - first), per_day),
                     first_delivery=True)
    writer.close()
    return time.perf_counter() - started


def percentiles(fn: Callable[[], object], reads: int) -> tuple[float, float]:
    """p50 and p99 of ``fn`` in milliseconds (after two warm-up calls)."""
    fn()
    fn()
    times = []
    for _ in range(reads):
        begun = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begun) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> int:
    """Fill, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--per-commit", type=int, default=100,
                        help="entries (of 1000 records) per commit")
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the lake goes (default: a temporary directory)")
    args = parser.parse_args()
    n_entries = args.records // RECORDS_PER_ENTRY
    per_day = max(1, n_entries // args.days)
    root = args.dir or Path(tempfile.mkdtemp(prefix="strictgate-read-bench-"))
    config = LakeConfig.local(root)
    try:
        fill_s = fill(config, n_entries, args.per_commit, per_day)
        files = len(list(Path(config.data_path).rglob("*.parquet")))
        print(f"fill: {n_entries * RECORDS_PER_ENTRY:,} records in {fill_s:.1f} s "
              f"({n_entries * RECORDS_PER_ENTRY / fill_s:,.0f} records/s, "
              f"{args.per_commit * RECORDS_PER_ENTRY:,} per commit, {files} Parquet files)")
        reader = LakeReader(config, os.urandom(32))
        total = reader.sql("SELECT count(*) FROM bench.billing")[1][0][0]
        assert total == n_entries * RECORDS_PER_ENTRY, total
        # the cursor after the middle record: a page deep in the dataset
        key = reader.sql('SELECT "__receivedAt", "__entryId", "__seq" FROM bench.billing'
                         ' ORDER BY 1, 2, 3 LIMIT 1 OFFSET ?', [total // 2])[1][0]
        deep = reader.cursors.encode("bench", "billing", (key[0], key[1], int(key[2])))

        def page(cursor: str | None) -> Callable[[], object]:
            def read() -> object:
                p = reader.page("bench", "billing", limit=100, cursor=cursor)
                assert len(p.records) == 100
                return orjson.dumps({"success": True, "records": p.records,
                                     "next_cursor": p.next_cursor})
            return read

        day = START + timedelta(days=args.days // 2)

        def day_count() -> object:
            n = reader.sql('SELECT count(*) FROM bench.billing WHERE "__receivedAt" >= ?'
                           ' AND "__receivedAt" < ?', [day, day + timedelta(days=1)])[1][0][0]
            assert n == per_day * RECORDS_PER_ENTRY, n
            return n

        for label, fn in (("first page (100 records)", page(None)),
                          ("deep page (100 records, cursor at the middle)", page(deep)),
                          ("one-day range count", day_count)):
            p50, p99 = percentiles(fn, args.reads)
            print(f"{label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({args.reads} reads)")
        reader.close()
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

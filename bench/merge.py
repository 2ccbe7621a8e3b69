"""Rows/s of merging 1,000-row requests into a 1M-row table, against appending them.

Two tables of the same definition (``id`` integer, ``name``/``email`` strings, ``amount``
number) are filled with ``--base`` rows (ids 0 to base-1) by plain appends. Then the same
``--requests`` entries of 1,000 rows each go through :class:`strictgate.lake.writer.
LakeWriter`, ``--per-commit`` entries per commit: into one table as merges keyed on ``id``
(the DELETE of the older rows of their keys and the INSERT, :func:`strictgate.lake.tables.
merge_sql`), into the other as appends. Each entry's ids are drawn at random from 0 to
1.5 x base, so about two thirds replace a stored row and one third is new. Prints both
rates and their ratio, and checks the merged table holds one row per key.

    .venv/bin/python bench/merge.py [--base 1000000] [--requests 40] [--per-commit 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

# Run as a script, bench/ comes first on sys.path, and bench/quota.py would shadow the quota
# package: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from strictgate.lake.engine import LakeConfig  # noqa: E402
from strictgate.lake.writer import LakeEntry, LakeWriter  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402
from validator.definition import normalize  # noqa: E402

ROWS_PER_REQUEST = 1000
DEFINITION = normalize({"envelope": "none", "fields": {
    "id": "integer", "name": "string", "email": "string", "amount": "number"}})
# entries filling the base tables: big ones, few commits
FILL_ROWS_PER_ENTRY = 10_000
FILL_ENTRIES_PER_COMMIT = 20


def definitions(project: str, dataset: str, version: int) -> dict[str, Any]:
    """Every table of the bench has the one definition."""
    return DEFINITION


def entry(dataset: str, stream_id: int, ids: list[int], tag: str,
          merge_key: str | None) -> LakeEntry:
    """One queue entry of rows with ``ids`` (admitted at ``stream_id``-0)."""
    rows = [{"id": i, "name": f"{tag}-{i}", "email": f"{i}@{tag}.example", "amount": i * 0.25}
            for i in ids]
    return LakeEntry.of(f"{1781000000000 + stream_id}-0", QueueEntry(
        records=orjson.dumps(rows), trace_id=f"{tag}{stream_id}", dataset_version=1,
        received_at="2026-06-10T11:00:00.123Z", project_id="bench", dataset_id=dataset,
        user_id="u", merge_key=merge_key), len(rows))


def fill(writer: LakeWriter, dataset: str, base: int) -> None:
    """``base`` rows, ids 0 to base-1, appended."""
    entries = [entry(dataset, n, list(range(start, min(base, start + FILL_ROWS_PER_ENTRY))),
                     "base", None)
               for n, start in enumerate(range(0, base, FILL_ROWS_PER_ENTRY))]
    for at in range(0, len(entries), FILL_ENTRIES_PER_COMMIT):
        writer.write(entries[at:at + FILL_ENTRIES_PER_COMMIT], first_delivery=True)


def timed(writer: LakeWriter, entries: list[LakeEntry], per_commit: int) -> float:
    """Seconds to write ``entries``, ``per_commit`` per commit."""
    started = time.perf_counter()
    for at in range(0, len(entries), per_commit):
        writer.write(entries[at:at + per_commit], first_delivery=True)
    return time.perf_counter() - started


def main() -> None:
    """Fill, then time merges and appends of the same requests; print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--per-commit", type=int, default=1)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    draw = random.Random(args.seed)
    batches = [draw.sample(range(args.base * 3 // 2), ROWS_PER_REQUEST)
               for _ in range(args.requests)]
    first = args.base // FILL_ROWS_PER_ENTRY + 10
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        config = LakeConfig.local(Path(tmp))
        writer = LakeWriter(config, definitions)
        started = time.perf_counter()
        for dataset in ("merged", "appended"):
            fill(writer, dataset, args.base)
        print(f"filled 2 tables of {args.base:,} rows in {time.perf_counter() - started:.1f} s")
        rows = args.requests * ROWS_PER_REQUEST
        rates = {}
        for dataset, key in (("merged", "id"), ("appended", None)):
            entries = [entry(dataset, first + n, ids, "new", key)
                       for n, ids in enumerate(batches)]
            seconds = timed(writer, entries, args.per_commit)
            rates[dataset] = rows / seconds
            print(f"{'merge ' if key else 'append'}: {rows:,} rows in {seconds:.2f} s,"
                  f" {rates[dataset]:,.0f} rows/s ({args.per_commit} request(s) of"
                  f" {ROWS_PER_REQUEST:,} rows per commit)")
        print(f"merge/append: {rates['merged'] / rates['appended']:.2f}")
        count = writer.con.execute(
            'SELECT count(*), count(DISTINCT id) FROM lake.bench."merged"').fetchone()
        assert count is not None and count[0] == count[1], count
        print(f"merged table: {count[0]:,} rows, one per key")
        writer.close()


if __name__ == "__main__":
    main()

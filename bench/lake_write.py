"""Records/s of the lake writer vs the JSON Lines sink, on the same 1000-record entries.

Each round writes ``--entries`` queue entries of 1000 seed records, ``--per-commit`` entries
per commit: through :class:`strictgate.lake.writer.LakeWriter` (one DuckLake transaction per commit:
INSERT from the staged entries, ledger rows, fence; ``first_delivery`` as for entries read
new, so no ledger lookup) and through the worker's
JSON Lines path (``strictgate.worker.consumer.output_lines`` +
``strictgate.worker.sink.stage``/``publish``: a
file written, fsynced and renamed per commit). Medians of ``--rounds`` rounds, side by side.

    .venv/bin/python bench/lake_write.py [--entries 200] [--per-commit 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

# Run as a script, bench/ comes first on sys.path, and bench/quota.py would shadow the quota
# package that worker.consumer imports: the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from strictgate.lake.engine import LakeConfig  # noqa: E402
from strictgate.lake.writer import LakeEntry, LakeWriter  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402
from strictgate.worker import sink  # noqa: E402
from strictgate.worker.consumer import output_lines  # noqa: E402
from validator.definition import normalize  # noqa: E402

RECORDS_PER_ENTRY = 1000
ROOT = Path(__file__).resolve().parent.parent
SEED = normalize(json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text()))


def seed_record(i: int) -> dict[str, object]:
    """The ``i``-th record of the seed dataset (distinct values, as tests/lake_support)."""
    return {
        "timestamp": f"2026-06-10T11:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "context": {"source": "billing-service", "request_id": f"req_{i}"},
        "country": "RO", "plan": "pro", "amount": i * 0.5, "active": i % 2 == 0,
        "signup_at": "2026-06-01T08:00:00Z",
    }


def make_entries(n: int, start: int) -> list[LakeEntry]:
    """``n`` entries of 1000 distinct seed records (compact JSON, as the queue holds them)."""
    out = []
    for e in range(start, start + n):
        records = [seed_record(e * RECORDS_PER_ENTRY + i) for i in range(RECORDS_PER_ENTRY)]
        out.append(LakeEntry.of(f"{1781000000000 + e}-0", QueueEntry(
            records=orjson.dumps(records), trace_id=f"trace{e}", dataset_version=1,
            received_at="2026-06-10T11:00:00.123Z", project_id="bench", dataset_id="billing",
            user_id="u")))
    return out


def lake_round(root: Path, entries: list[LakeEntry], per_commit: int,
               threads: int) -> tuple[float, int]:
    """Seconds to write ``entries`` into a fresh lake, and how many commits."""
    local = LakeConfig.local(root)
    config = LakeConfig(local.catalog, local.data_path, threads=threads)
    writer = LakeWriter(config, lambda p, d, v: SEED)
    writer.layout("bench", "billing", 1)  # table creation is not part of the drain
    started = time.perf_counter()
    commits = 0
    for i in range(0, len(entries), per_commit):
        writer.write(entries[i:i + per_commit], first_delivery=True)
        commits += 1
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed, commits


def jsonl_round(root: Path, entries: list[LakeEntry], per_commit: int) -> float:
    """Seconds to write the same records as JSON Lines files, one fsynced file per commit."""
    started = time.perf_counter()
    for i in range(0, len(entries), per_commit):
        lines: list[bytes] = []
        for entry in entries[i:i + per_commit]:
            lines.extend(output_lines(entry.queued))
        final = root / "bench" / "billing" / "2026-06-10" / f"{i}.jsonl"
        sink.stage(final, lines)
        sink.publish(final)
    return time.perf_counter() - started


def main() -> None:
    """Run the rounds and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--per-commit", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads of the writer")
    args = parser.parse_args()
    records = args.entries * RECORDS_PER_ENTRY
    lake_s: list[float] = []
    jsonl_s: list[float] = []
    commits = 0
    for r in range(args.rounds):
        entries = make_entries(args.entries, r * args.entries)
        base = Path(tempfile.mkdtemp(prefix="sg-bench-lake-"))
        try:
            elapsed, commits = lake_round(base / "lake", entries, args.per_commit,
                                         args.threads)
            lake_s.append(elapsed)
            jsonl_s.append(jsonl_round(base / "jsonl", entries, args.per_commit))
            parquet = sum(1 for _ in (base / "lake").rglob("*.parquet"))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    lake_rate = records / statistics.median(lake_s)
    jsonl_rate = records / statistics.median(jsonl_s)
    print(f"entries of {RECORDS_PER_ENTRY} records: {args.entries} per round,"
          f" {args.per_commit} per commit ({commits} commits), {args.rounds} rounds, medians,"
          f" {args.threads} DuckDB thread(s)")
    print(f"{'sink':<8}{'records/s':>12}{'s/round':>10}")
    print(f"{'lake':<8}{lake_rate:>12,.0f}{statistics.median(lake_s):>10.3f}")
    print(f"{'jsonl':<8}{jsonl_rate:>12,.0f}{statistics.median(jsonl_s):>10.3f}")
    print(f"lake/jsonl: {lake_rate / jsonl_rate:.2f}x; parquet files in the last lake: {parquet}")


if __name__ == "__main__":
    main()

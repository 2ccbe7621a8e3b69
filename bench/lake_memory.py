"""Resident memory of a long-running lake writer with compaction, as the worker runs them:
RSS every ``--every`` commits, before and after the two bounds, side by side.

Modes (each in a fresh process, ``MALLOC_ARENA_MAX`` as ``strictgate serve`` sets it):

- ``before``: the writer keeps one connection (DuckLake's per-commit statistics pile up in
  DuckDB's object cache) and compaction runs in a thread of this process (DuckDB leaks the
  memory of every merge attempt whose commit fails, and most fail under steady commits);
- ``writer``: the writer replaces its connection once DuckDB's object cache passes
  ``strictgate.lake.writer.CACHE_LIMIT_BYTES``; compaction still in a thread;
- ``after``: that, and each compaction pass in a child process (what the worker does).

Each commits ``--commits`` times ``--entries`` queue entries of ``--records`` seed records
(the soak's traffic: small entries, a commit every few tens of milliseconds) into a new
lake, the writer on a thread of its own, and starts a compaction pass (snapshots kept 7
days, the default) on another thread every ``--compact-every`` commits unless one is still
running. Growth is measured from the sample nearest ``--warmup`` commits to the end.

    .venv/bin/python bench/lake_memory.py [--commits 3000] [--every 250] [--modes before,after]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import orjson

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.lake_write import SEED, seed_record  # noqa: E402
from strictgate.lake.engine import LakeConfig  # noqa: E402
from strictgate.lake.maintenance import (  # noqa: E402
    CompactionReport,
    compact_in_child,
    compact_lake,
)
from strictgate.lake.writer import CACHE_LIMIT_BYTES, LakeEntry, LakeWriter  # noqa: E402
from strictgate.malloc import ARENAS  # noqa: E402
from strictgate.queue_entry import QueueEntry  # noqa: E402

# mode -> (the writer's cache limit, the compaction pass)
Pass = Callable[[LakeConfig, timedelta], CompactionReport]
MODES: dict[str, tuple[int | None, Pass]] = {
    "before": (None, lambda c, keep: compact_lake(c, keep_snapshots=keep)),
    "writer": (CACHE_LIMIT_BYTES, lambda c, keep: compact_lake(c, keep_snapshots=keep)),
    "after": (CACHE_LIMIT_BYTES, lambda c, keep: compact_in_child(c, keep_snapshots=keep)),
}


def rss_mb() -> float:
    """This process's resident memory (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def entries_of(commit: int, per_commit: int, records: int) -> list[LakeEntry]:
    """The entries of commit number ``commit`` (distinct ids and records)."""
    out = []
    for e in range(commit * per_commit, (commit + 1) * per_commit):
        rows = [seed_record(e * records + i) for i in range(records)]
        out.append(LakeEntry.of(f"{1781000000000 + e}-0", QueueEntry(
            records=orjson.dumps(rows), trace_id=f"trace{e}", dataset_version=1,
            received_at="2026-06-10T11:00:00.123Z", project_id="bench",
            dataset_id="billing", user_id="u"), records))
    return out


def child(mode: str, args: argparse.Namespace) -> None:
    """One mode in this process: a JSON line per sample on stdout."""
    limit, compactor = MODES[mode]
    root = Path(tempfile.mkdtemp(prefix="sg-bench-mem-"))
    config = LakeConfig.local(root)
    write_thread = ThreadPoolExecutor(1, thread_name_prefix="lake-write")
    compact_thread = ThreadPoolExecutor(1, thread_name_prefix="lake-compact")
    writer = write_thread.submit(
        lambda: LakeWriter(config, lambda p, d, v: SEED, cache_limit_bytes=limit)).result()
    compaction: Future[CompactionReport] | None = None
    passes = failed = 0

    def settle(wait: bool) -> None:
        nonlocal compaction, passes, failed
        if compaction is None or not (wait or compaction.done()):
            return
        try:
            compaction.result()
            passes += 1
        except Exception:  # a failed pass is counted, as the worker logs and goes on
            failed += 1
        compaction = None

    started = time.perf_counter()
    try:
        for commit in range(args.commits):
            write_thread.submit(writer.write, entries_of(commit, args.entries, args.records),
                                first_delivery=True).result()
            settle(wait=False)
            due = args.compact_every and (commit + 1) % args.compact_every == 0
            if due and compaction is None:
                compaction = compact_thread.submit(compactor, config, timedelta(days=7))
            if (commit + 1) % args.every == 0 or commit == 0:
                cache = write_thread.submit(writer.cache_bytes).result()
                print(json.dumps({"commit": commit + 1, "rss_mb": rss_mb(),
                                  "cache_kb": cache / 1024, "reconnects": writer.reconnects,
                                  "passes": passes, "failed": failed,
                                  "s": time.perf_counter() - started}), flush=True)
        settle(wait=True)
    finally:
        write_thread.submit(writer.close).result()
        write_thread.shutdown()
        compact_thread.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def run_mode(mode: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """Run ``mode`` in a fresh process and return its samples."""
    env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", str(ARENAS))}
    argv = [sys.executable, __file__, "--child", mode, "--commits", str(args.commits),
            "--every", str(args.every), "--entries", str(args.entries),
            "--records", str(args.records), "--compact-every", str(args.compact_every)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    """Run the modes one after the other and print their samples side by side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250, help="commits between samples")
    parser.add_argument("--entries", type=int, default=2, help="entries per commit")
    parser.add_argument("--records", type=int, default=3, help="records per entry")
    parser.add_argument("--compact-every", type=int, default=500,
                        help="commits between compaction passes (0: none)")
    parser.add_argument("--warmup", type=int, default=500,
                        help="growth is measured from this commit on")
    parser.add_argument("--modes", default="before,after", help=f"of {', '.join(MODES)}")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - MODES.keys()
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    runs = {mode: run_mode(mode, args) for mode in modes}
    print(f"{args.commits} commits of {args.entries} entries x {args.records} records,"
          f" compaction every {args.compact_every or '-'} commits;"
          " RSS MB (DuckDB object cache KB, writer reconnects)")
    print(f"{'commit':>7}" + "".join(f"{m:>28}" for m in modes))
    for i, point in enumerate(runs[modes[0]]):
        cells = [f"{p['rss_mb']:.1f} ({p['cache_kb']:.0f} KB, {p['reconnects']})"
                 for p in (runs[mode][i] for mode in modes)]
        print(f"{int(point['commit']):>7}" + "".join(f"{c:>28}" for c in cells))
    for mode in modes:
        samples = runs[mode]
        warm = min(samples, key=lambda p: abs(p["commit"] - args.warmup))
        end = samples[-1]
        commits = end["commit"] - warm["commit"]
        per_commit_kb = (end["rss_mb"] - warm["rss_mb"]) * 1024 / commits if commits else 0.0
        peak = max(p["rss_mb"] for p in samples[samples.index(warm):])
        print(f"{mode}: RSS {warm['rss_mb']:.1f} MB at commit {int(warm['commit'])} ->"
              f" {end['rss_mb']:.1f} MB at {int(end['commit'])} ({per_commit_kb:+.1f} KB/commit,"
              f" peak {peak:.1f} MB); {end['s'] * 1000 / end['commit']:.1f} ms/commit;"
              f" {int(end['reconnects'])} reconnects; compaction passes"
              f" {int(end['passes'])} done, {int(end['failed'])} failed")


if __name__ == "__main__":
    main()

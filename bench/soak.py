"""Soak: minutes of mixed traffic at a steady rate against a real server, then an exact audit.

Starts an embedded valkey-server and strictgate as `make run` serves it (one uvicorn process,
worker and usage flusher in-process; helpers shared with bench/load.py), then sends, at
``--rate`` requests/s: valid batches (some with an Idempotency-Key), duplicates (replays of an
accepted keyed request), invalid records, and requests of a user whose small monthly quota is
soon used up (429). It samples the server's RSS and Redis memory, and at the end waits for the
worker to drain and checks that the output holds exactly the admitted records, once each.

Pass/fail (exit status 1 on failure):
* after warm-up the server's RSS (API + worker, one process) grows less than 10%;
* Redis memory stays flat: queue streams are trimmed (XLEN ~ 0); ``used_memory`` minus the
  idempotency records (kept 24 h by design, counted and shown separately) grows < 10% + 1 MB;
* output == admitted records exactly (by request id and position), usage_total == output.

    make soak                              # 10 minutes
    make soak SOAK_MINUTES=3
    .venv/bin/python bench/soak.py --minutes 1 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lake_rows import lake_rows  # noqa: E402
from bench.load import ADMIN, DEFINITION, RECORD, _uvicorn, _wait  # noqa: E402
from quota import keys  # noqa: E402
from strictgate.embedded import EmbeddedServer, free_port  # noqa: E402

CAPPED_LIMIT = 500


@dataclass
class Tally:
    """What the clients sent and were told."""

    statuses: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, int] = field(default_factory=dict)  # request id -> records (202, new)
    uncertain: dict[str, int] = field(default_factory=dict)  # keyless 503: maybe admitted
    keyed: list[tuple[str, bytes, str, str]] = field(default_factory=list)  # rid, body, path, user
    unexpected: list[str] = field(default_factory=list)


@dataclass
class Report:
    seconds: float
    requests: int
    statuses: dict[str, int]
    records_admitted: int
    records_written: int
    rss_warm_mb: float
    rss_end_mb: float
    redis_warm_mb: float
    redis_end_mb: float
    idem_keys_end: int
    redis_end_without_idem_mb: float
    redis_warm_without_idem_mb: float
    queue_len_end: int
    samples: list[dict[str, float]]
    problems: list[str]
    lake_commits_warm: int = 0
    lake_commits_end: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def redis_memory(r: redis.Redis) -> tuple[float, int, float]:
    """(used_memory MB, idempotency keys, estimated MB held by them)."""
    used = int(r.info("memory")["used_memory"]) / 2**20
    idem = list(r.scan_iter(match="idem:*", count=5000))
    if not idem:
        return used, 0, 0.0
    sample = random.Random(0).sample(idem, min(200, len(idem)))
    per_key = sum(int(r.memory_usage(k) or 0) for k in sample) / len(sample)
    return used, len(idem), len(idem) * per_key / 2**20


def lake_commits(base: str) -> int:
    """The worker's lake commits so far (``strictgate_lake_commits`` in /metrics; 0 with the
    JSON Lines sink): memory growth per commit is what the lake sink is judged by."""
    try:
        text = httpx.get(base + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    for line in text.splitlines():
        if line.startswith("strictgate_lake_commits_total "):
            return int(float(line.split()[1]))
    return 0


def queue_len(r: redis.Redis) -> int:
    return sum(int(r.xlen(s)) for s in r.scan_iter(match=keys.QUEUE_SCAN_PATTERN,
                                                   _type="stream"))


def body_of(rid: str, n: int, *, invalid: bool = False) -> bytes:
    records = [{**RECORD, "context": {"rid": rid, "j": j}} for j in range(n)]
    if invalid:
        records[-1]["amount"] = "not a number"
    return json.dumps(records).encode()


async def traffic(base: str, tokens: dict[str, str], duration_s: float, rate: float,
                  tally: Tally, seed: int = 1) -> int:
    """Send at ``rate`` requests/s for ``duration_s``; returns requests sent."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(64)
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=base, timeout=10,
                                 limits=httpx.Limits(max_connections=64)) as client:

        async def send(rid: str, path: str, body: bytes, user: str, idem: str | None,
                       n: int, expect: str) -> None:
            headers = {"Authorization": f"Bearer {tokens[user]}",
                       "Content-Type": "application/json", "X-Request-Id": rid}
            if idem:
                headers["Idempotency-Key"] = idem
            async with sem:
                for _attempt in range(10):
                    try:
                        r = await client.post(path, content=body, headers=headers)
                    except httpx.HTTPError:
                        tally.statuses["transport_error"] += 1
                        if not idem:
                            tally.uncertain[rid] = n
                            return
                        await asyncio.sleep(1)
                        continue
                    tally.statuses[str(r.status_code)] += 1
                    if r.status_code == 503 and idem:
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    break
            replayed = r.headers.get("Idempotent-Replayed") == "true"
            if r.status_code == 202 and not replayed:
                tally.accepted[rid] = n
                if idem and expect == "new":
                    tally.keyed.append((rid, body, path, user))
            elif r.status_code == 503:
                tally.uncertain[rid] = n
            ok = {"new": {202, 429}, "dup": {202}, "invalid": {400}}[expect]
            if r.status_code not in ok or (expect == "dup" and not replayed):
                tally.unexpected.append(f"{expect} {rid}: {r.status_code} {r.text[:200]}")

        started = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - started < duration_s:
            due = started + sent / rate
            if due > now:
                await asyncio.sleep(due - now)
            rid = f"r{sent}"
            kind = rng.random()
            n = rng.randint(1, 10)
            if kind < 0.10 and tally.keyed:
                old_rid, body, path, user = rng.choice(tally.keyed)
                coro = send(old_rid, path, body, user, old_rid, 0, "dup")
            elif kind < 0.25:
                coro = send(rid, "/datasets/13/batch", body_of(rid, n, invalid=True), "soak",
                            None, n, "invalid")
            elif kind < 0.40:
                coro = send(rid, "/datasets/13/batch", body_of(rid, n), "capped", rid, n, "new")
            else:
                idem = rid if kind < 0.60 else None
                coro = send(rid, "/datasets/13/batch", body_of(rid, n), "soak", idem, n, "new")
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)
    return sent


def output_records(data_dir: Path) -> tuple[Counter[tuple[str, int]], Counter[str]]:
    """(record -> copies) over every record written, and records per user: the lake's rows
    (the default sink; the user is the prefix of the queue entry id) and any JSON Lines
    output (the user from the file name)."""
    seen: Counter[tuple[str, int]] = Counter()
    per_user: Counter[str] = Counter()
    for path in (data_dir / "output").rglob("*.jsonl"):
        user = path.name.split(".")[-2]
        for line in path.read_bytes().splitlines():
            record = json.loads(line)
            seen[(record["__traceId"], record["context"]["j"])] += 1
            per_user[user] += 1
    for row in lake_rows(data_dir, ("__traceId", "context", "__entryId")):
        seen[(row["__traceId"], json.loads(row["context"])["j"])] += 1
        per_user[str(row["__entryId"]).split("/", 1)[0]] += 1
    return seen, per_user


def run_soak(duration_s: float, rate: float, warmup_s: float, *, check_memory: bool = True,
             capped_limit: int = CAPPED_LIMIT, log: Any = print) -> Report:
    """Run the soak and audit it; see the module docstring."""
    work = Path(tempfile.mkdtemp(prefix="sg-soak-"))
    redis_server = EmbeddedServer(work / "redis", persist=True).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
    env.update(REDIS_URL=redis_server.url, STRICTGATE_DATA_DIR=str(work / "var"),
               STRICTGATE_ADMIN_TOKEN=ADMIN, STRICTGATE_LOG_LEVEL="warning")
    proc = _uvicorn("app:create_app", port, env, work / "strictgate.log")
    r = redis.Redis.from_url(redis_server.url)
    problems: list[str] = []
    tally = Tally()
    samples: list[dict[str, float]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/healthz", proc)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        httpx.put(f"{base}/admin/projects/soak/datasets/13", json=DEFINITION,
                  headers=admin).raise_for_status()
        tokens = {}
        for user in ("soak", "capped"):
            created = httpx.post(f"{base}/admin/projects/soak/keys", json={"user_id": user},
                                 headers=admin)
            created.raise_for_status()
            tokens[user] = created.json()["api_key"]
        httpx.put(f"{base}/admin/users/capped/quota", json={"monthly_limit": capped_limit},
                  headers=admin).raise_for_status()

        def sample(label: str) -> dict[str, float]:
            used, idem, idem_mb = redis_memory(r)
            point = {"t": round(time.monotonic() - t0, 1), "rss_mb": rss_mb(proc.pid),
                     "redis_mb": used, "idem_keys": idem, "redis_wo_idem_mb": used - idem_mb,
                     "queue_len": queue_len(r), "requests": sum(tally.statuses.values()),
                     "commits": lake_commits(base)}
            samples.append(point)
            log(f"[{label:5s}] t={point['t']:7.1f}s requests={point['requests']:8d} "
                f"commits={point['commits']:6d} "
                f"rss={point['rss_mb']:7.1f}MB redis={used:7.2f}MB "
                f"(w/o {idem} idem keys {point['redis_wo_idem_mb']:6.2f}MB) "
                f"queue={point['queue_len']}", flush=True)
            return point

        t0 = time.monotonic()

        async def drive() -> int:
            load = asyncio.create_task(traffic(base, tokens, duration_s, rate, tally))
            next_at = warmup_s
            while not load.done():
                await asyncio.sleep(0.5)
                if time.monotonic() - t0 >= next_at and not load.done():
                    await asyncio.to_thread(sample, "warm" if next_at == warmup_s else "")
                    next_at += max(10.0, (duration_s - warmup_s) / 10)
            return await load

        sent = asyncio.run(drive())
        # let the worker catch up, then the end sample (steady state, nothing in flight)
        deadline = time.monotonic() + 60
        while queue_len(r) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        end = sample("end")
        warm = samples[0] if len(samples) > 1 else end

        seen, per_user = output_records(work / "var")
        period = keys.period_of(datetime.now(UTC))
        usage = {u: int(r.get(keys.usage_total_key(u, period)) or 0) for u in ("soak", "capped")}
        dupes = sum(1 for v in seen.values() if v > 1)
        missing = [rid for rid, n in tally.accepted.items()
                   if any(seen[(rid, j)] != 1 for j in range(n))]
        strays = {rid for rid, _ in seen} - set(tally.accepted) - set(tally.uncertain)
        if tally.unexpected:
            problems.append(f"{len(tally.unexpected)} unexpected answers, e.g. "
                            f"{tally.unexpected[:3]}")
        if dupes or missing or strays:
            problems.append(f"output != admitted: {dupes} duplicated, {len(missing)} missing, "
                            f"{len(strays)} never accepted")
        if dict(per_user) != {u: n for u, n in usage.items() if n}:
            problems.append(f"usage_total {usage} != output lines {dict(per_user)}")
        if usage["capped"] > capped_limit:
            problems.append(f"capped user over quota: {usage['capped']}")
        if end["queue_len"] > 0:
            problems.append(f"queue not drained: {end['queue_len']}")
        if check_memory:
            if end["rss_mb"] > warm["rss_mb"] * 1.10:
                problems.append(f"RSS grew {warm['rss_mb']:.1f} -> {end['rss_mb']:.1f} MB")
            if end["redis_wo_idem_mb"] > warm["redis_wo_idem_mb"] * 1.10 + 1:
                problems.append(f"Redis memory (w/o idempotency records) grew "
                                f"{warm['redis_wo_idem_mb']:.2f} -> "
                                f"{end['redis_wo_idem_mb']:.2f} MB")
        return Report(
            seconds=duration_s, requests=sent, statuses=dict(tally.statuses),
            records_admitted=sum(tally.accepted.values()),
            records_written=sum(seen.values()), rss_warm_mb=warm["rss_mb"],
            rss_end_mb=end["rss_mb"], redis_warm_mb=warm["redis_mb"],
            redis_end_mb=end["redis_mb"], idem_keys_end=int(end["idem_keys"]),
            redis_end_without_idem_mb=end["redis_wo_idem_mb"],
            redis_warm_without_idem_mb=warm["redis_wo_idem_mb"],
            queue_len_end=int(end["queue_len"]), samples=samples, problems=problems,
            lake_commits_warm=int(warm["commits"]), lake_commits_end=int(end["commits"]),
        )
    finally:
        r.close()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the baseline sample (default: 20%%, max 60)")
    args = parser.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, duration * 0.2)
    report = run_soak(duration, args.rate, warmup)
    print()
    print(f"soak: {report.seconds / 60:.1f} min at {args.rate:.0f} req/s, "
          f"{report.requests} requests, answers {report.statuses}")
    print(f"records admitted {report.records_admitted}, written {report.records_written} "
          f"(exactly once: {'yes' if not any('output' in p for p in report.problems) else 'NO'})")
    growth = (report.rss_end_mb / report.rss_warm_mb - 1) * 100 if report.rss_warm_mb else 0
    print(f"server RSS (API + worker): {report.rss_warm_mb:.1f} MB after warm-up -> "
          f"{report.rss_end_mb:.1f} MB at end ({growth:+.1f}%)")
    commits = report.lake_commits_end - report.lake_commits_warm
    if commits > 0:
        per_commit = (report.rss_end_mb - report.rss_warm_mb) * 1024 / commits
        print(f"lake commits after warm-up: {commits} ({per_commit:+.1f} KB of RSS per commit)")
    print(f"Redis used_memory: {report.redis_warm_mb:.2f} -> {report.redis_end_mb:.2f} MB; "
          f"without the {report.idem_keys_end} idempotency records (24 h TTL): "
          f"{report.redis_warm_without_idem_mb:.2f} -> {report.redis_end_without_idem_mb:.2f} MB;"
          f" queue length at end {report.queue_len_end}")
    if report.problems:
        print("FAIL:", *report.problems, sep="\n  ")
        raise SystemExit(1)
    print("PASS")


if __name__ == "__main__":
    main()

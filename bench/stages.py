"""Where a one-record ingest request's CPU goes, stage by stage (issue 19).

Serves strictgate as bench/peers.py does (``strictgate serve``: one process, the in-process
lake worker, the access log at ``--log-level``, default info as ``make run``, on an embedded
valkey-server with AOF and ``appendfsync --fsync``), loads it with wrk (one Loguro seed record
per request to ``/datasets/13``, 32 connections) and measures, per request:

- CPU from ``/proc``, split into the server's main thread (the event loop: HTTP, the app,
  the worker's event-loop share), its other threads (the worker's lake writer and compactor:
  DuckDB, Parquet) and its Redis, as the median over ``--rounds`` runs of ``--duration`` s;
- how the main thread's CPU divides into stages: one more run under py-spy (``--rate`` Hz,
  Python frames only: ``--native`` slowed the server to a third here, which distorts the
  split), each sample of the main thread given to the first stage of :data:`STAGES` that one
  of its frames matches, the stage's share of the samples times the main thread's CPU per
  request. The profiled run only divides; the CPU figures come from the unprofiled rounds.

``--source DIR`` (repeatable) serves the code of another checkout (e.g. ``git archive HEAD |
tar -x -C /tmp/base``) side by side, rounds interleaved, to measure a change against its
base on a noisy machine.

    .venv/bin/python bench/stages.py                          # this checkout
    .venv/bin/python bench/stages.py --source /tmp/base --source .  # before / after
    .venv/bin/python bench/stages.py --raw profile.txt --main-us 420 # re-split a saved profile
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Run as a script, bench/ comes first on sys.path (bench/quota.py would shadow the package)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.load import (  # noqa: E402
    RECORD,
    WRK_SCRIPT,
    _register,
    _wait,
    _wait_drained,
    _wrk,
    strictgate_env,
)
from strictgate.embedded import EmbeddedServer, free_port  # noqa: E402
from strictgate.settings import REDIS_FSYNC_CHOICES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PATH = "/datasets/13"
CONNECTIONS = 32
_TICKS = os.sysconf("SC_CLK_TCK")

# (stage, frame pattern): a sample belongs to the first stage one of whose patterns matches
# one of its frames, so a stage that runs inside another (the response built inside the
# admission step, metrics inside the access log) comes before it. A frame is py-spy's
# "function (file:line)".
STAGES: list[tuple[str, str]] = [
    ("worker (event-loop share)", r"\(strictgate/(worker|lake)/|\(quota/flush\.py"),
    ("metrics", r"\(strictgate/metrics\.py|\(prometheus_client/"),
    ("access log", r"\(strictgate/access_log\.py|\(logging/"),
    ("response send", r"^Response\.__call__ |^RequestResponseCycle\.send |^send_answer "
     r"|^_OneWrite\."),
    ("auth (JWT, key lookup)", r"\(strictgate/ingest/auth\.py|\(strictgate/admin/auth\.py"
     r"|\(strictgate/registry/(apikeys|generation)\.py|\(jwt/|^Loguro\.principal "),
    ("body read", r"^(read_body|_read_capped|content_encoding|_gunzip|_unzstd) "
     r"|^RequestResponseCycle\.receive |^Request\.(stream|body) "),
    ("dataset lookup + validation", r"\(validator/|^_validate |^_check |^resolve_dataset "
     r"|\(strictgate/registry/store\.py"),
    ("response building", r"^_answer |\(strictgate/ingest/answers\.py|^json_response "
     r"|\(starlette/responses\.py|^Loguro\.accepted |^_with_request_id "),
    ("admission (entry, script, Redis client)", r"\(quota/|\(redis/|^_admit "
     r"|\(strictgate/queue_entry\.py|\(strictgate/timestamps\.py|^utc_now "
     r"|\(asyncio/timeouts\.py"),
    ("request id, headers, edge checks", r"\(strictgate/request_id\.py"
     r"|\(strictgate/ingest/selectors\.py|\(strictgate/ingest/dry_run\.py"
     r"|\(starlette/(requests|datastructures)\.py|^check_(content_type|declared_length) "
     r"|\(strictgate/dialects/|^context_of "),
    ("routing, dispatch (app, front, core)", r"\(app\.py|\(strictgate/ingest/"
     r"|\(uvicorn/middleware/|^RequestResponseCycle\.run_asgi "),
    ("HTTP parse (uvicorn, httptools)", r"\(uvicorn/protocols/|\(strictgate/connections\.py"
     r"|\(httptools/"),
]
EVENT_LOOP = "event loop (uvloop: I/O, callbacks, tasks)"
_COMPILED = [(name, re.compile(pattern)) for name, pattern in STAGES]


def stage_of(frames: list[str]) -> str:
    """The stage of one sample, ``frames`` from the thread's root to the leaf."""
    for name, pattern in _COMPILED:
        if any(pattern.search(frame) for frame in frames):
            return name
    return EVENT_LOOP


def main_thread_stages(raw: str, pid: int | None = None) -> Counter[str]:
    """Samples per stage of the main thread in py-spy ``--threads -f raw`` output (the
    thread whose id is ``pid``, else the one named MainThread)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0]
        if not (thread.startswith(f"thread ({pid})") if pid is not None
                else thread.endswith(": MainThread")):
            continue
        counts[stage_of(frames[1:])] += int(n)
    return counts


@dataclass
class Server:
    """One strictgate under test, with its Redis."""

    name: str
    source: Path
    base: str
    proc: subprocess.Popen[bytes]
    redis: EmbeddedServer
    script: Path = Path()
    rounds: list[dict[str, float]] = field(default_factory=list)
    samples: Counter[str] = field(default_factory=Counter)


def _start(name: str, source: Path, work: Path, args: argparse.Namespace) -> Server:
    """``strictgate serve`` from ``source`` on its own valkey-server (AOF, ``--fsync``)."""
    redis_server = EmbeddedServer(work / f"redis-{name}", persist=True,
                                  fsync=args.fsync).start()
    port = free_port()
    env = strictgate_env(work, name, redis_server.url, log_level=args.log_level,
                         sink=args.sink, port=port)
    # ``-m`` puts the working directory first on sys.path: the code served is source's
    proc = subprocess.Popen([sys.executable, "-m", "strictgate.cli", "serve"], cwd=source,
                            env=env, stdout=(work / f"{name}.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, source, f"http://127.0.0.1:{port}", proc, redis_server)
    try:
        # a checkout's first start compiles the record scanner (numba) and caches it
        _wait(server.base + "/healthz", proc, timeout=300)
        token = _register(server.base)
    except BaseException:
        _stop(server)
        raise
    body = work / "single.json"
    body.write_bytes(json.dumps(RECORD).encode())
    server.script = work / f"single-{name}.lua"
    server.script.write_text(WRK_SCRIPT % {"auth_header": "Authorization",
                                           "auth_value": f"Bearer {token}", "body": body})
    answer = httpx.post(server.base + PATH, content=body.read_bytes(), timeout=30, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    if answer.status_code != 202:
        raise SystemExit(f"{name} answered {answer.status_code}: {answer.text[:300]}")
    return server


def _stop(server: Server) -> None:
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
    server.redis.stop()


def _ticks(stat_path: str) -> int:
    """utime + stime (clock ticks) of one /proc stat file, 0 once gone."""
    try:
        text = Path(stat_path).read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def cpu_split(server: Server) -> tuple[float, float, float]:
    """CPU seconds so far of the server's main thread, its other threads, and its Redis
    (children such as a compaction process count as other threads)."""
    pid = server.proc.pid
    main = _ticks(f"/proc/{pid}/task/{pid}/stat")
    every = _ticks(f"/proc/{pid}/stat")
    assert server.redis.process is not None
    redis_ticks = _ticks(f"/proc/{server.redis.process.pid}/stat")
    return main / _TICKS, (every - main) / _TICKS, redis_ticks / _TICKS


def measure(server: Server, duration: int) -> dict[str, float]:
    """One wrk run against ``server``: req/s and CPU µs per request by where it ran."""
    before = cpu_split(server)
    r = _wrk(server.base + PATH, CONNECTIONS, duration, server.script)
    after = cpu_split(server)
    requests = max(1, r["requests"])
    main, threads, redis_s = ((a - b) / requests * 1e6 for a, b in zip(after, before,
                                                                      strict=True))
    _wait_drained(server.redis.url)
    return {"rps": r["rps"], "main_us": main, "threads_us": threads, "redis_us": redis_s,
            "total_us": main + threads + redis_s, "non2xx": r["non2xx"] + r["errors"]}


def profile(server: Server, seconds: int, rate: int, work: Path) -> Counter[str]:
    """Samples per stage of the main thread while wrk loads ``server``."""
    out = work / f"profile-{server.name}.txt"
    wrk = subprocess.Popen(
        ["wrk", "-t", "1", "-c", str(CONNECTIONS), "-d", f"{seconds + 3}s", "--timeout", "5s",
         "-s", str(server.script), server.base + PATH],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        spy = Path(sys.executable).parent / "py-spy"
        subprocess.run([str(spy), "record", "--threads", "-r", str(rate), "-d", str(seconds),
                        "-p", str(server.proc.pid), "-f", "raw", "-o", str(out)],
                       check=True, capture_output=True)
    finally:
        wrk.wait()
    _wait_drained(server.redis.url)
    return main_thread_stages(out.read_text(), server.proc.pid)


def _median(rounds: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


def table(samples: Counter[str], main_us: float, threads_us: float | None = None,
          redis_us: float | None = None) -> list[str]:
    """The stages' lines: µs per request and share of the main thread."""
    total = sum(samples.values()) or 1
    lines = [f"{'stage':44s} {'us/req':>8s} {'share':>7s}"]
    order = [name for name, _ in STAGES] + [EVENT_LOOP]
    for name in order:
        share = samples.get(name, 0) / total
        lines.append(f"{name:44s} {share * main_us:8.1f} {share * 100:6.1f}%")
    lines.append(f"{'= main thread':44s} {main_us:8.1f}")
    if threads_us is not None:
        lines.append(f"{'worker threads (lake writer: DuckDB, Parquet)':44s} {threads_us:8.1f}")
    if redis_us is not None:
        lines.append(f"{'Redis server':44s} {redis_us:8.1f}")
    if threads_us is not None and redis_us is not None:
        lines.append(f"{'= total':44s} {main_us + threads_us + redis_us:8.1f}")
    return lines


def main() -> None:
    """Run the rounds and the profile; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", action="append", type=Path,
                        help="a checkout to serve (repeatable; default: this one)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-seconds", type=int, default=15,
                        help="seconds of py-spy sampling (0: no profile)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--fsync", choices=REDIS_FSYNC_CHOICES, default="always")
    parser.add_argument("--log-level", default="info",
                        help="STRICTGATE_LOG_LEVEL (info: the access log on, as make run)")
    parser.add_argument("--sink", default="lake", help="STRICTGATE_SINK")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before rounds")
    parser.add_argument("--raw", type=Path,
                        help="only split this saved py-spy --threads raw profile "
                             "(with --main-us: the main thread's CPU per request)")
    parser.add_argument("--main-us", type=float, default=100.0)
    parser.add_argument("--keep", type=Path, help="copy the profiles into this directory")
    args = parser.parse_args()
    if args.raw is not None:
        print("\n".join(table(main_thread_stages(args.raw.read_text()), args.main_us)))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk`")
    sources = [s.resolve() for s in (args.source or [ROOT])]
    work = Path(tempfile.mkdtemp(prefix="sg-stages-"))
    servers: list[Server] = []
    try:
        for i, source in enumerate(sources):
            name = source.name if len(set(s.name for s in sources)) == len(sources) else f"s{i}"
            servers.append(_start(name, source, work, args))
        for server in servers:  # warm up: caches, scanner, the lake's first commits
            _wrk(server.base + PATH, CONNECTIONS, args.warmup, server.script)
            _wait_drained(server.redis.url)
        for round_no in range(1, args.rounds + 1):
            for server in servers:
                r = measure(server, args.duration)
                server.rounds.append(r)
                print(f"round {round_no} {server.name:12s} {r['rps']:8.1f} req/s  cpu us/req: "
                      f"main {r['main_us']:6.1f} threads {r['threads_us']:6.1f} redis "
                      f"{r['redis_us']:6.1f} total {r['total_us']:6.1f}  non2xx "
                      f"{r['non2xx']:.0f}", flush=True)
        if args.profile_seconds > 0:
            for server in servers:
                server.samples = profile(server, args.profile_seconds, args.rate, work)
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(work / f"profile-{server.name}.txt",
                                args.keep / f"profile-{server.name}.txt")
        print(f"\nmedians over {args.rounds} round(s) of {args.duration} s; wrk -t1 -c"
              f"{CONNECTIONS}, one record per request to {PATH}; Redis AOF appendfsync "
              f"{args.fsync}; log level {args.log_level}; sink {args.sink}")
        for server in servers:
            rs = server.rounds
            print(f"\n{server.name} ({server.source}): {_median(rs, 'rps'):.0f} req/s, "
                  f"{sum(server.samples.values())} main-thread samples")
            print("\n".join(table(server.samples, _median(rs, "main_us"),
                                  _median(rs, "threads_us"), _median(rs, "redis_us"))))
            print(f"{'(median of round totals)':44s} {_median(rs, 'total_us'):8.1f}")
    finally:
        for server in servers:
            _stop(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

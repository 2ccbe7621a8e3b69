"""Side-by-side HTTP benchmark: strictgate against the Fastify service a Node team would
write instead (issue 19), and a bare floor, driven by wrk in interleaved rounds.

Servers, all on this machine:

- ``strictgate``: ``strictgate serve`` as ``make run`` runs it (one uvicorn process, the
  worker in it, the access log at ``--log-level``, default info as ``make run``), on an
  embedded valkey-server with AOF and ``appendfsync --fsync`` (default always: a durable 2xx);
- ``fastify-1`` (and ``fastify-N`` with ``--peer-workers N``, node's cluster): the peer of
  ``--peer-dir`` (default ../shared/peers/fastify: peer.js), installed with ``npm ci`` into a
  scratch copy, each on its own valkey-server from the same binary with the same
  persistence (AOF, the same appendfsync), with a Bearer JWT (HS256 over its secret, the
  ``user_id`` and ``project_id`` claims it reads); skipped, saying why, when node or npm is
  missing or the install fails;
- ``floor``: bench/floor_app.py (read and parse the body, answer 202) under uvicorn.

Loads (the same bodies and connections for every server, the peer serving Loguro's paths):
``single``: one seed record to ``/datasets/13``, 32 connections; ``batch``: 1000 of them to
``/datasets/13/batch``, 16 connections. Each is run ``--rounds`` times for ``--duration``
seconds per server; strictgate's worker drains its queue after each run (time and CPU
shown). Then, per round, ``sustained``: ``--sustained-seconds`` (default 60; 0 skips it) of
batches to strictgate and the peers, counting records *stored* during the window
(strictgate's written-records metric, its queue bounded by ``--max-queue-records``: over it
admission answers 503) against the peer's *admitted* records (it stores nothing; its queue is
emptied twice a second instead, so its Redis stays small).

Printed: per run, then medians over rounds: req/s, records/s, p50/p99, CPU per request of
the server's processes plus its Redis (strictgate also counting its worker's drain after the
load), non-2xx; the ratios strictgate / each peer and strictgate / floor.

    make bench-peers                                   # with --peer-workers 2
    .venv/bin/python bench/peers.py --rounds 3 --duration 10 --peer-workers 2
    .venv/bin/python bench/peers.py --rounds 1 --duration 3 --sustained-seconds 0  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Run as a script, bench/ comes first on sys.path (bench/quota.py would shadow the package)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.load import (  # noqa: E402
    RECORD,
    WRK_SCRIPT,
    _register,
    _uvicorn,
    _wait,
    _wait_drained,
    _wrk,
    strictgate_env,
)
from bench.peer_support import (  # noqa: E402
    PeerUnavailable,
    StreamTrimmer,
    admitted_records,
    cpu_seconds,
    install_peer,
    peer_token,
    records_written,
    start_peer,
)
from strictgate.embedded import EmbeddedServer, free_port  # noqa: E402
from strictgate.settings import REDIS_FSYNC_CHOICES, SINKS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT.parent / "shared" / "peers" / "fastify"
SG = "strictgate"
FLOOR = "floor"
# load -> (body, path, connections, records per request)
LOADS: dict[str, tuple[bytes, str, int, int]] = {
    "single": (json.dumps(RECORD).encode(), "/datasets/13", 32, 1),
    "batch": (json.dumps([RECORD] * 1000).encode(), "/datasets/13/batch", 16, 1000),
}
SUSTAINED = "sustained"


@dataclass
class Target:
    """One server under test."""

    kind: str  # SG, "peer" or FLOOR
    base: str
    token: str
    proc: subprocess.Popen[bytes]
    redis: EmbeddedServer | None = None
    scripts: dict[str, Path] = field(default_factory=dict)

    def roots(self) -> list[int]:
        """The PIDs whose trees' CPU is charged to this server: it and its Redis."""
        pids = [self.proc.pid]
        if self.redis is not None and self.redis.process is not None:
            pids.append(self.redis.process.pid)
        return pids


SG_PROCESSES_PREFIX = "sg-"
"""Names of the strictgate targets with STRICTGATE_API_PROCESSES: ``sg-<n>p``."""


def _start_strictgate(work: Path, args: argparse.Namespace, targets: dict[str, Target],
                      processes: int | None = None) -> None:
    """``strictgate serve`` (what ``make run`` runs) on its own valkey-server with AOF and
    ``--fsync``, as ``targets[SG]``; the bench's settings only, none from the environment.
    With ``processes``: STRICTGATE_API_PROCESSES, as ``targets["sg-<n>p"]``."""
    name = SG if processes is None else f"{SG_PROCESSES_PREFIX}{processes}p"
    server = EmbeddedServer(work / f"redis-{name}", persist=True, fsync=args.fsync).start()
    port = free_port()
    env = strictgate_env(work, name, server.url, log_level=args.log_level, sink=args.sink,
                         port=port)
    if args.max_queue_records is not None:
        env["STRICTGATE_MAX_QUEUE_RECORDS"] = str(args.max_queue_records)
    if processes is not None:
        env["STRICTGATE_API_PROCESSES"] = str(processes)
    proc = subprocess.Popen([sys.executable, "-m", "strictgate.cli", "serve"], cwd=ROOT,
                            env=env, stdout=(work / f"{name}.log").open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    target = targets[name] = Target(SG, f"http://127.0.0.1:{port}", "", proc, server)
    _wait(target.base + "/healthz", proc)
    target.token = _register(target.base)


def _start_peers(work: Path, args: argparse.Namespace, targets: dict[str, Target]) -> None:
    """The peer as ``fastify-1`` (and ``fastify-N`` with ``--peer-workers N``) in
    ``targets``, each on its own valkey-server configured like strictgate's; a peer that
    cannot run here is left out, saying why."""
    try:
        peer_dir = install_peer(args.peer_dir, work / "peer")
    except PeerUnavailable as exc:
        print(f"fastify peer skipped: {exc}", flush=True)
        return
    secret = secrets.token_urlsafe(32)
    for n in sorted({1, args.peer_workers}):
        name = f"fastify-{n}"
        server = EmbeddedServer(work / f"redis-peer{n}", persist=True, fsync=args.fsync).start()
        port = free_port()
        log = work / f"{name}.log"
        proc = start_peer(peer_dir, port, server.url, secret, n, log)
        target = Target("peer", f"http://127.0.0.1:{port}", peer_token(secret), proc, server)
        try:
            _wait(target.base + "/healthz", proc)
        except SystemExit as exc:
            _stop(target)
            tail = log.read_text(errors="replace").strip()[-300:]
            print(f"{name} skipped: it did not start ({exc}): {tail}", flush=True)
            continue
        targets[name] = target


def _stop(target: Target) -> None:
    """Stop the server's process tree, then its Redis."""
    try:
        os.killpg(target.proc.pid, signal.SIGTERM)
        try:
            target.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(target.proc.pid, signal.SIGKILL)
            target.proc.wait(10)
    except ProcessLookupError:  # already gone
        pass
    if target.redis is not None:
        target.redis.stop()


def _check(name: str, target: Target, load: str) -> None:
    """One request of ``load``: a server that refuses our body (or token) is not measured."""
    body, path, _, _ = LOADS[load]
    answer = httpx.post(target.base + path, content=body, timeout=30, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {target.token}"})
    if not 200 <= answer.status_code < 300:
        raise SystemExit(f"{name} answered {answer.status_code} to one {load} request: "
                         f"{answer.text[:300]}")


def _measure(target: Target, load: str, duration: int) -> dict[str, Any]:
    """wrk ``duration`` seconds of ``load`` against ``target``, with CPU and record counts."""
    _, path, conns, per = LOADS["batch" if load == SUSTAINED else load]
    redis_url = target.redis.url if target.redis is not None else None
    cpu0 = cpu_seconds(target.roots())
    written0 = records_written(redis_url) if target.kind == SG and redis_url else 0
    admitted0 = admitted_records(redis_url) if redis_url is not None else 0
    if target.kind == "peer" and redis_url is not None:
        with StreamTrimmer(redis_url):
            r = _wrk(target.base + path, conns, duration, target.scripts[load])
    else:
        r = _wrk(target.base + path, conns, duration, target.scripts[load])
    requests = max(1, r["requests"])
    r["cpu_us"] = (cpu_seconds(target.roots()) - cpu0) / requests * 1e6
    seconds = r["duration_us"] / 1e6
    ok = r["requests"] - r["non2xx"]
    r["admitted_rps"] = ((admitted_records(redis_url) - admitted0) if redis_url is not None
                         else ok * per) / seconds
    r["stored_rps"] = 0.0
    if target.kind == SG and redis_url is not None:
        r["stored_rps"] = (records_written(redis_url) - written0) / seconds
        r["drain_s"] = _wait_drained(redis_url)
        r["cpu_drain_us"] = (cpu_seconds(target.roots()) - cpu0) / requests * 1e6
    return r


def _line(round_no: int, load: str, name: str, r: dict[str, Any]) -> str:
    text = (f"round {round_no} {load:9s} {name:10s} {r['rps']:9.1f} req/s "
            f"p50 {r['p50_us'] / 1000:7.2f} ms p99 {r['p99_us'] / 1000:7.2f} ms "
            f"cpu {r['cpu_us']:7.0f} us/req non2xx {r['non2xx'] + r['errors']}")
    if load == SUSTAINED:
        text += f" admitted {r['admitted_rps']:9.0f} rec/s"
        if "drain_s" in r:
            text += f" stored {r['stored_rps']:9.0f} rec/s"
    if "drain_s" in r:
        text += f" (drained in {r['drain_s']:.1f} s, cpu {r['cpu_drain_us']:.0f} us/req)"
    return text


def _median(rs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rs))


def _summary(results: dict[tuple[str, str], list[dict[str, Any]]], names: list[str],
             loads: list[str]) -> None:
    """The medians table and the ratios."""
    print(f"\n{'load':9s} {'server':10s} {'req/s':>9s} {'records/s':>10s} {'p50 ms':>8s} "
          f"{'p99 ms':>8s} {'cpu us/req':>10s} {'+drain':>8s} {'non-2xx':>8s}")
    for load in loads:
        per = LOADS["batch" if load == SUSTAINED else load][3]
        med: dict[str, float] = {}
        for name in names:
            rs = results.get((load, name))
            if not rs:
                continue
            rps = _median(rs, "rps")
            if load == SUSTAINED:
                # strictgate (any layout): stored; the peer stores nothing: admitted
                stores = name == SG or name.startswith(SG_PROCESSES_PREFIX)
                med[name] = _median(rs, "stored_rps" if stores else "admitted_rps")
            else:
                med[name] = rps
            drain = f"{_median(rs, 'cpu_drain_us'):8.0f}" if "cpu_drain_us" in rs[0] else " " * 8
            records = med[name] if load == SUSTAINED else rps * per
            print(f"{load:9s} {name:10s} {rps:9.1f} {records:10.0f} "
                  f"{_median(rs, 'p50_us') / 1000:8.2f} {_median(rs, 'p99_us') / 1000:8.2f} "
                  f"{_median(rs, 'cpu_us'):10.0f} {drain} "
                  f"{sum(r['non2xx'] + r['errors'] for r in rs):8d}")
        if load == SUSTAINED and (load, SG) in results:
            rs = results[(load, SG)]
            print(f"{load:9s} {SG} admitted {_median(rs, 'admitted_rps'):.0f} rec/s, stored "
                  f"{_median(rs, 'stored_rps'):.0f} rec/s during the load; then drained in "
                  f"{_median(rs, 'drain_s'):.1f} s")
        what = ("records stored/s (strictgate) over records admitted/s (peer)"
                if load == SUSTAINED else "req/s")
        for name in names:
            if name != SG and name in med and SG in med:
                print(f"{load:9s} ratio {SG}/{name}: {med[SG] / med[name]:.2f} ({what})")


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", choices=REDIS_FSYNC_CHOICES, default="always",
                        help="appendfsync of every Redis (strictgate's and the peers')")
    parser.add_argument("--peer-workers", type=int, default=1,
                        help="also run the peer with this many node cluster processes "
                             "(1: the one-process peer only)")
    parser.add_argument("--peer-dir", type=Path, default=PEER_DIR,
                        help="the peer's sources (peer.js, package-lock.json); not modified")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    parser.add_argument("--sustained-seconds", type=int, default=60,
                        help="seconds of batches per round counting records stored "
                             "(0: skip the sustained load)")
    parser.add_argument("--max-queue-records", type=int, default=None,
                        help="strictgate's STRICTGATE_MAX_QUEUE_RECORDS (default: its own)")
    parser.add_argument("--log-level", default="info",
                        help="strictgate's STRICTGATE_LOG_LEVEL (info: the access log on, "
                             "as `make run`)")
    parser.add_argument("--sink", choices=SINKS, default="lake",
                        help="where strictgate's in-process worker writes")
    parser.add_argument("--api-processes", type=int, nargs="*", default=[], metavar="N",
                        help="also run strictgate with STRICTGATE_API_PROCESSES=N (N API "
                             "processes and a worker process) as sg-Np, per N")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench-peers does it)")
    if args.peer_workers < 1:
        raise SystemExit("--peer-workers must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="sg-peers-"))
    targets: dict[str, Target] = {}
    try:
        _start_strictgate(work, args, targets)
        for processes in args.api_processes:
            _start_strictgate(work, args, targets, processes)
        _start_peers(work, args, targets)
        floor_port = free_port()
        floor_env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
        floor_proc = _uvicorn("bench.floor_app:app", floor_port, floor_env, work / "floor.log")
        targets[FLOOR] = Target(FLOOR, f"http://127.0.0.1:{floor_port}", "floor", floor_proc)
        _wait(targets[FLOOR].base + "/", floor_proc)

        loads = list(args.loads)
        if args.sustained_seconds > 0:
            loads.append(SUSTAINED)
        for load in loads:
            body, _, _, _ = LOADS["batch" if load == SUSTAINED else load]
            body_path = work / f"{load}.json"
            body_path.write_bytes(body)
            for name, target in targets.items():
                script = work / f"{load}-{name}.lua"
                script.write_text(WRK_SCRIPT % {"auth_header": "Authorization",
                                                "auth_value": f"Bearer {target.token}",
                                                "body": body_path})
                target.scripts[load] = script
        for name, target in targets.items():
            for load in args.loads:
                _check(name, target, load)
        for target in targets.values():  # the checks' records written before the first run
            if target.kind == SG and target.redis is not None:
                _wait_drained(target.redis.url)

        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_no in range(1, args.rounds + 1):
            for load in loads:
                sustained = load == SUSTAINED
                for name, target in targets.items():
                    if sustained and target.kind == FLOOR:
                        continue  # the floor keeps nothing: no stored or admitted count
                    r = _measure(target, load,
                                 args.sustained_seconds if sustained else args.duration)
                    results.setdefault((load, name), []).append(r)
                    print(_line(round_no, load, name, r), flush=True)
        print(f"\nmedians over {args.rounds} round(s) of {args.duration} s (sustained: "
              f"{args.sustained_seconds} s of batches); wrk -t1, single: 32 connections, "
              f"batch of 1000: 16; every Redis with AOF, appendfsync {args.fsync}; cpu: "
              f"the server's processes and its Redis, +drain: strictgate's until its worker "
              f"has written the load's records")
        _summary(results, list(targets), loads)
    finally:
        for target in targets.values():
            _stop(target)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

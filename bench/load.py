"""HTTP load benchmark: strictgate vs a bare Starlette floor, driven by wrk, side by side.

Starts, on this machine: strictgate (one uvicorn process, worker in-process, as `make run`
serves it) on an embedded valkey-server with `appendfsync always` (the default: a 2xx survives
power loss), a second strictgate on one with `everysec` (what durability costs, side by side)
and the floor app (same uvicorn settings). Then, in
interleaved rounds, drives each with wrk for a fixed time: 1-record requests with 32
connections (Loguro's ``/datasets/13``), 1000-record batches with 16, and single Operyn log
events (``/events/logs``, ``x-api-key``) with 32. Prints requests/s, records/s, p50/p99 and
the ratios to the floor (medians over rounds), the Operyn single event against the Loguro
single record, and the count of non-2xx answers.

    make bench-load            # installs wrk from Debian's packages when missing
    .venv/bin/python bench/load.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strictgate.embedded import EmbeddedServer, free_port  # noqa: E402
from strictgate.settings import REDIS_FSYNC_CHOICES, SINKS  # noqa: E402

ADMIN = "bench-admin-token"
DEFINITION = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
RECORD = {
    "timestamp": "2026-06-10T10:58:00Z",
    "context": {"source": "billing-service", "request_id": "req_123"},
    "country": "RO", "plan": "pro", "amount": 42.5, "active": True,
    "signup_at": "2026-06-01T08:00:00Z",
}
# OrcaSheets: 500 rows over five tables, each row the Loguro record's fields without its
# envelope, against a 500-record Loguro batch
ORCA_TABLES = ("orders", "users", "inventory", "payments", "returns")
ORCA_DEFINITION = {"envelope": "none", "fields": DEFINITION["fields"]}
ORCA_BODY = {"event_type": "bench_sync", "records": [
    {"metric_name": ORCA_TABLES[i % len(ORCA_TABLES)],
     "metric_value": {k: v for k, v in RECORD.items() if k not in ("timestamp", "context")}}
    for i in range(500)]}
OPERYN_LOG = {
    "service": "api-gateway", "level": "error",
    "message": "Upstream timeout connecting to auth-service", "traceId": "abc-123-def",
    "metadata": {"region": "us-east-1", "env": "prod", "team": "platform"},
}

# OneSight: 1,000 events of one type, each with its own event_id (new ids in every request,
# or the same request resent: every event a duplicate), against a 1,000-record Loguro batch
ONESIGHT_PATH = "/api/openapi/v1/data/events"
ONESIGHT_TYPE = "zone_trigger"
ONESIGHT_DEFINITION = ORCA_DEFINITION
ONESIGHT_PAYLOAD = {k: v for k, v in RECORD.items() if k not in ("timestamp", "context")}
ONESIGHT_EVENTS = 1000


def onesight_body(prefix: str) -> bytes:
    """1,000 events with ids ``<prefix>-0`` .. ``<prefix>-999``."""
    return json.dumps({"events": [
        {"event_type": ONESIGHT_TYPE, "event_id": f"{prefix}-{i}", "source": "bench",
         "payload": ONESIGHT_PAYLOAD} for i in range(ONESIGHT_EVENTS)]}).encode()


LOADS = ("single", "batch", "operyn", "batch500", "orca500", "onesight1000",
         "onesight1000dup")
# loads whose body wrk builds per request (new event ids each time) from a template body
# whose ids are "TEMPLATE-<i>"
FRESH_IDS = {"onesight1000"}

# wrk's request(): the template body with "TEMPLATE" replaced by a per-request counter
FRESH_IDS_LUA = """
local template = wrk.body
local counter = 0
request = function()
  counter = counter + 1
  local body = template:gsub("TEMPLATE", "w" .. counter .. "x" .. tostring(os.time()))
  return wrk.format(nil, nil, nil, body)
end
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["%(auth_header)s"] = "%(auth_value)s"
local f = io.open("%(body)s", "rb")
wrk.body = f:read("*a")
f:close()
local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout))
end
"""


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def _uvicorn(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # as `strictgate serve` runs itself (strictgate/malloc.py)
    env = {"MALLOC_ARENA_MAX": "2", **env}
    cmd = [sys.executable, "-m", "uvicorn", app, "--factory" if app == "app:create_app" else "",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--no-access-log"]
    cmd = [c for c in cmd if c]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    non2xx = 0
    for x in out.splitlines():
        if "Non-2xx or 3xx responses" in x:
            non2xx = int(x.split(":")[1])
    result["non2xx"] = non2xx
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def _wait_drained(redis_url: str, timeout: float = 300) -> float:
    """Wait until the worker has written every queued entry; return the seconds it took.

    Each load starts from an empty queue, so one round's backlog never slows the next."""
    client = redis.Redis.from_url(redis_url)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            streams = list(client.scan_iter(match="queue:datasets:*", _type="stream"))
            if sum(int(client.xlen(s)) for s in streams) == 0:
                return time.monotonic() - started
            time.sleep(0.1)
    finally:
        client.close()
    raise SystemExit("the worker did not drain the queue in time")


def strictgate_env(work: Path, name: str, redis_url: str, *, log_level: str, sink: str,
                   port: int | None = None) -> dict[str, str]:
    """The environment of a benched strictgate ``name``: the caller's, without any
    ``STRICTGATE_*`` setting of its own, plus the bench's (its Redis, a data dir under
    ``work``, the bench's admin token; with ``port``, where ``strictgate serve`` listens)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
    env.update(REDIS_URL=redis_url, STRICTGATE_DATA_DIR=str(work / f"var-{name}"),
               STRICTGATE_ADMIN_TOKEN=ADMIN, STRICTGATE_LOG_LEVEL=log_level,
               STRICTGATE_SINK=sink)
    if port is not None:
        env.update(STRICTGATE_HOST="127.0.0.1", STRICTGATE_PORT=str(port))
    return env


def _start_strictgate(
    work: Path, name: str, fsync: str, procs: list[subprocess.Popen[bytes]], sink: str
) -> tuple[str, EmbeddedServer]:
    """A Redis with ``fsync`` and a strictgate on it; returns the base URL and the Redis."""
    redis_server = EmbeddedServer(work / f"redis-{name}", persist=True, fsync=fsync).start()
    port = free_port()
    env = strictgate_env(work, name, redis_server.url, log_level="warning", sink=sink)
    procs.append(_uvicorn("app:create_app", port, env, work / f"{name}.log"))
    base = f"http://127.0.0.1:{port}"
    _wait(base + "/healthz", procs[-1])
    return base, redis_server


def _register(base: str) -> str:
    """Register the Loguro example dataset and the OrcaSheets tables; a project key."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    httpx.put(f"{base}/admin/projects/bench/datasets/13", json=DEFINITION,
              headers=admin).raise_for_status()
    for table in ORCA_TABLES:
        httpx.put(f"{base}/admin/projects/bench/datasets/{table}", json=ORCA_DEFINITION,
                  headers=admin).raise_for_status()
    httpx.put(f"{base}/admin/projects/bench/datasets/{ONESIGHT_TYPE}",
              json=ONESIGHT_DEFINITION, headers=admin).raise_for_status()
    key: str = httpx.post(f"{base}/admin/projects/bench/keys", json={"user_id": "bench"},
                          headers=admin).json()["api_key"]
    return key


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", choices=REDIS_FSYNC_CHOICES, default="always",
                        help="appendfsync of strictgate's Redis (the default: a durable 2xx)")
    parser.add_argument("--compare-fsync", choices=(*REDIS_FSYNC_CHOICES, "none"),
                        default="everysec",
                        help="also run a second strictgate on a Redis with this appendfsync, "
                             "side by side, to show what --fsync costs ('none': skip)")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=LOADS,
                        help="which loads to run (default: all)")
    parser.add_argument("--sink", choices=SINKS, default="lake",
                        help="where strictgate's in-process worker writes")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench-load does it)")

    work = Path(tempfile.mkdtemp(prefix="sg-load-"))
    procs: list[subprocess.Popen[bytes]] = []
    redis_servers: list[EmbeddedServer] = []
    try:
        floor_port = free_port()
        floor_env = {k: v for k, v in os.environ.items() if not k.startswith("STRICTGATE_")}
        procs.append(_uvicorn("bench.floor_app:app", floor_port, floor_env, work / "floor.log"))
        floor = f"http://127.0.0.1:{floor_port}"
        _wait(floor + "/", procs[-1])
        # target name -> (base URL, Redis URL, key); the floor has no Redis
        targets: dict[str, tuple[str, str | None, str]] = {}
        fsyncs = [args.fsync]
        if args.compare_fsync not in ("none", args.fsync):
            fsyncs.append(args.compare_fsync)
        for fsync in fsyncs:
            name = f"sg-{fsync}"
            base, server = _start_strictgate(work, name, fsync, procs, args.sink)
            redis_servers.append(server)
            targets[name] = (base, server.url, "")
        keys = {name: _register(base) for name, (base, _, _) in targets.items()}
        targets = {name: (base, url, keys[name]) for name, (base, url, _) in targets.items()}
        targets = {"floor": (floor, None, next(iter(keys.values()))), **targets}
        bodies = {
            "single": (json.dumps(RECORD).encode(), "/datasets/13", 32, 1),
            "batch": (json.dumps([RECORD] * 1000).encode(), "/datasets/13/batch", 16, 1000),
            "operyn": (json.dumps(OPERYN_LOG).encode(), "/events/logs", 32, 1),
            "batch500": (json.dumps([RECORD] * 500).encode(), "/datasets/13/batch", 16, 500),
            "orca500": (json.dumps(ORCA_BODY).encode(), "/v1/logs", 16, 500),
            "onesight1000": (onesight_body("TEMPLATE"), ONESIGHT_PATH, 16, ONESIGHT_EVENTS),
            "onesight1000dup": (onesight_body("resent"), ONESIGHT_PATH, 16, ONESIGHT_EVENTS),
        }
        bodies = {name: spec for name, spec in bodies.items() if name in args.loads}
        scripts: dict[tuple[str, str], Path] = {}
        for name, (body, _, _, _) in bodies.items():
            body_path = work / f"{name}.json"
            body_path.write_bytes(body)
            for target, (_, _, key) in targets.items():
                script = work / f"{name}-{target}.lua"
                auth = ("x-api-key", key) if name == "operyn" else ("Authorization",
                                                                     f"Bearer {key}")
                script.write_text(WRK_SCRIPT % {"auth_header": auth[0], "auth_value": auth[1],
                                                "body": body_path}
                                  + (FRESH_IDS_LUA if name in FRESH_IDS else ""))
                scripts[(name, target)] = script
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_no in range(args.rounds):
            for name, (_, path, conns, _) in bodies.items():
                for target, (base, redis_url, _) in targets.items():
                    r = _wrk(base + path, conns, args.duration, scripts[(name, target)])
                    results.setdefault((name, target), []).append(r)
                    drained = ""
                    if redis_url is not None:
                        drained = f" (worker drained in {_wait_drained(redis_url):.1f} s)"
                    print(f"round {round_no + 1} {name:6s} {target:12s} "
                          f"{r['rps']:9.1f} req/s p50 {r['p50_us'] / 1000:6.2f} ms "
                          f"p99 {r['p99_us'] / 1000:6.2f} ms non2xx {r['non2xx']}{drained}",
                          flush=True)
        print()
        print(f"medians over {args.rounds} rounds of {args.duration}s "
              f"(wrk -t1; single and operyn: 32 connections, batch of 1000: 16 connections; "
              f"sg-X = strictgate on a Redis with appendfsync X)")
        print(f"{'load':8s} {'server':12s} {'req/s':>10s} {'records/s':>11s} {'p50 ms':>8s} "
              f"{'p99 ms':>8s} {'non-2xx':>8s}")
        for name, (_, _, _, per) in bodies.items():
            med: dict[str, dict[str, float]] = {}
            for target in targets:
                rs = results[(name, target)]
                med[target] = {
                    "rps": statistics.median(r["rps"] for r in rs),
                    "p50": statistics.median(r["p50_us"] for r in rs) / 1000,
                    "p99": statistics.median(r["p99_us"] for r in rs) / 1000,
                    "non2xx": sum(r["non2xx"] + r["errors"] for r in rs),
                }
                m = med[target]
                print(f"{name:8s} {target:12s} {m['rps']:10.1f} {m['rps'] * per:11.0f} "
                      f"{m['p50']:8.2f} {m['p99']:8.2f} {int(m['non2xx']):8d}")
            main_target = f"sg-{args.fsync}"
            ratio = med[main_target]["rps"] / med["floor"]["rps"]
            print(f"{name:8s} ratio strictgate ({args.fsync})/floor: {ratio:.2f}")
            if len(fsyncs) > 1:
                other = f"sg-{fsyncs[1]}"
                cost = med[main_target]["rps"] / med[other]["rps"]
                print(f"{name:8s} ratio strictgate ({fsyncs[1]})/floor: "
                      f"{med[other]['rps'] / med['floor']['rps']:.2f}; "
                      f"{args.fsync}/{fsyncs[1]}: {cost:.2f}")
        main_target = f"sg-{args.fsync}"

        def rate(load: str) -> float:
            return float(statistics.median(r["rps"] for r in results[(load, main_target)]))

        if {"operyn", "single"} <= set(bodies):
            print(f"operyn single event / Loguro single record ({args.fsync}): "
                  f"{rate('operyn') / rate('single'):.2f}")
        if {"onesight1000", "batch"} <= set(bodies):
            print(f"OneSight 1,000 new events / Loguro batch of 1000 ({args.fsync}, "
                  f"records/s): {rate('onesight1000') / rate('batch'):.2f}")
        if {"onesight1000dup", "batch"} <= set(bodies):
            print(f"OneSight 1,000 resent events (all duplicates) / Loguro batch of 1000 "
                  f"({args.fsync}, events/s acknowledged): "
                  f"{rate('onesight1000dup') / rate('batch'):.2f}")
        if {"orca500", "batch500"} <= set(bodies):
            print(f"OrcaSheets 500 rows over 5 tables / Loguro batch of 500 ({args.fsync}, "
                  f"records/s): {rate('orca500') / rate('batch500'):.2f}")
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        for server in redis_servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

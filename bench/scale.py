"""Scale-out benchmark (issue 18): the same batch load against (a) 1 API process + 1 worker
and (b) 2 API processes + 2 workers, each on a fresh 3-master Redis Cluster and a fresh lake.

Per configuration, all on this machine:

- a Redis Cluster of 3 masters started from the embedded valkey binary (bench/local_cluster.py;
  AOF, ``appendfsync always``; with ``--replicas`` a replica each and
  ``STRICTGATE_REDIS_WAIT_REPLICAS=1``);
- a lake with its catalog in a throwaway database of the machine's PostgreSQL on
  127.0.0.1:5432 (dropped at the end; none answering is a clear exit) and its Parquet files in
  a local directory every worker writes to (``--s3``: a SeaweedFS bucket instead);
- ``strictgate serve`` with ``STRICTGATE_API_PROCESSES=N``, ``STRICTGATE_RUN_WORKER=0`` and
  M ``strictgate worker`` processes (bench/scale_topology.py);
- ``--users`` users (default 6) whose keys fall on the three masters in turn, each with its own
  API key from the admin API.

Load: wrk for ``--duration`` seconds (default 30), ``--connections`` connections (default
16), ``POST /datasets/13/batch`` with 1000 seed records per request, the users' keys in turn,
each request its own ``X-Request-Id`` (bench/wrk_acked.py). Then it waits until every queue is
drained (the lake holds every admitted record).

Printed per configuration: records admitted/s during the load; records stored/s (records
admitted during the load / seconds from its start until the lake had them all); CPU seconds
per million records, from /proc, of the strictgate processes (API and workers apart) and the
valkey nodes, over the load and the drain; PostgreSQL's (the backends of the lake's database,
and the whole server, which other databases' work on this machine also counts in); wrk's.
Then the audit: records acknowledged (202s read by wrk, plus the warm-up's) against records
stored (lake rows) and records used (the admin usage API's ``used``, summed over users):
stored must equal used, every acknowledged request must be in the lake with its 1000 rows,
no request twice; requests stored whose 202 wrk did not read (in flight when wrk stopped) are
counted, and may number at most one per connection.

    make bench-scale                                    # 30 s per configuration
    .venv/bin/python bench/scale.py --duration 20 [--s3] [--replicas] [--configs 1+1 2+2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import orjson
import redis

# Run as a script, bench/ comes first on sys.path (bench/quota.py would shadow the package)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import scale_topology  # noqa: E402
from bench.load import DEFINITION, RECORD  # noqa: E402
from bench.local_cluster import Cluster, start_cluster  # noqa: E402
from bench.proc_cpu import (  # noqa: E402
    postgres_backend_cpu_seconds,
    postgres_server_pid,
    tree_cpu_seconds,
)
from bench.scale_topology import DATASET, PROJECT, Topology  # noqa: E402
from bench.wrk_acked import run_wrk, write_script  # noqa: E402
from quota import keys  # noqa: E402
from strictgate.lake.engine import ALIAS, LakeConfig, connect, extension_path  # noqa: E402
from tests.s3_support import PgDatabases, S3Store, Unavailable, seaweedfs  # noqa: E402

CONFIGS = ("1+1", "2+2")
"""The configurations run by default: ``<API processes>+<worker processes>``."""
BATCH = 1000
DRAIN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Audit:
    """What the client was told against what the service kept."""

    acknowledged: int
    """Records of the requests answered 202 (the warm-up's and those wrk read)."""
    stored: int
    """Rows in the lake."""
    used: int
    """The admin usage API's ``used``, summed over the users."""
    unacknowledged_requests: int
    """Requests in the lake whose 202 wrk did not read (in flight when it stopped)."""
    acknowledged_missing: int
    """Acknowledged requests without their rows in the lake (must be 0)."""
    wrong_counts: int
    """Requests in the lake with other than their records' count of rows (must be 0)."""
    dead_letters: int
    """Entries the workers moved to a dead-letter stream (must be 0)."""
    connections: int

    @property
    def exact(self) -> bool:
        """Whether every check holds."""
        return (self.stored == self.used
                and self.stored == self.acknowledged + self.unacknowledged_requests * BATCH
                and self.unacknowledged_requests <= self.connections
                and self.acknowledged_missing == 0 and self.wrong_counts == 0
                and self.dead_letters == 0)


@dataclass(frozen=True)
class Result:
    """One configuration's figures."""

    name: str
    api: int
    workers: int
    load_s: float
    requests: int
    non_202: int
    p50_ms: float
    p99_ms: float
    admitted: int
    """Records admitted during the load."""
    stored_s: float
    """Seconds from the load's start until the lake held every admitted record."""
    cpu: dict[str, float]
    """CPU seconds over the load and the drain, by part."""
    commits: int
    """Lake commits (snapshots) over the load and the drain."""
    rollbacks: int
    """Transactions the lake's database rolled back meanwhile (lost commit conflicts)."""
    audit: Audit

    @property
    def admitted_per_s(self) -> float:
        """Records admitted per second of load."""
        return self.admitted / self.load_s

    @property
    def stored_per_s(self) -> float:
        """Records admitted during the load per second until all of them were stored."""
        return self.admitted / self.stored_s

    def per_million(self, part: str) -> float:
        """CPU seconds of ``part`` per million records admitted."""
        return self.cpu[part] / max(1, self.admitted) * 1e6


def config(name: str) -> tuple[int, int]:
    """``"<A>+<W>"`` as (API processes, worker processes), each 1 to 16."""
    api, plus, workers = name.partition("+")
    if not (plus and api.isdigit() and workers.isdigit()
            and 1 <= int(api) <= 16 and 1 <= int(workers) <= 16):
        raise argparse.ArgumentTypeError(f"a configuration is <API processes>+<workers> "
                                         f"(e.g. 2+2), got {name!r}")
    return int(api), int(workers)


def _queue_keys(users: list[str]) -> list[str]:
    return [keys.queue_key(user, PROJECT, DATASET) for user in users]


def wait_drained(cluster: Cluster, users: list[str], topology: Topology) -> bool:
    """Until no queue of ``users`` holds an entry (the worker removes an entry only after the
    lake commit that holds its records); whether there was one to wait for."""
    client = redis.RedisCluster.from_url(cluster.url)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    waited = False
    try:
        while sum(int(client.xlen(key)) for key in _queue_keys(users)) > 0:
            waited = True
            topology.check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"the workers did not drain the queues in "
                                 f"{DRAIN_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
    finally:
        client.close()
    return waited


def dead_letters(cluster: Cluster, users: list[str]) -> int:
    """Entries in the dead-letter streams of ``users``' queues."""
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        return sum(int(client.xlen(keys.dead_letter_key(key))) for key in _queue_keys(users))
    finally:
        client.close()


def rows_by_request(lake: LakeConfig) -> dict[str, int]:
    """Rows of the dataset's table by ``__traceId`` (the request id), read as any reader."""
    con = connect(lake, read_only=True)
    try:
        rows = con.execute(f'SELECT "__traceId", count(*) FROM {ALIAS}."{PROJECT}"."{DATASET}" '
                           "GROUP BY ALL").fetchall()
    finally:
        con.close()
    return {str(trace): int(count) for trace, count in rows}


@dataclass(frozen=True)
class CatalogCounts:
    """Transactions seen by the lake's PostgreSQL database."""

    snapshots: int
    """DuckLake snapshots: one per commit that succeeded (compaction passes too)."""
    rollbacks: int
    """Transactions rolled back (``pg_stat_database``): a commit that lost a conflict with
    another writer's, among others."""


def catalog_counts(dsn: str) -> CatalogCounts:
    """The lake database's snapshot count and rolled-back transactions so far (PostgreSQL
    publishes a backend's statistics within about a second)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    try:
        con.execute(f"LOAD '{extension_path('postgres_scanner')}'")
        con.execute(f"ATTACH '{dsn}' AS catalog (TYPE postgres, READ_ONLY)")
        row = con.execute("SELECT count(*) FROM catalog.public.ducklake_snapshot").fetchone()
        stats = con.execute(
            "SELECT * FROM postgres_query('catalog', 'SELECT xact_rollback FROM "
            "pg_stat_database WHERE datname = current_database()')").fetchone()
    finally:
        con.close()
    return CatalogCounts(int(row[0]) if row else 0, int(stats[0]) if stats else 0)


def warm_up(topology: Topology, api_keys: dict[str, str], body: bytes) -> list[str]:
    """One batch per user (it checks every key and warms every API process's caches); the
    request ids answered 202."""
    acked = []
    with httpx.Client(base_url=topology.base, timeout=60) as client:
        for index, key in enumerate(api_keys.values()):
            request_id = f"warm-{index}"
            answer = client.post(f"/datasets/{DATASET}/batch", content=body, headers={
                "Authorization": f"Bearer {key}", "Content-Type": "application/json",
                "X-Request-Id": request_id})
            if answer.status_code != 202:
                raise SystemExit(f"warm-up request answered {answer.status_code}: "
                                 f"{answer.text[:300]}")
            acked.append(request_id)
    return acked


def weed_pids(root: Path) -> list[int]:
    """PIDs of the SeaweedFS server started under ``root`` (its argv names its data dir)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if argv.split(b"\0", 1)[0].endswith(b"weed") and str(root).encode() in argv:
            found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds, by part, of every process a configuration runs on."""

    def __init__(self, topology: Topology, cluster: Cluster, dbname: str,
                 s3_root: Path | None) -> None:
        self.topology = topology
        self.cluster = cluster
        self.dbname = dbname
        self.s3_root = s3_root
        self.postmaster = postgres_server_pid()

    def read(self) -> dict[str, float]:
        """Seconds used so far, by part (``wrk``: every child this process reaped)."""
        times = os.times()
        parts = {
            "api": tree_cpu_seconds(self.topology.api_pids),
            "workers": tree_cpu_seconds(self.topology.worker_pids),
            "valkey": tree_cpu_seconds(self.cluster.pids),
            "pg_db": postgres_backend_cpu_seconds(self.dbname),
            "pg_server": (tree_cpu_seconds([self.postmaster])
                          if self.postmaster is not None else 0.0),
            "wrk": times.children_user + times.children_system,
        }
        if self.s3_root is not None:
            parts["s3"] = tree_cpu_seconds(weed_pids(self.s3_root))
        return parts


def measure(name: str, args: argparse.Namespace, pg: PgDatabases, store: S3Store | None,
            s3_root: Path | None, work: Path) -> Result:
    """Start configuration ``name``, load it, wait for the drain, audit, stop it."""
    api, workers = config(name)
    here = work / name.replace("+", "-")
    here.mkdir()
    users = scale_topology.spread_users(args.users)
    dsn = pg.create()
    dbname = dsn.rsplit("dbname=", 1)[1].split()[0]
    if store is not None:
        data_path = store.url(f"scale-{name.replace('+', '-')}")
    else:
        (here / "lake-data").mkdir()
        data_path = f"{(here / 'lake-data').resolve()}/"
    lake = LakeConfig(catalog=f"postgres:{dsn}", data_path=data_path,
                      s3=store.options() if store is not None else None)
    with ExitStack() as stack:
        cluster = start_cluster(here / "cluster", replicas=args.replicas, persist=True)
        stack.callback(cluster.stop)
        settings = {"REDIS_URL": cluster.url, "STRICTGATE_REDIS_CLUSTER": "1",
                    "STRICTGATE_LAKE_CATALOG": lake.catalog,
                    "STRICTGATE_LAKE_DATA_PATH": data_path,
                    "STRICTGATE_LOG_LEVEL": args.log_level,
                    **(store.env() if store is not None else {})}
        if args.replicas:
            settings["STRICTGATE_REDIS_WAIT_REPLICAS"] = "1"
        if args.max_queue_records is not None:
            settings["STRICTGATE_MAX_QUEUE_RECORDS"] = str(args.max_queue_records)
        topology = scale_topology.start(here, settings, api, workers)
        stack.callback(topology.stop)
        api_keys = scale_topology.provision(topology, DEFINITION, users)
        body = orjson.dumps([RECORD] * BATCH)
        body_path = here / "batch.json"
        body_path.write_bytes(body)
        acked = warm_up(topology, api_keys, body)
        wait_drained(cluster, users, topology)
        script = write_script(here / "load.lua", body_path, list(api_keys.values()),
                              f"scale-{name.replace('+', '-')}")

        meter = CpuMeter(topology, cluster, dbname, s3_root)
        used_before = scale_topology.used_records(topology, users)
        time.sleep(1.0)  # PostgreSQL publishes the warm-up's statistics
        catalog_before = catalog_counts(dsn)
        cpu_before = meter.read()
        started = time.monotonic()
        run = run_wrk(f"{topology.base}/datasets/{DATASET}/batch", script,
                      connections=args.connections, duration_s=args.duration)
        wait_drained(cluster, users, topology)
        stored_s = time.monotonic() - started
        # a request wrk left in flight may still be admitted after the queues looked empty
        time.sleep(1.0)
        if wait_drained(cluster, users, topology):
            stored_s = time.monotonic() - started
        cpu_after = meter.read()
        used = scale_topology.used_records(topology, users)
        catalog_after = catalog_counts(dsn)

        acked += run.acked
        counts = rows_by_request(lake)
        audit = Audit(
            acknowledged=len(acked) * BATCH, stored=sum(counts.values()), used=used,
            unacknowledged_requests=len(set(counts) - set(acked)),
            acknowledged_missing=sum(1 for a in acked if counts.get(a, 0) == 0),
            wrong_counts=sum(1 for c in counts.values() if c != BATCH),
            dead_letters=dead_letters(cluster, users), connections=args.connections)
        return Result(
            name=name, api=api, workers=workers, load_s=run.duration_s,
            requests=run.requests, non_202=run.requests - len(run.acked),
            p50_ms=run.p50_ms, p99_ms=run.p99_ms, admitted=used - used_before,
            stored_s=stored_s, cpu={k: cpu_after[k] - cpu_before[k] for k in cpu_after},
            commits=catalog_after.snapshots - catalog_before.snapshots,
            rollbacks=catalog_after.rollbacks - catalog_before.rollbacks, audit=audit)
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def report(results: list[Result], args: argparse.Namespace) -> None:
    """The table, the audit and what the figures mean on this machine."""
    cores = os.cpu_count() or 1
    print(f"\n{args.duration} s of wrk -t1 -c{args.connections}, 1000-record batches, "
          f"{args.users} users; 3-master cluster{' + replicas, WAIT 1' if args.replicas else ''}"
          f" (AOF, appendfsync always); lake: PostgreSQL catalog + "
          f"{'S3 (SeaweedFS)' if args.s3 else 'local data directory'}; {cores} cores")
    print(f"{'config':7s} {'req/s':>7s} {'admitted/s':>11s} {'stored/s':>10s} "
          f"{'stored in':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'non-202':>7s} "
          f"{'commits':>7s} {'records/commit':>14s} {'rollbacks':>9s}")
    for r in results:
        print(f"{r.name:7s} {r.requests / r.load_s:7.1f} {r.admitted_per_s:11,.0f} "
              f"{r.stored_per_s:10,.0f} {r.stored_s:8.1f}s {r.p50_ms:7.1f} {r.p99_ms:7.1f} "
              f"{r.non_202:7d} {r.commits:7d} {r.admitted / max(1, r.commits):14,.0f} "
              f"{r.rollbacks:9d}")
    print("  commits: lake snapshots; rollbacks: transactions the lake's PostgreSQL database "
          "rolled back (a commit that lost a conflict with another worker's is retried)")
    print("\nCPU seconds per million records (load + drain):")
    s3 = "; 'S3 store': the SeaweedFS server" if args.s3 else ""
    print(f"{'config':7s} {'API':>7s} {'workers':>8s} {'valkey':>7s} {'total':>7s}   "
          f"{'PG (lake db)':>12s} {'PG (server)':>11s}{'  S3 store' if args.s3 else ''} "
          f"{'wrk':>6s}")
    for r in results:
        total = r.per_million("api") + r.per_million("workers") + r.per_million("valkey")
        extra = f" {r.per_million('s3'):9.1f}" if args.s3 else ""
        print(f"{r.name:7s} {r.per_million('api'):7.1f} {r.per_million('workers'):8.1f} "
              f"{r.per_million('valkey'):7.1f} {total:7.1f}   {r.per_million('pg_db'):12.1f} "
              f"{r.per_million('pg_server'):11.1f}{extra} {r.per_million('wrk'):6.1f}")
    print(f"  total = API + workers + valkey (strictgate's own); PostgreSQL apart: 'lake db' "
          f"is the live backends of the lake's database, 'server' every postgres process "
          f"(other work on this machine's PostgreSQL included){s3}")
    print("\nAudit (records):")
    for r in results:
        a = r.audit
        print(f"{r.name:7s} acknowledged {a.acknowledged:,} + {a.unacknowledged_requests} "
              f"request(s) in flight when wrk stopped = stored {a.stored:,}; used "
              f"{a.used:,}; acknowledged missing {a.acknowledged_missing}, wrong row counts "
              f"{a.wrong_counts}, dead letters {a.dead_letters}: "
              f"{'EXACT' if a.exact else 'MISMATCH'}")
    print(f"\nOn this machine ({cores} cores, shared with the load generator, PostgreSQL and "
          "valkey): every configuration competes for the same cores, so 2+2 cannot be twice "
          "1+1 here; the rates above are what these cores gave. The figure that carries to a "
          "bigger machine is CPU seconds per million records: with C cores for strictgate "
          "and its valkeys, stored records/s is at most about C x 1,000,000 / total.")
    for r in results:
        total = r.per_million("api") + r.per_million("workers") + r.per_million("valkey")
        print(f"  {r.name}: {total:.1f} CPU-s per million -> at most "
              f"{1e6 / total:,.0f} records/s per core")


def main() -> None:
    """Run the configurations and print the report; exit 1 when an audit is not exact."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds of load per "
                        "configuration (default 30)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", type=int, default=6,
                        help="users (API keys), spread over the three masters (default 6)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), metavar="A+W",
                        help="configurations to run, <API processes>+<workers> (default "
                             "1+1 2+2)")
    parser.add_argument("--s3", action="store_true",
                        help="the lake's Parquet files in SeaweedFS (S3) instead of a local "
                             "directory")
    parser.add_argument("--replicas", action="store_true",
                        help="a replica per master, and STRICTGATE_REDIS_WAIT_REPLICAS=1")
    parser.add_argument("--max-queue-records", type=int, default=None,
                        help="STRICTGATE_MAX_QUEUE_RECORDS (default: the service's)")
    parser.add_argument("--log-level", default="info",
                        help="STRICTGATE_LOG_LEVEL (info: the access log on, as deployed)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (the processes' logs) and print it")
    args = parser.parse_args()
    for name in args.configs:
        try:
            config(name)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench-scale does it)")
    try:
        pg = PgDatabases()
    except Unavailable as exc:
        raise SystemExit(f"bench/scale.py needs a PostgreSQL for the lake's catalog: {exc}. "
                         "Nothing was run.") from None
    work = Path(tempfile.mkdtemp(prefix="sg-scale-"))
    results: list[Result] = []
    try:
        with _store(args.s3, work / "s3") as store:
            for name in args.configs:
                api, workers = config(name)
                print(f"{name}: {api} API process(es) + {workers} worker(s), "
                      f"{args.duration} s of load...", flush=True)
                results.append(measure(name, args, pg, store,
                                       work / "s3" if args.s3 else None, work))
    finally:
        pg.close()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    if not all(r.audit.exact for r in results):
        raise SystemExit(1)


@contextmanager
def _store(wanted: bool, root: Path) -> Iterator[S3Store | None]:
    """A SeaweedFS bucket when ``wanted``, else None."""
    if not wanted:
        yield None
        return
    try:
        with seaweedfs(root) as store:
            yield store
    except Unavailable as exc:
        raise SystemExit(f"--s3: {exc}") from None


if __name__ == "__main__":
    main()

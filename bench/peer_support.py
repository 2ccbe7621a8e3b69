"""What bench/peers.py needs besides bench/load.py's helpers: the Fastify peer (installed
into a scratch copy, its HS256 token, its process), the CPU time of a process tree read from
/proc, and the records a server admitted (its Redis usage counters) or stored (strictgate's
``/metrics``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import jwt
import redis

from quota import keys

PEER_USER = "bench"
PEER_PROJECT = "bench"
# the peer's queue and usage keys have strictgate's names (quota/keys.py)
QUEUE_PATTERN = "queue:datasets:*"
USAGE_PATTERN = "usage_total:datasets:*"
_TICKS = os.sysconf("SC_CLK_TCK")


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message says why (shown, then the peer is skipped)."""


def install_peer(src: Path, dest: Path, timeout: float = 600) -> Path:
    """Copy the peer's files from ``src`` (left untouched: it may be read-only and shared)
    into the new directory ``dest`` and ``npm ci`` there; returns ``dest``. Raises
    :class:`PeerUnavailable` when node or npm is missing or the install fails."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise PeerUnavailable(f"`{tool}` is not on PATH")
    if not (src / "peer.js").is_file() or not (src / "package-lock.json").is_file():
        raise PeerUnavailable(f"{src} has no peer.js and package-lock.json")
    dest.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file():
            # copyfile, not copy: the source files are read-only and npm writes beside them
            shutil.copyfile(item, dest / item.name)
    try:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=dest, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"`npm ci` did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        # npm's last line only names its debug log: say what went wrong instead
        lines = [x.removeprefix("npm error").strip() for x in done.stderr.splitlines()]
        lines = [x for x in lines if x and "complete log of this run" not in x]
        reason = " / ".join(lines[:2])[:300] or "(no output)"
        raise PeerUnavailable(f"`npm ci` failed ({done.returncode}): {reason}")
    return dest


def peer_token(secret: str, user: str = PEER_USER, project: str = PEER_PROJECT,
               lifetime_s: int = 86_400) -> str:
    """A Bearer token the peer accepts: HS256 over ``secret`` with the string claims
    ``user_id`` and ``project_id`` (what peer.js reads), valid for ``lifetime_s``."""
    now = int(time.time())
    return jwt.encode({"user_id": user, "project_id": project, "iat": now,
                       "exp": now + lifetime_s}, secret, algorithm="HS256")


def start_peer(peer_dir: Path, port: int, redis_url: str, secret: str, workers: int,
               log: Path) -> subprocess.Popen[bytes]:
    """``node peer.js`` on 127.0.0.1:``port`` (``WORKERS`` processes under node's cluster
    when above 1), in a session of its own so one signal stops the whole tree."""
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_url, "PEER_SECRET": secret}
    env.pop("WORKERS", None)
    if workers > 1:
        env["WORKERS"] = str(workers)
    return subprocess.Popen(["node", "peer.js"], cwd=peer_dir, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent PID, CPU seconds of user and system time) of ``pid``, or None once gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def descendants(roots: Iterable[int]) -> set[int]:
    """``roots`` and every process below them (node's cluster workers, say)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            parents.setdefault(found[0], []).append(int(entry.name))
    tree: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += parents.get(pid, [])
    return tree


def cpu_seconds(roots: Iterable[int]) -> float:
    """User plus system CPU seconds used so far by ``roots`` and their descendants (every
    thread of each; processes that already exited are not counted)."""
    total = 0.0
    for pid in descendants(roots):
        found = _stat(pid)
        if found is not None:
            total += found[1]
    return total


QUEUED_PATTERN = keys.queued_records_key(QUEUE_PATTERN)
"""Every backpressure counter of strictgate's queues."""


def admitted_records(redis_url: str) -> int:
    """Records admitted so far, by every user, this month and any other: the sum of the
    ``usage_total`` counters both servers' admission scripts INCRBY."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=USAGE_PATTERN))
        return sum(int(v) for v in client.mget(keys) if v is not None) if keys else 0
    finally:
        client.close()


def records_written(redis_url: str) -> int:
    """Records strictgate's workers have written so far: those admitted less those still
    queued (the ``queued:`` counters the admission script raises and the worker lowers in
    the transaction that acknowledges a commit). Read from Redis, not from ``/metrics``: with
    ``STRICTGATE_API_PROCESSES`` the worker is a process of its own without an endpoint."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=QUEUED_PATTERN))
        queued = sum(int(v) for v in client.mget(keys) if v is not None) if keys else 0
    finally:
        client.close()
    return admitted_records(redis_url) - queued


class StreamTrimmer:
    """Empties the queue streams of a Redis every ``interval`` seconds while in use.

    The peer's queue has no consumer and no bound: left alone, a minute of batches would
    hold gigabytes in its Redis. The trimmer stands in for a consumer that stores nothing
    (as strictgate's worker XDELs what it wrote); the peer's admitted count is kept by its
    usage counters, which the trimmer leaves alone."""

    def __init__(self, redis_url: str, interval: float = 0.5) -> None:
        self.redis_url = redis_url
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-trimmer", daemon=True)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            while True:
                for key in client.scan_iter(match=QUEUE_PATTERN, _type="stream"):
                    client.xtrim(key, maxlen=0, approximate=False)
                if self._stop.wait(self.interval):
                    return
        finally:
            client.close()

    def __enter__(self) -> StreamTrimmer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)

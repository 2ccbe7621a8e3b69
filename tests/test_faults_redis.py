"""Issue 6, faults: the HTTP service against a Redis the test stops, kills, freezes, or whose
replies it drops (through a TCP proxy), while clients keep sending.

What must hold every time: a client only ever sees 202 or 503 (+ Retry-After, never another
5xx); every 202 is in the worker output exactly once; a client that retries its 503s with the
same Idempotency-Key is counted exactly once; usage_total equals the records in the output;
the service recovers when Redis comes back, without being restarted.

Clients here retry a 503 after 0.2 s instead of the Retry-After they were given (1 s), only to
keep the test short; the header is still checked on every 503.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from quota import keys
from strictgate.embedded import EmbeddedServer
from tests.ingest_fixtures import SEED_BATCH, SEED_DEFINITION, Service, start_service

DEADLINE_MS = 500
MARGIN_S = 0.6  # thread hand-off to the TestClient's event loop on a busy CI machine
CLIENT_RETRY_S = 0.2


def usage_total(server_url: str, user: str = "u1") -> int:
    """usage_total of ``user`` this month, read straight from Redis."""
    with redis.Redis.from_url(server_url) as r:
        return int(r.get(keys.usage_total_key(user, keys.period_of(datetime.now(UTC)))) or 0)


def body_of(rid: str, n: int) -> list[dict[str, Any]]:
    """``n`` valid records, each naming its request and position in ``context``."""
    return [{**SEED_BATCH[0], "context": {"source": "faults", "rid": rid, "j": j}}
            for j in range(n)]


@dataclass
class Log:
    """What the clients saw (appended from several threads: list.append is atomic)."""

    answers: list[tuple[str, int, float, bool]] = field(default_factory=list)
    """(request id, status, seconds, keyed) of every HTTP answer."""
    accepted: dict[str, int] = field(default_factory=dict)
    """request id -> records, for every request that got a 202."""
    given_up: dict[str, int] = field(default_factory=dict)
    """keyless request id -> records, for requests whose only answer was a 503."""
    bad: list[str] = field(default_factory=list)


def client_loop(svc: Service, key: str, cid: int, stop: threading.Event, log: Log,
                keyless_every: int = 0) -> None:
    """Send batches of 1-3 records until ``stop``. Keyed requests are retried on 503 with
    the same Idempotency-Key until accepted; keyless ones are not retried (the client cannot
    know whether a 503 was counted)."""
    i = 0
    while not stop.is_set():
        rid = f"c{cid}-{i}"
        keyed = not (keyless_every and i % keyless_every == keyless_every - 1)
        i += 1
        n = 1 + i % 3
        headers = {"X-Request-Id": rid}
        if keyed:
            headers["Idempotency-Key"] = rid
        for _attempt in range(200):
            started = time.monotonic()
            r = svc.post("/datasets/13/batch", key, body_of(rid, n), **headers)
            took = time.monotonic() - started
            log.answers.append((rid, r.status_code, took, keyed))
            if r.status_code == 202:
                log.accepted[rid] = n
                break
            if r.status_code != 503:
                log.bad.append(f"{rid}: {r.status_code} {r.text[:300]}")
                return
            if int(r.headers.get("Retry-After", "0")) < 1 or "Traceback" in r.text:
                log.bad.append(f"{rid}: 503 without Retry-After: {r.headers}")
            if not keyed:
                log.given_up[rid] = n
                break
            time.sleep(CLIENT_RETRY_S)
        else:
            log.bad.append(f"{rid}: never accepted")


def run_clients(svc: Service, key: str, log: Log, fault: Any, *, clients: int = 6,
                keyless_every: int = 0, before_s: float = 0.6, after_s: float = 1.5) -> None:
    """Load for ``before_s``, apply ``fault()`` (blocking), load for ``after_s`` more."""
    stop = threading.Event()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client_loop, svc, key, c, stop, log, keyless_every)
                   for c in range(clients)]
        time.sleep(before_s)
        try:
            fault()
            time.sleep(after_s)
        finally:
            stop.set()
        for f in futures:
            f.result(timeout=60)


def check_exactly_once(svc: Service, server_url: str, log: Log) -> list[dict[str, Any]]:
    """Drain; every accepted request is in the output exactly once, keyless 503s at most once,
    and usage_total equals the records in the output."""
    assert log.bad == []
    lines = svc.drain()
    seen = Counter((line["__traceId"], line["context"]["j"]) for line in lines)
    assert all(line["__traceId"] == line["context"]["rid"] for line in lines)
    dupes = [k for k, v in seen.items() if v > 1]
    assert dupes == []
    for rid, n in log.accepted.items():
        assert all(seen[(rid, j)] == 1 for j in range(n)), rid
    unknown = {rid for rid, _ in seen} - set(log.accepted) - set(log.given_up)
    assert unknown == set()
    assert usage_total(server_url) == len(lines)
    return lines


@pytest.fixture
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """A private persistent server (AOF, fsync always by default: a SIGKILL loses nothing
    acknowledged)."""
    server = EmbeddedServer(tmp_path / "own-redis", persist=True).start()
    try:
        yield server
    finally:
        server.resume()
        server.stop()


def ready(svc: Service, log: Log) -> str:
    """Register the dataset, create a key and admit one warm-up record (in ``log``)."""
    key = svc.create_key("p1", "u1")
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    warm = svc.post("/datasets/13/batch", key, body_of("warm", 1), **{"X-Request-Id": "warm"})
    assert warm.status_code == 202, warm.text
    log.accepted["warm"] = 1
    return key


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_redis_stopped_mid_load_503_then_recovers_and_loses_nothing(
    own_redis: EmbeddedServer, data_dir: Path, how: str,
) -> None:
    log = Log()
    for svc in start_service(data_dir, own_redis.url,
                             STRICTGATE_REDIS_DEADLINE_MS=str(DEADLINE_MS)):
        key = ready(svc, log)

        def outage() -> None:
            own_redis.stop() if how == "stop" else own_redis.kill()
            time.sleep(1.5)
            own_redis.start()

        run_clients(svc, key, log, outage, keyless_every=4)
        statuses = Counter(status for _, status, _, _ in log.answers)
        assert set(statuses) == {202, 503}, statuses
        # no request waited much past the deadline (refused connections fail fast)
        slowest = max(took for _, _, took, _ in log.answers)
        assert slowest < DEADLINE_MS / 1000 + MARGIN_S, slowest
        # recovered without a restart of the service
        assert svc.client.get("/readyz").status_code == 200
        r = svc.post("/datasets/13/batch", key, body_of("after", 2), **{"X-Request-Id": "after"})
        assert r.status_code == 202, r.text
        log.accepted["after"] = 2
        lines = check_exactly_once(svc, own_redis.url, log)
        assert len(lines) >= sum(log.accepted.values())


def test_redis_paused_2s_answers_within_deadline_without_retry_storm(
    own_redis: EmbeddedServer, data_dir: Path,
) -> None:
    log = Log()
    for svc in start_service(data_dir, own_redis.url,
                             STRICTGATE_REDIS_DEADLINE_MS=str(DEADLINE_MS)):
        key = ready(svc, log)
        with redis.Redis.from_url(own_redis.url) as r:
            before = r.info("commandstats")

        def freeze() -> None:
            own_redis.pause()
            time.sleep(2.0)
            own_redis.resume()

        run_clients(svc, key, log, freeze, keyless_every=3)
        with redis.Redis.from_url(own_redis.url) as r:
            after = r.info("commandstats")

        statuses = Counter(status for _, status, _, _ in log.answers)
        assert statuses[503] > 0 and set(statuses) == {202, 503}, statuses
        slowest = max(took for _, _, took, _ in log.answers)
        assert slowest < DEADLINE_MS / 1000 + MARGIN_S, slowest

        # No retry storm: a frozen server gets at most one script per HTTP request (the
        # deadline ends the attempt; a retry is only sent after a fast connection error).
        def calls(stats: dict[str, Any], name: str) -> int:
            return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

        scripts = sum(calls(after, c) - calls(before, c) for c in ("evalsha", "eval"))
        requests = len(log.answers)
        assert scripts <= requests, (scripts, requests)
        # and no reconnect storm: a connection is only replaced after a timed-out command
        connects = calls(after, "hello") - calls(before, "hello")
        assert connects <= requests, (connects, requests)
        check_exactly_once(svc, own_redis.url, log)


# --- lost replies -------------------------------------------------------------------------


class ReplyDroppingProxy:
    """A TCP proxy to Redis that, while armed, lets an EVAL/EVALSHA reach the server and then
    drops its reply and closes the connection: the script ran, the client never learns it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.drops_left = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, drops: int) -> None:
        with self.lock:
            self.drops_left = drops

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"drop_reply": False}
            threading.Thread(target=self._pump_up, args=(down, up, state), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(up, down, state),
                             daemon=True).start()

    def _pump_up(self, down: socket.socket, up: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while chunk := down.recv(65536):
                if b"EVAL" in chunk:
                    with self.lock:
                        if self.drops_left > 0:
                            self.drops_left -= 1
                            state["drop_reply"] = True
                up.sendall(chunk)
        for s in (down, up):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _pump_down(self, up: socket.socket, down: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while chunk := up.recv(65536):
                if state["drop_reply"]:
                    with self.lock:
                        self.dropped += 1
                    break
                down.sendall(chunk)
        for s in (down, up):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def proxied(own_redis: EmbeddedServer, data_dir: Path
            ) -> Iterator[tuple[Service, str, ReplyDroppingProxy]]:
    proxy = ReplyDroppingProxy(own_redis.port)
    try:
        for svc in start_service(data_dir, proxy.url,
                                 STRICTGATE_REDIS_DEADLINE_MS=str(DEADLINE_MS)):
            yield svc, ready(svc, Log()), proxy
    finally:
        proxy.close()


def traces(lines: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(line["__traceId"]) for line in lines)


def test_lost_reply_is_retried_inside_the_service_and_counted_once(
    proxied: tuple[Service, str, ReplyDroppingProxy], own_redis: EmbeddedServer,
) -> None:
    svc, key, proxy = proxied
    proxy.arm(1)
    r = svc.post("/datasets/13/batch", key, body_of("lost-1", 3),
                 **{"X-Request-Id": "lost-1", "Idempotency-Key": "lost-1"})
    assert proxy.dropped == 1
    # the service's own retry (safe: keyed) found the first outcome
    assert r.status_code == 202, r.text
    assert r.headers.get("Idempotent-Replayed") == "true"
    assert r.json() == {"success": True, "count": 3, "status": "queued"}
    lines = svc.drain()
    assert traces(lines) == {"warm": 1, "lost-1": 3}
    assert usage_total(own_redis.url) == 4


def test_every_reply_lost_is_503_then_the_clients_retry_counts_once(
    proxied: tuple[Service, str, ReplyDroppingProxy], own_redis: EmbeddedServer,
) -> None:
    svc, key, proxy = proxied
    proxy.arm(10_000)
    headers = {"X-Request-Id": "lost-2", "Idempotency-Key": "lost-2"}
    r = svc.post("/datasets/13/batch", key, body_of("lost-2", 2), **headers)
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert proxy.dropped >= 1
    proxy.arm(0)
    for _ in range(2):  # the client retries; a second retry is a replay too
        again = svc.post("/datasets/13/batch", key, body_of("lost-2", 2), **headers)
        assert again.status_code == 202, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
    assert traces(svc.drain()) == {"warm": 1, "lost-2": 2}
    assert usage_total(own_redis.url) == 3


def test_lost_reply_without_a_key_is_503_but_was_admitted_once(
    proxied: tuple[Service, str, ReplyDroppingProxy], own_redis: EmbeddedServer,
) -> None:
    """Documents the caveat of quota/admission.py: without an Idempotency-Key the service may
    not retry, so a lost reply is a 503 for a request that was in fact counted and queued
    (once). Clients that need exactly-once send a key."""
    svc, key, proxy = proxied
    proxy.arm(1)
    r = svc.post("/datasets/13/batch", key, body_of("lost-3", 2), **{"X-Request-Id": "lost-3"})
    assert r.status_code == 503, r.text
    assert traces(svc.drain()) == {"warm": 1, "lost-3": 2}
    assert usage_total(own_redis.url) == 3

"""Connection limits of a real ``strictgate serve`` over real sockets: a
slow-loris or silent client is disconnected after the header timeout; over the connection
cap a request gets a 503 in the error grammar (not a reset), logged once per state change."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from strictgate.embedded import free_port
from strictgate.server import uvicorn_server
from strictgate.settings import load_settings
from tests.serve_proc import Serve, Serves, wait_for

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1.5


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _closed_after(sock: socket.socket, started: float, drip: bytes = b"") -> float:
    """Seconds from ``started`` until the server closes ``sock``; ``drip`` is sent one byte
    every 0.2 s meanwhile (a slow-loris client)."""
    sock.setblocking(False)
    sent = 0
    while time.monotonic() - started < 30:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if sent < len(drip):
            try:
                sock.send(drip[sent:sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError("the server never closed the connection")


def test_slow_and_silent_clients_are_disconnected_after_the_header_timeout(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url,
                         STRICTGATE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S)).wait_healthy()
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200

    started = time.monotonic()
    silent = _connect(serve.port)
    assert HEADER_TIMEOUT_S - 0.3 < _closed_after(silent, started) < HEADER_TIMEOUT_S + 2
    started = time.monotonic()
    loris = _connect(serve.port)
    assert HEADER_TIMEOUT_S - 0.3 < _closed_after(loris, started, slow_head) < \
        HEADER_TIMEOUT_S + 2

    # on a kept-alive connection the next request's head is due from its first byte
    kept = _connect(serve.port)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert _closed_after(kept, started, slow_head) < HEADER_TIMEOUT_S + 2

    # a client that sends its request at once is served, however long it took to decide
    prompt = _connect(serve.port)
    time.sleep(HEADER_TIMEOUT_S / 2)
    prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert prompt.recv(4096).startswith(b"HTTP/1.1 200")
    for sock in (silent, loris, kept, prompt):
        sock.close()


def _log_count(serve: Serve, text: str) -> int:
    return serve.log().count(text)


def test_over_the_cap_requests_get_503_and_the_state_changes_are_logged_once(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    cap = 50
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url,
                         STRICTGATE_MAX_CONNECTIONS=str(cap),
                         STRICTGATE_HEADER_TIMEOUT_S="60").wait_healthy()
    reached, back = "connection cap reached", "connections back under the cap"
    idle = [_connect(serve.port) for _ in range(cap + 10)]
    try:
        for _ in range(5):
            # a new client: 503 in the error grammar, the connection closed by the server
            r = httpx.get(serve.base + "/healthz", timeout=10,
                          headers={"X-Request-Id": "busy-1"})
            assert r.status_code == 503
            assert r.json()["errors"][0]["code"] == "server_busy"
            assert (r.headers["connection"], r.headers["retry-after"],
                    r.headers["x-request-id"]) == ("close", "1", "busy-1")
        # connections opened over the cap give their descriptor back quickly
        alive = [s for s in idle[cap:] if _still_open(s)]
        assert alive == [] or _wait_closed(alive)
        assert _log_count(serve, reached) == 1 and _log_count(serve, back) == 0
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: _ok(serve), 10, "a normal request to succeed again")
    wait_for(lambda: _log_count(serve, back) == 1, 10, "the back-under-the-cap line")
    assert _log_count(serve, reached) == 1
    log_line = next(line for line in serve.log().splitlines() if reached in line)
    assert f"STRICTGATE_MAX_CONNECTIONS={cap}" in log_line and "WARNING" in log_line


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _wait_closed(socks: list[socket.socket]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not any(_still_open(s) for s in socks):
            return True
        time.sleep(0.1)
    return False


def _ok(serve: Serve) -> bool:
    try:
        return httpx.get(serve.base + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_answers_do_not_name_the_server_and_forwarded_headers_are_not_read(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    """No ``server: uvicorn`` in an answer; the X-Forwarded-* headers of a balancer are not
    interpreted (nothing reads the client's address, so the middleware would only cost)."""
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url).wait_healthy()
    r = httpx.get(serve.base + "/healthz", timeout=10,
                  headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert r.status_code == 200
    assert "server" not in r.headers
    config = uvicorn_server(load_settings({"STRICTGATE_DATA_DIR": str(tmp_path / "x")}),
                            cap=10).config
    assert (config.proxy_headers, config.server_header) == (False, False)

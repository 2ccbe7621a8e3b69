"""The ingest routes' short way in (ingest/front.py): taken for the four POST routes, the
same answers, metrics and errors as through Starlette, everything else routed as before;
its headers, its JSON answers (strictgate/errors.py) and its one write per answer. Also the
request ids it hands out (strictgate/request_id.py RequestIds)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import strictgate.ingest.core
from strictgate.context import utc_now
from strictgate.embedded import free_port
from strictgate.errors import json_response
from strictgate.ingest.core import MillisText, receipt_time
from strictgate.ingest.front import LookupHeaders, ingest_lane
from strictgate.request_id import RequestIds
from strictgate.timestamps import utc_z
from tests.ingest_fixtures import SEED_BATCH, SEED_SINGLE, Service
from tests.serve_proc import Serves


def _scope(path: str, method: str = "POST", root_path: str = "") -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


@pytest.mark.parametrize(("path", "template", "params"), [
    ("/datasets", "/datasets", {}),
    ("/datasets/batch", "/datasets/batch", {}),
    ("/datasets/13", "/datasets/{dataset_id}", {"dataset_id": "13"}),
    ("/datasets/13/batch", "/datasets/{dataset_id}/batch", {"dataset_id": "13"}),
    ("/datasets/batch/batch", "/datasets/{dataset_id}/batch", {"dataset_id": "batch"}),
    ("/events/logs", "/events/logs", {}),
    ("/events/metrics/batch", "/events/metrics/batch", {}),
])
def test_the_ingest_routes_take_the_lane(path: str, template: str, params: dict[str, str]
                                         ) -> None:
    lane = ingest_lane(_scope(path))
    assert lane is not None
    assert (lane[0].path, lane[1]) == (template, params)


@pytest.mark.parametrize("scope", [
    _scope("/datasets/13", method="GET"), _scope("/datasets//batch"), _scope("/datasets/13/"),
    _scope("/datasets/13/batch/x"), _scope("/datasetsx"), _scope("/admin/projects/p/keys"),
    _scope("/datasets/13", root_path="/api"), {"type": "lifespan"},
])
def test_anything_else_goes_to_starlette(scope: Scope) -> None:
    assert ingest_lane(scope) is None


def test_ingest_does_not_go_through_the_starlette_stack(svc: Service, key: str) -> None:
    """With Starlette's stack replaced by one that fails every request, ingest still
    answers (and the replacement is really in force for other routes)."""
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the Starlette stack was used")

    app = svc.client.app
    original = app.middleware_stack  # type: ignore[attr-defined]
    app.middleware_stack = broken  # type: ignore[attr-defined]
    try:
        assert svc.post("/datasets/13", key, SEED_SINGLE).status_code == 202
        assert svc.post("/datasets/13/batch", key, SEED_BATCH).json() == {
            "success": True, "count": 2, "status": "queued"}
        assert svc.client.get("/healthz").status_code == 500
    finally:
        app.middleware_stack = original  # type: ignore[attr-defined]


def test_errors_and_metrics_as_through_starlette(svc: Service, key: str) -> None:
    r = svc.post("/datasets/13", key, {**SEED_SINGLE, "active": "yes"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "invalid_boolean"
    assert svc.post("/datasets/nope", key, SEED_SINGLE).status_code == 404
    assert svc.client.get("/datasets/13").status_code == 405  # Starlette's answer, as before
    text = svc.client.get("/metrics").text
    assert 'strictgate_requests_total{route="/datasets/{dataset_id}",status="400"} 1.0' in text
    assert 'strictgate_requests_total{route="/datasets/{dataset_id}",status="404"} 1.0' in text


def test_an_unexpected_exception_is_a_500_in_the_grammar_without_a_trace(
    svc: Service, key: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def explode(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(strictgate.ingest.core, "read_body", explode)
    r = svc.post("/datasets/13", key, SEED_SINGLE)
    assert r.status_code == 500
    assert r.json() == {"success": False, "error": "Internal server error", "errors": [
        {"code": "internal_error", "field": None, "message": "Internal server error"}]}
    assert "secret" not in r.text
    text = svc.client.get("/metrics").text
    assert 'strictgate_requests_total{route="/datasets/{dataset_id}",status="500"} 1.0' in text


def test_request_ids_are_unique_and_a_forked_child_draws_its_own_prefix() -> None:
    ids = RequestIds()
    many = [ids.next() for _ in range(1000)]
    assert len(set(many)) == 1000
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in many)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ids.next().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child[:20] != many[0][:20]
    assert RequestIds().next()[:20] != many[0][:20]


def test_lookup_headers_answer_as_starlette_headers() -> None:
    raw = [(b"content-type", b"application/json"), (b"x-request-id", b"first"),
           (b"authorization", b"Bearer t"), (b"x-request-id", b"second"),
           (b"x-caf\xe9", b"\xe9t\xe9")]
    fast, slow = LookupHeaders({"headers": raw}), Headers(scope={"headers": list(raw)})
    for name in ("content-type", "Content-Type", "X-REQUEST-ID", "authorization",
                 "x-caf\xe9", "missing"):
        assert fast.get(name) == slow.get(name)
        assert fast.get(name, "d") == slow.get(name, "d")
        assert (name in fast) == (name in slow)
        if name in slow:
            assert fast[name] == slow[name]
        else:
            with pytest.raises(KeyError):
                fast[name]
    assert fast.getlist("x-request-id") == ["first", "second"]
    assert fast.items() == slow.items() and len(fast) == len(slow)


def test_json_responses_carry_the_headers_starlette_would_give() -> None:
    cases: list[tuple[int, dict[str, str]]] = [
        (202, {"X-Request-Id": "r1", "X-Quota-Limit": "-1"}), (200, {}),
        (400, {"Content-Type": "application/problem+json"}), (413, {"Content-Length": "5"}),
        (503, {"Retry-After": "1", "Connection": "close"}), (204, {"X-A": "b"})]
    for status, headers in cases:
        ours = json_response({"success": True}, status, headers)
        theirs = Response(orjson.dumps({"success": True}), status_code=status,
                          headers=dict(headers), media_type="application/json")
        assert (ours.status_code, ours.body, ours.raw_headers) == (
            theirs.status_code, theirs.body, theirs.raw_headers), status


def _exchange(port: int, data: bytes, answers: int) -> list[bytes]:
    """Send ``data`` on one connection; read ``answers`` HTTP answers back (their bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        buffer, found = b"", []
        while len(found) < answers:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                found_length = re.search(rb"content-length: (\d+)", buffer[:head_end])
                assert found_length is not None
                length = int(found_length[1])
                end = head_end + 4 + length
                if len(buffer) >= end:
                    found.append(buffer[:end])
                    buffer = buffer[end:]
                    continue
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buffer += chunk
        assert buffer == b""
        sock.settimeout(1)
        closed = False
        with contextlib.suppress(TimeoutError):
            closed = sock.recv(1) == b""
        return [*found, b"<closed>"] if closed else found


def test_answers_on_a_real_server_keep_alive_pipelining_and_close(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    """Each answer leaves in one write (ingest.front._OneWrite): whole and in order on a
    kept-alive connection, with pipelined requests, and before a requested close."""
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url).wait_healthy()
    headers = serve.provision()
    body = json.dumps(SEED_SINGLE).encode()

    def request(request_id: str, extra: str = "") -> bytes:
        return (f"POST /datasets/13 HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"X-Request-Id: {request_id}\r\n{extra}\r\n").encode() + body

    pipelined = _exchange(serve.port, request("p1") + request("p2") + request("p3"), 3)
    assert len(pipelined) == 3
    for answer, request_id in zip(pipelined, ("p1", "p2", "p3"), strict=True):
        assert answer.startswith(b"HTTP/1.1 202 Accepted\r\n")
        assert f"x-request-id: {request_id}\r\n".encode() in answer
        assert answer.endswith(b'\r\n\r\n{"success":true,"status":"queued"}')
    closing = _exchange(serve.port, request("c1", "Connection: close\r\n"), 1)
    assert closing[-1] == b"<closed>" and b"connection: close\r\n" in closing[0]
    assert closing[0].endswith(b'{"success":true,"status":"queued"}')
    refused = _exchange(serve.port, request("e1").replace(b"13 HTTP", b"nope HTTP"), 1)
    assert refused[0].startswith(b"HTTP/1.1 404 ") and b'"dataset_not_found"' in refused[0]


def test_receipt_times_are_the_text_utc_z_gives() -> None:
    text = MillisText()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start = 1_765_138_271_998_000_000
    moments = [start + k * 999_937 for k in range(3000)] + [
        0, 999_999_999, 1_000_000_000, 1_700_000_000_999_999_999, 4_102_444_800_000_000_000]
    for ns in moments:
        assert text.text(ns) == utc_z(epoch + timedelta(microseconds=ns // 1000)), ns
    fixed = datetime(2026, 6, 10, 10, 58, 0, 123456, tzinfo=UTC)
    assert receipt_time(lambda: fixed) == "2026-06-10T10:58:00.123Z"
    before = utc_z(utc_now())
    now = receipt_time(utc_now)
    assert before <= now <= utc_z(utc_now())

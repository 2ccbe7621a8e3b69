"""Issue 6, "Bodies and JSON": hostile bodies against the app on a real Redis.

Every case checks the answer (status, stable code, never a 500) and that a refused request
left nothing behind: no record queued, nothing counted. Compression bombs are built
incrementally so the test itself never holds the 200 MB they expand to.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
import zstandard

from app import create_app
from quota import keys
from strictgate.settings import load_settings
from tests.ingest_fixtures import (
    ADMIN,
    JWT_SECRET,
    SEED_BATCH,
    SEED_SINGLE,
    Service,
)
from tests.redis_mode import service_env

CAP = 10_000_000  # the default STRICTGATE_MAX_BODY_BYTES
BOMB_SIZE = 200 * 1024 * 1024
# A refused body's answer is an error, never an echo of the body.
SMALL_ANSWER = 64 * 1024


def _usage(sync_redis: redis.Redis, user: str = "u1") -> bytes | None:
    value: bytes | None = sync_redis.get(  # type: ignore[assignment]
        keys.usage_total_key(user, keys.period_of(datetime.now(UTC))))
    return value


def _nothing_left(svc: Service, sync_redis: redis.Redis) -> None:
    """Nothing queued, nothing counted."""
    assert svc.drain() == []
    assert _usage(sync_redis) is None


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


# --- size cap: declared and chunked -----------------------------------------------------------

def test_declared_length_over_the_cap_is_413_before_the_body_is_read(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        # Any chunk the app asks for is recorded: it must ask for none.
        for _ in range(CAP // 65_536 + 1):
            pulled.append(65_536)
            yield b" " * 65_536

    r = svc.client.post("/datasets/13/batch", content=body(),
                        headers=_headers(key, **{"Content-Length": str(CAP + 1)}))
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["code"] == "body_too_large"
    assert pulled == []
    _nothing_left(svc, sync_redis)


def test_declared_length_over_the_cap_with_the_real_body_is_413(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    raw = json.dumps(SEED_BATCH).encode()
    body = raw + b" " * (CAP + 1 - len(raw))
    assert len(body) == CAP + 1
    r = svc.post("/datasets/13/batch", key, body)
    assert r.status_code == 413
    assert r.json()["errors"][0]["code"] == "body_too_large"
    _nothing_left(svc, sync_redis)


def test_chunked_body_over_the_default_cap_is_413(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    raw = json.dumps(SEED_BATCH).encode()
    body = raw + b" " * (CAP + 1 - len(raw))
    chunks = (body[i:i + 65_536] for i in range(0, len(body), 65_536))
    r = svc.client.post("/datasets/13/batch", content=chunks, headers=_headers(key))
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["code"] == "body_too_large"
    _nothing_left(svc, sync_redis)


# --- the same over a real socket: the server answers without the (rest of the) body -------

class LiveServer:
    """The app under uvicorn on a free port, in a thread: for raw-socket requests."""

    def __init__(self, data_dir: Path, redis_url: str) -> None:
        settings = load_settings({
            "REDIS_URL": redis_url, "STRICTGATE_DATA_DIR": str(data_dir), **service_env(),
            "STRICTGATE_ADMIN_TOKEN": ADMIN, "STRICTGATE_JWT_SECRET": JWT_SECRET,
            "STRICTGATE_RUN_WORKER": "0",
        })
        # Bound here and handed to uvicorn: no race for the port.
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def _status_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data.split(b"\r\n", 1)[0]


def test_real_socket_declared_length_gets_413_with_no_body_sent(
    svc: Service, key: str, sync_redis: redis.Redis, data_dir: Path, redis_url: str
) -> None:
    with LiveServer(data_dir, redis_url) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /datasets/13/batch HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(CAP + 1).encode() + b"\r\n\r\n"
        )
        # Not one byte of the body is sent: the answer must come anyway.
        assert _status_line(sock).startswith(b"HTTP/1.1 413")
    _nothing_left(svc, sync_redis)


def test_real_socket_chunked_body_gets_413_once_the_cap_is_passed(
    svc: Service, key: str, sync_redis: redis.Redis, data_dir: Path, redis_url: str
) -> None:
    limit = 4 * CAP  # what we would be willing to send; the answer must come well before
    chunk = b" " * 65_536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with LiveServer(data_dir, redis_url) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /datasets/13/batch HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        pending = b""
        answered = False
        while not answered and (pending or sent < limit):
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                answered = True
                break
            if not writable:
                continue
            if not pending:
                pending = frame
                sent += len(chunk)
            try:
                pending = pending[sock.send(pending):]
            except OSError:  # the server answered and closed
                answered = True
        sock.settimeout(5)
        assert answered, f"no answer after {sent} bytes"
        assert _status_line(sock).startswith(b"HTTP/1.1 413")
    # The server could not know before the cap was passed, and stopped soon after.
    assert CAP < sent < limit
    _nothing_left(svc, sync_redis)


# --- compression: bombs, members and frames, truncation, unknown encodings -------------------

@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    parts = [deflater.compress(block) for _ in range(BOMB_SIZE // len(block))]
    return b"".join([*parts, deflater.flush()])


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    compressor = zstandard.ZstdCompressor(level=19).compressobj(size=BOMB_SIZE)
    block = b"\0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(BOMB_SIZE // len(block))]
    return b"".join([*parts, compressor.flush()])


def _post_measured(svc: Service, key: str, body: bytes, encoding: str) -> tuple[Any, int]:
    """The answer and the peak of traced allocations while the request ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        r = svc.post("/datasets/13/batch", key, body, **{"Content-Encoding": encoding})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return r, peak


@pytest.mark.parametrize("which", ["gzip", "zstd"])
def test_compression_bomb_is_413_with_peak_memory_near_the_cap(
    svc: Service, key: str, sync_redis: redis.Redis, which: str,
    gzip_bomb: bytes, zstd_bomb: bytes,
) -> None:
    bomb = gzip_bomb if which == "gzip" else zstd_bomb
    assert len(bomb) < 250_000  # ~200 KB (gzip) or far less (zstd) on the wire
    r, peak = _post_measured(svc, key, bomb, which)
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["code"] == "body_too_large"
    # The cap applies to decompressed bytes and decompression stops there: the request
    # never holds more than about one cap of output (1 MiB steps), not the 200 MB.
    assert peak < 2 * CAP, f"peak {peak} bytes"
    _nothing_left(svc, sync_redis)


def _members(records: list[dict[str, Any]], encoding: str) -> bytes:
    """A JSON array split over several gzip members or zstd frames, one per record."""
    pieces = [b"["] + [(b"," if i else b"") + json.dumps(rec).encode()
                       for i, rec in enumerate(records)] + [b"]"]
    if encoding == "gzip":
        return b"".join(gzip.compress(p) for p in pieces)
    c = zstandard.ZstdCompressor()
    return b"".join(c.compress(p) for p in pieces)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_multi_member_and_multi_frame_bodies_are_read_whole(
    svc: Service, key: str, encoding: str
) -> None:
    body = _members(SEED_BATCH, encoding)
    r = svc.post("/datasets/13/batch", key, body, **{"Content-Encoding": encoding})
    assert r.status_code == 202, r.text
    assert r.json()["count"] == 2
    assert [{k: v for k, v in line.items() if not k.startswith("__")}
            for line in svc.drain()] == SEED_BATCH


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_the_cap_spans_all_members_and_frames(
    svc: Service, key: str, sync_redis: redis.Redis, encoding: str
) -> None:
    # Each member/frame alone is under the cap (6 MB); together they are over it.
    part = b" " * 6_000_000
    pieces = [b"[" + json.dumps(SEED_BATCH[0]).encode() + part, part + b"]"]
    if encoding == "gzip":
        body = b"".join(gzip.compress(p) for p in pieces)
    else:
        c = zstandard.ZstdCompressor()
        body = b"".join(c.compress(p) for p in pieces)
    assert len(body) < 100_000
    r, peak = _post_measured(svc, key, body, encoding)
    assert r.status_code == 413, r.text
    assert peak < 2 * CAP, f"peak {peak} bytes"
    _nothing_left(svc, sync_redis)


@pytest.mark.parametrize(("encoding", "code"), [("gzip", "invalid_gzip"),
                                                ("zstd", "invalid_zstd")])
@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_compressed_body_is_400(
    svc: Service, key: str, sync_redis: redis.Redis, encoding: str, code: str, cut: int
) -> None:
    raw = json.dumps(SEED_BATCH * 50).encode()
    full = gzip.compress(raw) if encoding == "gzip" else zstandard.ZstdCompressor(
        write_content_size=False).compress(raw)
    r = svc.post("/datasets/13/batch", key, full[:-cut], **{"Content-Encoding": encoding})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == code
    _nothing_left(svc, sync_redis)


@pytest.mark.parametrize("encoding", [
    "br", "gzip, gzip", "gzip,zstd", "deflate", "compress", "x-unknown", "identity, gzip",
    "gzip;q=1", "*",
])
def test_unsupported_content_encodings_are_415(
    svc: Service, key: str, sync_redis: redis.Redis, encoding: str
) -> None:
    raw = gzip.compress(json.dumps(SEED_BATCH).encode())
    r = svc.post("/datasets/13/batch", key, raw, **{"Content-Encoding": encoding})
    assert r.status_code == 415, r.text
    assert r.json()["errors"][0]["code"] == "unsupported_content_encoding"
    _nothing_left(svc, sync_redis)


# --- text encodings ---------------------------------------------------------------------------

_SINGLE_TEXT = json.dumps(SEED_SINGLE)


@pytest.mark.parametrize(("body", "code"), [
    # a byte that is never UTF-8, in a declared string field and in context
    (_SINGLE_TEXT.replace('"RO"', '"R\udcff"').encode("utf-8", "surrogateescape"),
     "invalid_utf8"),
    (_SINGLE_TEXT.replace('"billing-service"', '"\udcc3("').encode("utf-8", "surrogateescape"),
     "invalid_utf8"),
    # overlong encoding of "/" and an encoded surrogate (both invalid UTF-8)
    (_SINGLE_TEXT.replace('"RO"', '"\udcc0\udcaf"').encode("utf-8", "surrogateescape"),
     "invalid_utf8"),
    (_SINGLE_TEXT.replace('"RO"', '"\udced\udca0\udc80"').encode("utf-8", "surrogateescape"),
     "invalid_utf8"),
    # UTF-16 with and without a BOM, UTF-32
    (_SINGLE_TEXT.encode("utf-16"), None),
    (_SINGLE_TEXT.encode("utf-16-le"), None),
    (_SINGLE_TEXT.encode("utf-16-be"), None),
    (_SINGLE_TEXT.encode("utf-32"), None),
    # a UTF-8 byte order mark before the object
    (b"\xef\xbb\xbf" + _SINGLE_TEXT.encode(), None),
])
@pytest.mark.parametrize("path", ["/datasets/13", "/datasets/13/batch"])
def test_text_that_is_not_utf8_is_400_with_a_clear_code(
    svc: Service, key: str, sync_redis: redis.Redis, body: bytes, code: str | None, path: str
) -> None:
    if path.endswith("/batch"):
        body = b"[" + body + b"]" if body.startswith(b"{") else body
    r = svc.post(path, key, body)
    assert r.status_code == 400, r.text
    got = r.json()
    assert got["success"] is False and got["error"] == "Invalid JSON body"
    assert got["errors"][0]["code"] in ({code} if code else {"invalid_utf8", "invalid_json"})
    _nothing_left(svc, sync_redis)


@pytest.mark.parametrize("where", ["field", "context", "key", "context-key", "low"])
@pytest.mark.parametrize("path", ["/datasets/13", "/datasets/13/batch"])
def test_lone_surrogate_escape_is_400(
    svc: Service, key: str, sync_redis: redis.Redis, where: str, path: str
) -> None:
    text = {
        "field": _SINGLE_TEXT.replace('"RO"', '"R\\ud800O"'),
        "context": _SINGLE_TEXT.replace('"billing-service"', '"\\ud800"'),
        "key": _SINGLE_TEXT.replace('"plan"', '"\\ud800"'),
        "context-key": _SINGLE_TEXT.replace('"source"', '"\\udfff"'),
        "low": _SINGLE_TEXT.replace('"RO"', '"\\udc00\\ud800"'),  # reversed pair
    }[where]
    body = text.encode() if path == "/datasets/13" else b"[" + text.encode() + b"]"
    r = svc.post(path, key, body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "lone_surrogate", r.text
    _nothing_left(svc, sync_redis)


def test_a_valid_surrogate_pair_is_accepted_and_stored_as_the_same_text(
    svc: Service, key: str
) -> None:
    body = _SINGLE_TEXT.replace('"RO"', '"\\ud83d\\ude00"').encode()
    r = svc.post("/datasets/13", key, body)
    assert r.status_code == 202, r.text
    assert svc.drain()[0]["country"] == "\U0001f600"


# --- numbers ----------------------------------------------------------------------------------

_BIG = "9" * 5000


@pytest.mark.parametrize("literal", [
    "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", _BIG, "-" + _BIG,
    str(2**63), str(2**64), str(-(2**63) - 1), "123456789012345678901234567890",
])
@pytest.mark.parametrize("where", ["amount", "context"])
def test_non_finite_and_out_of_range_numbers_are_400_never_a_float(
    svc: Service, key: str, sync_redis: redis.Redis, literal: str, where: str
) -> None:
    if where == "amount":
        text = _SINGLE_TEXT.replace("42.5", literal)
    else:
        text = _SINGLE_TEXT.replace('"req_123"', literal)
    for path, body in (("/datasets/13", text), ("/datasets/13/batch", f"[{text}]")):
        r = svc.post(path, key, body.encode())
        assert r.status_code == 400, (path, r.status_code, r.text[:500])
        assert r.json()["success"] is False
        assert len(r.content) < SMALL_ANSWER
    _nothing_left(svc, sync_redis)


@pytest.mark.parametrize("literal", [str(2**63 - 1), str(-(2**63)), "1.7976931348623157e308",
                                     "-0.0", "5e-324"])
def test_int64_and_finite_extremes_are_kept_exactly(svc: Service, key: str, literal: str) -> None:
    text = _SINGLE_TEXT.replace("42.5", literal)
    r = svc.post("/datasets/13", key, text.encode())
    assert r.status_code == 202, r.text
    stored = svc.drain()[0]["amount"]
    assert stored == json.loads(literal) and type(stored) is type(json.loads(literal))


# --- duplicate keys ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    # the invalid value last, then first: a first-wins or last-wins parser would keep one
    _SINGLE_TEXT.replace('"amount": 42.5', '"amount": 5, "amount": "x"'),
    _SINGLE_TEXT.replace('"amount": 42.5', '"amount": "x", "amount": 5'),
    # both valid, different values: which one is stored must be the one validated
    _SINGLE_TEXT.replace('"amount": 42.5', '"amount": 1, "amount": 2'),
    # inside context
    _SINGLE_TEXT.replace('"source": "billing-service"', '"source": "a", "source": {"x": 1}'),
    # the reserved timestamp twice
    _SINGLE_TEXT.replace('"timestamp": "2026-06-10T10:58:00Z"',
                         '"timestamp": "2026-06-10T10:58:00Z", "timestamp": "nope"'),
])
@pytest.mark.parametrize("path", ["/datasets/13", "/datasets/13/batch"])
def test_duplicate_keys_are_rejected_so_stored_always_equals_validated(
    svc: Service, key: str, sync_redis: redis.Redis, text: str, path: str
) -> None:
    # What holds: strictgate rejects repeated keys outright (code duplicate_field), so no
    # parser's choice between the copies can ever differ from what was validated.
    body = text if path == "/datasets/13" else f"[{json.dumps(SEED_BATCH[0])}, {text}]"
    r = svc.post(path, key, body.encode())
    assert r.status_code == 400, r.text
    assert "duplicate_field" in {e["code"] for e in r.json()["errors"]}, r.text
    _nothing_left(svc, sync_redis)


def test_escaped_spelling_of_a_key_is_still_a_duplicate(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    # "amount" and "\u0061mount" are the same key once parsed.
    text = _SINGLE_TEXT.replace('"amount": 42.5', '"amount": 5, "\\u0061mount": "x"')
    r = svc.post("/datasets/13", key, text.encode())
    assert r.status_code == 400, r.text
    assert "duplicate_field" in {e["code"] for e in r.json()["errors"]}
    _nothing_left(svc, sync_redis)


def test_stored_record_equals_the_validated_one(svc: Service, key: str) -> None:
    # Escapes, odd whitespace and line breaks: the output decodes to what was validated.
    text = ('{\r\n "timestamp" : "2026-06-10T10:58:00Z",\n\t"context":{"s":"a\\nb\\u00e9\\"",'
            '"n":[1,2.50,{"d":null}]},"country":"\\u0052O","plan":"pro","amount":1E2,'
            '"active":true,"signup_at":"2026-06-01T08:00:00Z"}\n')
    r = svc.post("/datasets/13", key, text.encode())
    assert r.status_code == 202, r.text
    line = svc.drain()[0]
    assert {k: v for k, v in line.items() if not k.startswith("__")} == json.loads(text)


# --- nesting and huge arrays ------------------------------------------------------------------

@pytest.mark.parametrize("depth", [33, 1_000, 10_000, 100_000])
@pytest.mark.parametrize("path", ["/datasets/13", "/datasets/13/batch"])
def test_deep_nesting_in_context_is_400_at_parse_time(
    svc: Service, key: str, sync_redis: redis.Redis, depth: int, path: str
) -> None:
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        nested = opener * depth + "1" + closer * depth
        text = _SINGLE_TEXT.replace('{"source": "billing-service", "request_id": "req_123"}',
                                    nested)
        body = text if path == "/datasets/13" else f"[{text}]"
        started = time.monotonic()
        r = svc.post(path, key, body.encode())
        assert r.status_code == 400, (depth, opener, r.status_code, r.text[:300])
        assert r.json()["errors"][0]["code"] in ("too_deep", "invalid_context"), r.text[:300]
        assert time.monotonic() - started < 5
    _nothing_left(svc, sync_redis)


def test_a_million_element_batch_is_413_at_parse_time(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    for element in (b"0", b"{}", json.dumps(SEED_BATCH[0], separators=(",", ":")).encode()):
        count = 1_000_000 if len(element) < 8 else CAP // (len(element) + 1)
        body = b"[" + b",".join([element] * count) + b"]"
        assert len(body) <= CAP
        started = time.monotonic()
        r = svc.post("/datasets/13/batch", key, body)
        assert r.status_code == 413, (element[:10], r.status_code, r.text[:300])
        assert r.json()["errors"][0]["code"] == "too_many_records"
        assert time.monotonic() - started < 10
    _nothing_left(svc, sync_redis)


def test_a_million_element_array_inside_context_is_bounded_by_the_body_cap_only(
    svc: Service, key: str
) -> None:
    # Decided: no per-array limit inside a record; the body cap (10 MB, before parsing)
    # bounds it, and parsing 1,000,000 elements stays fast. Not a 500, not slow.
    record = {**SEED_SINGLE, "context": {"a": [0] * 1_000_000}}
    started = time.monotonic()
    r = svc.post("/datasets/13", key, record)
    assert r.status_code == 202, r.text[:300]
    assert time.monotonic() - started < 5
    lines = svc.drain()
    assert len(lines) == 1 and len(lines[0]["context"]["a"]) == 1_000_000


def test_a_million_element_array_as_a_single_record_is_400(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    body = b"[" + b",".join([b"0"] * 1_000_000) + b"]"
    r = svc.post("/datasets/13", key, body)
    assert r.status_code == 400
    assert r.json()["error"] == "Payload must be an object"
    _nothing_left(svc, sync_redis)


# --- small answers for huge mistakes -----------------------------------------------------------

@pytest.mark.parametrize("case", ["type_error", "extra_key", "string_field", "context_key",
                                  "timestamp"])
def test_a_one_megabyte_string_is_never_echoed(
    svc: Service, key: str, sync_redis: redis.Redis, case: str
) -> None:
    huge = "x" * 1_000_000
    record: dict[str, Any] = dict(SEED_SINGLE)
    if case == "type_error":
        record["amount"] = huge
    elif case == "extra_key":
        record[huge] = 1
    elif case == "string_field":
        record["country"] = huge
    elif case == "context_key":
        record["context"] = {huge: 1}
    else:
        record["signup_at"] = huge
    for path, body in (("/datasets/13", record), ("/datasets/13/batch", [record] * 3)):
        r = svc.post(path, key, body)
        assert r.status_code in (400, 413), r.text[:300]
        assert len(r.content) < 4096, len(r.content)
        assert "x" * 300 not in r.text
    _nothing_left(svc, sync_redis)


def test_ten_thousand_errors_make_a_small_answer_that_counts_the_rest(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    bad = {**SEED_BATCH[0], "amount": "x" * 100}
    r = svc.post("/datasets/13/batch", key, [bad] * 10_000)
    assert r.status_code == 400, r.text[:300]
    assert len(r.content) < SMALL_ANSWER, len(r.content)
    got = r.json()
    assert got["error_count"] == 10_000
    assert 0 < len(got["errors"]) <= 100
    assert got["errors_omitted"] == 10_000 - len(got["errors"])
    assert [e["index"] for e in got["errors"]] == list(range(len(got["errors"])))
    _nothing_left(svc, sync_redis)


def test_many_errors_per_record_are_capped_too(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    # 1,000 extra fields with 200-char names in each of 40 records (8 MB).
    extras = {f"{i:04d}" + "y" * 196: i for i in range(1_000)}
    r = svc.post("/datasets/13/batch", key, [{**SEED_BATCH[0], **extras}] * 40)
    assert r.status_code == 400, r.text[:300]
    assert len(r.content) < SMALL_ANSWER, len(r.content)
    got = r.json()
    assert got["errors_omitted"] == got["error_count"] - len(got["errors"]) > 0
    _nothing_left(svc, sync_redis)

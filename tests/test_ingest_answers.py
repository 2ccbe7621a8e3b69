"""What every answer carries: ``X-Request-Id`` on each status (ingest, admin, Starlette's own
404/405), 503s that say what the client can do, a 429 whose ``Retry-After`` is rounded up, and
the admission-unavailable 503 reached on purpose (writes paused on a real server) rather than
by the timing of a cache poll."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis

from quota import keys
from quota.periods import period_at, period_end
from strictgate.embedded import EmbeddedServer
from strictgate.ingest.answers import quota_exceeded, seconds_until
from strictgate.unavailable import INGEST_UNAVAILABLE_MESSAGE, UNAVAILABLE_MESSAGE
from tests.ingest_fixtures import SEED_BATCH, SEED_DEFINITION, SEED_SINGLE, Service, start_service

QUEUE = keys.queue_key("u1", "p1", "13")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A private server this test may pause or kill."""
    own = EmbeddedServer(tmp_path / "own-redis", persist=False).start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def app(data_dir: Path, server: EmbeddedServer) -> Iterator[Service]:
    """The app on the private server: 300 ms deadline, 2000-byte body cap, dataset 13."""
    # a standalone server of its own, also in the cluster pass
    for svc in start_service(data_dir, server.url, STRICTGATE_REDIS_DEADLINE_MS="300",
                             STRICTGATE_MAX_BODY_BYTES="2000", STRICTGATE_REDIS_CLUSTER="0"):
        svc.put_dataset("p1", "13", SEED_DEFINITION)
        yield svc


@contextlib.contextmanager
def writes_paused(server: EmbeddedServer) -> Iterator[redis.Redis]:
    """Redis refuses to run writes (the admission script among them) until the block ends,
    while reads (key metadata, the registry) are still served: only the admission fails,
    whatever state the per-process caches are in."""
    client = redis.Redis(port=server.port)
    client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        yield client
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        client.close()


def _wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _error_body(message: str, code: str, field: str | None = None) -> dict[str, Any]:
    return {"success": False, "error": message,
            "errors": [{"code": code, "field": field, "message": message}]}


# --- the admission-unavailable 503 ----------------------------------------------------------

def test_admission_unavailable_is_503_then_the_same_key_is_counted_once(
    app: Service, server: EmbeddedServer,
) -> None:
    key = app.create_key("p1", "u1")
    # another user's admission first: the script is then cached on the server (a paused
    # EVALSHA of an unknown script would answer NOSCRIPT to a caller already gone)
    assert app.post("/datasets/13", app.create_key("p1", "u2"), SEED_SINGLE).status_code == 202
    sync = redis.Redis(port=server.port)
    total = keys.usage_total_key("u1", keys.period_of(datetime.now(UTC)))
    with writes_paused(server):
        r = app.post("/datasets/13", key, SEED_SINGLE,
                     **{"Idempotency-Key": "k-503", "X-Request-Id": "rid-503"})
        assert r.status_code == 503, r.text
        assert r.json() == _error_body(INGEST_UNAVAILABLE_MESSAGE, "unavailable")
        assert "Idempotency-Key" in r.json()["error"]
        assert (r.headers["Retry-After"], r.headers["X-Request-Id"]) == ("1", "rid-503")
        assert sync.xlen(QUEUE) == 0
    # The server held the script, not dropped it: it runs once writes resume. The client's
    # retry with the same key is answered with that outcome, not counted again.
    _wait_for(lambda: sync.xlen(QUEUE) == 1)
    again = app.post("/datasets/13", key, SEED_SINGLE, **{"Idempotency-Key": "k-503"})
    assert again.status_code == 202, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (sync.xlen(QUEUE), sync.get(total)) == (1, b"1")
    sync.close()


# --- X-Request-Id on every answer -----------------------------------------------------------

def _ingest_answers(app: Service, server: EmbeddedServer) -> dict[str, Any]:
    """One answer per status of the ingest endpoints, each sent with its own X-Request-Id."""
    key = app.create_key("p1", "u1")

    def post(rid: str, path: str = "/datasets/13", body: Any = SEED_SINGLE,
             token: str = key, **headers: str) -> Any:
        return app.post(path, token, body, **{"X-Request-Id": rid, **headers})

    answers = {
        "202": post("rid-202"),
        "400-dataset": post("rid-400-dataset", "/datasets/-bad"),
        "400-body": post("rid-400-body", body=b"{not json"),
        "400-record": post("rid-400-record", body={**SEED_SINGLE, "amount": "1"}),
        "401": post("rid-401", token="not-a-key"),
        "404": post("rid-404", "/datasets/nope"),
        "413": post("rid-413", "/datasets/13/batch", [SEED_BATCH[0]] * 30),
        "415": app.client.post("/datasets/13", content=json.dumps(SEED_SINGLE), headers={
            "Authorization": f"Bearer {key}", "Content-Type": "text/plain",
            "X-Request-Id": "rid-415"}),
        "422": (post("rid-422-first", **{"Idempotency-Key": "k"}),
                post("rid-422", body=SEED_BATCH[0], **{"Idempotency-Key": "k"}))[1],
    }
    assert app.admin("PUT", "/admin/users/u1/quota", json={"monthly_limit": 0}).status_code == 200
    answers["429"] = post("rid-429")
    assert app.admin("PUT", "/admin/users/u1/quota", json={"monthly_limit": -1}
                      ).status_code == 200
    with writes_paused(server):
        answers["503"] = post("rid-503")
    return answers


def test_every_ingest_answer_carries_its_request_id(app: Service, server: EmbeddedServer
                                                    ) -> None:
    answers = _ingest_answers(app, server)
    for name, answer in answers.items():
        assert answer.status_code == int(name[:3]), (name, answer.text)
        assert answer.headers["X-Request-Id"] == f"rid-{name}", name


def test_an_invalid_request_id_is_not_echoed_and_a_fresh_one_is_given(app: Service) -> None:
    key = app.create_key("p1", "u1")
    r = app.post("/datasets/13", key, SEED_SINGLE, **{"X-Request-Id": "two words"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "invalid_request_id"
    assert r.headers["X-Request-Id"].startswith("req_")
    unnamed = app.post("/datasets/13", "not-a-key", SEED_SINGLE)
    assert unnamed.status_code == 401 and unnamed.headers["X-Request-Id"].startswith("req_")
    assert unnamed.headers["X-Request-Id"] != r.headers["X-Request-Id"]


def test_admin_probe_and_router_answers_carry_a_request_id(
    app: Service, caplog: pytest.LogCaptureFixture,
) -> None:
    client = app.client
    answers = {
        200: app.admin("GET", "/admin/users/u1/quota", headers={"X-Request-Id": "rid-200"}),
        400: app.admin("GET", "/admin/users/u1/usage?period=june",
                       headers={"X-Request-Id": "rid-400"}),
        401: client.get("/admin/users/u1/quota", headers={"X-Request-Id": "rid-401"}),
        404: app.admin("GET", "/admin/projects/p1/datasets/nope",
                       headers={"X-Request-Id": "rid-404"}),
        405: client.get("/datasets/13", headers={"X-Request-Id": "rid-405"}),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, (status, answer.text)
        assert answer.headers["X-Request-Id"] == f"rid-{status}"
    with caplog.at_level(logging.INFO, logger="strictgate.access"):
        lost = client.get("/no/such/route")  # Starlette's own 404, no id given
        probe = client.get("/healthz")
    assert lost.status_code == 404 and probe.status_code == 200
    generated = lost.headers["X-Request-Id"]
    assert generated.startswith("req_") and probe.headers["X-Request-Id"] != generated
    # the access line names the id the client was given
    lines = [json.loads(rec.getMessage()) for rec in caplog.records
             if rec.name == "strictgate.access"]
    assert [line["request_id"] for line in lines] == [generated, probe.headers["X-Request-Id"]]


# --- 503s: only ingest talks about Idempotency-Key ------------------------------------------

def test_admin_and_readiness_503_do_not_mention_idempotency_keys(
    app: Service, server: EmbeddedServer,
) -> None:
    key = app.create_key("p1", "u1")
    server.kill()
    admin = app.admin("GET", "/admin/users/u1/quota", headers={"X-Request-Id": "rid-admin"})
    assert admin.status_code == 503, admin.text
    assert admin.json() == _error_body(UNAVAILABLE_MESSAGE, "unavailable")
    assert admin.headers["X-Request-Id"] == "rid-admin"
    ready = app.client.get("/readyz")
    assert ready.status_code == 503
    assert "Idempotency-Key" not in ready.text and "X-Request-Id" in ready.headers
    # while the ingest endpoints, failing on the same outage, do
    ingest = app.post("/datasets/nope", key, SEED_SINGLE)
    assert ingest.status_code == 503
    assert ingest.json() == _error_body(INGEST_UNAVAILABLE_MESSAGE, "unavailable")


# --- 429: Retry-After rounded up, month and reset from Redis --------------------------------

def test_retry_after_is_the_ceiling_of_the_seconds_left() -> None:
    resets = datetime(2027, 1, 1, tzinfo=UTC)
    for before, expected in ((timedelta(seconds=10, milliseconds=250), 11),
                             (timedelta(seconds=10), 10),
                             (timedelta(microseconds=1), 1),
                             (timedelta(days=3, seconds=1, microseconds=999_999), 259_202),
                             (timedelta(0), 1), (-timedelta(seconds=5), 1)):
        assert seconds_until(resets, resets - before) == expected, before
    err = quota_exceeded(5, 5, 1, 0, "2026-12", resets,
                         resets - timedelta(hours=1, microseconds=1))
    assert err.headers["Retry-After"] == "3601"


def test_429_counts_from_redis_time(app: Service, server: EmbeddedServer) -> None:
    key = app.create_key("p1", "u1")
    assert app.admin("PUT", "/admin/users/u1/quota", json={"monthly_limit": 0}).status_code == 200
    sync = redis.Redis(port=server.port)
    seconds, micros = sync.time()
    before = seconds + micros / 1e6
    r = app.post("/datasets/13", key, SEED_SINGLE)
    seconds, micros = sync.time()
    after = seconds + micros / 1e6
    sync.close()
    assert r.status_code == 429
    month = period_at(int(before))
    resets = period_end(month)
    reset_s = resets.timestamp()
    assert math.ceil(reset_s - after) <= int(r.headers["Retry-After"]) <= math.ceil(
        reset_s - before)
    assert r.headers["X-Quota-Reset"] == resets.strftime("%Y-%m-%dT%H:%M:%SZ")
    quota = r.json()["quota"]
    assert (quota["period"], quota["resets_at"]) == (month, r.headers["X-Quota-Reset"])


def test_revoked_key_answer_is_exact(app: Service) -> None:
    key = app.create_key("p1", "u1")
    kid = jwt.decode(key, options={"verify_signature": False})["kid"]
    assert app.admin("DELETE", f"/admin/projects/p1/keys/{kid}").status_code in (200, 204)
    r = app.post("/datasets/13", key, SEED_SINGLE)
    assert r.status_code == 401
    assert r.json() == _error_body("Unknown or revoked API key", "api_key_revoked")
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="strictgate"'

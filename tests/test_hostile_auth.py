"""Issue 6, "Auth and tenancy", over HTTP against the app on a real Redis.

The key service's own unit tests (tests/test_apikeys.py) refuse each forged token; here each
one goes through the ingest endpoint and must come back 401 (never a 500), with nothing
queued or counted. Raw, non-ASCII header bytes go over a real socket so no client library
re-encodes them.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from jwt.warnings import InsecureKeyLengthWarning

from quota import keys
from strictgate.dialects import INGEST_ROUTES
from strictgate.lake.engine import LakeConfig
from strictgate.lake.writer import LakeWriter
from tests.ingest_fixtures import (
    ADMIN,
    JWT_SECRET,
    SEED_BATCH,
    SEED_DEFINITION,
    SEED_SINGLE,
    Service,
)
from tests.lake_support import seed_definitions, seed_entries
from tests.test_hostile_bodies import LiveServer

# HS384/HS512 forgeries use the (HS256-sized) test secret on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

OTHER_SECRET = "another-deployments-secret-" + "fedcba9876543210" * 3


@pytest.fixture
def key(svc: Service) -> str:
    """A live key of user u1 in project p1 (dataset 13 exists in p1 and in p2)."""
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    svc.put_dataset("p2", "13", SEED_DEFINITION)
    svc.put_dataset("p2", "only-in-p2", SEED_DEFINITION)
    return svc.create_key("p1", "u1")


def _usage(sync_redis: redis.Redis, user: str) -> bytes | None:
    value: bytes | None = sync_redis.get(  # type: ignore[assignment]
        keys.usage_total_key(user, keys.period_of(datetime.now(UTC))))
    return value


def _nothing_left(svc: Service, sync_redis: redis.Redis) -> None:
    assert svc.drain() == []
    for user in ("u1", "u2"):
        assert _usage(sync_redis, user) is None


def _claims(key: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(key, options={"verify_signature": False})
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()),
                     signature])


def _assert_401(r: Any) -> None:
    assert r.status_code == 401, (r.status_code, r.text[:300])
    body = r.json()
    assert body["success"] is False
    assert body["errors"][0]["code"] in (
        "unauthorized", "invalid_api_key", "api_key_expired", "api_key_revoked",
        "project_not_found",
    )
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


# --- forged and stale tokens -------------------------------------------------------------------

def _forgeries(key: str) -> dict[str, str]:
    claims = _claims(key)
    kid = claims["kid"]
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signature = key.rsplit(".", 1)[1]
    return {
        "alg_none": _unsigned({**header, "alg": "none"}, claims),
        "alg_None": _unsigned({**header, "alg": "None"}, claims),
        "alg_none_with_real_signature": _unsigned({**header, "alg": "none"}, claims, signature),
        "alg_missing": _unsigned({"typ": "JWT", "kid": kid}, claims, signature),
        "hs256_other_secret": jwt.encode(claims, OTHER_SECRET, algorithm="HS256",
                                         headers={"kid": kid}),
        "hs512_right_secret": jwt.encode(claims, JWT_SECRET, algorithm="HS512",
                                         headers={"kid": kid}),
        "hs384_right_secret": jwt.encode(claims, JWT_SECRET, algorithm="HS384",
                                         headers={"kid": kid}),
        "rs256_header_hmac_signature": _unsigned({**header, "alg": "RS256"}, claims, signature),
        # the claims of another project (or user) under p1's key id, even correctly signed
        "other_project_claim_signed": jwt.encode({**claims, "project_id": "p2"}, JWT_SECRET,
                                                 algorithm="HS256", headers={"kid": kid}),
        "other_user_claim_signed": jwt.encode({**claims, "user_id": "u2"}, JWT_SECRET,
                                              algorithm="HS256", headers={"kid": kid}),
        "other_project_claim_other_secret": jwt.encode(
            {**claims, "project_id": "p2"}, OTHER_SECRET, algorithm="HS256",
            headers={"kid": kid}),
        "claims_swapped_signature_kept": _unsigned(header, {**claims, "project_id": "p2"},
                                                   signature),
        "header_kid_differs": jwt.encode(claims, JWT_SECRET, algorithm="HS256",
                                         headers={"kid": "k-someone-else"}),
        "unknown_kid_signed": jwt.encode({**claims, "kid": "knope"}, JWT_SECRET,
                                         algorithm="HS256", headers={"kid": "knope"}),
        "expired": jwt.encode({**claims, "exp": int(time.time()) - 5}, JWT_SECRET,
                              algorithm="HS256", headers={"kid": kid}),
        "expired_long_ago": jwt.encode({**claims, "exp": 1}, JWT_SECRET,
                                       algorithm="HS256", headers={"kid": kid}),
        "exp_not_a_number": jwt.encode({**claims, "exp": "tomorrow"}, JWT_SECRET,
                                       algorithm="HS256", headers={"kid": kid}),
        "nbf_in_the_future": jwt.encode({**claims, "nbf": int(time.time()) + 3600}, JWT_SECRET,
                                        algorithm="HS256", headers={"kid": kid}),
        "signature_stripped": key.rsplit(".", 1)[0] + ".",
        "signature_truncated": key[:-4],
        "signature_bit_flipped": key[:-2] + ("A" if key[-2] != "A" else "B") + key[-1],
    }


with warnings.catch_warnings():
    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
    FORGERY_NAMES = list(_forgeries(jwt.encode(
        {"kid": "k", "project_id": "p", "user_id": "u", "iat": 1}, "s" * 64,
        algorithm="HS256")))


@pytest.mark.parametrize("name", FORGERY_NAMES)
def test_forged_or_stale_tokens_are_401(
    svc: Service, key: str, sync_redis: redis.Redis, name: str
) -> None:
    token = _forgeries(key)[name]
    for path, body in (("/datasets/13", SEED_SINGLE), ("/datasets/13/batch", SEED_BATCH),
                       ("/datasets/only-in-p2", SEED_SINGLE)):
        _assert_401(svc.post(path, token, body))
    if name.startswith("expired"):
        r = svc.post("/datasets/13", token, SEED_SINGLE)
        assert r.json()["errors"][0]["code"] == "api_key_expired"
    _nothing_left(svc, sync_redis)


def test_a_token_with_the_claims_of_project_b_never_reaches_project_b(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    """Decided: the key id is the authority. A token naming project p2 under p1's key id is
    refused outright (401), even when its signature is valid, rather than served as p1 or
    p2; the real key of p1 keeps working and reaches p1 only."""
    claims = _claims(key)
    forged = jwt.encode({**claims, "project_id": "p2"}, JWT_SECRET, algorithm="HS256",
                        headers={"kid": claims["kid"]})
    _assert_401(svc.post("/datasets/only-in-p2", forged, SEED_SINGLE))
    _assert_401(svc.post("/datasets/13", forged, SEED_SINGLE))
    assert svc.post("/datasets/13", key, SEED_SINGLE).status_code == 202
    lines = svc.drain()
    assert len(lines) == 1
    assert {p.parts[-4] for p in (svc.data_dir / "output").rglob("*.jsonl")} == {"p1"}


def test_a_key_revoked_after_use_stops_working_at_once(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    # The plain case (revoked before any use) is test_ingest_e2e's test_revoked_key_is_refused;
    # here the key was verified (and cached) first.
    assert svc.post("/datasets/13", key, SEED_SINGLE).status_code == 202
    kid = _claims(key)["kid"]
    assert svc.admin("DELETE", f"/admin/projects/p1/keys/{kid}").status_code in (200, 204)
    r = svc.post("/datasets/13", key, SEED_SINGLE)
    _assert_401(r)
    assert r.json()["errors"][0]["code"] == "api_key_revoked"
    assert len(svc.drain()) == 1
    assert int(_usage(sync_redis, "u1") or 0) == 1


def test_revoking_a_key_of_another_project_by_id_does_nothing(
    svc: Service, key: str
) -> None:
    kid = _claims(key)["kid"]
    r = svc.admin("DELETE", f"/admin/projects/p2/keys/{kid}")
    assert r.status_code == 404
    assert svc.post("/datasets/13", key, SEED_SINGLE).status_code == 202


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e999", "null-ish"])
def test_a_non_finite_exp_is_refused(
    svc: Service, key: str, sync_redis: redis.Redis, exp: str
) -> None:
    # Only the secret's holder can sign these, but a key must never be "forever" by accident.
    claims = _claims(key)
    payload = json.dumps({**claims, "exp": 0}).replace(
        '"exp": 0', f'"exp": {exp}' if exp != "null-ish" else '"exp": [0]')
    token = jwt.api_jws.encode(payload.encode(), JWT_SECRET, algorithm="HS256",
                               headers={"kid": claims["kid"], "typ": "JWT"})
    _assert_401(svc.post("/datasets/13", token, SEED_SINGLE))
    _nothing_left(svc, sync_redis)


# --- garbage Authorization headers -------------------------------------------------------------

def _garbage(key: str) -> list[str]:
    return [
        "", " ", "Bearer ", "Bearer      ", "Bearer\t" + key, "Token " + key, key,
        "Bearer " + key + " " + key, "Bearer " + key + "x", "Bearer x" + key,
        "Bearer " + key.replace(".", ".."), "Bearer " + ".".join(key.split(".")[:2]),
        "Bearer ..", "Bearer ....", "Bearer " + "a" * 5_000, "Bearer " + "a.b.c" * 20_000,
        "Bearer " + _b64(b"[]") + "." + _b64(b"{}") + ".sig",
        "Bearer " + _b64(b'{"alg":"HS256"}') + "." + _b64(b"[1,2]") + ".sig",
        "Bearer " + _b64(b'{"alg":"HS256"}') + "." + _b64(b"\xff\xfe") + ".sig",
        "Bearer " + _b64(b'{"alg":"HS256","kid":{"x":1}}') + "." + _b64(b"{}") + ".sig",
        "Bearer " + _b64(b'{"alg":"HS256","crit":["x"]}') + "." + key.split(".", 1)[1],
    ]


GARBAGE_COUNT = len(_garbage("a.b.c"))


@pytest.mark.parametrize("i", range(GARBAGE_COUNT))
def test_garbage_authorization_values_are_401(
    svc: Service, key: str, sync_redis: redis.Redis, i: int
) -> None:
    value = _garbage(key)[i]
    r = svc.client.post("/datasets/13", content=json.dumps(SEED_SINGLE),
                        headers={"Authorization": value, "Content-Type": "application/json"})
    _assert_401(r)
    _nothing_left(svc, sync_redis)


RAW_AUTH = [
    b"Bearer \xff\xfe", b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer \xc3", b"\xff\xfe",
    b"Bearer \x80\x81\x82.\x83.\x84", "Bearer clé".encode("latin-1"),
    b"Bearer \xe2\x80\x8b", b"B\xe9arer abc",
]


@pytest.mark.parametrize("raw", RAW_AUTH)
def test_non_ascii_bearer_bytes_are_401_in_process(
    svc: Service, key: str, sync_redis: redis.Redis, raw: bytes
) -> None:
    r = svc.client.post("/datasets/13", content=json.dumps(SEED_SINGLE),
                        headers=[(b"authorization", raw),
                                 (b"content-type", b"application/json")])
    _assert_401(r)
    r = svc.client.post("/datasets/13", content=json.dumps(SEED_SINGLE),
                        headers=[(b"authorization", b"Bearer " + key.encode() + raw[-2:]),
                                 (b"content-type", b"application/json")])
    _assert_401(r)
    _nothing_left(svc, sync_redis)


def test_non_ascii_bytes_over_a_real_socket_are_401_never_500(
    svc: Service, key: str, sync_redis: redis.Redis, data_dir: Path, redis_url: str
) -> None:
    body = json.dumps(SEED_SINGLE).encode()
    with LiveServer(data_dir, redis_url) as server, \
            httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        for raw in [*RAW_AUTH, b"Bearer " + key.encode() + b"\xff"]:
            # httpx sends bytes header values as they are.
            r = client.post("/datasets/13", content=body,
                            headers={b"authorization": raw,
                                     b"content-type": b"application/json"})
            _assert_401(r)
            for method, path in (("GET", "/admin/projects/p1/datasets"),
                                 ("POST", "/admin/projects/p1/keys"),
                                 ("PUT", "/admin/projects/p1/datasets/13")):
                r = client.request(method, path, content=b"{}",
                                   headers={b"authorization": raw,
                                            b"content-type": b"application/json"})
                assert r.status_code == 401, (method, path, raw, r.status_code)
            r = client.get("/admin/projects/p1/datasets",
                           headers={b"authorization": b"Bearer " + ADMIN.encode() + b"\xe9"})
            assert r.status_code == 401
        # Other headers with odd bytes: a client error, never a 500.
        for name in ("X-Request-Id", "Idempotency-Key", "X-Loguro-Dataset-Id",
                     "Content-Type", "Content-Encoding"):
            r = client.post("/datasets/13", content=body,
                            headers={b"authorization": f"Bearer {key}".encode(),
                                     b"content-type": b"application/json",
                                     name.lower().encode(): b"\xff\xfe\xc3"})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:200])
    _nothing_left(svc, sync_redis)


# --- tenancy ----------------------------------------------------------------------------------

def _comparable(r: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, exact body bytes and headers, ignoring the per-request id."""
    headers = sorted((k.lower(), v) for k, v in r.headers.items()
                     if k.lower() not in ("x-request-id", "date"))
    return r.status_code, r.content, headers


@pytest.mark.parametrize("body", [SEED_SINGLE, {**SEED_SINGLE, "amount": "x"}, {"junk": 1}])
def test_dataset_of_another_project_is_byte_identical_to_a_missing_one(
    svc: Service, key: str, sync_redis: redis.Redis, body: dict[str, Any]
) -> None:
    # Status + json equality for one body is test_ingest_e2e's
    # test_dataset_of_another_project_answers_like_a_missing_one; here: bytes and headers,
    # every route, and bodies that would fail p2's validation.
    cases = [
        ("/datasets/only-in-p2", "/datasets/nowhere", {}, body),
        ("/datasets/only-in-p2/batch", "/datasets/nowhere/batch", {}, [body]),
        ("/datasets", "/datasets", {"X-Loguro-Dataset-Id": "only-in-p2"}, body),
        ("/datasets/batch", "/datasets/batch", {"X-Loguro-Dataset-Id": "only-in-p2"}, [body]),
    ]
    for other_path, missing_path, headers, payload in cases:
        other = svc.post(other_path, key, payload, **headers)
        missing_headers = {k: "nowhere" for k in headers}
        missing = svc.post(missing_path, key, payload, **missing_headers)
        assert other.status_code == 404, other.text
        assert _comparable(other) == _comparable(missing)
    _nothing_left(svc, sync_redis)


def test_reading_records_of_another_project_is_impossible(svc: Service, key: str) -> None:
    """The read route: another project's dataset answers byte for byte like a missing one,
    and a dataset id both projects use reads only the key's project's rows."""
    writer = LakeWriter(LakeConfig.local(svc.data_dir), seed_definitions)
    writer.write(seed_entries(1, 3, project="p2", dataset="13"))
    writer.write(seed_entries(1, 3, start=1, project="p2", dataset="only-in-p2"))
    writer.close()
    auth = {"Authorization": f"Bearer {key}"}
    other = svc.client.get("/datasets/only-in-p2/records", headers=auth)
    missing = svc.client.get("/datasets/nowhere/records", headers=auth)
    assert other.status_code == 404
    assert _comparable(other) == _comparable(missing)
    shared = svc.client.get("/datasets/13/records", headers=auth)
    assert shared.json() == {"success": True, "records": [], "next_cursor": None}


def test_project_and_user_fields_inside_a_record_cannot_redirect_it(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    definition = {"fields": {**SEED_DEFINITION["fields"], "project_id": "string",
                             "user_id": "string"}}
    svc.put_dataset("p1", "tenancy", definition)
    svc.put_dataset("p2", "tenancy", definition)
    record = {**SEED_SINGLE, "project_id": "p2", "user_id": "u2",
              "context": {"project_id": "p2", "user_id": "u2", "kid": "k-other"}}
    r = svc.post("/datasets/tenancy", key, record,
                 **{"X-Project-Id": "p2", "X-User-Id": "u2", "X-Loguro-Project-Id": "p2"})
    assert r.status_code == 202, r.text
    r = svc.post("/datasets/tenancy/batch", key, [record, record])
    assert r.status_code == 202, r.text
    lines = svc.drain()
    # Stored as data, unchanged, under the key's project and user only.
    assert [{k: v for k, v in line.items() if not k.startswith("__")} for line in lines] \
        == [record] * 3
    files = list((svc.data_dir / "output").rglob("*.jsonl"))
    assert {p.parts[-4] for p in files} == {"p1"}
    assert {p.name.split(".")[1] for p in files} == {"u1"}
    assert int(_usage(sync_redis, "u1") or 0) == 3
    assert _usage(sync_redis, "u2") is None
    assert sync_redis.exists(keys.queue_key("u2", "p2", "tenancy")) == 0


@pytest.mark.parametrize("field", ["__traceId", "__datasetVersion", "__projectId",
                                   "\\u005f\\u005ftraceId"])
def test_records_cannot_carry_the_workers_metadata_fields(
    svc: Service, key: str, sync_redis: redis.Redis, field: str
) -> None:
    text = json.dumps(SEED_SINGLE)[:-1] + f', "{field}": "spoofed"}}'
    r = svc.post("/datasets/13", key, text.encode())
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "extra_field"
    _nothing_left(svc, sync_redis)


_OPERYN_EVENTS: dict[str, dict[str, Any]] = {
    "logs": {"service": "api", "level": "info", "message": "m"},
    "metrics": {"service": "api", "name": "n", "value": 1.5, "unit": "s"},
    "deployments": {"service": "api", "version": "v1", "environment": "prod"},
}


def test_operyn_routes_write_only_to_the_keys_project(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    """Every Operyn route: naming another organization is a 403 that queues nothing, and
    headers or fields naming another project do not move the events out of the key's."""
    routes = [r for r in INGEST_ROUTES if r.dialect.name == "operyn"]
    assert {r.dataset for r in routes} == set(_OPERYN_EVENTS)
    for route in routes:
        event = _OPERYN_EVENTS[str(route.dataset)]
        body = json.dumps([event] if route.batch else event).encode()
        headers = {"x-api-key": key, "Content-Type": "application/json"}
        r = svc.client.post(route.path, content=body,
                            headers={**headers, "x-organization-id": "p2"})
        assert r.status_code == 403, r.text
        assert r.json() == {"statusCode": 403,
                            "message": "Organization does not match API key"}
    _nothing_left(svc, sync_redis)
    for route in routes:
        event = {**_OPERYN_EVENTS[str(route.dataset)], "service": "p2"}
        body = json.dumps([event] if route.batch else event).encode()
        r = svc.client.post(route.path, content=body, headers={
            "x-api-key": key, "Content-Type": "application/json", "X-Project-Id": "p2",
            "X-Loguro-Dataset-Id": "13"})
        assert r.status_code == 202, r.text
    queues = {k.decode() for k in sync_redis.scan_iter(match="queue:*")}
    assert queues and all(":p1:" in q and ":p2:" not in q for q in queues)


def test_orcasheets_rows_never_reach_another_projects_table(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    """``metric_name`` names a table of the key's project only: another project's table
    answers like a missing one, and under ``infer`` the row makes the key's project its own
    table, never writing to the other's."""
    row = {"metric_name": "only-in-p2", "metric_value": {"country": "RO"}}
    r = svc.client.post("/v1/logs", content=json.dumps(
        {"event_type": "x", "records": [row]}).encode(), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        "X-Project-Id": "p2"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "dataset_not_found"
    _nothing_left(svc, sync_redis)
    assert svc.admin("PUT", "/admin/projects/p1/settings",
                     json={"unknown_datasets": "infer"}).status_code == 200
    r = svc.client.post("/v1/logs", content=json.dumps(
        {"event_type": "x", "records": [row]}).encode(), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    queues = {k.decode() for k in sync_redis.scan_iter(match="queue:*")}
    assert queues and all(":p1:" in q and ":p2:" not in q for q in queues)
    p2 = svc.admin("GET", "/admin/projects/p2/datasets/only-in-p2").json()
    assert p2["version"] == 1 and p2["definition"].get("envelope", "loguro") == "loguro"
    p1 = svc.admin("GET", "/admin/projects/p1/datasets/only-in-p2").json()
    assert p1["definition"]["envelope"] == "none"


def test_onesight_events_never_reach_another_project(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    """``event_type`` names an event type of the key's project only, whatever the headers
    say; an id another project accepted is new here; the query reads the key's project only
    (by ``event_type`` or with no filter; a cursor of another project:
    tests/test_onesight.py)."""
    path = "/api/openapi/v1/data/events"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
               "X-Project-Id": "p2"}
    body = {"events": [{"event_type": "only-in-p2", "event_id": "e1",
                        "payload": {"country": "RO"}}]}
    r = svc.client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "dataset_not_found"
    _nothing_left(svc, sync_redis)
    p2 = svc.create_key("p2", "u2")
    assert svc.admin("PUT", "/admin/projects/p2/settings",
                     json={"unknown_datasets": "infer"}).status_code == 200
    r = svc.client.post(path, content=json.dumps(
        {"events": [{"event_type": "p2-only", "event_id": "e1", "payload": {"a": 1}}]}
    ).encode(), headers={"Authorization": f"Bearer {p2}", "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    queues = {k.decode() for k in sync_redis.scan_iter(match="queue:*")}
    assert queues and all(":p2:" in q for q in queues)
    read = {"Authorization": f"Bearer {key}", "X-Project-Id": "p2"}
    assert svc.client.get(f"{path}?event_type=p2-only", headers=read).status_code == 404
    page = svc.client.get(path, headers=read)
    assert page.status_code == 200 and page.json()["data"]["events"] == []


def test_definite_rows_never_reach_another_projects_table(
    svc: Service, key: str, sync_redis: redis.Redis
) -> None:
    """``config.table`` (or ``?table=`` for NDJSON) names a table of the key's project
    only, whatever the headers say: another project's table answers like a missing one
    (404), and under ``infer`` the rows make the key's project its own table."""
    svc.put_dataset("p2", "bronze.only2", {"envelope": "none", "fields": {"country": "string"}})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
               "X-Project-Id": "p2"}
    body = {"data": [{"country": "RO"}], "config": {"table": "LAKE.bronze.only2"}}
    r = svc.client.post("/v2/stream", content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "table_not_found"
    r = svc.client.post("/v2/stream?table=bronze.only2", content=b'{"country": "RO"}\n',
                        headers={**headers, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 404, r.text
    _nothing_left(svc, sync_redis)
    assert svc.admin("PUT", "/admin/projects/p1/settings",
                     json={"unknown_datasets": "infer"}).status_code == 200
    r = svc.client.post("/v2/stream", content=json.dumps(
        {"data": [{"country": "RO", "n": 1}], "config": {"table": "bronze.only2"}}).encode(),
        headers=headers)
    assert r.status_code == 200, r.text
    queues = {k.decode() for k in sync_redis.scan_iter(match="queue:*")}
    assert queues and all(":p1:" in q and ":p2:" not in q for q in queues)
    p2 = svc.admin("GET", "/admin/projects/p2/datasets/bronze.only2").json()
    assert p2["version"] == 1 and set(p2["definition"]["fields"]) == {"country"}


def test_every_ingest_route_has_a_cross_tenant_case() -> None:
    """The Loguro routes are covered above by path, the other dialects' by the tests
    above: a route added to the table without a case here fails."""
    loguro = {"/datasets/{dataset_id}", "/datasets/{dataset_id}/batch", "/datasets",
              "/datasets/batch"}
    covered = loguro | {"/v1/logs", "/api/openapi/v1/data/events", "/v2/stream"} | {
        r.path for r in INGEST_ROUTES if r.dialect.name == "operyn"}
    assert {r.path for r in INGEST_ROUTES} == covered

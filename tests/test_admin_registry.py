"""The admin API of datasets and keys over HTTP (the real app on the real Redis)."""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from starlette.testclient import TestClient

from app import create_app
from strictgate.settings import load_settings
from tests.ingest_fixtures import (
    ADMIN,
    JWT_SECRET,
    SEED_DEFINITION,
    SEED_SINGLE,
    Service,
    start_service,
)

DS = "/admin/projects/p1/datasets/13"
V2 = {"fields": {**SEED_DEFINITION["fields"], "amount": "integer"}}


# --- auth and ids -------------------------------------------------------------------------------

ENDPOINTS = [
    ("PUT", DS), ("GET", DS), ("DELETE", DS), ("GET", DS + "/versions/1"),
    ("GET", "/admin/projects/p1/datasets"), ("POST", "/admin/projects/p1/keys"),
    ("GET", "/admin/projects/p1/keys"), ("DELETE", "/admin/projects/p1/keys/k1"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Basic " + ADMIN, "Bearer wrong", "Bearer " + ADMIN + "x",
    "bearer" + ADMIN, "Bearer " + ADMIN[:-1],
])
def test_admin_auth_missing_or_wrong_is_401(
    svc: Service, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    r = svc.client.request(method, path, headers=headers, json=SEED_DEFINITION)
    assert r.status_code == 401
    assert r.json()["success"] is False and r.json()["errors"][0]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("raw", [b"Bearer \xff\xfe\x80", b"Bearer " + "é".encode(),
                                 b"Bearer \xc3", b"\x00\x01"])
def test_admin_auth_odd_bytes_are_401_not_500(
    svc: Service, method: str, path: str, raw: bytes
) -> None:
    r = svc.client.request(method, path, headers=[(b"authorization", raw)])
    assert r.status_code == 401


@pytest.mark.parametrize("bad", ["-p", "a%20b", "a:b", "x" * 129, "%C3%A9", "_a", ".a"])
def test_bad_ids_are_400(svc: Service, bad: str) -> None:
    for method, path, kind in [
        ("PUT", f"/admin/projects/{bad}/datasets/13", "project"),
        ("GET", f"/admin/projects/{bad}/datasets", "project"),
        ("PUT", f"/admin/projects/p1/datasets/{bad}", "dataset"),
        ("GET", f"/admin/projects/p1/datasets/{bad}", "dataset"),
        ("DELETE", f"/admin/projects/p1/datasets/{bad}", "dataset"),
        ("GET", f"/admin/projects/p1/datasets/{bad}/versions/1", "dataset"),
        ("POST", f"/admin/projects/{bad}/keys", "project"),
        ("GET", f"/admin/projects/{bad}/keys", "project"),
        ("DELETE", f"/admin/projects/p1/keys/{bad}", "key"),
    ]:
        r = svc.admin(method, path, json=SEED_DEFINITION if method == "PUT" else {"user_id": "u"})
        assert r.status_code == 400, (method, path, r.text)
        assert r.json()["errors"][0]["code"] == f"invalid_{kind}_id"


def test_longest_valid_id_is_accepted(svc: Service) -> None:
    name = "a" + "b" * 127
    assert svc.admin("PUT", f"/admin/projects/{name}/datasets/{name}",
                     json=SEED_DEFINITION).status_code == 201


# --- datasets -----------------------------------------------------------------------------------

def test_put_create_update_identical(svc: Service) -> None:
    r = svc.admin("PUT", DS, json=SEED_DEFINITION)
    assert r.status_code == 201
    body = r.json()
    assert (body["version"], body["created"], body["changed"], body["breaking_changes"]) == (
        1, True, True, [])
    assert isinstance(body["json_schema"], dict)
    r = svc.admin("PUT", DS, json=SEED_DEFINITION)
    assert (r.status_code, r.json()["version"], r.json()["changed"]) == (200, 1, False)
    r = svc.admin("PUT", DS, json=V2)
    assert (r.status_code, r.json()["version"], r.json()["changed"]) == (200, 2, True)
    assert r.json()["breaking_changes"] == [{
        "field": "amount", "change": "type_narrowed",
        "message": "Field amount changed type from number to integer: "
                   "number values are now rejected",
    }]


def test_get_latest_versions_list_delete(svc: Service) -> None:
    assert svc.admin("GET", DS).status_code == 404
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    svc.put_dataset("p1", "13", V2)
    svc.put_dataset("p1", "other", SEED_DEFINITION)
    r = svc.admin("GET", DS)
    assert r.status_code == 200
    body = r.json()
    assert (body["version"], body["definition"]) == (2, V2)
    assert body["created_at"] <= body["updated_at"]
    assert body["created_at"].endswith("Z")
    r = svc.admin("GET", DS + "/versions/1")
    assert (r.status_code, r.json()["definition"], r.json()["version"]) == (
        200, SEED_DEFINITION, 1)
    assert svc.admin("GET", DS + "/versions/3").status_code == 404
    for bad in ("x", "-1", "1.5", "99999999999999999999"):
        assert svc.admin("GET", DS + f"/versions/{bad}").status_code == 400
    assert svc.admin("GET", DS + "/versions/0").status_code == 404  # a stored dataset
    builtin = svc.admin("GET", "/admin/projects/p1/datasets/logs/versions/0")
    assert builtin.status_code == 200 and builtin.json()["definition"]["envelope"] == "event"
    listed = svc.admin("GET", "/admin/projects/p1/datasets").json()
    assert [(d["dataset_id"], d["version"]) for d in listed["datasets"]
            if not d["builtin"]] == [("13", 2), ("other", 1)]
    assert [d["dataset_id"] for d in svc.admin("GET", "/admin/projects/p2/datasets").json()[
        "datasets"]] == ["deployments", "logs", "metrics"]
    r = svc.admin("DELETE", DS)
    assert (r.status_code, r.json()["deleted"]) == (200, True)
    assert svc.admin("DELETE", DS).status_code == 404
    assert svc.admin("GET", DS).status_code == 404
    assert svc.admin("GET", DS + "/versions/1").status_code == 404


def test_dataset_of_another_project_is_404(svc: Service) -> None:
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    assert svc.admin("GET", "/admin/projects/p2/datasets/13").status_code == 404
    assert svc.admin("DELETE", "/admin/projects/p2/datasets/13").status_code == 404


def test_dry_run_reports_and_stores_nothing(svc: Service, sync_redis: redis.Redis) -> None:
    r = svc.admin("PUT", DS + "?dry_run=true", json=SEED_DEFINITION)
    assert (r.status_code, r.json()["dry_run"], r.json()["version"]) == (200, True, 1)
    assert isinstance(r.json()["json_schema"], dict)
    assert svc.admin("GET", DS).status_code == 404
    assert sync_redis.keys("registry:dataset*") == []
    svc.put_dataset("p1", "13", SEED_DEFINITION)
    r = svc.admin("PUT", DS + "?dry_run=true", json=V2)
    assert r.status_code == 200
    assert [c["field"] for c in r.json()["breaking_changes"]] == ["amount"]
    assert svc.admin("GET", DS).json()["version"] == 1
    assert svc.admin("PUT", DS + "?dry_run=perhaps", json=V2).status_code == 400


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff", b'{"fields": {}', b"[1]", b"3"])
def test_bad_json_body_is_400(svc: Service, body: bytes) -> None:
    r = svc.admin("PUT", DS, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["success"] is False


def test_invalid_definition_lists_every_problem_with_a_pointer(svc: Service) -> None:
    r = svc.admin("PUT", DS, json={"fields": {"a": "strng", "b": {"type": 5}}, "bogus": 1})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "Invalid dataset definition"
    pointers = [e["field"] for e in body["errors"]]
    # the unknown key (at the root, ""), the bad type word, the bad type value
    assert "" in pointers and "/fields/a" in pointers and "/fields/b/type" in pointers
    assert all(p == "" or p.startswith("/") for p in pointers)
    assert all(e["code"] == "invalid_definition" for e in body["errors"])
    assert svc.admin("GET", DS).status_code == 404


# --- keys ---------------------------------------------------------------------------------------

def test_keys_create_list_revoke(svc: Service) -> None:
    r = svc.admin("POST", "/admin/projects/p1/keys", json={"user_id": "alice"})
    assert r.status_code == 201
    key_id, api_key = r.json()["key_id"], r.json()["api_key"]
    claims = jwt.decode(api_key, JWT_SECRET, algorithms=["HS256"])
    assert (claims["project_id"], claims["user_id"], claims["kid"]) == ("p1", "alice", key_id)
    assert isinstance(claims["iat"], int)
    second = svc.create_key("p1", "alice")
    listed = svc.admin("GET", "/admin/projects/p1/keys").json()["keys"]
    assert len(listed) == 2 and all("api_key" not in k for k in listed)
    assert api_key not in str(listed) and second not in str(listed)
    assert key_id in {k["key_id"] for k in listed}
    assert svc.admin("DELETE", f"/admin/projects/p2/keys/{key_id}").status_code == 404
    r = svc.admin("DELETE", f"/admin/projects/p1/keys/{key_id}")
    assert (r.status_code, r.json()["revoked"]) == (200, True)
    assert svc.admin("DELETE", f"/admin/projects/p1/keys/{key_id}").status_code == 404
    assert len(svc.admin("GET", "/admin/projects/p1/keys").json()["keys"]) == 1


@pytest.mark.parametrize("body", [
    {}, {"user_id": ""}, {"user_id": "a b"}, {"user_id": 5}, {"user_id": None},
    {"user_id": "alice", "extra": 1}, ["alice"], "alice",
])
def test_key_create_bad_body_is_400(svc: Service, body: Any) -> None:
    r = svc.admin("POST", "/admin/projects/p1/keys", json=body)
    assert r.status_code == 400


def test_key_create_invalid_json_is_400(svc: Service) -> None:
    r = svc.admin("POST", "/admin/projects/p1/keys", content=b"{",
                  headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "Invalid JSON body")


# --- Redis down ---------------------------------------------------------------------------------

def test_redis_down_is_503(data_dir: Path) -> None:
    settings = load_settings({
        "REDIS_URL": "redis://127.0.0.1:1/0", "STRICTGATE_DATA_DIR": str(data_dir),
        "STRICTGATE_ADMIN_TOKEN": ADMIN, "STRICTGATE_JWT_SECRET": JWT_SECRET,
        "STRICTGATE_RUN_WORKER": "0", "STRICTGATE_REDIS_DEADLINE_MS": "200",
    })
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for method, path in ENDPOINTS:
            body = SEED_DEFINITION if method == "PUT" else {"user_id": "alice"}
            r = client.request(method, path, headers=headers, json=body)
            assert r.status_code == 503, (method, path, r.text)
            assert r.headers["Retry-After"]


# --- two instances ------------------------------------------------------------------------------

def test_two_instances_see_changes_within_a_second(
    data_dir: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    a_gen: Generator[Service, None, None] = start_service(data_dir / "a", redis_url)  # type: ignore[assignment]
    b_gen: Generator[Service, None, None] = start_service(data_dir / "b", redis_url)  # type: ignore[assignment]
    a, b = next(a_gen), next(b_gen)
    try:
        a.put_dataset("p1", "13", SEED_DEFINITION)
        key = a.create_key("p1", "u1")
        assert b.post("/datasets/13", key, SEED_SINGLE).status_code == 202  # b caches both
        a.put_dataset("p1", "13", V2)  # amount must now be an integer; 42.5 is not
        started = time.monotonic()
        while b.post("/datasets/13", key, SEED_SINGLE).status_code != 400:
            assert time.monotonic() - started < 1.0, "new version not in force within 1 s"
            time.sleep(0.02)
        key_id = jwt.decode(key, options={"verify_signature": False})["kid"]
        integer = {**SEED_SINGLE, "amount": 42}
        assert b.post("/datasets/13", key, integer).status_code == 202
        assert a.admin("DELETE", f"/admin/projects/p1/keys/{key_id}").status_code == 200
        started = time.monotonic()
        while b.post("/datasets/13", key, integer).status_code != 401:
            assert time.monotonic() - started < 1.0, "revocation not in force within 1 s"
            time.sleep(0.02)
    finally:
        for gen in (a_gen, b_gen):
            gen.close()

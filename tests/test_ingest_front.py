"""The ingest routes' short way in (ingest/front.py): taken for the four POST routes, the
same answers, metrics and errors as through Starlette, everything else routed as before.
Also the request ids it hands out (strictgate/request_id.py RequestIds)."""

from __future__ import annotations

import os
import re

import pytest
from starlette.types import Receive, Scope, Send

import strictgate.ingest.core
from strictgate.ingest.front import ingest_lane
from strictgate.request_id import RequestIds
from tests.ingest_fixtures import SEED_BATCH, SEED_SINGLE, Service


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

"""The OpenAPI document (``/openapi.json``): valid OpenAPI 3.1, every example valid against
its schema, the Operyn operations as the Operyn docs describe them, the response headers
documented, and the examples the very answers the service gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import schemathesis

from strictgate.openapi import (
    LOGURO_BATCH,
    LOGURO_RECORD,
    OPERYN_DEPLOYMENT,
    OPERYN_LOG,
    OPERYN_LOG_BATCH,
    OPERYN_METRIC,
    openapi_document,
)
from tests.ingest_fixtures import SEED_BATCH, SEED_SINGLE, Service

DOC = openapi_document()
COMPONENTS = DOC["components"]
OPERYN_PATHS = [f"/events/{kind}{batch}" for kind in ("logs", "metrics", "deployments")
                for batch in ("", "/batch")]


def resolve(node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by its target, recursively."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.startswith("#/"), ref
            target: Any = DOC
            for part in ref[2:].split("/"):
                target = target[part]
            return resolve(target)
        return {k: resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v) for v in node]
    return node


def validate(schema: Any, instance: Any) -> None:
    """Validate under JSON Schema 2020-12 (OpenAPI 3.1's dialect), formats checked."""
    jsonschema.Draft202012Validator(
        resolve(schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(instance)


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of the document."""
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(DOC).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in COMPONENTS["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    resolve(DOC)  # every $ref points somewhere
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))
    tags = {tag["name"] for tag in DOC["tags"]}
    assert all(set(op["tags"]) <= tags for _, _, op in operations())


def test_every_example_is_valid_against_its_schema() -> None:
    checked = 0
    for _method, _path, op in operations():
        bodies = [op.get("requestBody", {}), *op["responses"].values()]
        for body in bodies:
            for media in body.get("content", {}).values():
                if "example" in media:
                    validate(media["schema"], media["example"])
                    checked += 1
        for param in op.get("parameters", []):
            if "example" in param:
                validate(param["schema"], param["example"])
                checked += 1
    assert checked >= 60


def test_request_examples_are_the_apis_own() -> None:
    """The Loguro and Operyn docs' request bodies (the tests' copies of the seeds)."""
    ingest = DOC["paths"]
    assert LOGURO_RECORD == SEED_SINGLE and LOGURO_BATCH == SEED_BATCH

    def example(path: str) -> Any:
        return ingest[path]["post"]["requestBody"]["content"]["application/json"]["example"]

    assert example("/datasets/{dataset_id}") == SEED_SINGLE
    assert example("/datasets/{dataset_id}/batch") == SEED_BATCH
    assert example("/events/logs") == OPERYN_LOG
    assert example("/events/logs/batch") == OPERYN_LOG_BATCH
    assert example("/events/metrics") == OPERYN_METRIC
    assert example("/events/deployments") == OPERYN_DEPLOYMENT
    assert OPERYN_LOG["message"] == "Upstream timeout connecting to auth-service"
    assert OPERYN_METRIC["value"] == 2.34 and OPERYN_DEPLOYMENT["gitHash"] == "a1b2c3d4"


@pytest.mark.parametrize("path", OPERYN_PATHS)
def test_operyn_operations_as_the_operyn_docs_describe_them(path: str) -> None:
    op = DOC["paths"][path]["post"]
    assert {"operynApiKey": []} in op["security"] and {"projectKey": []} in op["security"]
    assert COMPONENTS["securitySchemes"]["operynApiKey"] == {
        **COMPONENTS["securitySchemes"]["operynApiKey"],
        "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert "x-organization-id" in {p["name"] for p in op["parameters"]}
    assert set(op["responses"]) == {"200", "202", "400", "401", "403", "409", "413", "415",
                                    "422", "429", "503"}  # 200: a dry run
    ok = resolve(op["responses"]["202"]["content"]["application/json"]["schema"])
    if path.endswith("/batch"):
        assert ok["required"] == ["accepted"]
        assert resolve(op["requestBody"]["content"]["application/json"]["schema"])[
            "type"] == "array"
    else:
        assert ok["required"] == ["id", "queued"]
        assert ok["properties"]["id"]["format"] == "uuid"
    errors = {s: r["content"]["application/json"] for s, r in op["responses"].items()
              if s != "202"}
    assert errors["401"]["example"] == {"statusCode": 401,
                                        "message": "Invalid or missing API key"}
    assert errors["403"]["example"] == {"statusCode": 403,
                                        "message": "Organization does not match API key"}
    kind = path.split("/")[2][:-1]
    assert errors["400"]["example"]["message"].startswith(f"Invalid {kind} event: ")


def test_operyn_event_schemas_follow_the_operyn_tables() -> None:
    schemas = COMPONENTS["schemas"]
    log, metric, deployment = (schemas[f"Operyn{k}Event"]
                               for k in ("Log", "Metric", "Deployment"))
    assert log["required"] == ["service", "level", "message"]
    assert set(log["properties"]) == {"service", "level", "message", "timestamp", "traceId",
                                      "spanId", "metadata"}
    assert log["properties"]["level"]["enum"] == ["debug", "info", "warn", "error", "fatal"]
    assert metric["required"] == ["service", "name", "value", "unit"]
    assert set(metric["properties"]) == {"service", "name", "value", "unit", "timestamp",
                                         "labels"}
    assert metric["properties"]["value"]["type"] == "number"
    assert metric["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert deployment["required"] == ["service", "version", "environment"]
    assert set(deployment["properties"]) == {"service", "version", "environment", "gitHash",
                                             "timestamp", "metadata"}
    for event in (log, metric, deployment):
        assert event["additionalProperties"] is False  # strict, unlike Operyn's Zod
        with pytest.raises(jsonschema.ValidationError):
            validate(event, {**OPERYN_LOG, "service": "  "})


def test_every_response_documents_its_headers() -> None:
    def headers(response: dict[str, Any]) -> set[str]:
        return set(response.get("headers", {}))

    for method, path, op in operations():
        for status, response in op["responses"].items():
            assert "X-Request-Id" in headers(response), (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in headers(response), (method, path, status)
            if status == "429":
                assert {"X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset"} <= headers(
                    response)
        if path.startswith(("/datasets", "/events")) and method == "post":
            assert {"X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset",
                    "Idempotent-Replayed"} <= headers(op["responses"]["202"]), path
    assert COMPONENTS["headers"]["Idempotent-Replayed"]["required"] is False


# --- the examples are the service's real answers ---------------------------------------------


def _documented(path: str, status: int) -> dict[str, Any]:
    response: dict[str, Any] = resolve(DOC["paths"][path]["post"]["responses"][str(status)])
    return response


def _conforms(path: str, answer: Any) -> Any:
    """Check ``answer`` against what the document says of its status: body schema, every
    required header present, every documented header valid. Its JSON body."""
    documented = _documented(path, answer.status_code)
    body = answer.json()
    validate(documented["content"]["application/json"]["schema"], body)
    for name, header in documented.get("headers", {}).items():
        value = answer.headers.get(name)
        if value is None:
            assert not header["required"], f"{path} {answer.status_code}: {name} missing"
            continue
        schema = header["schema"]
        validate(schema, int(value) if schema.get("type") == "integer" else value)
    return body


def _example(path: str, status: int) -> Any:
    return _documented(path, status)["content"]["application/json"]["example"]


def test_the_loguro_examples_are_the_real_answers(svc: Service, key: str) -> None:
    bad = {**SEED_SINGLE, "amount": "12.5"}  # the Loguro docs' invalid record
    r = svc.post("/datasets/13", key, bad)
    assert r.status_code == 400
    assert _conforms("/datasets/{dataset_id}", r) == _example("/datasets/{dataset_id}", 400)
    for path in ("/datasets/{dataset_id}", "/datasets/{dataset_id}/batch"):
        request = DOC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        r = svc.post(path.replace("{dataset_id}", "13"), key, request["example"])
        assert r.status_code == 202, r.text
        assert _conforms(path, r) == _example(path, 202)


@pytest.mark.parametrize("path", OPERYN_PATHS)
def test_the_operyn_examples_are_the_real_answers(svc: Service, key: str, path: str) -> None:
    request = DOC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    body = json.dumps(request["example"]).encode()
    plain = {"Content-Type": "application/json"}

    r = svc.client.post(path, content=body, headers=plain)
    assert r.status_code == 401
    assert _conforms(path, r) == _example(path, 401)
    r = svc.client.post(path, content=body, headers={**plain, "x-api-key": key,
                                                     "x-organization-id": "org_123456789"})
    assert r.status_code == 403
    assert _conforms(path, r) == _example(path, 403)

    # the 400 example: a batch whose second event has no service (one event without it)
    if path.endswith("/batch"):
        invalid: Any = [request["example"][0],
                        {k: v for k, v in request["example"][1].items() if k != "service"}]
    else:
        invalid = {k: v for k, v in request["example"].items() if k != "service"}
    r = svc.client.post(path, json=invalid, headers={"x-api-key": key})
    assert r.status_code == 400, r.text
    assert _conforms(path, r) == _example(path, 400)

    r = svc.client.post(path, content=body, headers={**plain, "x-api-key": key})
    assert r.status_code == 202, r.text
    answer = _conforms(path, r)
    example = _example(path, 202)
    assert answer.keys() == example.keys()
    assert answer.get("accepted") == example.get("accepted")

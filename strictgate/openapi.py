"""The OpenAPI 3.1 document of the whole HTTP API and a self-contained docs page."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ERROR_ITEM: Schema = {
    "type": "object",
    "required": ["code", "field", "message"],
    "properties": {
        "index": {"type": "integer", "minimum": 0, "description": "record index (batches)"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "field": {"type": ["string", "null"]},
        "message": {"type": "string"},
    },
}
ERROR_BODY: Schema = {
    "type": "object",
    "required": ["success", "error", "errors"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorItem"}},
        "error_count": {"type": "integer"},
        "errors_omitted": {"type": "integer"},
        "quota": {"$ref": "#/components/schemas/QuotaDetails"},
    },
}
QUOTA_DETAILS: Schema = {
    "type": "object",
    "properties": {
        "limit": {"type": "integer"}, "used": {"type": "integer"},
        "requested": {"type": "integer"}, "remaining": {"type": "integer"},
        "period": {"type": "string"}, "resets_at": {"type": "string", "format": "date-time"},
    },
}
RECORD: Schema = {
    "type": "object",
    "description": "A raw record: timestamp, context and the dataset's declared fields.",
    "required": ["timestamp", "context"],
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "context": {"type": "object"},
    },
    "additionalProperties": True,
}
ID_PARAM_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    text = {
        400: "Bad request body, id or record", 401: "Missing or invalid credentials",
        404: "Not found", 413: "Body too large", 415: "Unsupported content type or encoding",
        409: "Concurrent update conflict (retry)", 422: "Idempotency conflict",
        429: "Monthly quota exceeded",
        503: "Redis unavailable (retry after Retry-After seconds)",
    }
    return {str(s): {"description": text[s], **_json(_ref("Error"))} for s in statuses}


def _path_param(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": ID_PARAM_PATTERN}}


_INGEST_HEADERS = [
    {"name": "X-Request-Id", "in": "header", "required": False,
     "schema": {"type": "string", "maxLength": 200}},
    {"name": "X-Loguro-Dataset-Id", "in": "header", "required": False,
     "schema": {"type": "string", "pattern": ID_PARAM_PATTERN}},
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "maxLength": 200}},
]


def _ingest_op(batch: bool, with_path: bool) -> Schema:
    body = {"type": "array", "minItems": 1, "items": _ref("Record")} if batch else _ref("Record")
    ok: Schema = {"type": "object", "required": ["success", "status"],
                  "properties": {"success": {"const": True}, "status": {"const": "queued"}}}
    if batch:
        ok["required"] = ["success", "count", "status"]
        ok["properties"]["count"] = {"type": "integer", "minimum": 1}
    params = ([_path_param("dataset_id")] if with_path else []) + _INGEST_HEADERS
    return {
        "summary": ("Ingest a batch of records" if batch else "Ingest one record")
        + ("" if with_path else " (legacy: dataset `default` or X-Loguro-Dataset-Id)"),
        "security": [{"projectKey": []}],
        "parameters": params,
        "requestBody": {"required": True, **_json(body)},
        "responses": {
            "202": {"description": "Validated, counted and queued", **_json(ok)},
            **_errors(400, 401, 404, 413, 415, 422, 429, 503),
        },
    }


STORED_RECORD: Schema = {
    "type": "object",
    "description": "A record as sent (fields in definition order) plus the system fields.",
    "required": ["timestamp", "context", "__traceId", "__datasetVersion", "__receivedAt",
                 "__entryId"],
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "context": {"type": "object"},
        "__traceId": {"type": "string", "description": "the ingest request's X-Request-Id"},
        "__datasetVersion": {"type": "integer", "minimum": 1},
        "__receivedAt": {"type": "string", "format": "date-time",
                         "description": "when the API received it (UTC, milliseconds)"},
        "__entryId": {"type": "string", "description": "the queue entry that carried it"},
    },
    "additionalProperties": True,
}


def _query_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_DATE_OR_TIME: Schema = {"type": "string", "anyOf": [{"format": "date-time"},
                                                    {"format": "date"}]}


def _read_op() -> Schema:
    page = {"type": "object", "required": ["success", "records", "next_cursor"],
            "properties": {"success": {"const": True},
                           "records": {"type": "array", "items": _ref("StoredRecord")},
                           "next_cursor": {"type": ["string", "null"]}}}
    return {
        "summary": "Read a dataset's records in receipt order (pages with a cursor)",
        "description": (
            "Records of the key's project only. Any other query parameter, a repeated one "
            "or a bad value is a 400 whose `field` names the parameter. Pass the same "
            "from/to/version with a cursor. `Accept: application/x-ndjson` answers one "
            "record per line, the next cursor in the X-Next-Cursor header (absent on the "
            "last page)."),
        "security": [{"projectKey": []}],
        "parameters": [
            _path_param("dataset_id"),
            _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                   "default": 100}, "records per page"),
            _query_param("cursor", {"type": "string"},
                         "the previous page's next_cursor (opaque)"),
            _query_param("from", _DATE_OR_TIME,
                         "__receivedAt at or after this (RFC 3339, or a UTC day YYYY-MM-DD)"),
            _query_param("to", _DATE_OR_TIME,
                         "__receivedAt before this (a day YYYY-MM-DD includes that day)"),
            _query_param("version", {"type": "integer", "minimum": 1},
                         "only records of this definition version"),
            {"name": "Accept", "in": "header", "required": False,
             "schema": {"type": "string",
                        "enum": ["application/json", "application/x-ndjson"]}},
        ],
        "responses": {
            "200": {
                "description": "A page (next_cursor null on the last one)",
                "headers": {"X-Next-Cursor": {
                    "description": "NDJSON answers only: the next page's cursor",
                    "schema": {"type": "string"}}},
                "content": {
                    "application/json": {"schema": page},
                    "application/x-ndjson": {"schema": _ref("StoredRecord")},
                },
            },
            **_errors(400, 401, 404),
            "501": {"description": "Not available with STRICTGATE_SINK=jsonl",
                    **_json(_ref("Error"))},
            "503": {"description": "Redis or the lake cannot be read (retry after Retry-After "
                                   "seconds)", **_json(_ref("Error"))},
        },
    }


def _admin(summary: str, ok: str, ok_schema: Schema, *errors: int, body: Schema | None = None,
           params: list[Schema] | None = None, created: bool = False) -> Schema:
    op: Schema = {
        "summary": summary, "security": [{"adminToken": []}],
        "parameters": params or [],
        "responses": {ok: {"description": "OK", **_json(ok_schema)}, **_errors(401, *errors)},
    }
    if created:
        op["responses"]["201"] = {"description": "Created", **_json(ok_schema)}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
        # every admin body is read under a size cap
        op["responses"].update(_errors(413))
    return op


OBJ: Schema = {"type": "object"}


def openapi_document() -> Schema:
    """The OpenAPI 3.1 document."""
    project = _path_param("project_id")
    dataset = _path_param("dataset_id")
    user = _path_param("user_id")
    key = _path_param("key_id")
    version = {"name": "n", "in": "path", "required": True,
               "schema": {"type": "integer", "minimum": 1}}
    ds = "/admin/projects/{project_id}/datasets/{dataset_id}"
    quota_body = {"type": "object", "required": ["monthly_limit"], "additionalProperties": False,
                  "properties": {"monthly_limit": {"type": "integer", "minimum": -1}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "strictgate", "version": "0.1.0",
                 "description": "Strict dataset ingest with exact monthly quotas."},
        "paths": {
            "/datasets/{dataset_id}": {"post": _ingest_op(False, True)},
            "/datasets/{dataset_id}/batch": {"post": _ingest_op(True, True)},
            "/datasets": {"post": _ingest_op(False, False)},
            "/datasets/batch": {"post": _ingest_op(True, False)},
            "/datasets/{dataset_id}/records": {"get": _read_op()},
            ds: {
                "put": _admin("Create (201) or update (200) a dataset definition", "200", OBJ,
                              400, 409, 503, created=True,
                              body=OBJ, params=[project, dataset, {
                                  "name": "dry_run", "in": "query", "required": False,
                                  "schema": {"type": "boolean"}}]),
                "get": _admin("Latest definition", "200", OBJ, 400, 404, params=[project, dataset]),
                "delete": _admin("Delete a dataset", "200", OBJ, 400, 404,
                                 params=[project, dataset]),
            },
            ds + "/versions/{n}": {
                "get": _admin("One version of a definition", "200", OBJ, 400, 404,
                              params=[project, dataset, version]),
            },
            "/admin/projects/{project_id}/datasets": {
                "get": _admin("List datasets", "200", OBJ, 400, params=[project]),
            },
            "/admin/projects/{project_id}/keys": {
                "post": _admin("Create a project API key", "201", {
                    "type": "object", "required": ["key_id", "api_key"],
                    "properties": {"key_id": {"type": "string"}, "api_key": {"type": "string"}},
                }, 400, body={"type": "object", "required": ["user_id"],
                              "properties": {"user_id": {"type": "string"}}}, params=[project]),
                "get": _admin("List keys (no secrets)", "200", OBJ, 400, params=[project]),
            },
            "/admin/projects/{project_id}/keys/{key_id}": {
                "delete": _admin("Revoke a key", "200", OBJ, 400, 404, params=[project, key]),
            },
            "/admin/users/{user_id}/quota": {
                "put": _admin("Set the monthly limit", "200", OBJ, 400, body=quota_body,
                              params=[user]),
                "get": _admin("Get the monthly limit", "200", OBJ, 400, params=[user]),
            },
            "/admin/users/{user_id}/usage": {
                "get": _admin("Usage of a month", "200", OBJ, 400, params=[user, {
                    "name": "period", "in": "query", "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}}]),
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {
                "description": "alive", **_json(OBJ)}}}},
            "/readyz": {"get": {"summary": "Readiness (Redis and registry)", "responses": {
                "200": {"description": "ready", **_json(OBJ)},
                "503": {"description": "not ready", **_json(_ref("Error"))}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "schemas": {"Error": ERROR_BODY, "ErrorItem": ERROR_ITEM,
                        "QuotaDetails": QUOTA_DETAILS, "Record": RECORD,
                        "StoredRecord": STORED_RECORD},
            "securitySchemes": {
                "projectKey": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>strictgate API</title>
<style>body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}
h2{border-bottom:1px solid #ccc}code,pre{background:#f5f5f5;padding:2px 4px}
.m{font-weight:bold;text-transform:uppercase;display:inline-block;width:4.5em}
pre{white-space:pre-wrap;font-size:12px}</style></head>
<body><h1>strictgate API</h1><p>Rendered from <a href="/openapi.json">/openapi.json</a>.</p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const out = document.getElementById('ops'); out.textContent = '';
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const sec = document.createElement('section');
      const h = document.createElement('h2');
      const m = document.createElement('span'); m.className = 'm'; m.textContent = method;
      const c = document.createElement('code'); c.textContent = path;
      h.append(m, c); sec.append(h);
      const p = document.createElement('p'); p.textContent = op.summary || ''; sec.append(p);
      const pre = document.createElement('pre');
      pre.textContent = JSON.stringify({parameters: op.parameters, requestBody: op.requestBody,
        responses: op.responses}, null, 1);
      sec.append(pre); out.append(sec);
    }
  }
});
</script></body></html>
"""

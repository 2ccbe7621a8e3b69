"""The OpenAPI 3.1 document of the whole HTTP API: the Loguro dataset ingest routes, the
Operyn event routes, the OrcaSheets, OneSight and Definite endpoints, the records API, the admin API
and the operational endpoints.

Request and response examples are the public APIs' docs' own bodies, so the rendered
reference (``/api``, ``/reference``) shows what those APIs' users already know. Every
response documents the headers it carries (``X-Request-Id`` on all of them).
"""

from __future__ import annotations

import copy
from typing import Any

import schemas
from strictgate.dialects import INGEST_ROUTES
from validator import compile_dataset

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

# --- the Loguro docs' examples (dataset 13 of its Dataset Ingest API) -----------------------

LOGURO_RECORD: Schema = {
    "timestamp": "2026-06-10T10:58:00Z",
    "context": {"source": "billing-service", "request_id": "req_123"},
    "country": "RO", "plan": "pro", "amount": 42.5, "active": True,
    "signup_at": "2026-06-01T08:00:00Z",
}
LOGURO_BATCH: list[Schema] = [
    {"timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
     "country": "RO", "plan": "pro", "amount": 20, "active": True,
     "signup_at": "2026-06-01T08:00:00Z"},
    {"timestamp": "2026-06-10T11:01:00Z", "context": {"source": "billing-service"},
     "country": "US", "plan": "free", "amount": 5, "active": False,
     "signup_at": "2026-06-02T08:00:00Z"},
]
_LOGURO_INVALID: Schema = {
    "success": False, "error": "Invalid number field: amount",
    "errors": [{"code": "invalid_number", "field": "amount",
                "message": "Invalid number field: amount"}],
    "error_count": 1, "errors_omitted": 0,
}
_LOGURO_OVER_QUOTA: Schema = {
    "success": False, "error": "Monthly dataset quota exceeded",
    "errors": [{"code": "quota_exceeded", "field": None,
                "message": "Monthly dataset quota exceeded"}],
    "quota": {"limit": 1000, "used": 1000, "requested": 2, "remaining": 0,
              "period": "2026-06", "resets_at": "2026-07-01T00:00:00Z"},
}

# --- the Operyn docs' examples --------------------------------------------------------------

OPERYN_LOG: Schema = {
    "service": "api-gateway", "level": "error",
    "message": "Upstream timeout connecting to auth-service", "traceId": "abc-123-def",
    "metadata": {"region": "us-east-1", "env": "prod", "team": "platform"},
}
OPERYN_LOG_BATCH: list[Schema] = [
    {"service": "billing-service", "level": "error", "message": "Payment failed for customer 42"},
    {"service": "billing-service", "level": "warn",
     "message": "Retry attempt 3 for payment gateway"},
]
OPERYN_METRIC: Schema = {
    "service": "api-gateway", "name": "request_latency_p99", "value": 2.34, "unit": "seconds",
    "labels": {"region": "us-east-1", "env": "prod", "endpoint": "/api/v1/users"},
}
OPERYN_METRIC_BATCH: list[Schema] = [
    OPERYN_METRIC,
    {"service": "api-gateway", "name": "http_5xx_rate", "value": 0.5, "unit": "percent",
     "timestamp": "2026-06-10T10:58:00Z", "labels": {"region": "us-east-1", "env": "prod"}},
]
OPERYN_DEPLOYMENT: Schema = {
    "service": "payment-service", "version": "v2.0.1", "environment": "production",
    "gitHash": "a1b2c3d4", "metadata": {"deployedBy": "jenkins", "deployId": "job-123"},
}
OPERYN_DEPLOYMENT_BATCH: list[Schema] = [
    OPERYN_DEPLOYMENT,
    {"service": "billing-service", "version": "v1.4.0", "environment": "staging",
     "timestamp": "2026-06-10T09:00:00Z"},
]
# The Operyn docs' answers. Their deployment id ("c1a2b3c4-d5e6-4f7g-...") is not a UUID,
# which ours always are: that example gets a real one.
_OPERYN_IDS = {"log": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
               "metric": "e23f8a1c-9b4d-4e7f-8a2b-1c3d4e5f6a7b",
               "deployment": "c1a2b3c4-d5e6-4f70-8a9b-0c1d2e3f4a5b"}

OPERYN_EVENTS: dict[str, tuple[str, Schema, list[Schema]]] = {
    # dataset: (event name in messages, one event, a batch)
    "logs": ("log", OPERYN_LOG, OPERYN_LOG_BATCH),
    "metrics": ("metric", OPERYN_METRIC, OPERYN_METRIC_BATCH),
    "deployments": ("deployment", OPERYN_DEPLOYMENT, OPERYN_DEPLOYMENT_BATCH),
}

def _builtin_event(dataset: str, description: str) -> Schema:
    """The JSON Schema of a built-in Operyn dataset, compiled from its definition (the one
    place its fields are written down: ``schemas/builtin/``)."""
    schema: Schema = copy.deepcopy(compile_dataset(schemas.builtin(dataset)).json_schema)
    schema.pop("$schema", None)
    # what trimming means for a request: blank is as empty
    schema["properties"]["service"]["pattern"] = r"\S"
    schema["description"] = description + (
        " Unknown fields and `id` are refused (Operyn strips unknown fields); `service` is"
        " trimmed, and empty after trimming is an error; `timestamp` defaults to the"
        " server's receipt time.")
    return schema


OPERYN_LOG_EVENT = _builtin_event("logs", "One log event.")
OPERYN_METRIC_EVENT = _builtin_event("metrics", "One metric data point.")
OPERYN_DEPLOYMENT_EVENT = _builtin_event(
    "deployments", "One deployment, to correlate with later incidents.")
OPERYN_QUEUED: Schema = {
    "type": "object", "required": ["id", "queued"],
    "properties": {"id": {"type": "string", "format": "uuid",
                          "description": "The event's id, stored with it"},
                   "queued": {"const": True}},
}
OPERYN_ACCEPTED: Schema = {
    "type": "object", "required": ["accepted"],
    "properties": {"accepted": {"type": "integer", "minimum": 1,
                                "description": "Events validated, counted and queued"}},
}
OPERYN_ERROR: Schema = {
    "type": "object",
    "description": "Operyn's error body. Besides `statusCode` and `message`, strictgate's "
                   "own details where it has them: `errors` (the same items as on the "
                   "Loguro routes, with `index` in a batch), `quota` on a 429.",
    "required": ["statusCode", "message"],
    "properties": {
        "statusCode": {"type": "integer", "minimum": 400, "maximum": 599},
        "message": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorItem"}},
        "error_count": {"type": "integer"},
        "errors_omitted": {"type": "integer"},
        "quota": {"$ref": "#/components/schemas/QuotaDetails"},
    },
}

# --- response headers -------------------------------------------------------------------------

HEADERS: dict[str, Schema] = {
    "X-Request-Id": {
        "description": "The request's id: the client's `X-Request-Id` when valid (visible "
                       "ASCII, at most 200 characters), else a fresh one. Stored with the "
                       "records as `__traceId`.",
        "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "X-Quota-Limit": {
        "description": "The key's user's monthly record limit (-1: unlimited)",
        "required": True, "schema": {"type": "integer", "minimum": -1},
    },
    "X-Quota-Remaining": {
        "description": "Records left this month after this request (-1: unlimited)",
        "required": True, "schema": {"type": "integer", "minimum": -1},
    },
    "X-Quota-Reset": {
        "description": "When the month's count starts again (UTC)",
        "required": True, "schema": {"type": "string", "format": "date-time"},
    },
    "Idempotent-Replayed": {
        "description": "Present when this is the first answer to the same `Idempotency-Key` "
                       "and body again: nothing was counted or queued this time",
        "required": False, "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True, "schema": {"type": "integer", "minimum": 1},
    },
}
_QUOTA_HEADERS = ("X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset")


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, example: Any = None) -> Schema:
    media: Schema = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"content": {"application/json": media}}


def _headers(*names: str) -> Schema:
    return {"headers": {name: {"$ref": f"#/components/headers/{name}"} for name in names}}


_ERROR_TEXT = {
    400: "Bad request body, id or record", 401: "Missing or invalid credentials",
    403: "Forbidden", 404: "Not found", 409: "Conflict",
    413: "Body too large", 415: "Unsupported content type or encoding",
    422: "Idempotency conflict: the key was used with another body",
    429: "Monthly quota exceeded (retry after Retry-After seconds)",
    501: "Not available with STRICTGATE_SINK=jsonl (needs the lake)",
    503: "Unavailable: Redis, or a full queue (retry after Retry-After seconds)",
}


def _error_headers(status: int) -> Schema:
    if status == 429:
        return _headers("Retry-After", *_QUOTA_HEADERS)
    if status == 503:
        return _headers("Retry-After")
    return {}


def _errors(*statuses: int, schema: str = "Error", examples: dict[int, Any] | None = None,
            text: dict[int, str] | None = None) -> dict[str, Schema]:
    examples = examples or {}
    text = {**_ERROR_TEXT, **(text or {})}
    return {str(s): {"description": text[s], **_error_headers(s),
                     **_json(_ref(schema), examples.get(s))} for s in statuses}


def _path_param(name: str, example: str | None = None) -> Schema:
    param: Schema = {"name": name, "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": ID_PARAM_PATTERN}}
    if example is not None:
        param["example"] = example
    return param


def _header_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "header", "required": False, "schema": schema,
            "description": description}


_REQUEST_ID_PARAM = _header_param(
    "X-Request-Id", {"type": "string", "maxLength": 200},
    "Your id for this request (visible ASCII): echoed back and stored as `__traceId`")
_IDEMPOTENCY_PARAM = _header_param(
    "Idempotency-Key", {"type": "string", "maxLength": 200},
    "Makes a retry safe: the same key and body answer the first answer again "
    "(Idempotent-Replayed: true) without counting; the same key with another body is a 422")
_INGEST_HEADERS = [
    _REQUEST_ID_PARAM,
    _header_param("X-Loguro-Dataset-Id", {"type": "string", "pattern": ID_PARAM_PATTERN},
                  "The dataset, for clients that cannot put it in the URL"),
    _IDEMPOTENCY_PARAM,
]

_ACCEPTED_HEADERS = _headers(*_QUOTA_HEADERS, "Idempotent-Replayed")
# A 200 that is either an admission or a dry run (Definite): a dry run counts nothing and
# answers its quota in the body, not in headers.
_ACCEPTED_OR_DRY_RUN_HEADERS: Schema = {"headers": {
    **{name: {**HEADERS[name], "required": False,
              "description": HEADERS[name]["description"] + " (not on a dry run: its body's "
                             "`quota` says where the user stands)"}
       for name in _QUOTA_HEADERS},
    **_headers("Idempotent-Replayed")["headers"]}}


def _ingest_op(batch: bool, with_path: bool) -> Schema:
    body = {"type": "array", "minItems": 1, "items": _ref("Record")} if batch else _ref("Record")
    ok: Schema = {"type": "object", "required": ["success", "status"],
                  "properties": {"success": {"const": True}, "status": {"const": "queued"}}}
    ok_example: Schema = {"success": True, "status": "queued"}
    if batch:
        ok["required"] = ["success", "count", "status"]
        ok["properties"]["count"] = {"type": "integer", "minimum": 1}
        ok_example = {"success": True, "count": 2, "status": "queued"}
    params = ([_path_param("dataset_id", "13")] if with_path else []) + _INGEST_HEADERS
    name = ("Batch" if batch else "Record") + ("" if with_path else "Legacy")
    return {
        "tags": ["Loguro dataset ingest"],
        "operationId": f"ingest{name}",
        "summary": ("Ingest a batch of records" if batch else "Ingest one record")
        + ("" if with_path else " (legacy: dataset `default` or X-Loguro-Dataset-Id)"),
        "description": (
            "Every record is checked strictly against the dataset's definition, counted "
            "against the key's user's monthly quota and queued, all or nothing. "
            + ("An array of raw record objects." if batch else "One raw record object.")),
        "security": [{"projectKey": []}],
        "parameters": params,
        "requestBody": {"required": True,
                        **_json(body, LOGURO_BATCH if batch else LOGURO_RECORD)},
        "responses": {
            "202": {"description": "Validated, counted and queued", **_ACCEPTED_HEADERS,
                    **_json(ok, ok_example)},
            **_errors(400, 401, 404, 413, 415, 422, 429, 503,
                      examples={400: _LOGURO_INVALID, 429: _LOGURO_OVER_QUOTA}),
        },
    }


ORCA_MINIMAL: Schema = {"event_type": "ecommerce_sync", "records": [
    {"metric_name": "orders",
     "metric_value": {"order_id": "1001", "amount": 49.99, "status": "shipped"}}]}
ORCA_REQUEST: Schema = {
    "type": "object", "required": ["event_type", "records"], "additionalProperties": False,
    "properties": {
        "event_type": {"type": "string", "minLength": 1,
                       "description": "The job's name, stored with every row (`__eventType`)"},
        "records": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["metric_name", "metric_value"],
            "additionalProperties": False,
            "properties": {
                "metric_name": {"type": "string", "pattern": ID_PARAM_PATTERN,
                                "description": "The dataset (table) of the row"},
                "metric_value": {"type": "object",
                                 "description": "One row, checked against the dataset's "
                                                "definition"}}}},
    },
}


def _orcasheets_op() -> Schema:
    invalid = {"success": False, "error": "Invalid number field: amount", "errors": [
        {"index": 0, "code": "invalid_number", "field": "records[0].metric_value.amount",
         "message": "Invalid number field: amount"}], "error_count": 1, "errors_omitted": 0}
    return {
        "tags": ["OrcaSheets"],
        "operationId": "orcasheetsLogs",
        "summary": "Ingest rows for one or more tables",
        "description": (
            "Each row goes to the project's dataset named by `metric_name`, checked against "
            "its definition; the request is all or nothing across tables (one admission). "
            "A table nobody registered follows the project's `unknown_datasets` policy "
            "(`reject`: 400 `dataset_not_found`; `infer`: schema on first write)."),
        "security": [{"projectKey": []}],
        "parameters": list(_INGEST_HEADERS),
        "requestBody": {"required": True, **_json(ORCA_REQUEST, ORCA_MINIMAL)},
        "responses": {
            "202": {"description": "Validated, counted and queued", **_ACCEPTED_HEADERS,
                    **_json({"type": "object", "required": ["success", "count", "status"],
                             "properties": {"success": {"const": True},
                                            "count": {"type": "integer", "minimum": 1},
                                            "status": {"const": "queued"}}},
                            {"success": True, "count": 1, "status": "queued"})},
            **_errors(400, 401, 409, 413, 415, 422, 429, 503,
                      examples={400: invalid, 429: _LOGURO_OVER_QUOTA}),
        },
    }


ONESIGHT_EXAMPLE: Schema = {"events": [{
    "event_type": "uwb_location", "event_id": "loc_20260412_001",
    "source": "virtual_store_server", "payload": {
        "customer_id": "cust_123", "position": {"x": 12.5, "y": 8.3, "z": 1.2},
        "zone": "produce_section", "timestamp": "2026-04-12T10:30:00Z"}}]}
_ONESIGHT_TEXT: Schema = {"type": ["string", "null"], "minLength": 1, "maxLength": 256}
ONESIGHT_REQUEST: Schema = {
    "type": "object", "required": ["events"], "additionalProperties": False,
    "properties": {"events": {
        "type": "array", "minItems": 1, "maxItems": 1000, "items": {
            "type": "object", "required": ["event_type", "payload"],
            "additionalProperties": False,
            "properties": {
                "event_type": {"type": "string", "pattern": ID_PARAM_PATTERN,
                               "description": "The project's event type (a dataset)"},
                "event_id": {**_ONESIGHT_TEXT, "description": (
                    "Idempotency key of the event: an id the project accepted within the "
                    "event id window (STRICTGATE_EVENT_ID_WINDOW_S, default 7 days) is "
                    "acknowledged again but neither counted nor stored")},
                "source": {**_ONESIGHT_TEXT, "minLength": 0,
                           "description": "Data source identifier (stored as `__source`)"},
                "payload": {"type": "object",
                            "description": "Checked against the event type's definition"},
            }}}},
}
ONESIGHT_EVENT: Schema = {
    "type": "object", "required": ["event_type", "event_id", "source", "payload",
                                   "received_at"],
    "properties": {"event_type": {"type": "string"}, "event_id": {"type": "string"},
                   "source": {"type": ["string", "null"]}, "payload": {"type": "object"},
                   "received_at": {"type": "string", "format": "date-time"}},
}


DEFINITE_EXAMPLE: Schema = {
    "data": [{"id": 1, "name": "Alice", "email": "alice@example.com"},
             {"id": 2, "name": "Bob", "email": "bob@example.com"}],
    "config": {"table": "bronze.customers", "mode": "append", "wait": False,
               "tags": {"source": "my-app"}}}
_DEFINITE_TABLE: Schema = {
    "type": "string",
    "pattern": "^(LAKE\\.)?[A-Za-z0-9][A-Za-z0-9_-]*\\.[A-Za-z0-9][A-Za-z0-9_-]*$",
    "description": "`namespace.table` or `LAKE.namespace.table`: the project's dataset "
                   "`namespace.table` (envelope-free definition)"}
_DEFINITE_ROW: Schema = {"type": "object", "description": "A row: the table's columns"}
DEFINITE_REQUEST: Schema = {
    "type": "object", "required": ["data", "config"], "additionalProperties": False,
    "properties": {
        "data": {"oneOf": [_DEFINITE_ROW, {"type": "array", "minItems": 1, "maxItems": 50000,
                                           "items": _DEFINITE_ROW}]},
        "config": {"type": "object", "required": ["table"], "additionalProperties": False,
                   "properties": {
                       "table": _DEFINITE_TABLE,
                       "mode": {"enum": ["append", "merge"], "default": "append",
                                "description": "merge: each row replaces the stored row with "
                                               "the same primary_key value (inserted when "
                                               "new; the last admitted wins); needs a "
                                               "one-column primary_key (else 422)"},
                       "primary_key": {"type": "array", "minItems": 1, "maxItems": 1,
                                       "items": {"type": "string", "minLength": 1}},
                       "wait": {"type": "boolean", "default": False, "description": (
                           "Answer once the rows are committed to the lake, with the "
                           "commit's snapshot_id (bounded by STRICTGATE_COMMIT_WAIT_S; past "
                           "it: snapshot_id null and a warning)")},
                       "tags": {"type": "object", "maxProperties": 50,
                                "additionalProperties": {"type": "string", "maxLength": 256},
                                "description": "Checked, not stored"}}}},
}
DEFINITE_ANSWER: Schema = {
    "type": "object", "additionalProperties": False,
    "required": ["success", "request_id", "stream_id", "table", "accepted", "successful_rows",
                 "rejected_rows", "partitions", "snapshot_id", "warnings", "errors"],
    "properties": {
        "success": {"const": True}, "request_id": {"type": "string"},
        "stream_id": {"type": "string", "pattern": "^st_[0-9a-f]{12}$"},
        "table": {"type": "string"}, "accepted": {"type": "integer", "minimum": 1},
        "successful_rows": {"type": "integer", "minimum": 0},
        "rejected_rows": {"type": "integer", "minimum": 0},
        "partitions": {"type": "array", "maxItems": 0},
        "snapshot_id": {"type": "null"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "The rejected rows' errors (on_invalid: quarantine)"}},
}


def _definite_query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": f"{description} (NDJSON bodies only: a JSON body carries it in "
                           "`config`)"}


def _definite_op() -> Schema:
    invalid = {"success": False, "error": "Invalid integer field: id", "errors": [
        {"index": 1, "code": "invalid_integer", "field": "data[1].id",
         "message": "Invalid integer field: id"}], "error_count": 1, "errors_omitted": 0}
    missing = {"success": False, "error": "Table not found: bronze.events (the namespace "
               "or table does not exist)", "errors": [{
                   "code": "table_not_found", "field": "config.table",
                   "message": "Table not found: bronze.events (the namespace or table does "
                              "not exist)"}]}
    ok = {"success": True, "request_id": "req_abc123def456", "stream_id": "st_0123456789ab",
          "table": "bronze.customers", "accepted": 2, "successful_rows": 2,
          "rejected_rows": 0, "partitions": [], "snapshot_id": None, "warnings": [],
          "errors": []}
    ndjson = {"schema": {"type": "string", "description": "One JSON object per line"},
              "example": '{"event_type": "page_view", "user_id": "123"}\n'}
    return {
        "tags": ["Definite"],
        "operationId": "definiteStream",
        "summary": "Append rows to one table (JSON or NDJSON)",
        "description": (
            "Rows go to the project's dataset named by `config.table` (NDJSON: `?table=`), "
            "checked against its envelope-free definition under the dataset's `on_invalid` "
            "policy; a table nobody registered follows the project's `unknown_datasets` "
            "policy (`reject`: 404; `infer`: created on first write). Limits: 10 MB after "
            "decompression and 50,000 rows (413), 1 MB per field and nesting depth 10 (400). "
            "`Content-Encoding: gzip` or `zstd`. `mode: merge` upserts by the one "
            "`primary_key` column (every row must carry it non-null; a key repeated in one "
            "request is a 400 naming both rows). `wait: true` answers after the lake commit "
            "with its `snapshot_id`."),
        "security": [{"projectKey": []}],
        "parameters": [
            _REQUEST_ID_PARAM, _IDEMPOTENCY_PARAM,
            _definite_query("table", _DEFINITE_TABLE, "The table"),
            _definite_query("mode", {"enum": ["append", "merge"]}, "append (default) or merge"),
            _definite_query("primary_key", {"type": "string", "minLength": 1},
                            "The one key column of mode merge"),
            _definite_query("wait", {"type": "boolean"}, "Wait for the commit"),
        ],
        "requestBody": {"required": True, "content": {
            **_json(DEFINITE_REQUEST, DEFINITE_EXAMPLE)["content"],
            "application/x-ndjson": ndjson}},
        "responses": {
            "200": {"description": "Rows validated, counted and queued (with dry_run=true: "
                                   "the verdict, nothing stored)",
                    **_ACCEPTED_OR_DRY_RUN_HEADERS,
                    **_json({"oneOf": [DEFINITE_ANSWER, DRY_RUN_ANSWER]}, ok)},
            **_errors(400, 401, 404, 409, 413, 415, 422, 429, 503,
                      examples={400: invalid, 404: missing, 429: _LOGURO_OVER_QUOTA},
                      text={404: "Table not found: the namespace or table does not exist",
                            422: "mode merge without a one-column primary_key, or an "
                                 "Idempotency-Key used with another body"}),
        },
    }


def _onesight_ops() -> Schema:
    accepted = {"type": "object", "required": ["success", "data"], "properties": {
        "success": {"const": True}, "data": {
            "type": "object", "required": ["received", "event_ids", "duplicates"],
            "properties": {
                "received": {"type": "integer", "minimum": 1},
                "event_ids": {"type": "array", "items": {"type": "string"}, "description": (
                    "One per event, in request order: its event_id, or a generated UUID")},
                "duplicates": {"type": "integer", "minimum": 0, "description": (
                    "Events acknowledged without being counted or stored (their id was "
                    "accepted before, or earlier in this request)")}}}}}
    invalid = {"success": False, "error": "Invalid string field: zone", "errors": [
        {"index": 0, "code": "invalid_string", "field": "events[0].payload.zone",
         "message": "Invalid string field: zone"}], "error_count": 1, "errors_omitted": 0}
    page = {"type": "object", "required": ["success", "data"], "properties": {
        "success": {"const": True}, "data": {
            "type": "object", "required": ["events", "next_cursor"], "properties": {
                "events": {"type": "array", "items": ONESIGHT_EVENT},
                "next_cursor": {"type": ["string", "null"]}}}}}
    stored = {**ONESIGHT_EXAMPLE["events"][0], "received_at": "2026-04-12T10:30:01.114Z"}
    return {
        "post": {
            "tags": ["OneSight"], "operationId": "onesightIngestEvents",
            "summary": "Ingest typed events (1 to 1,000)",
            "description": (
                "Each event's payload is checked against the project's dataset named by its "
                "`event_type` (an envelope-free definition, registered or inferred under the "
                "project's `unknown_datasets` policy), all or nothing; errors name the event "
                "(`index`) and the path inside it. Stored rows carry `__eventId`, `__source`, "
                "`__eventTime`, `__traceId` and `__receivedAt`."),
            "security": [{"projectKey": []}],
            "parameters": [_REQUEST_ID_PARAM, _IDEMPOTENCY_PARAM],
            "requestBody": {"required": True, **_json(ONESIGHT_REQUEST, ONESIGHT_EXAMPLE)},
            "responses": {
                "202": {"description": "Validated, counted and queued (resent ids only "
                                       "acknowledged)", **_ACCEPTED_HEADERS,
                        **_json(accepted, {"success": True, "data": {
                            "received": 1, "event_ids": ["loc_20260412_001"],
                            "duplicates": 0}})},
                **_errors(400, 401, 404, 409, 413, 415, 422, 429, 503,
                          examples={400: invalid, 429: _LOGURO_OVER_QUOTA}),
            },
        },
        "get": {
            "tags": ["OneSight"], "operationId": "onesightQueryEvents",
            "summary": "Query events by type and date (pages with a cursor)",
            "description": (
                "Events of the key's project, ordered by event time (the payload's "
                "`timestamp` when it is an RFC 3339 date-time, else the time of receipt), "
                "then receipt. Events show up once the worker has committed them to the "
                "lake. Any other parameter, a repeated one or a bad value is a 400 naming it."),
            "security": [{"projectKey": []}],
            "parameters": [
                _query_param("event_type", {"type": "string", "pattern": ID_PARAM_PATTERN},
                             "only this event type (else every type of the project)"),
                _query_param("from", _DATE_OR_TIME, "event time at or after this (RFC 3339, "
                             "or a UTC day YYYY-MM-DD)"),
                _query_param("to", _DATE_OR_TIME, "event time before this (a day YYYY-MM-DD "
                             "includes that day)"),
                _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                       "default": 100}, "events per page"),
                _query_param("cursor", {"type": "string"}, "the previous page's next_cursor "
                             "(with the same event_type)"),
            ],
            "responses": {
                "200": {"description": "A page (next_cursor null on the last one)",
                        **_json(page, {"success": True, "data": {
                            "events": [stored], "next_cursor": None}})},
                **_errors(400, 401, 404),
                "501": {"description": "Not available with STRICTGATE_SINK=jsonl",
                        **_json(_ref("Error"))},
                "503": {"description": "Redis or the lake cannot be read (retry after "
                                       "Retry-After seconds)", **_headers("Retry-After"),
                        **_json(_ref("Error"))},
            },
        },
    }


def _operyn_op(dataset: str, batch: bool) -> Schema:
    kind, one, many = OPERYN_EVENTS[dataset]
    event = _ref(f"Operyn{kind.capitalize()}Event")
    if batch:
        body: Schema = {"type": "array", "minItems": 1, "items": event}
        ok = {"description": "All the events validated, counted and queued",
              **_ACCEPTED_HEADERS, **_json(_ref("OperynAccepted"), {"accepted": len(many)})}
    else:
        body = event
        ok = {"description": "Validated, counted and queued", **_ACCEPTED_HEADERS,
              **_json(_ref("OperynQueued"), {"id": _OPERYN_IDS[kind], "queued": True})}
    invalid = {"statusCode": 400,
               "message": f"Invalid {kind} event: [1] service: Missing field: service"
               if batch else f"Invalid {kind} event: service: Missing field: service",
               "errors": [{**({"index": 1} if batch else {}), "code": "missing_field",
                           "field": "service", "message": "Missing field: service"}],
               "error_count": 1, "errors_omitted": 0}
    examples = {
        400: invalid,
        401: {"statusCode": 401, "message": "Invalid or missing API key"},
        403: {"statusCode": 403, "message": "Organization does not match API key"},
        429: {"statusCode": 429, "message": "Monthly dataset quota exceeded",
              "errors": _LOGURO_OVER_QUOTA["errors"], "quota": _LOGURO_OVER_QUOTA["quota"]},
    }
    article = "an" if kind[0] in "aeiou" else "a"
    return {
        "tags": ["Operyn events"],
        "operationId": f"operyn{kind.capitalize()}{'Batch' if batch else ''}",
        "summary": (f"Ingest a batch of {kind} events" if batch
                    else f"Ingest {article} {kind} event"),
        "description": (
            f"Writes to the project's `{dataset}` dataset (built in; a project may register "
            f"its own stricter definition of `{dataset}`). "
            + ("An array of events, all or nothing: an error names the event's index. "
               if batch else "")
            + "The key goes in `x-api-key` (or `Authorization: Bearer`); without one, only "
              "when the server runs in open mode (`STRICTGATE_OPEN_PROJECT`)."),
        "security": [{"operynApiKey": []}, {"projectKey": []}, {}],
        "parameters": [
            _header_param("x-organization-id", {"type": "string"},
                          "The project (organization) the key belongs to: when sent, it must "
                          "be the key's project (else 403)"),
            _REQUEST_ID_PARAM, _IDEMPOTENCY_PARAM,
        ],
        "requestBody": {"required": True, **_json(body, many if batch else one)},
        "responses": {
            "202": ok,
            **_errors(400, 401, 403, 409, 413, 415, 422, 429, 503, schema="OperynError",
                      examples=examples, text={
                          403: "x-organization-id is not the key's project (or, in open "
                               "mode, the event names a sixth service)",
                          409: f"The project's own definition of `{dataset}` is not an "
                               "event dataset"}),
        },
    }


STORED_RECORD: Schema = {
    "type": "object",
    "description": (
        "A record as sent (fields in definition order: the envelope's, e.g. Loguro's "
        "`timestamp` and `context`, then the declared ones) plus the system fields; "
        "`__eventType` only on records that came with one."),
    "required": ["__traceId", "__datasetVersion", "__receivedAt", "__entryId"],
    "properties": {
        "timestamp": {"type": "string", "format": "date-time",
                      "description": "Loguro and event datasets"},
        "context": {"type": "object", "description": "Loguro datasets"},
        "__traceId": {"type": "string", "description": "the ingest request's X-Request-Id"},
        "__datasetVersion": {"type": "integer", "minimum": 0},
        "__receivedAt": {"type": "string", "format": "date-time",
                         "description": "when the API received it (UTC, milliseconds)"},
        "__entryId": {"type": "string", "description": "the queue entry that carried it"},
        "__eventType": {"type": "string", "minLength": 1, "maxLength": 200,
                        "description": "the job name (`event_type`) of the OrcaSheets request"
                                       " that carried it; absent when it came without one"},
        "__eventId": {"type": "string", "description": "OneSight events only: its id"},
        "__source": {"type": ["string", "null"], "description": "OneSight events only"},
        "__eventTime": {"type": "string", "format": "date-time",
                        "description": "OneSight events only: its payload's timestamp, else "
                                       "its time of receipt"},
        "__replayedAt": {"type": "string", "format": "date-time",
                         "description": "records replayed from the quarantine only: when"},
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
    stored = {**LOGURO_RECORD, "__traceId": "req_123", "__datasetVersion": 1,
              "__receivedAt": "2026-06-10T10:58:00.265Z",
              "__entryId": "alice/1781089080265-0"}
    return {
        "tags": ["Records"],
        "operationId": "readRecords",
        "summary": "Read a dataset's records in receipt order (pages with a cursor)",
        "description": (
            "Records of the key's project only. Any other query parameter, a repeated one "
            "or a bad value is a 400 whose `field` names the parameter. Pass the same "
            "from/to/version with a cursor. `Accept: application/x-ndjson` answers one "
            "record per line, the next cursor in the X-Next-Cursor header (absent on the "
            "last page)."),
        "security": [{"projectKey": []}],
        "parameters": [
            _path_param("dataset_id", "13"),
            _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                   "default": 100}, "records per page"),
            _query_param("cursor", {"type": "string"},
                         "the previous page's next_cursor (opaque)"),
            _query_param("from", _DATE_OR_TIME,
                         "__receivedAt at or after this (RFC 3339, or a UTC day YYYY-MM-DD)"),
            _query_param("to", _DATE_OR_TIME,
                         "__receivedAt before this (a day YYYY-MM-DD includes that day)"),
            _query_param("version", {"type": "integer", "minimum": 0},
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
                    "application/json": {
                        "schema": page,
                        "example": {"success": True, "records": [stored],
                                    "next_cursor": None}},
                    "application/x-ndjson": {"schema": _ref("StoredRecord")},
                },
            },
            **_errors(400, 401, 404),
            "501": {"description": "Not available with STRICTGATE_SINK=jsonl",
                    **_json(_ref("Error"))},
            "503": {"description": "Redis or the lake cannot be read (retry after Retry-After "
                                   "seconds)", **_headers("Retry-After"), **_json(_ref("Error"))},
        },
    }


def _admin(operation_id: str, summary: str, ok: str, ok_schema: Schema, *errors: int,
           body: Schema | None = None, params: list[Schema] | None = None,
           created: bool = False, example: Any = None) -> Schema:
    op: Schema = {
        "tags": ["Admin"], "operationId": operation_id,
        "summary": summary, "security": [{"adminToken": []}],
        "parameters": params or [],
        "responses": {ok: {"description": "OK", **_json(ok_schema)}, **_errors(401, *errors)},
    }
    if created:
        op["responses"]["201"] = {"description": "Created", **_json(ok_schema)}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body, example)}
        # every admin body is read under a size cap
        op["responses"].update(_errors(413))
    return op


OBJ: Schema = {"type": "object"}
DATASET_SETTINGS: Schema = {
    "type": "object", "required": ["project_id", "dataset_id", "on_invalid",
                                   "quarantine_retention_days"],
    "additionalProperties": False,
    "properties": {
        "project_id": {"type": "string", "pattern": ID_PARAM_PATTERN},
        "dataset_id": {"type": "string", "pattern": ID_PARAM_PATTERN},
        "on_invalid": {
            "enum": ["reject", "quarantine"],
            "description": "`reject` (the default): a request with an invalid record is a "
                           "400, nothing stored. `quarantine`: its valid records are admitted "
                           "and the invalid ones kept with their errors, replayable."},
        "quarantine_retention_days": {
            "type": "integer", "minimum": 1, "maximum": 3650, "default": 30,
            "description": "Quarantined records older than this are purged"},
    },
}
PROJECT_SETTINGS: Schema = {
    "type": "object", "required": ["project_id", "unknown_datasets"],
    "additionalProperties": False,
    "properties": {
        "project_id": {"type": "string", "pattern": ID_PARAM_PATTERN},
        "unknown_datasets": {
            "enum": ["reject", "infer"],
            "description": "Records for a dataset nobody registered (OrcaSheets' "
                           "`metric_name`): `reject` (the default) answers 400 \"Dataset "
                           "schema not found\"; `infer` registers a definition inferred from "
                           "the first rows (later rows may add optional columns)."},
    },
}

DESCRIPTION = """\
Strict dataset ingest with exact monthly quotas. Four public ingest APIs are spoken:

- **Loguro dataset ingest** (`/datasets/...`): records checked strictly against the
  dataset's registered definition; the project API key as `Authorization: Bearer`.
- **Operyn events** (`/events/...`): log, metric and deployment events into the project's
  built-in `logs`, `metrics` and `deployments` datasets; the key in `x-api-key`.
- **OrcaSheets** (`/v1/logs`): rows for several of the project's tables in one request.
- **OneSight** (`/api/openapi/v1/data/events`): typed events with per-event ids, and the
  query that reads them back.
- **Definite** (`/v2/stream`): JSON or NDJSON rows appended to one table per request.

Every 2xx of an ingest route carries `X-Quota-Limit`, `X-Quota-Remaining` and
`X-Quota-Reset`; over quota is a 429 with `Retry-After`. Every answer carries
`X-Request-Id`. Send `Idempotency-Key` to make retries safe.

Raw document: [/openapi.json](openapi.json) · Swagger UI: [/api](api) ·
reference: [/reference](reference).
"""

TAGS = [
    {"name": "Loguro dataset ingest",
     "description": "The Loguro Dataset Ingest API: one record or a batch into a dataset"},
    {"name": "OrcaSheets",
     "description": "The OrcaSheets universal endpoint: rows for several tables at once"},
    {"name": "Operyn events",
     "description": "The Operyn ingestion API: logs, metrics and deployments"},
    {"name": "OneSight",
     "description": "The OneSight data API: typed events with per-event ids, and their query"},
    {"name": "Definite",
     "description": "The Definite Stream API: JSON or NDJSON rows into one table"},
    {"name": "Records", "description": "Reading a dataset back from the lake"},
    {"name": "Admin", "description": "Datasets, API keys and quotas (admin token)"},
    {"name": "Operations", "description": "Health, readiness and metrics"},
]


def openapi_document() -> Schema:
    """The OpenAPI 3.1 document (a fresh copy: callers may change it)."""
    project = _path_param("project_id", "demo")
    dataset = _path_param("dataset_id", "13")
    user = _path_param("user_id", "alice")
    key = _path_param("key_id")
    version = {"name": "n", "in": "path", "required": True,
               "schema": {"type": "integer", "minimum": 0}}
    ds = "/admin/projects/{project_id}/datasets/{dataset_id}"
    quota_body = {"type": "object", "required": ["monthly_limit"], "additionalProperties": False,
                  "properties": {"monthly_limit": {"type": "integer", "minimum": -1}}}
    definition_example = {"description": "The billing dataset (Loguro dataset 13).",
                          "fields": {"country": "string", "plan": "string", "amount": "number",
                                     "active": "boolean", "signup_at": "timestamp"}}
    paths: Schema = {
        "/datasets/{dataset_id}": {"post": _ingest_op(False, True)},
        "/datasets/{dataset_id}/batch": {"post": _ingest_op(True, True)},
        "/datasets": {"post": _ingest_op(False, False)},
        "/datasets/batch": {"post": _ingest_op(True, False)},
        "/datasets/{dataset_id}/records": {"get": _read_op()},
    }
    paths["/v1/logs"] = {"post": _orcasheets_op()}
    paths["/api/openapi/v1/data/events"] = _onesight_ops()
    paths["/v2/stream"] = {"post": _definite_op()}
    for name in OPERYN_EVENTS:
        paths[f"/events/{name}"] = {"post": _operyn_op(name, False)}
        paths[f"/events/{name}/batch"] = {"post": _operyn_op(name, True)}
    paths.update({
        ds: {
            "put": _admin("putDataset", "Create (201) or update (200) a dataset definition",
                          "200", OBJ, 400, 409, 503, created=True, body=OBJ,
                          example=definition_example, params=[project, dataset, {
                              "name": "dry_run", "in": "query", "required": False,
                              "schema": {"type": "boolean"}}]),
            "get": _admin("getDataset", "Latest definition", "200", OBJ, 400, 404,
                          params=[project, dataset]),
            "delete": _admin("deleteDataset", "Delete a dataset", "200", OBJ, 400, 404,
                             params=[project, dataset]),
        },
        ds + "/versions/{n}": {
            "get": _admin("getDatasetVersion", "One version of a definition", "200", OBJ, 400,
                          404, params=[project, dataset, version]),
        },
        "/admin/projects/{project_id}/datasets": {
            "get": _admin("listDatasets", "List datasets", "200", OBJ, 400, params=[project]),
        },
        "/admin/projects/{project_id}/settings": {
            "put": _admin("putProjectSettings", "Set project settings (those named; the "
                          "others keep their values)", "200", PROJECT_SETTINGS, 400, 503,
                          body={"type": "object", "minProperties": 1,
                                "additionalProperties": False, "properties": {
                                    "unknown_datasets":
                                        PROJECT_SETTINGS["properties"]["unknown_datasets"]}},
                          example={"unknown_datasets": "infer"}, params=[project]),
            "get": _admin("getProjectSettings", "Project settings (defaults included)", "200",
                          PROJECT_SETTINGS, 400, 503, params=[project]),
        },
        "/admin/projects/{project_id}/keys": {
            "post": _admin("createKey", "Create a project API key", "201", {
                "type": "object", "required": ["key_id", "api_key"],
                "properties": {"key_id": {"type": "string"}, "api_key": {"type": "string"}},
            }, 400, body={"type": "object", "required": ["user_id"],
                          "properties": {"user_id": {"type": "string"}}},
                example={"user_id": "alice"}, params=[project]),
            "get": _admin("listKeys", "List keys (no secrets)", "200", OBJ, 400,
                          params=[project]),
        },
        "/admin/projects/{project_id}/keys/{key_id}": {
            "delete": _admin("revokeKey", "Revoke a key", "200", OBJ, 400, 404,
                             params=[project, key]),
        },
        "/admin/users/{user_id}/quota": {
            "put": _admin("setQuota", "Set the monthly limit", "200", OBJ, 400,
                          body=quota_body, example={"monthly_limit": 1000}, params=[user]),
            "get": _admin("getQuota", "Get the monthly limit", "200", OBJ, 400, params=[user]),
        },
        "/admin/users/{user_id}/usage": {
            "get": _admin("getUsage", "Usage of a month", "200", OBJ, 400, params=[user, {
                "name": "period", "in": "query", "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}}]),
        },
        "/healthz": {"get": {
            "tags": ["Operations"], "operationId": "healthz", "summary": "Liveness",
            "responses": {"200": {"description": "alive", **_json(OBJ, {"status": "ok"})}}}},
        "/readyz": {"get": {
            "tags": ["Operations"], "operationId": "readyz",
            "summary": "Readiness (Redis, registry and the output sink)", "responses": {
                "200": {"description": "ready", **_json(OBJ)},
                "503": {"description": "not ready", **_headers("Retry-After"),
                        **_json(_ref("Error"))}}}},
        "/metrics": {"get": {
            "tags": ["Operations"], "operationId": "metrics",
            "summary": "Prometheus metrics", "responses": {"200": {
                "description": "text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    })
    paths[ds + "/settings"] = {
        "put": _admin("putDatasetSettings", "Set dataset settings (those named; the others "
                      "keep their values; a new definition version keeps them)", "200",
                      DATASET_SETTINGS, 400, 404, 503,
                      body={"type": "object", "minProperties": 1, "additionalProperties": False,
                            "properties": {k: DATASET_SETTINGS["properties"][k]
                                           for k in ("on_invalid",
                                                     "quarantine_retention_days")}},
                      example={"on_invalid": "quarantine"}, params=[project, dataset]),
        "get": _admin("getDatasetSettings", "Dataset settings (defaults included)", "200",
                      DATASET_SETTINGS, 400, 404, 503, params=[project, dataset]),
    }
    paths.update(_quarantine_paths(ds, project, dataset))
    _add_dry_run(paths)
    _add_request_id(paths)
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "strictgate", "version": "0.1.0", "description": DESCRIPTION},
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": {
                "Error": ERROR_BODY, "ErrorItem": ERROR_ITEM, "QuotaDetails": QUOTA_DETAILS,
                "Record": RECORD, "StoredRecord": STORED_RECORD,
                "OperynLogEvent": OPERYN_LOG_EVENT, "OperynMetricEvent": OPERYN_METRIC_EVENT,
                "OperynDeploymentEvent": OPERYN_DEPLOYMENT_EVENT,
                "OperynQueued": OPERYN_QUEUED, "OperynAccepted": OPERYN_ACCEPTED,
                "OperynError": OPERYN_ERROR,
            },
            "headers": HEADERS,
            "securitySchemes": {
                "projectKey": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "A project API key (POST "
                                              "/admin/projects/{project_id}/keys)"},
                "operynApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                 "description": "The same project API key, as Operyn "
                                                "clients send it"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "The admin token (STRICTGATE_ADMIN_TOKEN, or "
                                              "<data dir>/admin-token)"},
            },
        },
    })


DRY_RUN_ANSWER: Schema = {
    "type": "object", "required": ["success", "dry_run", "outcome", "status", "records"],
    "description": "What the request would have done; nothing was counted, queued or stored",
    "properties": {
        "success": {"const": True}, "dry_run": {"const": True},
        "outcome": {"enum": ["accepted", "quarantined", "rejected", "quota_exceeded"]},
        "status": {"enum": [202, 400, 429], "description": "what the real request answers"},
        "records": {"type": "integer"}, "valid": {"type": "integer"},
        "invalid": {"type": "integer"}, "admitted": {"type": "integer"},
        "quarantined": {"type": "integer"}, "error_count": {"type": "integer"},
        "errors": {"type": "array", "items": _ref("ErrorItem"),
                   "description": "every error of every invalid record (at most 10,000)"},
        "errors_omitted": {"type": "integer"},
        "quota": {"type": "object", "properties": {
            "limit": {"type": "integer"}, "used": {"type": "integer"},
            "remaining": {"type": "integer"}, "requested": {"type": "integer"}}},
    },
}
_DRY_RUN_PARAM: Schema = {
    "name": "dry_run", "in": "query", "required": False, "schema": {"type": "boolean"},
    "description": "Validate only: the full verdict on every record in a 200, nothing "
                   "counted, queued or stored"}


QUARANTINED_RECORD: Schema = {
    "type": "object",
    "required": ["record", "errors", "dataset_version", "trace_id", "received_at"],
    "properties": {
        "record": {"description": "the record as sent (its text when JSON cannot carry it "
                                  "exactly, e.g. an integer beyond 64 bits)"},
        "errors": {"type": "array", "items": _ref("ErrorItem")},
        "dataset_version": {"type": "integer", "description": "the version it last failed"},
        "trace_id": {"type": "string"}, "received_at": {"type": "string",
                                                        "format": "date-time"},
        "entry_id": {"type": "string"}, "seq": {"type": "integer"},
        "index": {"type": "integer", "description": "its place in the request"},
        "event": {"type": "object", "description": "a OneSight event's id, source and time"},
    },
}


def _quarantine_paths(ds: str, project: Schema, dataset: Schema) -> Schema:
    """The quarantine's admin routes: list, stats, replay."""
    page = {"type": "object", "required": ["success", "records", "next_cursor"],
            "properties": {"success": {"const": True},
                           "records": {"type": "array", "items": QUARANTINED_RECORD},
                           "next_cursor": {"type": ["string", "null"]}}}
    stats = {"type": "object", "required": ["success", "total", "by_code"], "properties": {
        "success": {"const": True}, "total": {"type": "integer"},
        "by_code": {"type": "object", "additionalProperties": {"type": "integer"},
                    "description": "records having each error code"}}}
    replayed = {"type": "object", "required": ["success", "replayed", "still_invalid",
                                               "remaining", "stopped"], "properties": {
        "success": {"type": "boolean"}, "replayed": {"type": "integer"},
        "still_invalid": {"type": "integer"}, "skipped_already_replayed": {"type": "integer"},
        "duplicates": {"type": "integer", "description": "OneSight events whose event_id the "
                       "project accepted meanwhile: removed, not admitted"},
        "remaining": {"type": "integer"},
        "stopped": {"type": ["object", "null"], "description": "why it stopped early "
                    "(quota_exceeded: run it again once the quota allows)"}}}
    window = [
        _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                               "default": 100}, "records per page"),
        _query_param("cursor", {"type": "string"}, "the previous page's next_cursor"),
        _query_param("code", {"type": "string"}, "only records with one of these error "
                     "codes (comma-separated)"),
        _query_param("from", _DATE_OR_TIME, "received at or after this"),
        _query_param("to", _DATE_OR_TIME, "received before this (a day includes that day)"),
    ]
    replay_body = {"type": "object", "additionalProperties": False, "properties": {
        "code": {"type": "string"}, "from": _DATE_OR_TIME, "to": _DATE_OR_TIME,
        "limit": {"type": "integer", "minimum": 1}}}
    return {
        ds + "/quarantine": {"get": _admin(
            "listQuarantine", "A dataset's quarantined records with their errors, in "
            "receipt order (pages with a cursor)", "200", page, 400, 404, 501, 503,
            params=[project, dataset, *window])},
        ds + "/quarantine/stats": {"get": _admin(
            "quarantineStats", "How many records are quarantined, in all and per error code",
            "200", stats, 400, 404, 501, 503, params=[project, dataset])},
        ds + "/quarantine/replay": {"post": _admin(
            "replayQuarantine", "Re-check quarantined records against the current definition;"
            " admit those now valid, each exactly once (Accept: application/x-ndjson streams "
            "progress)", "200", replayed, 400, 404, 501, 503, body=replay_body,
            example={"code": "invalid_number"}, params=[project, dataset])},
    }


def _add_dry_run(paths: Schema) -> None:
    """Every ingest route takes ``?dry_run=true`` and answers it with a 200."""
    for route in INGEST_ROUTES:
        operation = paths[route.path]["post"]
        operation["parameters"] = [*operation.get("parameters", []), _DRY_RUN_PARAM]
        operation["responses"] = {"200": {
            "description": "Dry run (dry_run=true): the verdict, nothing stored",
            **_json(DRY_RUN_ANSWER)}, **operation["responses"]}


def _add_request_id(paths: Schema) -> None:
    """Every answer carries X-Request-Id: say so on every documented response."""
    for operations in paths.values():
        for operation in operations.values():
            for response in operation["responses"].values():
                # a new dict: response headers may be shared between operations
                response["headers"] = {**response.get("headers", {}), "X-Request-Id": {
                    "$ref": "#/components/headers/X-Request-Id"}}

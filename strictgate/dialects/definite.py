"""The Definite Stream API: ``POST /v2/stream``, rows pushed into one table per request.

A JSON body is ``{"data": <row or array of rows>, "config": {"table", "mode"?,
"primary_key"?, "wait"?, "tags"?}}``; an NDJSON body (``Content-Type:
application/x-ndjson``) is one row per line, its config in the query string
(``?table=&mode=&primary_key=&wait=``). Values concatenated on one line (what
``curl -d @-`` makes of a file: it drops the newlines) are rows too. Bearer project keys.

``config.table`` is ``namespace.table`` or ``LAKE.namespace.table`` and names the project's
dataset ``namespace.table``, whose definition must be envelope-free (rows are its columns);
a table nobody registered follows the project's ``unknown_datasets`` policy (``reject``: 404
``table_not_found``; ``infer``: created on first write, nested values allowed). Rows are
checked against the definition under the dataset's ``on_invalid`` policy: ``reject`` answers
a 400 naming each bad row (``data[3].amount``; ``rows[3]`` for NDJSON), ``quarantine``
admits the good rows and answers the others in ``rejected_rows`` and ``errors``.

Limits (the Definite docs'): :data:`MAX_PAYLOAD_BYTES` after decompression and
:data:`MAX_ROWS` rows (this route's own limit, whatever ``STRICTGATE_MAX_RECORDS`` says; the
payload also capped by the server's ``STRICTGATE_MAX_BODY_BYTES``) answer 413; a top-level
field whose JSON text is longer than :data:`MAX_FIELD_BYTES`, or a row nested deeper than
:data:`MAX_DEPTH` (the row itself is level 1), answers 400 naming the row and the field.

The answer is 200 with the Definite fields: ``success``, ``request_id`` (the request's
``X-Request-Id``), ``stream_id`` (derived from the ``Idempotency-Key`` when there is one, so
a replay names the same stream), ``table``, ``accepted`` (rows parsed), ``successful_rows``
(rows queued), ``rejected_rows`` (rows quarantined), ``partitions`` (always ``[]``: the lake
tables are not partitioned), ``snapshot_id``, ``warnings``, ``errors``. ``tags`` are checked
(an object of at most :data:`MAX_TAGS` short string values) and not stored. Errors are the
strictgate grammar (``{"success": false, "error", "errors": [...]}``), with the Definite
statuses: 400, 401, 404, 413, 422, 429.

``mode: "merge"`` needs ``primary_key``, a list of exactly one column name (422
``invalid_primary_key`` otherwise; ``primary_key`` with ``append`` too). Every row must
carry that column with a string, number or boolean value (400 ``missing_primary_key`` or
``invalid_primary_key`` naming the row), and no two rows of the request the same value
(400 ``duplicate_primary_key`` naming both rows: the whole request is refused; numbers
are compared by value, so ``1`` and ``1.0`` are the same key). The rows are queued with
the key column as their entry's ``merge_key``, and the lake worker merges them: each
replaces the stored rows with that key, or is inserted when the key is new, and of two
writes of one key the one admitted last is kept, whatever order they are committed in
(:mod:`strictgate.lake.writer`).

``wait: false`` answers once the rows are durably queued, ``snapshot_id`` null. ``wait:
true`` answers once the lake worker has committed them, with the id of the lake snapshot
holding them (``strictgate sql`` reads the table as of it with ``AT (VERSION => <id>)``),
waiting at most ``STRICTGATE_COMMIT_WAIT_S`` (:mod:`strictgate.ingest.commit_wait`). Past
that bound, or when Redis cannot tell during the wait, the answer is still 200 (the rows
are durably queued and will be committed: a retry would store them twice), with
``snapshot_id`` null and a warning saying so; with ``STRICTGATE_SINK=jsonl`` (no lake) it
answers at once, ``snapshot_id`` null and a warning.

The core hands :meth:`Definite.split` the body only, while an NDJSON body's config is in the
query string and the answer needs the request's config: :meth:`Definite.principal`, which
the core awaits first in the same task, keeps what the later steps need in a context
variable (each request runs in its own task, so it never leaks into another request).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import GenericAlias
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response

from quota.keys import ID_PATTERN
from strictgate.dialects.base import Dialect, IngestRoute, Part, Split, envelope_problem
from strictgate.errors import ApiError, clip, error_response, json_response
from strictgate.ingest.auth import authenticate
from strictgate.ingest.body import accept_media_type, media_type
from strictgate.ingest.commit_wait import unwatch_commits, wait_for_commit, watch_commits
from strictgate.queue_entry import merge_key_problem
from strictgate.unavailable import REDIS_FAILURES, redis_step
from validator import compile_dataset

if TYPE_CHECKING:
    from strictgate.context import AppContext
    from strictgate.ingest.core import Outcome
    from strictgate.registry.apikeys import Principal

PATH = "/v2/stream"
NDJSON = "application/x-ndjson"
MAX_PAYLOAD_BYTES = 10_000_000
MAX_ROWS = 50_000
MAX_FIELD_BYTES = 1_000_000
MAX_DEPTH = 10
MAX_TAGS = 50
"""Members of ``config.tags``."""
MAX_TAG_CHARS = 256
"""The longest tag name and value, in characters."""
QUERY_CONFIG = ("table", "mode", "primary_key", "wait")
"""The query parameters of an NDJSON request (``dry_run`` besides)."""
WAIT_TIMEOUT_WARNING = (
    "wait=true: the rows are durably queued and will be committed to the lake, but were not "
    "committed within {seconds:g} s (STRICTGATE_COMMIT_WAIT_S), so snapshot_id is null")
WAIT_UNKNOWN_WARNING = (
    "wait=true: the rows are durably queued and will be committed to the lake; whether they "
    "are committed yet could not be learned (Redis did not answer), so snapshot_id is null")
WAIT_NO_LAKE_WARNING = (
    "wait=true: this server writes JSON Lines files, not a lake (STRICTGATE_SINK=jsonl), so "
    "there is no snapshot to wait for: the rows are durably queued and snapshot_id is null")

accept_media_type(PATH, NDJSON)

_PART = re.compile("[A-Za-z0-9][A-Za-z0-9_-]*")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class _Config:
    """A request's config, from its body or its query string."""

    table: str
    mode: str = "append"
    primary_key: list[str] | None = None
    wait: bool = False
    tags: dict[str, str] | None = None


class _WireConfig(msgspec.Struct, forbid_unknown_fields=True):
    table: str
    mode: str | msgspec.UnsetType = msgspec.UNSET
    primary_key: list[str] | msgspec.UnsetType = msgspec.UNSET
    wait: bool | msgspec.UnsetType = msgspec.UNSET
    tags: dict[str, str] | msgspec.UnsetType = msgspec.UNSET

    def quotes(self) -> int:
        """The quotes this config holds when no member is repeated (no backslash in it)."""
        quotes = 4
        if isinstance(self.mode, str):
            quotes += 4
        if isinstance(self.primary_key, list):
            quotes += 2 + 2 * len(self.primary_key)
        if isinstance(self.wait, bool):
            quotes += 2
        if isinstance(self.tags, dict):
            quotes += 2 + 4 * len(self.tags)
        return quotes

    def config(self) -> _Config:
        """The config with its defaults."""
        return _Config(self.table, self.mode if isinstance(self.mode, str) else "append",
                       self.primary_key if isinstance(self.primary_key, list) else None,
                       self.wait if isinstance(self.wait, bool) else False,
                       self.tags if isinstance(self.tags, dict) else None)


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    data: msgspec.Raw
    config: msgspec.Raw


_DECODE = msgspec.json.Decoder(_Body)
_CONFIG = msgspec.json.Decoder(_WireConfig)
_ROWS = msgspec.json.Decoder(list[msgspec.Raw])
_RAW = msgspec.json.Decoder(msgspec.Raw)
# The envelope as a definition: the precise check that names what is wrong.
_ENVELOPE = compile_dataset({"envelope": "none", "fields": {
    "data": {"type": ["object", "array"], "additionalProperties": True},
    "config": {"type": "object", "required": ["table"], "additionalProperties": False,
               "properties": {
                   "table": "string", "mode": "string", "wait": "boolean",
                   "primary_key": {"type": "array", "items": "string"},
                   "tags": {"type": "object", "additionalProperties": {
                       "type": "string", "maxLength": MAX_TAG_CHARS}}}},
}})


@dataclass
class _Exchange:
    """What one request's later steps need from the request (see the module docstring)."""

    ndjson: bool
    query: list[tuple[str, str]]
    idempotency_key: str | None
    project_id: str
    table: str = ""
    wait: bool = False
    warnings: list[str] = field(default_factory=list)
    watching: bool = False
    """Whether :meth:`Definite.before_admission` watches the table's queue for commits."""
    snapshot_id: int | None = None


_EXCHANGE: ContextVar[_Exchange] = ContextVar("definite_exchange")


def dataset_of(table: str, field_name: str) -> str:
    """The dataset id ``namespace.table`` of a Definite table name (``namespace.table`` or
    ``LAKE.namespace.table``); 400 ``invalid_table`` otherwise."""
    parts = table.split(".")
    if len(parts) == 3 and parts[0] == "LAKE":
        parts = parts[1:]
    if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts) \
            or not ID_PATTERN.match(".".join(parts)):
        raise ApiError(400, f"Invalid table: {clip(table, 80)} (expected namespace.table or "
                       "LAKE.namespace.table, each part letters, digits, _ or -)",
                       "invalid_table", field=field_name)
    return ".".join(parts)


def _mode(config: _Config, where: str) -> str | None:
    """The merge key column (None: append), or an :class:`ApiError` for a mode and
    ``primary_key`` that do not go together (see the module docstring on merge)."""
    if config.mode not in ("append", "merge"):
        raise ApiError(400, f"Invalid mode: {clip(config.mode, 40)} (append or merge)",
                       "invalid_mode", field=f"{where}mode")
    key = config.primary_key
    if config.mode == "append":
        if key is not None:
            raise ApiError(422, "primary_key applies to mode merge only", "invalid_primary_key",
                           field=f"{where}primary_key")
        return None
    if key is None or len(key) != 1 or merge_key_problem(key[0]) is not None:
        raise ApiError(422, "mode merge requires primary_key: a list of exactly one column "
                       "name", "invalid_primary_key", field=f"{where}primary_key")
    return key[0]


def _key_identity(value: object) -> tuple[str, object] | None:
    """What makes two key values the same key (numbers by value, never equal to a boolean
    or a string), or None for a value that cannot be a key (null, object, array)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def check_merge_keys(rows: list[bytes], key: str, record_path: str) -> None:
    """400 unless every row carries ``key`` with a string, number or boolean value, no two
    rows the same one (the first such pair named). One decode of the rows, the key's value
    only (the rest of each row is skipped, not built)."""
    struct = msgspec.defstruct("_Key", [("value", Any, msgspec.UNSET)],
                               rename={"value": key})
    try:
        keys: list[Any] = msgspec.json.decode(b"[" + b",".join(rows) + b"]",
                                              type=GenericAlias(list, (struct,)))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # not JSON objects: the validator names what is wrong
    shown = clip(key, 80)
    seen: dict[tuple[str, object], int] = {}
    for index, row in enumerate(keys):
        value = row.value
        where = record_path.format(index=index)
        if value is msgspec.UNSET or value is None:
            raise ApiError(400, f"Row {where} has no value for the primary key {shown} "
                           "(mode merge needs it on every row, not null)",
                           "missing_primary_key", field=f"{where}.{shown}")
        identity = _key_identity(value)
        if identity is None:
            raise ApiError(400, f"Row {where}: the primary key {shown} must be a string, "
                           "a number or a boolean", "invalid_primary_key",
                           field=f"{where}.{shown}")
        first = seen.setdefault(identity, index)
        if first != index:
            before = record_path.format(index=first)
            raise ApiError(
                400, f"Rows {before} and {where} have the same primary key {shown}: a "
                "merge request must not repeat a key (the whole request is refused)",
                "duplicate_primary_key", field=f"{where}.{shown}", errors=[
                    {"index": i, "code": "duplicate_primary_key",
                     "field": f"{record_path.format(index=i)}.{shown}",
                     "message": f"Rows {before} and {where} have the same primary key"}
                    for i in (first, index)])


def _tags(config: _Config) -> None:
    tags = config.tags
    if tags is None:
        return
    if len(tags) > MAX_TAGS:
        raise ApiError(400, f"Too many tags (at most {MAX_TAGS})", "invalid_tags",
                       field="config.tags")
    for name, value in tags.items():
        if len(name) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
            raise ApiError(400, f"Tag names and values are at most {MAX_TAG_CHARS} "
                           "characters", "invalid_tags", field="config.tags")


def _json_body(body: bytes) -> tuple[_Config, list[bytes], str]:
    """The config, the rows and the rows' error path of a JSON body."""
    try:
        decoded: _Body | None = _DECODE.decode(body)
        assert decoded is not None
        wire: _WireConfig | None = _CONFIG.decode(decoded.config)
    except (msgspec.DecodeError, msgspec.ValidationError):
        decoded = wire = None
    if decoded is None or wire is None or b"\\" in body or (
            body.count(b'"') != 4 + bytes(decoded.data).count(b'"')
            + bytes(decoded.config).count(b'"')
            or bytes(decoded.config).count(b'"') != wire.quotes()):
        problem = envelope_problem(_ENVELOPE, body)
        if problem is not None:
            raise problem
        if decoded is None or wire is None:
            raise ApiError(400, "Invalid JSON body", "invalid_json")
    assert decoded is not None and wire is not None
    config = wire.config()
    data = bytes(decoded.data)
    if data.startswith(b"{"):
        return config, [data], "data"
    try:
        rows = [bytes(row) for row in _ROWS.decode(data)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(400, "data must be an object or an array of objects",
                       "invalid_data", field="data") from None
    if not rows:
        raise ApiError(400, "data holds no rows", "empty_data", field="data")
    for index, row in enumerate(rows):
        if not row.startswith(b"{"):
            raise ApiError(400, "Each row must be a JSON object", "invalid_row",
                           field=f"data[{index}]")
    return config, rows, "data[{index}]"


def _line_rows(line: bytes, number: int) -> list[bytes]:
    """The rows of one NDJSON line: one value, or several written back to back."""
    try:
        return [bytes(_RAW.decode(line))]
    except msgspec.DecodeError:
        pass
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise ApiError(400, f"Invalid UTF-8 on line {number}", "invalid_json") from None
    decoder = json.JSONDecoder()
    rows: list[bytes] = []
    position = 0
    while position < len(text):
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            raise ApiError(400, f"Invalid JSON on line {number}", "invalid_json") from None
        rows.append(text[position:end].encode())
        position = end
        while position < len(text) and text[position] in " \t\r":
            position += 1
    return rows


def _ndjson_rows(body: bytes) -> list[bytes]:
    """The rows of an NDJSON body, in order (blank lines skipped)."""
    rows: list[bytes] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip(b" \t\r")
        if line:
            rows += _line_rows(line, number)
    if not rows:
        raise ApiError(400, "The body holds no rows", "empty_data")
    for index, row in enumerate(rows):
        if not row.startswith(b"{"):
            raise ApiError(400, "Each row must be a JSON object", "invalid_row",
                           field=f"rows[{index}]")
    return rows


def _query_config(query: list[tuple[str, str]]) -> _Config:
    """An NDJSON request's config, from its query string."""
    seen: dict[str, str] = {}
    for name, value in query:
        if name == "dry_run":
            continue
        if name not in QUERY_CONFIG:
            raise ApiError(400, f"Unknown query parameter: {clip(name, 40)} (table, mode, "
                           "primary_key, wait)", "unknown_parameter", field=clip(name, 40))
        if name in seen:
            raise ApiError(400, f"Query parameter {name} given twice", "repeated_parameter",
                           field=name)
        seen[name] = value
    if "table" not in seen:
        raise ApiError(400, "An NDJSON body needs the table in the query string "
                       "(?table=namespace.table)", "missing_table", field="table")
    wait = _BOOLS.get(seen.get("wait", "false").lower())
    if wait is None:
        raise ApiError(400, "wait must be true or false", "invalid_wait", field="wait")
    key = seen.get("primary_key")
    return _Config(table=seen["table"], mode=seen.get("mode", "append"),
                   primary_key=None if key is None else key.split(","), wait=wait)


def _depth(value: Any, limit: int) -> int:
    """``value``'s nesting depth (a scalar is 0), counted no further than ``limit + 1``."""
    if limit < 0:
        return 1
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def check_row_limits(rows: list[bytes], record_path: str) -> None:
    """400 for a field larger than :data:`MAX_FIELD_BYTES` or a row nested deeper than
    :data:`MAX_DEPTH`, naming the row and the field. Only rows that could break a limit
    (longer than the field limit, more brackets than the depth) are decoded."""
    for index, row in enumerate(rows):
        big = len(row) > MAX_FIELD_BYTES
        deep = row.count(b"{") + row.count(b"[") > MAX_DEPTH
        if not big and not deep:
            continue
        try:
            members = orjson.loads(row)
        except orjson.JSONDecodeError:
            continue  # the validator names what is wrong with it
        where = record_path.format(index=index)
        for name, value in members.items():
            place = f"{where}.{clip(name, 80)}"
            if big and len(orjson.dumps(value)) > MAX_FIELD_BYTES:
                raise ApiError(400, f"Field {place} is larger than {MAX_FIELD_BYTES} bytes",
                               "field_too_large", field=place)
            if deep and 1 + _depth(value, MAX_DEPTH) > MAX_DEPTH:
                raise ApiError(400, f"Field {place} is nested deeper than {MAX_DEPTH} levels",
                               "too_deep", field=place)


def stream_id(idempotency_key: str | None, project_id: str) -> str:
    """``st_`` and 12 hex digits: derived from the idempotency key when there is one."""
    if idempotency_key is None:
        return "st_" + uuid.uuid4().hex[:12]
    digest = hashlib.sha256(f"{project_id}\x00{idempotency_key}".encode()).hexdigest()
    return "st_" + digest[:12]


class Definite(Dialect):
    """The Definite Stream API (see the module docstring)."""

    name = "definite"
    splits = True
    envelope_free_only = True
    max_records = MAX_ROWS

    def routes(self) -> list[IngestRoute]:
        """``POST /v2/stream``."""
        return [IngestRoute(PATH, "definite_stream", self, batch=True)]

    async def principal(self, request: Request, ctx: AppContext) -> Principal:
        """The Bearer project key's principal (and what later steps need of the request)."""
        principal = await authenticate(request, ctx)
        _EXCHANGE.set(_Exchange(
            ndjson=media_type(request) == NDJSON,
            query=list(request.query_params.multi_items()),
            idempotency_key=request.headers.get("idempotency-key"),
            project_id=principal.project_id))
        return principal

    def dataset(self, request: Request, route: IngestRoute, path_params: Mapping[str, str]
                ) -> str:
        """Unused: the body (or query string) names the table (see :meth:`split`)."""
        raise AssertionError("Definite requests are split")

    def split(self, route: IngestRoute, body: bytes, max_records: int) -> Split:
        """The request's rows, all for the one table its config names."""
        exchange = _EXCHANGE.get()
        if len(body) > MAX_PAYLOAD_BYTES:
            raise ApiError(413, f"Payload too large (limit {MAX_PAYLOAD_BYTES} bytes after "
                           "decompression)", "body_too_large")
        if exchange.ndjson:
            config, where = _query_config(exchange.query), ""
            rows, record_path, name_path = _ndjson_rows(body), "rows[{index}]", "table"
        else:
            extra = [name for name, _ in exchange.query if name != "dry_run"]
            if extra:
                raise ApiError(400, "A JSON body carries its config in its config member, "
                               f"not in the query string ({clip(extra[0], 40)})",
                               "unknown_parameter", field=clip(extra[0], 40))
            config, rows, record_path = _json_body(body)
            where, name_path = "config.", "config.table"
        dataset_id = dataset_of(config.table, name_path)
        merge_key = _mode(config, where)
        _tags(config)
        most = max_records
        if len(rows) > most:
            raise ApiError(413, f"Too many rows in one request (at most {most})",
                           "too_many_rows")
        check_row_limits(rows, record_path)
        if merge_key is not None:
            check_merge_keys(rows, merge_key, record_path)
        exchange.table = dataset_id
        exchange.wait = config.wait
        return Split([Part(dataset_id, rows, list(range(len(rows))))], len(rows), None,
                     record_path, name_path, flat=False, merge_key=merge_key)

    async def before_admission(self, ctx: AppContext, route: IngestRoute,
                               principal: Principal, dataset_ids: Sequence[str]) -> None:
        """``wait: true`` with the lake sink: watch the table's queue for the commit (before
        admission, so the worker cannot commit the rows unseen); a 503 when Redis fails."""
        exchange = _EXCHANGE.get()
        if not exchange.wait or ctx.settings.sink != "lake":
            return
        async with redis_step(ctx.settings.redis_deadline_s):
            await watch_commits(ctx.redis, principal.user_id, principal.project_id,
                                exchange.table, ctx.settings.commit_wait_s)
        exchange.watching = True

    async def after_admission(self, ctx: AppContext, route: IngestRoute,
                              principal: Principal, outcome: Outcome) -> None:
        """``wait: true``: wait for the commit of the rows (see the module docstring)."""
        exchange = _EXCHANGE.get()
        if not exchange.wait:
            return
        if not exchange.watching:
            exchange.warnings.append(WAIT_NO_LAKE_WARNING)
            return
        bound = ctx.settings.commit_wait_s
        try:
            exchange.snapshot_id = await wait_for_commit(
                ctx.redis, principal.user_id, principal.project_id, exchange.table,
                outcome.entry_ids, bound)
        except REDIS_FAILURES:
            exchange.warnings.append(WAIT_UNKNOWN_WARNING)
        else:
            if exchange.snapshot_id is None:
                exchange.warnings.append(WAIT_TIMEOUT_WARNING.format(seconds=bound))
        finally:
            # the watch expires on its own: a failure here only delays that
            with contextlib.suppress(*REDIS_FAILURES):
                async with asyncio.timeout(ctx.settings.redis_deadline_s):
                    await unwatch_commits(ctx.redis, principal.user_id, principal.project_id,
                                          exchange.table)

    def accepted(self, route: IngestRoute, outcome: Outcome, headers: dict[str, str]
                 ) -> Response:
        """200 with the Definite fields (see the module docstring)."""
        exchange = _EXCHANGE.get()
        quarantined = outcome.quarantined
        rejected = quarantined.count if quarantined is not None else 0
        errors = quarantined.answer_errors() if quarantined is not None else []
        warnings = list(exchange.warnings)
        if quarantined is not None and quarantined.error_count > len(errors):
            warnings.append(f"{quarantined.error_count - len(errors)} more errors of the "
                            "rejected rows are not listed")
        return json_response({
            "success": True, "request_id": headers.get("X-Request-Id", ""),
            "stream_id": stream_id(exchange.idempotency_key, exchange.project_id),
            "table": exchange.table, "accepted": outcome.count + rejected,
            "successful_rows": outcome.count, "rejected_rows": rejected, "partitions": [],
            "snapshot_id": exchange.snapshot_id, "warnings": warnings, "errors": errors,
        }, 200, headers)

    def error(self, route: IngestRoute | None, err: ApiError) -> Response:
        """The strictgate grammar with the Definite statuses: a table that does not exist
        is a 404."""
        if err.code == "dataset_not_found" and err.errors:
            first = err.errors[0]
            name = str(first.get("message", "")).rpartition(": ")[2]
            err = ApiError(404, f"Table not found: {name} (the namespace or table does not "
                           "exist)", "table_not_found", field=first.get("field"),
                           headers=err.headers)
        return error_response(err)

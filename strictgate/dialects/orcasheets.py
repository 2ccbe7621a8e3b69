"""The OrcaSheets universal endpoint: ``POST /v1/logs`` with
``{"event_type": <job name>, "records": [{"metric_name": <table>, "metric_value": <row>}]}``.

One request carries rows for several of the project's datasets (``metric_name``), all or
nothing: one admission counts and queues them together. ``event_type`` is stored with every
row (``__eventType``), so a backfill and the live sync share a table and stay separable.
Bearer project keys; 202 ``{"success": true, "count": n, "status": "queued"}``; errors in the
strictgate grammar with the record's index and a path into the request
(``records[3].metric_value.amount``). A table nobody registered follows the project's
``unknown_datasets`` policy (see :mod:`strictgate.ingest.core`).

The envelope is decoded by msgspec into typed structs (fast; unknown members refused), and
a repeated member (which msgspec would take silently, last one winning) is found by counting
quotes: with no backslash in the body, each string adds exactly two, so the body holds as
many as the envelope's strings plus the rows' own only if no member was repeated. Anything
unusual (a backslash, a decoding error, a row that is not an object) goes to a precise check
of the envelope that names the place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from quota.admission import MAX_ENTRIES
from quota.keys import ID_PATTERN
from strictgate.dialects.base import Dialect, IngestRoute, Part, Split, envelope_problem
from strictgate.errors import ApiError, clip
from strictgate.ingest import answers
from strictgate.ingest.auth import authenticate
from strictgate.queue_entry import event_type_problem
from validator import compile_dataset

if TYPE_CHECKING:
    from strictgate.context import AppContext
    from strictgate.ingest.core import Outcome
    from strictgate.registry.apikeys import Principal

RECORD_PATH = "records[{index}].metric_value"
NAME_PATH = "records[{index}].metric_name"


class _Row(msgspec.Struct, forbid_unknown_fields=True):
    metric_name: str
    metric_value: msgspec.Raw


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    records: list[_Row]


_DECODE = msgspec.json.Decoder(_Body)
# The envelope as a definition: the precise check that names what is wrong.
_ENVELOPE = compile_dataset({"envelope": "none", "fields": {
    "event_type": {"type": "string", "minLength": 1},
    "records": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["metric_name", "metric_value"],
        "properties": {"metric_name": "string",
                       "metric_value": {"type": "object", "additionalProperties": True}}}},
}})
# quotes of '{"event_type":"..","records":[' and of each '{"metric_name":"..","metric_value":'
_BODY_QUOTES = 6
_ROW_QUOTES = 6


def _well_formed(body: bytes, decoded: _Body) -> bool:
    """No member repeated, ``event_type`` and ``records`` not empty, rows objects (see the
    module docstring); False means: ask :func:`~strictgate.dialects.base.envelope_problem`."""
    if not decoded.event_type or not decoded.records or b"\\" in body:
        return False
    quotes = _BODY_QUOTES + _ROW_QUOTES * len(decoded.records)
    for row in decoded.records:
        value = bytes(row.metric_value)
        if not value.startswith(b"{"):
            return False
        quotes += value.count(b'"')
    return quotes == body.count(b'"')


def _invalid_name(index: int, name: str) -> ApiError:
    field = f"records[{index}].metric_name"
    return ApiError(400, f"Invalid dataset ID: {clip(name, 80)}", "invalid_dataset_id",
                    field=field, errors=[{"index": index, "code": "invalid_dataset_id",
                                          "field": field,
                                          "message": f"Invalid dataset ID: {clip(name, 80)}"}])


class OrcaSheets(Dialect):
    """The OrcaSheets universal endpoint (see the module docstring)."""

    name = "orcasheets"
    splits = True

    def routes(self) -> list[IngestRoute]:
        """``POST /v1/logs``."""
        return [IngestRoute("/v1/logs", "orcasheets_logs", self, batch=True)]

    async def principal(self, request: Request, ctx: AppContext) -> Principal:
        """The Bearer project key's principal."""
        return await authenticate(request, ctx)

    def dataset(self, request: Request, route: IngestRoute, path_params: Mapping[str, str]
                ) -> str:
        """Unused: every record names its dataset (see :meth:`split`)."""
        raise AssertionError("OrcaSheets requests are split per record")

    def split(self, route: IngestRoute, body: bytes, max_records: int) -> Split:
        """The rows of each dataset the request names, in request order."""
        try:
            decoded = _DECODE.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            decoded = None
        if decoded is None or not _well_formed(body, decoded):
            problem = envelope_problem(_ENVELOPE, body)
            if problem is not None:
                raise problem
            if decoded is None:  # pragma: no cover - the precise check refuses what msgspec does
                raise ApiError(400, "Invalid JSON body", "invalid_json")
        assert decoded is not None
        wrong = event_type_problem(decoded.event_type)
        if wrong is not None:
            raise ApiError(400, f"Invalid event_type: {wrong}", "invalid_event_type",
                           field="event_type")
        if len(decoded.records) > max_records:
            raise ApiError(413, f"Too many records in batch (at most {max_records})",
                           "too_many_records")
        parts: dict[str, Part] = {}
        for index, row in enumerate(decoded.records):
            name = row.metric_name
            part = parts.get(name)
            if part is None:
                if not ID_PATTERN.match(name):
                    raise _invalid_name(index, name)
                if len(parts) == MAX_ENTRIES:
                    field = NAME_PATH.format(index=index)
                    raise ApiError(400, f"Too many tables in one request (at most "
                                   f"{MAX_ENTRIES})", "too_many_datasets", field=field)
                part = parts[name] = Part(name, [], [])
            part.records.append(bytes(row.metric_value))
            part.indexes.append(index)
        return Split(list(parts.values()), len(decoded.records), decoded.event_type,
                     RECORD_PATH, NAME_PATH, flat=True)

    def accepted(self, route: IngestRoute, outcome: Outcome, headers: dict[str, str]
                 ) -> Response:
        """202 ``{"success": true, "count": n, "status": "queued"}`` (+ the quarantined rows
        under that policy)."""
        return answers.accepted(True, outcome.count, headers, outcome.quarantined)

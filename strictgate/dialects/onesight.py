"""The OneSight data API: ``POST /api/openapi/v1/data/events`` with
``{"events": [{"event_type", "event_id"?, "source"?, "payload"}, ...]}``.

Each ``event_type`` is a dataset of the project (registered by an admin with an envelope-free
definition, or inferred under the project's ``unknown_datasets`` policy, nested objects and
arrays included); its events' ``payload`` is validated against it, all or nothing per
request, errors named by the event's place (``events[3].payload.zone``). 1 to
:data:`MAX_EVENTS` events; Bearer project keys. The answer is 202
``{"success": true, "data": {"received": n, "event_ids": [...], "duplicates": d}}``: one
id per event in request order, its ``event_id`` or a generated UUID.

An ``event_id`` already accepted in the project is acknowledged again but neither counted
nor stored (the core decides it in the admission script: :mod:`strictgate.ingest.events`).
Each stored row carries ``__eventId``, ``__source`` and ``__eventTime``: the payload's
``timestamp`` when that is an RFC 3339 date-time, else the time of receipt (what the query,
:mod:`strictgate.dialects.onesight_query`, filters and orders by).

The envelope is decoded by msgspec into typed structs (unknown members refused) and checked
for repeated members by counting quotes, as the OrcaSheets dialect does; anything unusual
goes to a precise check of the envelope that names the place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from quota.admission import MAX_ENTRIES
from quota.keys import ID_PATTERN
from strictgate.dialects.base import Dialect, EventMeta, IngestRoute, Part, Split, envelope_problem
from strictgate.errors import ApiError, clip, json_response
from strictgate.ingest.auth import authenticate
from validator import compile_dataset
from validator.formats import is_date_time

if TYPE_CHECKING:
    from strictgate.context import AppContext
    from strictgate.ingest.core import Outcome
    from strictgate.registry.apikeys import Principal

PATH = "/api/openapi/v1/data/events"
MAX_EVENTS = 1000
"""Events in one request (the OneSight docs' limit)."""
MAX_ID_CHARS = 256
"""The longest ``event_id`` and ``source``, in characters."""
RECORD_PATH = "events[{index}].payload"
NAME_PATH = "events[{index}].event_type"


class _Event(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    payload: msgspec.Raw
    event_id: str | msgspec.UnsetType | None = msgspec.UNSET
    source: str | msgspec.UnsetType | None = msgspec.UNSET


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Event]


class _Stamp(msgspec.Struct):
    """The one payload member the event time is read from (the others are skipped)."""

    timestamp: Any = None


class _StampedEvent(msgspec.Struct):
    payload: _Stamp


class _Stamps(msgspec.Struct):
    """Every event's payload ``timestamp``, read in one pass over the body."""

    events: list[_StampedEvent]


_DECODE = msgspec.json.Decoder(_Body)
_STAMPS = msgspec.json.Decoder(_Stamps)
_OPTIONAL_TEXT = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_ID_CHARS}
# The envelope as a definition: the precise check that names what is wrong.
_ENVELOPE = compile_dataset({"envelope": "none", "fields": {
    "events": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["event_type", "payload"],
        "properties": {"event_type": "string", "event_id": _OPTIONAL_TEXT,
                       "source": {**_OPTIONAL_TEXT, "minLength": 0},
                       "payload": {"type": "object", "additionalProperties": True}}}},
}})
# quotes of '{"events":[' and of each '{"event_type":"..","payload":'
_BODY_QUOTES = 2
_EVENT_QUOTES = 6


def _member_quotes(value: str | msgspec.UnsetType | None) -> int:
    if value is msgspec.UNSET:
        return 0
    return 2 if value is None else 4


def _well_formed(body: bytes, decoded: _Body, payloads: list[bytes]) -> bool:
    """No member repeated, ``events`` not empty, payloads objects, ids within bounds;
    False means: ask :func:`~strictgate.dialects.base.envelope_problem`."""
    if not decoded.events or b"\\" in body:
        return False
    quotes = _BODY_QUOTES
    for event, value in zip(decoded.events, payloads, strict=True):
        if not value.startswith(b"{"):
            return False
        for text in (event.event_id, event.source):
            if isinstance(text, str) and len(text) > MAX_ID_CHARS:
                return False
        if event.event_id == "":
            return False
        quotes += (_EVENT_QUOTES + _member_quotes(event.event_id)
                   + _member_quotes(event.source) + value.count(b'"'))
    return quotes == body.count(b'"')


def _event_times(body: bytes) -> list[str | None]:
    """Each event's time: its payload's ``timestamp`` when that is an RFC 3339 date-time,
    else None (a well-formed body: every payload an object)."""
    stamps = [event.payload.timestamp for event in _STAMPS.decode(body).events]
    return [stamp if isinstance(stamp, str) and is_date_time(stamp) else None
            for stamp in stamps]


def _text(value: str | msgspec.UnsetType | None) -> str | None:
    return value if isinstance(value, str) else None


def _invalid_type(index: int, name: str) -> ApiError:
    field = NAME_PATH.format(index=index)
    message = f"Invalid event_type: {clip(name, 80)}"
    return ApiError(400, message, "invalid_event_type", field=field, errors=[
        {"index": index, "code": "invalid_event_type", "field": field, "message": message}])


class OneSight(Dialect):
    """The OneSight data API (see the module docstring)."""

    name = "onesight"
    splits = True

    def routes(self) -> list[IngestRoute]:
        """``POST /api/openapi/v1/data/events``."""
        return [IngestRoute(PATH, "onesight_events", self, batch=True)]

    async def principal(self, request: Request, ctx: AppContext) -> Principal:
        """The Bearer project key's principal."""
        return await authenticate(request, ctx)

    def dataset(self, request: Request, route: IngestRoute, path_params: Mapping[str, str]
                ) -> str:
        """Unused: every event names its dataset (see :meth:`split`)."""
        raise AssertionError("OneSight requests are split per event")

    def split(self, route: IngestRoute, body: bytes, max_records: int) -> Split:
        """The payloads of each event type, in request order, with each event's id,
        source and time."""
        try:
            decoded = _DECODE.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            decoded = None
        payloads = [] if decoded is None else [bytes(e.payload) for e in decoded.events]
        if decoded is None or not _well_formed(body, decoded, payloads):
            problem = envelope_problem(_ENVELOPE, body)
            if problem is not None:
                raise problem
            if decoded is None:  # pragma: no cover - the precise check refuses what msgspec does
                raise ApiError(400, "Invalid JSON body", "invalid_json")
        assert decoded is not None
        most = min(MAX_EVENTS, max_records)
        if len(decoded.events) > most:
            raise ApiError(413, f"Too many events in one request (at most {most})",
                           "too_many_events", field="events")
        parts: dict[str, Part] = {}
        metas: list[EventMeta] = []
        times = _event_times(body)
        for index, (event, payload) in enumerate(zip(decoded.events, payloads, strict=True)):
            name = event.event_type
            part = parts.get(name)
            if part is None:
                if not ID_PATTERN.match(name):
                    raise _invalid_type(index, name)
                if len(parts) == MAX_ENTRIES:  # pragma: no cover - MAX_EVENTS is smaller
                    raise ApiError(400, f"Too many event types in one request (at most "
                                   f"{MAX_ENTRIES})", "too_many_datasets",
                                   field=NAME_PATH.format(index=index))
                part = parts[name] = Part(name, [], [])
            part.records.append(payload)
            part.indexes.append(index)
            metas.append(EventMeta(_text(event.event_id), _text(event.source), times[index]))
        return Split(list(parts.values()), len(decoded.events), None, RECORD_PATH,
                     NAME_PATH, flat=False, events=metas)

    def accepted(self, route: IngestRoute, outcome: Outcome, headers: dict[str, str]
                 ) -> Response:
        """202 ``{"success": true, "data": {"received", "event_ids", "duplicates"}}`` (+ the
        quarantined events under that policy)."""
        data: dict[str, Any] = {"received": len(outcome.ids), "event_ids": outcome.ids,
                                "duplicates": outcome.duplicates}
        if outcome.quarantined is not None:
            data.update(outcome.quarantined.answer())
        return json_response({"success": True, "data": data}, 202, headers)

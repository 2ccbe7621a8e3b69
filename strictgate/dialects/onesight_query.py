"""``GET /api/openapi/v1/data/events``: a OneSight project reads its events back.

Authenticated like the OneSight ingest route (Bearer project key; the project comes from the
verified claims only). Query parameters: ``event_type`` (one of the project's event types;
without it, events of every type), ``from``/``to`` (``YYYY-MM-DD`` whole days, ``to``
inclusive, or RFC 3339, ``from`` inclusive and ``to`` exclusive), ``limit`` (1..1000,
default 100) and ``cursor`` (the previous page's ``next_cursor``, with the same
``event_type``). The time of an event is its payload's ``timestamp`` when that is an RFC 3339
date-time, else its time of receipt; events come ordered by that time, then by receipt.
Anything else, a repeated parameter or a bad value is a 400 naming the parameter; an
``event_type`` the project does not have is the ingest routes' 404.

The answer is ``{"success": true, "data": {"events": [{"event_type", "event_id", "source",
"payload", "received_at"}], "next_cursor": <string or null>}}``. It reads the lake: events
show up once the worker has committed them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota.keys import ID_PATTERN
from strictgate.context import context_of
from strictgate.dialects.onesight import PATH
from strictgate.errors import json_response
from strictgate.ingest.auth import authenticate
from strictgate.ingest.core import resolve_dataset
from strictgate.ingest.records import (
    LAKE_UNAVAILABLE,
    bad_parameter,
    query_params,
    read_window,
    records_reader,
)
from strictgate.lake.reader import LakeUnavailable, ReadError

PARAMETERS = ("event_type", "from", "to", "limit", "cursor")


async def query_events(request: Request) -> Response:
    """Answer one query (see the module docstring)."""
    ctx = context_of(request)
    principal = await authenticate(request, ctx)
    query = query_params(request, PARAMETERS)
    window = read_window(query)
    event_type = query.get("event_type")
    if event_type is not None:
        if not ID_PATTERN.match(event_type):
            raise bad_parameter("event_type", "event_type must be an event type id (letters,"
                                " digits, '_', '-', '.'; at most 128)")
        await resolve_dataset(ctx, principal.project_id, event_type)
    reader = records_reader(request)
    try:
        page = await reader.events(principal.project_id,
                                   None if event_type is None else [event_type],
                                   limit=window.limit, cursor=window.cursor,
                                   since=window.since, until=window.until)
    except ReadError as exc:
        raise bad_parameter(exc.param, str(exc)) from None
    except LakeUnavailable:
        raise LAKE_UNAVAILABLE from None
    return json_response({"success": True, "data": {"events": page.events,
                                                    "next_cursor": page.next_cursor}})


def routes() -> list[Route]:
    """The query route (the same path as the ingest route, for ``GET``)."""
    return [Route(PATH, query_events, methods=["GET"], name="onesight_query")]

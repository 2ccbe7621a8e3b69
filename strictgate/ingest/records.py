"""``GET /datasets/{dataset_id}/records``: a project reads its dataset's records back.

Authenticated like the ingest routes (the project key; the project comes from the verified
claims only), and a dataset the registry does not know in that project is the same 404 as
on ingest. Query parameters: ``limit`` (1..1000, default 100), ``cursor`` (the previous
page's ``next_cursor``: a signed position, so pass the same ``from``/``to``/``version``
with it), ``from``/``to`` (RFC 3339 or ``YYYY-MM-DD`` on ``__receivedAt``; ``from``
inclusive, ``to`` exclusive, a date as ``to`` includes that whole day) and ``version``.
Anything else, a repeated parameter or a bad value is a 400 whose ``field`` names it.

The answer is ``{"success": true, "records": [...], "next_cursor": ... | null}``, records in
receipt order, each with its system fields (``__traceId``, ``__datasetVersion``,
``__receivedAt``, ``__entryId``, and ``__eventType`` only when the record has one:
:func:`strictgate.lake.reader.rebuild`). With ``Accept: application/x-ndjson`` the body is
one record per line instead and the next cursor travels in the ``X-Next-Cursor`` header
(absent on the last page), so every line is a record. A registered dataset nothing was
written to yet answers an empty page; a lake that cannot be read is a 503
``lake_unavailable`` with Retry-After; with ``STRICTGATE_SINK=jsonl`` (no lake) the route
answers 501 ``read_unavailable``.

The DuckDB reads are synchronous: they run on one thread of their own per process (the
reader serializes on its one cached connection anyway), so a flood of reads never takes
the threads that validate large ingest bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota.keys import ID_PATTERN
from strictgate.context import context_of
from strictgate.errors import ApiError, clip, json_response
from strictgate.ingest.auth import authenticate
from strictgate.ingest.core import resolve_dataset
from strictgate.ingest.selectors import INVALID_DATASET_ID
from strictgate.lake.reader import (
    DatasetNotFound,
    EventPage,
    LakeReader,
    LakeUnavailable,
    Page,
    ReadError,
    parse_bound,
    parse_limit,
    parse_version,
)

PARAMETERS = ("limit", "cursor", "from", "to", "version")
NDJSON = "application/x-ndjson"
NEXT_CURSOR_HEADER = "X-Next-Cursor"
# what the cursor key is derived under (from the JWT secret), so every instance sharing
# the secret verifies the cursors of the others and no other use of the secret collides
CURSOR_LABEL = b"strictgate records cursor v1"


def cursor_secret(jwt_secret: str) -> bytes:
    """The cursor signing key: HMAC-SHA256 of :data:`CURSOR_LABEL` under the JWT secret."""
    return hmac.new(jwt_secret.encode(), CURSOR_LABEL, hashlib.sha256).digest()


class RecordsReader:
    """The process's lake reader and the one thread its reads run on."""

    def __init__(self, reader: LakeReader) -> None:
        self.reader = reader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-read")

    async def page(self, project: str, dataset: str, *, limit: int, cursor: str | None,
                   since: datetime | None, until: datetime | None,
                   version: int | None) -> Page:
        """One page (see :meth:`LakeReader.page`), read off the event loop; a dataset
        without a table yet is an empty page (a bad cursor is still refused)."""

        def read() -> Page:
            try:
                return self.reader.page(project, dataset, limit=limit, cursor=cursor,
                                        since=since, until=until, version=version)
            except DatasetNotFound:
                # the reader checks a cursor first: a bad one is still a 400
                return Page([], None)

        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    async def events(self, project: str, event_types: list[str] | None, *, limit: int,
                     cursor: str | None, since: datetime | None, until: datetime | None
                     ) -> EventPage:
        """One page of a project's events (see :meth:`LakeReader.events`), read off the
        event loop on the same thread as the records."""

        def read() -> EventPage:
            try:
                return self.reader.events(project, event_types, since=since, until=until,
                                          limit=limit, cursor=cursor)
            except DatasetNotFound:
                # no lake yet (the reader checks a cursor first: a bad one is still a 400)
                return EventPage([], None)

        return await asyncio.get_running_loop().run_in_executor(self._executor, read)

    def close(self) -> None:
        """Stop the thread and close the connection."""
        self._executor.shutdown(wait=True)
        self.reader.close()


def bad_parameter(param: str, message: str) -> ApiError:
    """The 400 naming a query parameter (code ``invalid_<param>``)."""
    return ApiError(400, message, f"invalid_{param}", field=param)


def query_params(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``known``."""
    given: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in known:
            raise ApiError(400, f"Unknown query parameter: {clip(name, 64)}",
                           "unknown_parameter", field=clip(name, 64))
        if name in given:
            raise bad_parameter(name, f"{name} is given more than once")
        given[name] = value
    return given


@dataclass(frozen=True)
class ReadWindow:
    """The paging parameters every read takes: ``limit``, ``cursor``, ``from``, ``to``."""

    limit: int
    cursor: str | None
    since: datetime | None
    until: datetime | None


def read_window(query: Mapping[str, str]) -> ReadWindow:
    """The paging parameters of ``query``, checked (a 400 naming the bad one)."""
    try:
        limit = parse_limit(query.get("limit"))
        since = parse_bound("from", query.get("from"), end=False)
        until = parse_bound("to", query.get("to"), end=True)
    except ReadError as exc:
        raise bad_parameter(exc.param, str(exc)) from None
    if since is not None and until is not None and until <= since:
        raise bad_parameter("to", "to must be later than from")
    cursor = query.get("cursor")
    if cursor == "":
        raise bad_parameter("cursor", "cursor is not one this server issued")
    return ReadWindow(limit, cursor, since, until)


LAKE_UNAVAILABLE = ApiError(503, "The lake cannot be read right now", "lake_unavailable",
                            headers={"Retry-After": "5"})


def records_reader(request: Request) -> RecordsReader:
    """The process's lake reader; a 501 when the sink is not the lake."""
    records: RecordsReader | None = getattr(request.app.state, "records_reader", None)
    if records is None:
        # STRICTGATE_SINK=jsonl: records are written to files, not to a queryable lake
        raise ApiError(501, "Reading records needs the lake sink (STRICTGATE_SINK=lake)",
                       "read_unavailable")
    return records


def wants_ndjson(request: Request) -> bool:
    """Whether ``Accept`` lists :data:`NDJSON` (parameters and quality ignored)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == NDJSON for part in accept.split(","))


async def read_records(request: Request) -> Response:
    """Answer one read (see the module docstring)."""
    ctx = context_of(request)
    principal = await authenticate(request, ctx)
    dataset_id: str = request.path_params["dataset_id"]
    if not ID_PATTERN.match(dataset_id):
        raise INVALID_DATASET_ID
    query = query_params(request, PARAMETERS)
    window = read_window(query)
    try:
        version = parse_version(query.get("version"))
    except ReadError as exc:
        raise bad_parameter(exc.param, str(exc)) from None
    # the ingest routes' own lookup: registry cache first, the same 404 (and 503)
    await resolve_dataset(ctx, principal.project_id, dataset_id)
    records = records_reader(request)
    try:
        page = await records.page(principal.project_id, dataset_id, limit=window.limit,
                                  cursor=window.cursor, since=window.since,
                                  until=window.until, version=version)
    except ReadError as exc:
        raise bad_parameter(exc.param, str(exc)) from None
    except LakeUnavailable:
        raise LAKE_UNAVAILABLE from None
    if wants_ndjson(request):
        body = b"".join(orjson.dumps(r) + b"\n" for r in page.records)
        headers = {NEXT_CURSOR_HEADER: page.next_cursor} if page.next_cursor else {}
        return Response(body, media_type=NDJSON, headers=headers)
    return json_response({"success": True, "records": page.records,
                          "next_cursor": page.next_cursor})


def routes() -> list[Route]:
    """The read route."""
    return [Route("/datasets/{dataset_id}/records", read_records, methods=["GET"],
                  name="read_records")]


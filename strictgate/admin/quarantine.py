"""Admin endpoints reading a dataset's quarantine (its invalid records kept under the
``on_invalid: quarantine`` policy; see :mod:`strictgate.lake.tables`).

``GET /admin/projects/{p}/datasets/{d}/quarantine`` pages the quarantined records in receipt
order, with the records API's parameters and errors (``limit`` 1..1000, default 100,
``cursor``, ``from``/``to`` on the time of receipt: :func:`strictgate.ingest.records.read_window`)
and ``code``: error codes, comma-separated (``code=invalid_type,missing_field``; a record
having any of them is listed; the parameter is given at most once, like every other). The
answer is ``{"success": true, "records": [...], "next_cursor": ... | null}``, each record
as :func:`strictgate.lake.reader.quarantined_record` makes it; a cursor is bound to the
dataset and to the filters, so pass the same ``code``/``from``/``to`` with it.

``GET .../quarantine/stats`` answers ``{"success": true, "total": n, "by_code": {code:
records having it}}``.

Both need the admin token; a dataset the project does not have (registered or built-in) is
a 404 ``dataset_not_found``, whatever the lake holds, so one project's path never shows
another's records. With ``STRICTGATE_SINK=jsonl`` (no lake) both answer 501
``read_unavailable``; a lake that cannot be read is a 503 ``lake_unavailable``.
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strictgate.admin.auth import require_admin
from strictgate.admin.datasets import dataset_not_found, path_id, project_id_of
from strictgate.context import context_of
from strictgate.errors import json_response
from strictgate.ingest.records import (
    LAKE_UNAVAILABLE,
    bad_parameter,
    query_params,
    read_window,
    records_reader,
)
from strictgate.lake.reader import LakeUnavailable, QuarantinePage, ReadError
from strictgate.unavailable import or_unavailable

PARAMETERS = ("limit", "cursor", "from", "to", "code")
MAX_CODES = 50
_CODE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")


def parse_codes(text: str | None) -> list[str] | None:
    """``code``: a comma-separated list of error codes (None: every code); 400
    ``invalid_code`` for an empty one, one not of letters, digits and ``_.:-`` (at most 64),
    or more than :data:`MAX_CODES`."""
    if text is None:
        return None
    codes = text.split(",")
    if len(codes) > MAX_CODES:
        raise bad_parameter("code", f"code lists at most {MAX_CODES} error codes")
    if not all(_CODE_RE.match(code) for code in codes):
        raise bad_parameter("code", "code must be error codes separated by commas")
    return sorted(set(codes))


def _dataset(request: Request) -> tuple[str, str]:
    """The path's project and dataset, checked, after the admin token."""
    require_admin(request)
    project_id = project_id_of(request)
    dataset_id = path_id(request, "dataset_id", "Invalid dataset ID", "invalid_dataset_id")
    return project_id, dataset_id


async def _check_exists(request: Request, project_id: str, dataset_id: str) -> None:
    """404 unless the project has the dataset (registered or built-in): the registry's
    index, as the settings routes read it."""
    settings = context_of(request).dataset_settings
    if await or_unavailable(settings.read(project_id, dataset_id)) is None:
        raise dataset_not_found()


async def list_quarantine(request: Request) -> Response:
    """One page of the dataset's quarantined records (see the module docstring)."""
    project_id, dataset_id = _dataset(request)
    query = query_params(request, PARAMETERS)
    window = read_window(query)
    codes = parse_codes(query.get("code"))
    await _check_exists(request, project_id, dataset_id)
    reader = records_reader(request).reader

    def read() -> QuarantinePage:
        return reader.quarantine(project_id, dataset_id, limit=window.limit,
                                 cursor=window.cursor, codes=codes, since=window.since,
                                 until=window.until)

    try:
        # the reader serializes on its one connection; an admin read is rare enough for a
        # thread of asyncio's pool
        page = await asyncio.to_thread(read)
    except ReadError as exc:
        raise bad_parameter(exc.param, str(exc)) from None
    except LakeUnavailable:
        raise LAKE_UNAVAILABLE from None
    return json_response({"success": True, "records": page.records,
                          "next_cursor": page.next_cursor})


async def quarantine_stats(request: Request) -> Response:
    """How many records the dataset's quarantine holds, and per error code."""
    project_id, dataset_id = _dataset(request)
    query_params(request, ())
    await _check_exists(request, project_id, dataset_id)
    reader = records_reader(request).reader
    try:
        total, by_code = await asyncio.to_thread(reader.quarantine_stats, project_id,
                                                 dataset_id)
    except LakeUnavailable:
        raise LAKE_UNAVAILABLE from None
    return json_response({"success": True, "total": total, "by_code": by_code})


def routes() -> list[Route]:
    """``GET /admin/projects/{project_id}/datasets/{dataset_id}/quarantine`` and
    ``.../quarantine/stats``."""
    base = "/admin/projects/{project_id}/datasets/{dataset_id}/quarantine"
    return [
        Route(base, list_quarantine, methods=["GET"], name="list_quarantine"),
        Route(base + "/stats", quarantine_stats, methods=["GET"], name="quarantine_stats"),
    ]

"""The floor for bench/load.py: a bare Starlette endpoint that only reads the body and
``orjson.loads`` it, served with the same uvicorn settings as strictgate."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def ingest(request: Request) -> Response:
    """Read, parse, answer 202."""
    body = await request.body()
    parsed = orjson.loads(body)
    if isinstance(parsed, dict) and isinstance(parsed.get("records"), list):
        count = len(parsed["records"])  # an OrcaSheets body
    else:
        count = len(parsed) if isinstance(parsed, list) else 1
    return Response(orjson.dumps({"success": True, "count": count, "status": "queued"}),
                    status_code=202, media_type="application/json")


app = Starlette(routes=[Route("/datasets/{dataset_id}", ingest, methods=["POST"]),
                        Route("/datasets/{dataset_id}/batch", ingest, methods=["POST"]),
                        Route("/events/{kind}", ingest, methods=["POST"]),
                        Route("/v1/logs", ingest, methods=["POST"])])

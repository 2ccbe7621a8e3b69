"""The Loguro dataset ingest API: ``POST /datasets/{dataset_id}`` (one record),
``POST /datasets/{dataset_id}/batch`` (an array), and the legacy ``POST /datasets`` and
``POST /datasets/batch`` that name the dataset in ``X-Loguro-Dataset-Id`` (else
``default``). Bearer project keys; answers and errors in the strictgate grammar, which is
Loguro's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from strictgate.dialects.base import Dialect, IngestRoute
from strictgate.ingest import answers
from strictgate.ingest.auth import authenticate
from strictgate.ingest.selectors import select_dataset

if TYPE_CHECKING:
    from strictgate.context import AppContext
    from strictgate.ingest.core import Outcome
    from strictgate.registry.apikeys import Principal


class Loguro(Dialect):
    """The Loguro dataset ingest API (see the module docstring)."""

    name = "loguro"

    def routes(self) -> list[IngestRoute]:
        """Legacy routes first: ``/datasets/batch`` must not be read as dataset ``batch``."""
        return [
            IngestRoute("/datasets", "ingest_legacy", self, batch=False),
            IngestRoute("/datasets/batch", "ingest_legacy_batch", self, batch=True),
            IngestRoute("/datasets/{dataset_id}", "ingest_record", self, batch=False),
            IngestRoute("/datasets/{dataset_id}/batch", "ingest_batch", self, batch=True),
        ]

    async def principal(self, request: Request, ctx: AppContext) -> Principal:
        """The Bearer project key's principal."""
        return await authenticate(request, ctx)

    def dataset(self, request: Request, route: IngestRoute, path_params: Mapping[str, str]
                ) -> str:
        """From the path, else ``X-Loguro-Dataset-Id``, else ``default``."""
        return select_dataset(request, path_params.get("dataset_id"))

    def accepted(self, route: IngestRoute, outcome: Outcome, headers: dict[str, str]
                 ) -> Response:
        """``{"success": true, "status": "queued"}`` (+ ``count`` for a batch, and the
        quarantined records under that policy)."""
        return answers.accepted(route.batch, outcome.count, headers, outcome.quarantined)

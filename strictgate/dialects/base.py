"""What a dialect is: one public ingest API spoken over the one core.

A dialect owns the edges of a request and nothing in between. It lists its routes, turns a
request into the core's call (who is asking, which dataset, whether the body is one record
or an array, any rewrite of the records the API promises), and turns the core's outcome or
error into its own answer. The core (:func:`strictgate.ingest.core.submit`: resolve the
dataset, read and validate the body, admit and queue) is the same path for every dialect.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from strictgate.errors import ApiError, error_response
from strictgate.ingest.answers import MAX_ERRORS_PER_RESPONSE
from validator import BodyError, CompiledDataset

if TYPE_CHECKING:
    from strictgate.context import AppContext
    from strictgate.ingest.core import Outcome
    from strictgate.registry.apikeys import Principal


@dataclass(frozen=True)
class Part:
    """The records of one request that go to one dataset."""

    dataset_id: str
    records: list[bytes]
    """Each record's JSON text, as sent."""
    indexes: list[int]
    """Each record's place in the request."""


@dataclass(frozen=True)
class EventMeta:
    """What an event of an API with per-event ids (OneSight) carries beside its record."""

    event_id: str | None
    """The client's id (None: the server assigns one)."""
    source: str | None
    time: str | None
    """The record's own time (RFC 3339 text), or None: the time of receipt stands for it."""


@dataclass(frozen=True)
class Split:
    """A request whose records go to several datasets (all or nothing)."""

    parts: list[Part]
    count: int
    event_type: str | None = None
    """Stored with every row (``__eventType``)."""
    record_path: str = "records[{index}]"
    """Where a record sits in the request, for error paths (``{index}``: its place)."""
    name_path: str = "records[{index}].dataset"
    """Where a record names its dataset, for errors about that name."""
    flat: bool = True
    """Whether an inferred definition takes only flat rows (see the ``infer`` policy)."""
    events: list[EventMeta] | None = None
    """Per record (by its place in the request), for APIs with per-event ids: each id is
    stored once per project, a resent one acknowledged but neither counted nor stored."""
    merge_key: str | None = None
    """The one key column when the records are merged into their tables rather than
    appended (Definite ``mode: "merge"``): queued as the entries' ``merge_key``."""


@dataclass(frozen=True)
class IngestRoute:
    """One ingest route: a ``POST`` path (Starlette's template syntax, ``{name}`` matching
    one non-empty segment) served by ``dialect``."""

    path: str
    name: str
    dialect: Dialect
    batch: bool
    dataset: str | None = None
    """The dataset this route always writes to, or None when the request names it."""
    label: str = ""
    """What the dialect needs to tell its routes apart (e.g. Operyn's event kind)."""

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments, ``{...}`` ones matching any one non-empty segment."""
        return tuple(self.path.split("/")[1:])


class Dialect(abc.ABC):
    """One public ingest API. Subclasses fill in the edges; see the module docstring."""

    name: str = ""

    @abc.abstractmethod
    def routes(self) -> list[IngestRoute]:
        """The dialect's ingest routes, in match order."""

    @abc.abstractmethod
    async def principal(self, request: Request, ctx: AppContext) -> Principal:
        """The verified caller (the project always comes from verified claims), or an
        :class:`ApiError` (401/403/503)."""

    @abc.abstractmethod
    def dataset(self, request: Request, route: IngestRoute, path_params: Mapping[str, str]
                ) -> str:
        """The dataset id the request writes to (400 for an invalid one)."""

    def rewrite(self, route: IngestRoute, payload: bytes) -> bytes | None:
        """A new body carrying the changes the API promises (e.g. trimmed names), or None
        when nothing changes. ``payload`` is the validated records as one JSON array; a new
        body is validated again, in full, before anything is queued."""
        return None

    async def check(self, ctx: AppContext, principal: Principal, route: IngestRoute,
                    payload: bytes) -> None:
        """A last look at the valid records before admission (e.g. an open project's
        service limit); raises an :class:`ApiError` to refuse. Default: no check."""
        return None

    def split(self, route: IngestRoute, body: bytes, max_records: int) -> Split | None:
        """The datasets a body's records go to, for APIs whose requests name a dataset per
        record (raises an :class:`ApiError` for a malformed body), or None when the whole
        body is the records of the one dataset :meth:`dataset` names (the default)."""
        return None

    splits: bool = False
    """Whether :meth:`split` gives the datasets (else :meth:`dataset`)."""

    max_records: int | None = None
    """Records one request may carry on this API's routes, when it sets its own limit (else
    ``STRICTGATE_MAX_RECORDS``)."""

    envelope_free_only: bool = False
    """Whether the API's rows are a dataset's columns as sent, so a split request can only
    write to datasets whose definition has no envelope (409 ``dataset_not_envelope_free``
    otherwise, as for requests with per-event ids)."""

    event_datasets_only: bool = False
    """Whether the API answers with server-assigned record ids, so it can only write to
    datasets whose definition has the ``event`` envelope."""

    async def before_admission(self, ctx: AppContext, route: IngestRoute,
                               principal: Principal, dataset_ids: Sequence[str]) -> None:
        """Runs right before the request's entries (one per dataset of ``dataset_ids``) are
        admitted, never for a dry run: what the answer will need set up first (Definite
        ``wait: true`` watches for the commit). Raises an :class:`ApiError` to refuse.
        Default: nothing."""
        return None

    async def after_admission(self, ctx: AppContext, route: IngestRoute,
                              principal: Principal, outcome: Outcome) -> None:
        """Runs once the entries are admitted (or replayed), right before :meth:`accepted`:
        an async step the answer needs (Definite ``wait: true`` waits for the commit).
        Not run when admission refused the request. Default: nothing."""
        return None

    @abc.abstractmethod
    def accepted(self, route: IngestRoute, outcome: Outcome, headers: dict[str, str]
                 ) -> Response:
        """The 2xx answer for an admitted (or replayed) request."""

    def error(self, route: IngestRoute | None, err: ApiError) -> Response:
        """An error answer in the dialect's shape (default: the strictgate grammar)."""
        return error_response(err)


def envelope_problem(envelope: CompiledDataset, body: bytes) -> ApiError | None:
    """What is wrong with a request body's envelope (an API's own request shape, compiled as
    a definition), in the strictgate grammar, or None when it is well formed: the precise
    check a dialect falls back to when its fast decoding had doubts."""
    try:
        result = envelope.validate_one(body)
    except BodyError as exc:
        return ApiError(exc.status, exc.message, exc.code)
    if result.ok:
        return None
    first = result.errors[0]
    return ApiError(400, first.message, first.code, field=first.field,
                    errors=[{"code": e.code, "field": e.field, "message": e.message}
                            for e in result.errors[:MAX_ERRORS_PER_RESPONSE]])

"""The ``quarantine`` policy at the door: a body's valid records go on, its invalid ones are
kept with their errors.

Under a dataset's ``on_invalid: quarantine`` setting the validator's complete verdict
(``validate_batch(..., all_errors=True)``) is split in two: the valid records are admitted as
usual (counted, queued, stored) and the invalid ones travel in the same queue entry's
``quarantine`` field (one admission: an ``Idempotency-Key`` replays the same split), each as
it was sent with all its errors; the worker writes them to the lake's quarantine table in
the same commit as the valid rows. Only valid records count against the quota.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from strictgate.context import AppContext
from strictgate.unavailable import redis_step
from validator import BatchResult

MAX_ANSWERED_ERRORS = 100
"""Errors of quarantined records listed in an answer (all are counted, all are kept)."""


@dataclass
class Quarantined:
    """The invalid records of one request (or of one dataset's part of it)."""

    count: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    """Queue-entry items: ``{"index", "record", "errors"}`` (see :func:`entry_field`)."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Error items for the answer, named by the record's place in the request."""
    error_count: int = 0

    def add(self, other: Quarantined) -> None:
        """Take ``other``'s records in (another part of the same request)."""
        self.count += other.count
        self.items += other.items
        self.errors += other.errors
        self.error_count += other.error_count

    def answer_errors(self) -> list[dict[str, Any]]:
        """The errors an answer lists: in request order, at most
        :data:`MAX_ANSWERED_ERRORS`."""
        return sorted(self.errors, key=lambda e: int(e["index"]))[:MAX_ANSWERED_ERRORS]

    def answer(self) -> dict[str, Any]:
        """What every dialect adds to its 2xx: how many records were quarantined, their
        errors (bounded) and how many were left out."""
        shown = self.answer_errors()
        return {"quarantined": self.count, "errors": shown,
                "errors_omitted": self.error_count - len(shown)}


@dataclass(frozen=True)
class Separated:
    """A complete verdict split by the quarantine policy."""

    count: int
    """Valid records."""
    payload: bytes
    """The valid records, one JSON array (``[]`` when none is)."""
    quarantined: Quarantined
    kept: list[int]
    """The valid records' places in the body."""


def separate(result: BatchResult, *, indexes: Sequence[int] | None = None,
             record_path: str | None = None) -> Separated:
    """Split a complete verdict (``validate_batch(..., all_errors=True)``) into the valid
    records and the quarantined ones. ``indexes`` maps a record's place in the body to its
    place in the request, and ``record_path`` (``records[{index}].metric_value``) prefixes
    answer fields, for requests whose records go to several datasets."""
    count, payload = result.valid_payload()
    quarantined = Quarantined()
    failures = result.failures()
    failed = {failure.index for failure in failures}
    for failure in failures:
        index = indexes[failure.index] if indexes is not None else failure.index
        where = record_path.format(index=index) if record_path else None
        errors = [{"code": e.code, "field": e.field, "message": e.message}
                  for e in failure.errors]
        quarantined.items.append({"index": index, "record": failure.record.decode(),
                                  "errors": errors})
        for error in errors:
            field_path = error["field"]
            if where is not None:
                field_path = f"{where}.{field_path}" if field_path else where
            quarantined.errors.append({"index": index, "code": error["code"],
                                       "field": field_path, "message": error["message"]})
        quarantined.error_count += len(errors)
        quarantined.count += 1
    kept = [k for k in range(result.count) if k not in failed]
    return Separated(count, payload, quarantined, kept)


def entry_field(items: list[dict[str, Any]]) -> bytes | None:
    """The queue entry's ``quarantine`` field for ``items`` (None when there are none)."""
    return orjson.dumps(items) if items else None


async def quarantines(ctx: AppContext, project_id: str, dataset_id: str) -> bool:
    """Whether the dataset's ``on_invalid`` setting is ``quarantine`` (from the process's
    cache when it can answer)."""
    cached = ctx.dataset_settings.cached(project_id, dataset_id)
    if cached is None:
        async with redis_step(ctx.settings.redis_deadline_s):
            cached = await ctx.dataset_settings.get(project_id, dataset_id)
    return cached.quarantine

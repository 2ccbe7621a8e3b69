"""Admission of events with per-event ids (OneSight): an id already accepted in the project
is acknowledged again but neither counted nor stored.

The decision is taken inside the admission script, atomically with the quota and the queue
(:meth:`quota.admission.QuotaService.admit_many` with ``event_keys``): the script refuses
the whole admission, changing nothing, when any of the given ids is remembered already, and
names them (:class:`~quota.results.EventsSeen`); the request's entries are then rebuilt
without those events and admitted again. Each round marks at least one more event as a
duplicate, so a request of n events takes at most n + 1 rounds, and one round when nothing
was sent before (the usual case). Concurrent resends of the same ids race inside Redis, not
here: exactly one admission remembers each id.

Within one request the first event with an id is the one admitted, later copies are
duplicates (whatever their event type). Only ids the client sent are remembered (for
``STRICTGATE_EVENT_ID_WINDOW_S``); a generated id is new by construction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgspec
import orjson

from quota.admission import AdmissionResult
from quota.keys import event_id_keys
from quota.results import EventsSeen
from strictgate.context import AppContext
from strictgate.dialects.base import EventMeta, Part
from strictgate.ingest.quarantine import Quarantined, entry_field
from strictgate.queue_entry import QueueEntry
from strictgate.registry.apikeys import Principal
from strictgate.registry.store import ResolvedDataset
from strictgate.unavailable import ingest_unavailable

_RAW_RECORDS = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class CheckedPart:
    """A part of the request (the records of one dataset) after validation."""

    part: Part
    """Its valid records' places in the request (``records`` unused)."""
    resolved: ResolvedDataset
    payload: bytes
    """The valid records, one JSON array (what the validator passed on)."""
    count: int
    quarantined: Quarantined | None = None
    """Its invalid records, under the dataset's ``quarantine`` policy."""


@dataclass(frozen=True)
class EventsAdmission:
    """What the admission of a request's events did."""

    outcome: AdmissionResult
    entries: list[tuple[QueueEntry, int]]
    """The entries admitted (each with its record count); empty when every event was a
    duplicate."""
    ids: list[str]
    """Every event's id, in request order."""
    duplicates: int


def assign_ids(metas: list[EventMeta], derived: list[str] | None) -> list[str]:
    """Each event's id: the client's, else the one derived from the request's
    Idempotency-Key (``derived``, by place), else a random UUID."""
    ids: list[str] = []
    for index, meta in enumerate(metas):
        if meta.event_id is not None:
            ids.append(meta.event_id)
        elif derived is not None:
            ids.append(derived[index])
        else:
            ids.append(str(uuid.uuid4()))
    return ids


def repeated_in_request(metas: list[EventMeta], valid: set[int]) -> set[int]:
    """Places of valid events whose client id an earlier valid event of the request
    already has."""
    seen: set[str] = set()
    repeated: set[int] = set()
    for index, meta in enumerate(metas):
        if meta.event_id is None or index not in valid:
            continue
        if meta.event_id in seen:
            repeated.add(index)
        seen.add(meta.event_id)
    return repeated


def _entries(checked: list[CheckedPart], records: list[list[bytes]], metas: list[EventMeta],
             ids: list[str], skip: set[int], principal: Principal, trace_id: str,
             received_at: str) -> list[tuple[QueueEntry, int]]:
    """One entry per part that keeps an event (or quarantines one), without the events in
    ``skip``."""
    entries: list[tuple[QueueEntry, int]] = []
    for item, raws in zip(checked, records, strict=True):
        kept = [k for k, index in enumerate(item.part.indexes) if index not in skip]
        quarantine = _quarantine_field(item.quarantined, metas, ids, received_at)
        if not kept and quarantine is None:
            continue
        events = []
        for k in kept:
            meta = metas[item.part.indexes[k]]
            events.append({"id": ids[item.part.indexes[k]], "source": meta.source,
                           "time": meta.time or received_at})
        entries.append((QueueEntry(
            records=b"[" + b",".join(raws[k] for k in kept) + b"]", trace_id=trace_id,
            dataset_version=item.resolved.version, received_at=received_at,
            project_id=principal.project_id, dataset_id=item.part.dataset_id,
            user_id=principal.user_id, events=orjson.dumps(events) if events else None,
            quarantine=quarantine,
        ), len(kept)))
    return entries


def _quarantine_field(quarantined: Quarantined | None, metas: list[EventMeta],
                      ids: list[str], received_at: str) -> bytes | None:
    """The queue entry's quarantine items, each with its event's id, source and time (a
    replay stores them with the event)."""
    if quarantined is None or not quarantined.items:
        return None
    items = [{**item, "event": {"id": ids[item["index"]],
                                "source": metas[item["index"]].source,
                                "time": metas[item["index"]].time or received_at}}
             for item in quarantined.items]
    return entry_field(items)


async def admit_events(ctx: AppContext, principal: Principal, checked: list[CheckedPart],
                       metas: list[EventMeta], ids: list[str], *, trace_id: str,
                       received_at: str, idem_key: str | None, digest: str
                       ) -> EventsAdmission:
    """Admit the events of one request, each id at most once per project (see the module
    docstring)."""
    records = [[bytes(raw) for raw in _RAW_RECORDS.decode(item.payload)] for item in checked]
    # a quarantined event is not accepted: its id is not remembered
    valid = {index for item in checked for index in item.part.indexes}
    skip = repeated_in_request(metas, valid)
    while True:
        entries = _entries(checked, records, metas, ids, skip, principal, trace_id,
                           received_at)
        places = [index for index, meta in enumerate(metas)
                  if meta.event_id is not None and index in valid and index not in skip]
        keys = event_id_keys(principal.user_id, principal.project_id,
                             [ids[index] for index in places])
        outcome = await ctx.quota.admit_many(
            [entry for entry, _ in entries], counts=[n for _, n in entries],
            idempotency_key=idem_key, request_digest=digest, event_keys=keys,
            event_window_s=ctx.settings.event_id_window_s, user_id=principal.user_id,
            project_id=principal.project_id)
        if not isinstance(outcome, EventsSeen):
            return EventsAdmission(outcome, entries, ids, len(skip))
        fresh = {places[position] for position in outcome.positions} - skip
        if not fresh:  # pragma: no cover - the script names only ids not skipped yet
            raise ingest_unavailable(1)
        skip |= fresh

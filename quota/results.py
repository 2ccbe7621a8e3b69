"""Typed outcomes of an admission and of the quota reads (frozen msgspec structs: one is
built for every request, and a frozen dataclass costs about ten times as much to build,
~0.7 us against ~0.07 us)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Admitted(msgspec.Struct, frozen=True):
    """The records are queued and counted. ``limit``/``remaining`` are -1 when unlimited."""

    used: int
    limit: int
    remaining: int
    resets_at: datetime
    entry_id: str
    """The queue entry's stream id (the first entry's, when several were admitted; ``""``
    when none was: every event of the request had been accepted before)."""
    entry_ids: tuple[str, ...] = ()
    """Every queued entry's stream id, in the order the entries were given."""


class QuotaExceeded(msgspec.Struct, frozen=True):
    """The batch does not fit in what is left of the month; nothing was queued or counted.

    ``server_time`` is Redis's clock when it refused: the month and the seconds left until
    ``resets_at`` both count from it, so every API instance answers the same.
    """

    limit: int
    used: int
    requested: int
    remaining: int
    period: str
    resets_at: datetime
    server_time: datetime


class Duplicate(msgspec.Struct, frozen=True):
    """The idempotency key was admitted before; nothing changed.

    ``count`` (the request's total), ``entry_id`` and ``entry_ids`` are those of the first
    admission (as in :class:`Admitted`: 0, ``""`` and ``()`` when it queued nothing);
    ``used``, ``limit``, ``remaining`` and
    ``resets_at`` describe the current month (for the quota headers).
    """

    count: int
    entry_id: str
    used: int
    limit: int
    remaining: int
    resets_at: datetime
    entry_ids: tuple[str, ...] = ()


class IdempotencyConflict(msgspec.Struct, frozen=True):
    """The idempotency key was admitted before with another request; nothing changed."""


class Unavailable(msgspec.Struct, frozen=True):
    """Redis failed, refused or missed the deadline.

    The outcome is unknown: a script sent before the failure may still have run (a paused
    server resumes and executes it). A client retrying with the same Idempotency-Key gets
    the first outcome back, so it is never counted twice.
    """

    reason: str
    retry_after_s: float


class QueueFull(msgspec.Struct, frozen=True):
    """The queue of dataset ``dataset_id`` holds ``queued`` unwritten records, at or past
    the bound (``STRICTGATE_MAX_QUEUE_RECORDS``): nothing was queued or counted, in any
    queue; retry later, once the worker caught up."""

    queued: int
    retry_after_s: float
    dataset_id: str = ""


class EventsSeen(msgspec.Struct, frozen=True):
    """Some of the request's client event ids were accepted before (within the window):
    nothing was checked further, queued, counted or remembered.

    ``positions`` are the 0-based positions, in the ``event_keys`` given, of every id already
    remembered, ascending. The caller drops those events and admits the rest again; each
    round drops at least one more, so the loop ends.
    """

    positions: tuple[int, ...]


AdmissionResult = (Admitted | QuotaExceeded | Duplicate | IdempotencyConflict | QueueFull
                   | Unavailable | EventsSeen)


class UsageReport(msgspec.Struct, frozen=True):
    """Quota state of one user and month.

    ``unflushed`` is what the usage ledger does not hold yet (``usage_delta`` plus deltas a
    flush has taken but not finished); ``flushed`` is the rest of ``used``.
    """

    limit: int
    used: int
    remaining: int
    period: str
    resets_at: datetime
    flushed: int
    unflushed: int


class QuotaUnavailableError(RuntimeError):
    """A quota read or write (not an admission) failed on Redis or missed the deadline."""


def remaining_of(limit: int, used: int) -> int:
    """Records left this month: -1 when unlimited, never negative otherwise."""
    return -1 if limit < 0 else max(0, limit - used)

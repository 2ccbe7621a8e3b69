"""How strictgate writes and reads times: RFC 3339 in UTC with a ``Z``.

Every time the service stores or answers (``received_at`` of a queue entry, ``__receivedAt``
of a lake row, the quota headers and bodies, the registry's ``created_at``, the usage
ledger's ``flushed_at``) is formatted by :func:`utc_z`, so they all read alike and sort as
text within one precision. :func:`parse_utc` reads them back, including values an older
release wrote with a ``+00:00`` offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Precision = Literal["seconds", "milliseconds", "microseconds"]


def utc_z(moment: datetime, timespec: Precision = "milliseconds") -> str:
    """``2026-07-01T00:00:00.000Z``: ``moment`` in UTC (a naive one is taken as UTC), cut
    to ``timespec`` (seconds: ``2026-07-01T00:00:00Z``)."""
    # the hot path (an aware UTC clock) skips the conversion: one isoformat call
    if moment.tzinfo is not UTC:
        moment = (moment.replace(tzinfo=UTC) if moment.tzinfo is None
                  else moment.astimezone(UTC))
    return moment.isoformat(timespec=timespec)[:-6] + "Z"


def parse_utc(text: str) -> datetime:
    """The aware UTC moment of an RFC 3339 date-time with ``Z`` (either case) or an offset,
    as :func:`utc_z` and older releases (``+00:00``) wrote them. ValueError for anything
    else, a time without an offset included."""
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text[:40]!r}")
    return moment.astimezone(UTC)

"""UTC calendar months: the period a moment falls in, when it resets, when its keys expire.

Usage keys expire at an absolute moment (:data:`RETENTION_MONTHS` after their month ends),
never after a rolling TTL, so a key's lifetime does not depend on when it was last written.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from quota.keys import period_of

PERIOD_PATTERN = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])\Z")

RETENTION_MONTHS = 3
"""Usage keys outlive their month by this many months (the admin usage view reads them)."""


class InvalidPeriodError(ValueError):
    """A period is not ``YYYY-MM``."""


def _add_months(year: int, month: int, months: int) -> datetime:
    index = year * 12 + (month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def parse_period(period: str) -> tuple[int, int]:
    """``(year, month)`` of a ``YYYY-MM`` period, else :class:`InvalidPeriodError`."""
    match = PERIOD_PATTERN.match(period) if isinstance(period, str) else None
    if match is None or not 1970 <= int(match.group(1)) <= 9000:
        raise InvalidPeriodError("period must be YYYY-MM")
    return int(match.group(1)), int(match.group(2))


def period_start(period: str) -> datetime:
    """00:00:00 UTC on the first day of ``period``."""
    year, month = parse_period(period)
    return _add_months(year, month, 0)


def period_end(period: str) -> datetime:
    """The first instant after ``period``: when its quota resets."""
    year, month = parse_period(period)
    return _add_months(year, month, 1)


def expire_at(period: str) -> int:
    """Unix time at which the usage keys of ``period`` expire."""
    year, month = parse_period(period)
    return int(_add_months(year, month, 1 + RETENTION_MONTHS).timestamp())


def current_period(now: datetime) -> str:
    """The period ``now`` falls in (same rule as :func:`quota.keys.period_of`)."""
    return period_of(now)


def period_at(unix_s: int) -> str:
    """The period of a unix time (what the admission script's ``TIME`` answers)."""
    return period_of(datetime.fromtimestamp(unix_s, UTC))

"""The calendar check of many timestamps of one shape at once, in numpy.

The values of one timestamp field in a batch nearly always share one digit shape
(``2026-06-10T10:00:00Z``, ``2026-06-10T10:00:00.123+02:00``). Encoded as a JSON array,
such values are rows of one width: numpy checks the calendar of every row (month, day of
the month with leap years, hour, minute, second, offset) in a few whole-array operations,
with no cost per bad value, where msgspec's datetime decoder stops at each bad value and
must be resumed (a few microseconds each). Without a bad value msgspec is as fast, so
:func:`validator.fast.failing_times` calls this only for a run in which msgspec failed.

A value :func:`calendar_failures` passes is a valid RFC 3339 date-time (it would pass
:func:`validator.formats.is_date_time`); it also reports leap seconds, which may be valid:
it errs only towards the precise check.
"""

from __future__ import annotations

import re

import numpy as np

# A timestamp's shape: its text with every digit made 9.
SHAPE_RE = re.compile(rb"9999-99-99[Tt]99:99:99(?:\.9+)?(?:[Zz]|[+-]99:99)\Z")
SHAPE_TABLE = bytes.maketrans(b"0123456789", b"9999999999")
# Fewer values than this: numpy's fixed cost per call outweighs what it saves.
MIN_VALUES = 64
_DIGIT_0 = ord("0")
# Column bounds of the two-digit groups below (year as two groups), in their order.
_LOW = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0], np.int16)
_HIGH = np.array([99, 99, 12, 31, 23, 59, 59, 23, 59], np.int16)
# Days per month, Feb 29 allowed (checked against the year after); index 0 unused.
_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int16)


def _digit_columns(shape: bytes) -> list[int]:
    """Columns (in a row ``"<value>",``) of the digits checked, two per group: year
    (two groups), month, day, hour, minute, second and, with a numeric offset, its hour
    and minute."""
    cols = [1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19]
    if not shape.endswith((b"Z", b"z")):
        n = len(shape)
        cols += [n - 4, n - 3, n - 1, n]
    return cols


def calendar_failures(encoded: bytes, n: int, shape: bytes) -> list[int]:
    """Sorted positions of the values not in the calendar, or holding a leap second, of
    ``encoded``: the JSON array of ``n`` values all of ``shape`` (a timestamp's shape,
    :data:`SHAPE_RE`), so each value is a row ``"<value>",`` of one width."""
    width = len(shape) + 3
    rows = np.frombuffer(encoded, np.uint8, n * width, 1).reshape(n, width)
    digits = rows[:, _digit_columns(shape)].astype(np.int16) - _DIGIT_0
    groups = digits[:, 0::2] * 10 + digits[:, 1::2]
    k = groups.shape[1]
    # Reductions along short rows are slow in numpy: the few true cells are found in the
    # flat array and turned into row numbers.
    bad = np.flatnonzero((groups < _LOW[:k]) | (groups > _HIGH[:k])) // k
    month, day = groups[:, 2], groups[:, 3]
    wrong_day = day > _MONTH_DAYS[np.minimum(month, 12)]
    feb29 = (month == 2) & (day == 29)
    if feb29.any():
        year = groups[:, 0] * 100 + groups[:, 1]
        wrong_day |= feb29 & ((year % 4 != 0) | ((year % 100 == 0) & (year % 400 != 0)))
    failing: list[int] = np.union1d(bad, np.flatnonzero(wrong_day)).tolist()
    return failing

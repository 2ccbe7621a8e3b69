"""The reference oracle: jsonschema's Draft202012Validator with format checking.

jsonschema checks ``date-time`` and ``time`` only when the optional ``rfc3339-validator``
package is installed, and that package accepts a leap second at any minute while the
JSON-Schema-Test-Suite (our contract for timestamps: its verdicts are ours) does not. So the
oracle's format checker is jsonschema's own, with ``date-time`` and ``time`` replaced by the
strict RFC 3339 section 5.6 checks below; ``fuzz/test_oracle.py`` proves those against the suite's
``date-time.json`` and ``time.json``, so the oracle is trusted before it judges anything.

``uri`` is left unchecked by the oracle when jsonschema cannot check it (it needs
``rfc3987``), so the differential tests draw ``uri`` values only where both must agree.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_rfc3339_date_time(value: object) -> bool:
    """RFC 3339 section 5.6 ``date-time``, leap seconds only at 23:59:60 UTC."""
    if not isinstance(value, str):
        return True  # formats ignore non-strings
    m = _DATE_TIME.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not 1 <= month <= 12:
        return False
    days = 29 if month == 2 and _leap(year) else _DAYS[month - 1]
    if not 1 <= day <= days or hour > 23 or minute > 59 or second > 60:
        return False
    offset = m.group(8)
    shift = 0
    if offset not in ("Z", "z"):
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return False
        shift = (oh * 60 + om) * (1 if offset[0] == "+" else -1)
    if second == 60:
        return (hour * 60 + minute - shift) % 1440 == 23 * 60 + 59
    return True


def is_rfc3339_time(value: object) -> bool:
    """RFC 3339 ``full-time`` (``partial-time time-offset``)."""
    if not isinstance(value, str):
        return True
    return is_rfc3339_date_time("1970-01-01T" + value)


def format_checker() -> FormatChecker:
    """jsonschema's draft 2020-12 format checker with strict ``date-time`` and ``time``."""
    checker = FormatChecker(formats=())
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("date-time")(is_rfc3339_date_time)
    checker.checks("time")(is_rfc3339_time)
    return checker


FORMAT_CHECKER = format_checker()
#: The language's formats whose verdicts the oracle knows (``uri`` only if jsonschema can
#: check it, which needs ``rfc3987``): the formats differential tests may use.
ORACLE_FORMATS = tuple(f for f in ("date-time", "date", "time", "email", "uuid", "ipv4",
                                   "ipv6", "uri") if f in FORMAT_CHECKER.checkers)


def oracle(schema: dict[str, Any]) -> Draft202012Validator:
    """The reference validator for a record schema (``v.json_schema``)."""
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMAT_CHECKER)

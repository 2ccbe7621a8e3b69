"""String formats, strict: RFC 3339 date-time/date/time, email, uuid, ipv4, ipv6, uri.

Verdicts follow the JSON-Schema-Test-Suite's ``optional/format`` cases. Every regex is
ASCII-only (``[0-9]``, never ``\\d``, which also matches other scripts' digits) and anchored
with ``\\Z`` (``$`` would accept a trailing newline).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_TIME = (r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
         r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
_DATE_RE = re.compile(_DATE + r"\Z")
_TIME_RE = re.compile(_TIME + r"\Z")
_DATE_TIME_RE = re.compile(_DATE + r"[Tt]" + _TIME + r"\Z")

_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _date_ok(y: str, m: str, d: str) -> bool:
    year, month, day = int(y), int(m), int(d)
    if not 1 <= month <= 12 or day < 1:
        return False
    return day <= (29 if month == 2 and _leap(year) else _DAYS[month - 1])


def _time_ok(groups: tuple[str | None, ...]) -> bool:
    hh, mm, ss, sign, oh, om = groups
    hour, minute, second = int(hh or 0), int(mm or 0), int(ss or 0)
    off_h, off_m = (int(oh or 0), int(om or 0)) if sign else (0, 0)
    if hour > 23 or minute > 59 or second > 60 or off_h > 23 or off_m > 59:
        return False
    if second == 60:
        # A leap second exists only at 23:59:60 UTC: undo the offset and look.
        shift = off_h * 60 + off_m
        utc = (hour * 60 + minute - (shift if sign == "+" else -shift)) % (24 * 60)
        return utc == 23 * 60 + 59
    return True


def is_date_time(value: str) -> bool:
    """RFC 3339 section 5.6 ``date-time`` (``T``/``Z`` in either case, leap seconds at
    23:59:60 UTC only, an offset always)."""
    m = _DATE_TIME_RE.match(value)
    if m is None:
        return False
    g = m.groups()
    return _date_ok(g[0], g[1], g[2]) and _time_ok(g[3:])


def is_date(value: str) -> bool:
    """RFC 3339 ``full-date``."""
    m = _DATE_RE.match(value)
    return m is not None and _date_ok(*m.groups())


def is_time(value: str) -> bool:
    """RFC 3339 ``full-time`` (offset required)."""
    m = _TIME_RE.match(value)
    return m is not None and _time_ok(m.groups())


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{12}\Z")


def is_uuid(value: str) -> bool:
    """RFC 4122 textual form, hyphens at their places, any version."""
    return _UUID_RE.match(value) is not None


_IPV4_RE = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                      r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\Z")


def is_ipv4(value: str) -> bool:
    """Dotted quad, no leading zeros (they read as octal elsewhere)."""
    return _IPV4_RE.match(value) is not None


def is_ipv6(value: str) -> bool:
    """RFC 4291 text form, no zone id, ASCII only."""
    if not value.isascii() or "%" in value or not value or value != value.strip():
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    # The embedded IPv4 tail must itself be a strict dotted quad.
    tail = value.rsplit(":", 1)[-1]
    return "." not in tail or is_ipv4(tail)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\.)*")'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_RE = re.compile(
    rf"{_LOCAL}@(?:{_LABEL}(?:\.{_LABEL})*|\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9.]+)\])\Z")


def is_email(value: str) -> bool:
    """RFC 5321 mailbox: dot-atom or quoted local part, hostname or address literal."""
    m = _EMAIL_RE.match(value)
    if m is None:
        return False
    domain = value.rsplit("@", 1)[1]
    if domain.startswith("[IPv6:"):
        return is_ipv6(domain[6:-1])
    if domain.startswith("["):
        return is_ipv4(domain[1:-1])
    return True


# RFC 3986 URI (absolute, scheme required), checked piece by piece.
_HEX = r"%[0-9A-Fa-f]{2}"
_UNRES = r"A-Za-z0-9\-._~"
_SUB = r"!$&'()*+,;="
_PCHAR = rf"(?:[{_UNRES}{_SUB}:@]|{_HEX})"
_URI_RE = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.\-]*:"
    rf"(?://(?:(?:[{_UNRES}{_SUB}:]|{_HEX})*@)?"
    rf"(?:\[[0-9A-Fa-f:.vV]+\]|(?:[{_UNRES}{_SUB}]|{_HEX})*)(?::[0-9]*)?"
    rf"(?:/{_PCHAR}*)*"
    rf"|(?:/?{_PCHAR}+(?:/{_PCHAR}*)*|/)?)"
    rf"(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?\Z")


def is_uri(value: str) -> bool:
    """RFC 3986 ``URI``: a scheme, ASCII only, percent escapes well formed."""
    if _URI_RE.match(value) is None:
        return False
    # An IP-literal host must be a real IPv6 address.
    m = re.match(r"[^:]+://(?:[^@/]*@)?\[([^\]]*)\]", value)
    return m is None or m.group(1)[:1] in "vV" or is_ipv6(m.group(1))


FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": is_date_time,
    "date": is_date,
    "time": is_time,
    "email": is_email,
    "uuid": is_uuid,
    "ipv4": is_ipv4,
    "ipv6": is_ipv6,
    "uri": is_uri,
}

# The word a message uses for a value that fails a format ("Invalid date field: x").
FORMAT_WORDS = {"date-time": "timestamp", "date": "date", "time": "time", "email": "email",
                "uuid": "uuid", "ipv4": "ipv4", "ipv6": "ipv6", "uri": "uri"}

"""Text about a connection made fit for a log line, a CLI error or a client: one line, no SQL,
no secret. Used for DuckDB's errors (they quote a catalog's whole connection string) and for
settings that hold a URL or a connection string (``REDIS_URL``, ``STRICTGATE_LAKE_CATALOG``)."""

from __future__ import annotations

import re

_SECRETS = (
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"']+)", re.IGNORECASE), r"\1***"),
    # a URL's whole userinfo (``user:password@``, ``:password@``, ``token@``), up to the
    # last "@" before the host: a password may hold an unescaped "@"
    (re.compile(r"(://)[^/\s\"']*@"), r"\1***@"),
)


def redacted(text: str) -> str:
    """``text`` on one line (DuckDB's messages span several: a log line stays one line),
    without the SQL it quotes, with the password of a ``key=value`` connection string and a
    URL's userinfo replaced by ``***``."""
    # DuckDB appends the SQL it ran (``LINE 2: SELECT ... ^``): noise in a reason
    text = " ".join(text.split("\nLINE ", 1)[0].split())
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text

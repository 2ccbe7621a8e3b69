"""DuckDB's error messages made fit for a log line, a CLI error or a client: one line, no SQL,
no password (DuckDB quotes a catalog's whole connection string in its errors)."""

from __future__ import annotations

import re

_SECRETS = (
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"']+)", re.IGNORECASE), r"\1***"),
    (re.compile(r"(://[^:/@\s\"']+:)[^@\s\"']+@"), r"\1***@"),
)


def redacted(text: str) -> str:
    """``text`` on one line (DuckDB's messages span several: a log line stays one line),
    without the SQL it quotes, and with any password of a connection string replaced by
    ``***``."""
    # DuckDB appends the SQL it ran (``LINE 2: SELECT ... ^``): noise in a reason
    text = " ".join(text.split("\nLINE ", 1)[0].split())
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text

"""A Redis URL with a password put in, for connecting to the embedded server.

Logs and messages never show such a URL: they name a server by ``host:port``
(:func:`strictgate.redis_health.client_where`) or pass text through
:func:`strictgate.redact.redacted`.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its password (default user). For connecting only: never
    log the result."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{host}"))

"""Naming a Redis server in logs and messages without its password.

A ``REDIS_URL`` may carry a password (``redis://:secret@host:6379/0``); every log line and
message about a Redis server names it through :func:`where` (``host:port``) or
:func:`masked` (the URL with the password replaced), never the URL itself.
"""

from __future__ import annotations

from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

MASK = "***"


def _split(url: str) -> SplitResult:
    # urlsplit never raises for a str (its .port does, for a malformed port)
    return urlsplit(url.strip())


def where(url: str) -> str:
    """``host:port`` of a ``redis://``/``rediss://`` URL, the socket path of a
    ``unix://`` one; never the user or password."""
    try:
        parts = _split(url)
        if parts.scheme == "unix":
            return parts.path or "?"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 6379
    except ValueError:  # a malformed port or IPv6 literal: settings refuse these at start
        return "?"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}"


def masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; the user name stays."""
    parts = _split(url)
    if parts.password is None:
        return url.strip()
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its password (default user). For connecting only: never
    log the result."""
    parts = _split(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{host}"))


def scrub(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (if any) replaced by ``***``: a guard for
    messages built from errors, which should not hold it anyway."""
    try:
        password = _split(url).password
    except ValueError:
        return text
    if not password:
        return text
    return text.replace(password, MASK).replace(unquote(password), MASK)

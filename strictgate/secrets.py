"""Secrets kept in the data dir: created once with mode 0600, never logged."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path


def write_secret_file(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` atomically with mode 0600 (never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    try:
        # link() fails if another process created the file first; theirs wins.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load_or_create_secret(path: Path, nbytes: int = 32) -> tuple[str, bool]:
    """Read the secret at ``path``, creating it (``nbytes`` random bytes, url-safe) if absent.

    Returns ``(secret, created)``. A file readable by group or others is tightened to 0600.
    """
    if not path.exists():
        write_secret_file(path, secrets.token_urlsafe(nbytes))
        created = True
    else:
        created = False
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    value = path.read_text("ascii").strip()
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value, created


def constant_time_equals(given: str | bytes, expected: str | bytes) -> bool:
    """Compare two secrets in constant time; any bytes (non-ASCII included) are fine."""
    a = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    b = expected.encode("utf-8", "surrogatepass") if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)

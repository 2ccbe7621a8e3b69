"""Bound glibc's malloc arenas of the process.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core),
and memory freed in one is not reused by another. DuckDB (the lake writer, the reader,
compaction) allocates from its own threads and from the ones it is called on: with the default
the service's resident memory grew from 255 MB to 474 MB in two minutes of the soak
(`make soak`); with two arenas it grew to 289-387 MB over three runs. The cap lowers the
growth; the rest of it is an open problem of the lake sink (see README, Figures).

The cap must be in force before the first threads allocate (imports start some), so the
long-running commands (``strictgate serve``, ``strictgate worker``) set ``MALLOC_ARENA_MAX``
and re-execute themselves once (:func:`reexec_with_arena_cap`); :func:`limit_malloc_arenas`
is the best effort for a process started another way (``uvicorn app:create_app``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8
"""glibc's mallopt parameter for the arena cap."""

ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas at ``arenas`` unless ``MALLOC_ARENA_MAX`` is set (the operator's
    choice wins). True when the cap is in force; False elsewhere (musl, macOS: no glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))


def reexec_with_arena_cap(arenas: int = ARENAS) -> None:
    """Re-execute this very command with ``MALLOC_ARENA_MAX`` set, unless it is set already
    (then return): same PID, same arguments, the cap in force from the first allocation."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    env = {**os.environ, "MALLOC_ARENA_MAX": str(arenas)}
    os.execve(sys.executable, list(sys.orig_argv), env)

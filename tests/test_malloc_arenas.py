"""The process caps glibc's malloc arenas (strictgate/malloc.py): counted with glibc's own
``malloc_info`` in a child process whose threads allocate at the same time."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from strictgate.malloc import limit_malloc_arenas

CHILD = r"""
import ctypes, ctypes.util, sys, threading
sys.path.insert(0, {root!r})
if sys.argv[1] == "limit":
    from strictgate.malloc import limit_malloc_arenas
    assert limit_malloc_arenas()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(2000):
        blocks = [libc.malloc(4096) for _ in range(20)]
        for b in blocks:
            libc.free(b)
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
fp = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
"""

glibc = pytest.mark.skipif(
    ctypes.util.find_library("c") is None or sys.platform != "linux", reason="glibc only")


def _heaps(tmp_path: object, mode: str) -> int:
    out = os.path.join(str(tmp_path), f"{mode}.xml")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", CHILD.format(root=root), mode, out], env=env,
                   check=True, timeout=120)
    with open(out) as fh:
        return fh.read().count("<heap nr=")


@glibc
def test_threads_share_at_most_two_arenas(tmp_path: object) -> None:
    assert _heaps(tmp_path, "free") > 2  # the default: an arena per busy thread
    assert _heaps(tmp_path, "limit") <= 2


@glibc
def test_an_operators_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is True


@glibc
def test_serve_runs_with_the_arena_cap_from_its_first_allocation(serves: Any) -> None:
    """``strictgate serve`` re-executes itself once with MALLOC_ARENA_MAX (same PID)."""
    from strictgate.embedded import free_port

    served = serves.start(serves.tmp_path / "var", free_port()).wait_healthy()
    environ = Path(f"/proc/{served.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"MALLOC_ARENA_MAX=2" in environ

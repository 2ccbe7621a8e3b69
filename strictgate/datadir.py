"""One owner per data dir: the serving process holds an exclusive lock on ``<data dir>/lock``.

Two services on one data dir would each start a valkey on the same files and each flush
usage: records lost, quotas counted twice. The lock is an ``flock`` held for the
life of the process (the kernel drops it when the process dies, even by kill -9), with the
owner's PID written in the file for the message a second process prints.

The lock file is never removed: unlinking it on exit would let a process that opened the old
file and one that creates a new one both "own" the data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"
REDIS_URL_FILE = "redis.url"
"""Where a running service writes its embedded server's URL for the CLI."""


class DataDirError(RuntimeError):
    """The data dir cannot be used by this process."""


class DataDirInUseError(DataDirError):
    """Another live process holds the data dir's lock."""


class DataDirLock:
    """The held lock; :meth:`release` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Give up the lock (closing the descriptor drops the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _owner_pid(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        if text.isdigit():
            return text
    # the owner truncates then writes: a reader may see the file between the two
    return "unknown"


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data dir's lock or raise :class:`DataDirInUseError` at once (never waits);
    :class:`DataDirError` when the data dir cannot be created or written.

    Creates the data dir if needed; writes nothing else in it.
    """
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # os.open descriptors are not inherited by children (PEP 446): the embedded server
        # does not keep the lock of a dead service alive.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirError(
            f"cannot use data dir {data_dir.resolve()}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _owner_pid(fd)
        os.close(fd)
        raise DataDirInUseError(
            f"data dir {data_dir.resolve()} is in use by PID {pid}"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return DataDirLock(path, fd)

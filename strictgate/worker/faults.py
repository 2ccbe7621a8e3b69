"""Fault points for the kill tests: the worker SIGKILLs its own process at a named moment.

``SGTEST_KILL_AT`` (not a ``STRICTGATE_*`` name: settings refuse unknown ones) names the
moment; unset in production, where every hook is a no-op:

- ``before_commit``: inside the lake transaction, right before COMMIT;
- ``after_commit``: right after a lake commit returned, before the XACK+XDEL transaction;
- ``compaction``: ``SGTEST_KILL_DELAY_S`` seconds (default 0.05) after a compaction pass
  started, while its thread runs.

A real ``SIGKILL`` of the real process (no Python cleanup, no ``finally``), exactly as an
operator's ``kill -9`` or the OOM killer would end it at that point.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "SGTEST_KILL_AT"
# commits between compaction passes, for the compaction kill test (default: the schedule's)
COMPACT_EVERY_ENV = "SGTEST_COMPACT_EVERY_COMMITS"
DELAY_ENV = "SGTEST_KILL_DELAY_S"


def kill_point() -> str | None:
    """The moment named by ``SGTEST_KILL_AT``, or None."""
    return os.environ.get(ENV) or None


def die() -> None:
    """SIGKILL this process now."""
    os.kill(os.getpid(), signal.SIGKILL)


def maybe_die(point: str) -> None:
    """SIGKILL this process if ``SGTEST_KILL_AT`` names ``point``."""
    if kill_point() == point:
        die()


def maybe_die_later(point: str) -> None:
    """If ``SGTEST_KILL_AT`` names ``point``, SIGKILL this process after
    ``SGTEST_KILL_DELAY_S`` seconds (from a timer thread, while the caller works)."""
    if kill_point() == point:
        timer = threading.Timer(float(os.environ.get(DELAY_ENV) or 0.05), die)
        timer.daemon = True
        timer.start()


def compact_every_commits(default: int) -> int:
    """``SGTEST_COMPACT_EVERY_COMMITS`` if set, else ``default``."""
    raw = os.environ.get(COMPACT_EVERY_ENV)
    return int(raw) if raw else default

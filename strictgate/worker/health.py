"""Whether the output sink can write, and why not: one small state object per sink.

A sink (JSON Lines today, others later) raises :class:`SinkError` for any failure of the
storage it writes to; the worker reports each attempt to :class:`SinkHealth`, which keeps the
state ``/readyz`` and the metrics read, and logs once per change of state, not per retry.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from strictgate.errors import clip
from strictgate.metrics import Metrics

log = logging.getLogger("strictgate.worker")

# a reason is shown to operators in logs and in /readyz: bounded like every client-facing text
MAX_REASON = 300


class SinkError(Exception):
    """The sink could not store a batch; ``cause`` is a short stable name (an errno name such
    as ``ENOSPC``), ``reason`` the full one-line description (cause, message, path)."""

    def __init__(self, cause: str, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = clip(reason, MAX_REASON)

    @classmethod
    def from_os_error(cls, exc: OSError, action: str, path: Path | str) -> SinkError:
        """Describe an ``OSError`` met while ``action`` (e.g. "writing") ``path``. Write and
        fsync errors carry no file name, so the path the sink was working on is given."""
        code = exc.errno
        cause = errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
        message = exc.strerror or str(exc) or type(exc).__name__
        where = os.fsdecode(exc.filename) if exc.filename is not None else os.fsdecode(path)
        return cls(cause, f"{cause} ({message}) {action} {where}")


class SinkHealth:
    """The state of one sink as last seen by the worker: writing, or failing with a reason."""

    def __init__(self, sink: str, metrics: Metrics | None = None) -> None:
        self.sink = sink
        self.metrics = metrics
        self.reason: str | None = None
        self.cause: str | None = None
        self._since = time.monotonic()
        self.failures = 0
        if metrics is not None:
            metrics.sink_up.labels(sink).set(1)

    @property
    def ok(self) -> bool:
        """True unless the last attempt to write failed."""
        return self.reason is None

    def failed(self, error: SinkError) -> None:
        """Count a failed attempt; log (warning) only when the sink was writing before or the
        cause changed."""
        self.failures += 1
        if self.metrics is not None:
            self.metrics.sink_errors.labels(self.sink, error.cause).inc()
        if self.cause == error.cause:
            return
        if self.ok:
            self._since = time.monotonic()
            if self.metrics is not None:
                self.metrics.sink_up.labels(self.sink).set(0)
        self.reason, self.cause = error.reason, error.cause
        log.warning("worker: %s sink cannot write, retrying (records stay queued): %s",
                    self.sink, error.reason)

    def succeeded(self) -> None:
        """A batch was stored: log (info) once if the sink was failing."""
        if self.ok:
            return
        log.info("worker: %s sink writes again after %.1f s (was: %s)",
                    self.sink, time.monotonic() - self._since, self.cause)
        self.reason = self.cause = None
        if self.metrics is not None:
            self.metrics.sink_up.labels(self.sink).set(1)

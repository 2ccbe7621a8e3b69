"""Keeping the embedded valkey alive: when its process exits while the service runs, start
it again on the same data dir, port and password, with backoff.

The API and the worker need no help to recover: redis-py reconnects on the next command, and
the AOF (see README "Durability") gives back every acknowledged write. Each death and each
restart is logged once, with the exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from strictgate.embedded import EmbeddedServer, exit_description
from strictgate.unavailable import REDIS_FAILURES

log = logging.getLogger("strictgate.embedded")

POLL_S = 0.1
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
STABLE_S = 30.0  # up this long: the next death restarts at once again
READY_TIMEOUT_S = 60.0  # a big AOF takes a while to load
PING_TIMEOUT_S = 0.25


class Supervisor:
    """Watches one :class:`EmbeddedServer` (already started) until ``stop``."""

    def __init__(self, server: EmbeddedServer, *, poll_s: float = POLL_S) -> None:
        self.server = server
        self.poll_s = poll_s
        self.restarts = 0
        self._delay = 0.0
        self._started_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the child; restart it when it exits. Returns when ``stop`` is set (the
        caller then stops the server itself)."""
        while not stop.is_set():
            proc = self.server.process
            if proc is not None and proc.poll() is not None:
                if time.monotonic() - self._started_at >= STABLE_S:
                    self._delay = 0.0
                log.error("embedded valkey (pid %d, 127.0.0.1:%d) %s; restarting it on %s",
                          proc.pid, self.server.port, exit_description(proc.returncode),
                          self.server.data_dir)
                await self._restart(stop)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)

    def _backoff(self) -> float:
        delay = self._delay
        self._delay = min(max(delay * 2, FIRST_BACKOFF_S), MAX_BACKOFF_S)
        return delay

    async def _restart(self, stop: asyncio.Event) -> None:
        """Start the server until it answers (or ``stop``); one log line per failure reason."""
        down_since = time.monotonic()
        last_failure = ""
        while not stop.is_set():
            delay = self._backoff()
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
            # Popen in the event loop's thread, never a worker thread: Linux sends the
            # parent-death signal when the *thread* that forked the child ends.
            try:
                proc = self.server.spawn()
            except OSError as exc:  # the binary or the data dir went away
                failure: str | None = f"cannot start it: {exc}"
            else:
                failure = await self._wait_ready(stop)
            if failure is None:
                self.restarts += 1
                self._started_at = time.monotonic()
                log.warning("embedded valkey restarted (pid %d, 127.0.0.1:%d) after %.1f s",
                            proc.pid, self.server.port, time.monotonic() - down_since)
                return
            if stop.is_set():  # the service stops: it stops the server (SIGTERM) itself
                return
            self.server.kill()
            if failure != last_failure:
                log.error("embedded valkey did not restart: %s; retrying with backoff "
                          "(see %s)", failure, self.server.data_dir / "valkey.log")
                last_failure = failure

    async def _wait_ready(self, stop: asyncio.Event) -> str | None:
        """None once the new process answers PING; else why not."""
        proc = self.server.process
        assert proc is not None
        client = aioredis.Redis(host="127.0.0.1", port=self.server.port,
                                password=self.server.password,
                                socket_connect_timeout=PING_TIMEOUT_S)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline and not stop.is_set():
                if proc.poll() is not None:
                    return exit_description(proc.returncode)
                # bounded per try: something else listening on the port (the reason the new
                # process may be exiting) must not hold this loop up
                with contextlib.suppress(*REDIS_FAILURES):
                    if await asyncio.wait_for(client.ping(), PING_TIMEOUT_S):
                        return None
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        return "stopping" if stop.is_set() else f"no answer within {READY_TIMEOUT_S:.0f} s"

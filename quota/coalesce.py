"""One Redis connection shared by concurrent callers, with their commands coalesced.

Under load many requests want to run the admission script in the same event-loop turn. Sent
one connection each, every call costs a write and a read system call on both sides. Here the
commands queued during a turn leave in one write and their replies, which Redis sends in
order, are read back in order by a single reader. Nothing is retried: a connection error
fails every call in flight (the caller decides what is safe to repeat, see
:mod:`quota.admission`). A caller that gives up (timeout, cancellation) leaves its reply to be
read and dropped, so replies can never be handed to the wrong caller.

A call may carry a deadline (event-loop time): past it, the call raises TimeoutError, as
under ``asyncio.timeout_at``, and its reply is dropped likewise. The deadlines of all calls
share one timer, armed for the earliest: a timeout context per call cost a timer handle, a
task lookup and two context-manager steps on every admission.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


class CoalescingChannel:
    """Send packed commands over one connection of ``redis``'s pool, coalescing writes."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._pool = redis.connection_pool
        self._conn: Any = None
        self._connecting: asyncio.Lock | None = None
        self._outbox: list[bytes] = []
        self._outbox_waiters: list[asyncio.Future[Any]] = []
        self._in_flight: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._flush_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        # calls waiting with a deadline, and the one timer that enforces them
        self._deadlines: dict[asyncio.Future[Any], float] = {}
        self._timer: asyncio.TimerHandle | None = None

    async def call(self, packed: bytes, deadline: float | None = None) -> Any:
        """Send one packed command and return its reply (ResponseError raised as such);
        TimeoutError once the event loop's clock passes ``deadline``, if given."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._outbox.append(packed)
        self._outbox_waiters.append(waiter)
        if self._flush_task is None:
            self._flush_task = loop.create_task(self._flush())
        if deadline is None:
            return await waiter
        self._deadlines[waiter] = deadline
        timer = self._timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
        try:
            return await waiter
        finally:
            del self._deadlines[waiter]

    def _expire(self) -> None:
        """Fail the calls whose deadline has passed; re-arm for the earliest of the rest."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for waiter, deadline in self._deadlines.items():
            if deadline <= now:
                if not waiter.done():
                    waiter.set_exception(TimeoutError())
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._expire)

    async def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None:
                conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                await conn.connect()
                self._conn = conn
        return self._conn

    async def _flush(self) -> None:
        # Runs after the current turn: everything queued meanwhile goes out in one write.
        await asyncio.sleep(0)
        while self._outbox:
            batch, waiters = self._outbox, self._outbox_waiters
            self._outbox, self._outbox_waiters = [], []
            try:
                conn = await self._connection()
                self._in_flight.extend(waiters)
                await conn.send_packed_command(batch, check_health=False)
            except BaseException as exc:
                self._fail_all(exc, waiters)
                if not isinstance(exc, Exception):
                    raise
                continue
            if self._reader is None or self._reader.done():
                self._reader = asyncio.get_running_loop().create_task(self._read())
        self._flush_task = None

    async def _read(self) -> None:
        conn = self._conn
        while self._in_flight and conn is self._conn:
            try:
                reply = await conn.read_response()
            except ResponseError as exc:
                reply = exc
            except BaseException as exc:
                if conn is self._conn:  # not already failed by a send on the same connection
                    self._fail_all(exc, [])
                if not isinstance(exc, Exception):
                    raise
                return
            if conn is not self._conn:
                return  # the connection failed meanwhile and its callers were told
            waiter = self._in_flight.popleft()
            if waiter.done():
                continue  # its caller gave up; the reply is dropped, order is kept
            if isinstance(reply, ResponseError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def _fail_all(self, exc: BaseException, unsent: list[asyncio.Future[Any]]) -> None:
        """Drop the connection and fail every call on it (and ``unsent`` ones)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            asyncio.get_running_loop().create_task(self._discard(conn))
        error = exc if isinstance(exc, Exception) else RedisConnectionError("cancelled")
        if not isinstance(error, (RedisConnectionError, OSError, TimeoutError)):
            error = RedisConnectionError(f"connection failed: {type(exc).__name__}")
        waiters = [*self._in_flight, *unsent]
        self._in_flight.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def _discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    async def aclose(self) -> None:
        """Close the shared connection (pending calls fail)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in (self._flush_task, self._reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._discard(conn)

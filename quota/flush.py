"""Moving ``usage_delta`` into the usage ledger, losing nothing and counting nothing twice.

One flush, under an exclusive lock on the ledger (flushers sharing a data dir take turns):

1. **Replay** pending keys left by a crashed flush: write each one's row unless the ledger
   already holds that ``(flush_id, user, month)``, then delete the pending key.
2. **Take**: ``RENAME usage_delta:...`` to ``usage_pending:...:<flush_id>``. RENAME is atomic,
   so an admission either lands in the taken value or creates a fresh delta for the next
   flush; never both, never neither.
3. **Write** one row per pending key to the ledger, fsync.
4. **Delete** the pending keys.

A crash after 2 leaves pending keys that 1 writes next time; after 3, rows that 1 finds by
flush id and does not write again; during 3, a torn line that :meth:`Ledger.repair_tail`
cuts. Deltas are found by SCAN, which ``redis.asyncio.RedisCluster`` runs on every primary.

Concurrency caveat: the lock is a file lock, so every flusher of one Redis must share the
data dir that holds the ledger (the embedded setup does; a shared Redis with flushers on
several hosts would need one designated flusher).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from redis.exceptions import ResponseError

from quota import keys
from quota.ledger import Ledger, LedgerRow
from quota.script import AnyRedis
from strictgate.timestamps import utc_z

FlushHook = Callable[[str], None]
"""Called with a step name after each step (``replay_written``, ``replay_deleted``,
``taken``, ``written``, ``deleted``); tests raise from it to crash there."""

_KEY = re.compile(
    r"^usage_(?P<kind>delta|pending):datasets:\{(?P<user>[A-Za-z0-9][A-Za-z0-9._-]{0,127})\}"
    r":(?P<period>[0-9]{4}-[0-9]{2})(?::(?P<flush>[A-Za-z0-9-]+))?\Z"
)

LOCK_TIMEOUT_S = 30.0


class FlushBusyError(RuntimeError):
    """Another flush held the ledger lock for longer than the timeout."""


@dataclasses.dataclass(frozen=True, slots=True)
class FlushReport:
    """What one flush moved into the ledger."""

    flush_id: str
    rows: int
    records: int
    replayed_rows: int
    replayed_records: int


def new_flush_id(now: datetime) -> str:
    """Sortable and unique: UTC time plus randomness."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}"


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextlib.asynccontextmanager
async def _ledger_lock(path: Path, timeout_s: float) -> AsyncIterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= give_up:
                    raise FlushBusyError(f"ledger {path} is locked by another flush") from None
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


async def _scan(redis: AnyRedis, pattern: str) -> list[str]:
    return [_str(key) async for key in redis.scan_iter(match=pattern, count=1000)]


async def _rows_of(
    redis: AnyRedis, pending: list[tuple[str, str, str, str]], flushed_at: str
) -> list[LedgerRow]:
    rows = []
    for key, user, period, flush_id in pending:
        value = await redis.get(key)
        if value is None:  # expired (months old) or deleted by a concurrent replay
            continue
        records = int(value)
        if records > 0:
            rows.append(LedgerRow(flush_id, user, period, records, flushed_at))
    return rows


async def _delete(redis: AnyRedis, names: list[str]) -> None:
    # One key per DEL: pending keys of different users live in different cluster slots.
    for name in names:
        await redis.delete(name)


async def flush_usage(
    redis: AnyRedis,
    ledger_path: Path,
    clock: Callable[[], datetime],
    *,
    hook: FlushHook | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> FlushReport:
    """Move every ``usage_delta`` into the ledger at ``ledger_path`` (see module docstring)."""
    step = hook or (lambda _name: None)
    ledger = Ledger(ledger_path)
    async with _ledger_lock(ledger.path, lock_timeout_s):
        await asyncio.to_thread(ledger.repair_tail)
        flushed_at = utc_z(clock())

        # 1. replay what a crashed flush left behind
        left: list[tuple[str, str, str, str]] = []
        for key in await _scan(redis, "usage_pending:datasets:*"):
            match = _KEY.match(key)
            if match and match["kind"] == "pending" and match["flush"]:
                left.append((key, match["user"], match["period"], match["flush"]))
        replay_rows = await _rows_of(redis, left, flushed_at)
        done = await asyncio.to_thread(ledger.present, {row.flush_id for row in replay_rows})
        replay_rows = [row for row in replay_rows if row.row_id not in done]
        await asyncio.to_thread(ledger.append, replay_rows)
        step("replay_written")
        await _delete(redis, [key for key, *_ in left])
        step("replay_deleted")

        # 2. take the current deltas
        flush_id = new_flush_id(clock())
        taken: list[tuple[str, str, str, str]] = []
        for key in await _scan(redis, "usage_delta:datasets:*"):
            match = _KEY.match(key)
            if not match or match["kind"] != "delta" or match["flush"]:
                continue
            user, period = match["user"], match["period"]
            pending = keys.usage_pending_key(user, period, flush_id)
            try:
                await redis.rename(key, pending)
            except ResponseError as exc:
                if "no such key" not in str(exc).lower():
                    raise
                continue  # expired since the scan: nothing to take
            taken.append((pending, user, period, flush_id))
        step("taken")

        # 3. write, 4. delete
        rows = await _rows_of(redis, taken, flushed_at)
        await asyncio.to_thread(ledger.append, rows)
        step("written")
        await _delete(redis, [key for key, *_ in taken])
        step("deleted")

    return FlushReport(
        flush_id=flush_id,
        rows=len(rows),
        records=sum(row.records for row in rows),
        replayed_rows=len(replay_rows),
        replayed_records=sum(row.records for row in replay_rows),
    )

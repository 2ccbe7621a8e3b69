"""What is queued and how old the oldest of it is, read from the streams themselves.

The worker deletes an entry in the same transaction that acknowledges it, so a queue stream
holds exactly the entries not yet written: delivered-but-pending ones and undelivered ones.
Its first entry is therefore the oldest unwritten record, and the millisecond part of its id
was set by the same Redis clock that ``TIME`` reads: the lag needs no worker, no successful
batch and no agreement between the clocks of the processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from quota import keys


@dataclass(frozen=True)
class QueueSnapshot:
    """Entries per queue stream, and the age in seconds of the oldest one (0 when empty)."""

    lengths: dict[str, int]
    oldest_age_s: float


def entry_ms(entry_id: bytes | str) -> int:
    """The millisecond timestamp of a stream entry id ``<ms>-<seq>``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


async def queue_snapshot(redis: aioredis.Redis, extra: Iterable[str] = ()) -> QueueSnapshot:
    """Read every indexed queue (plus ``extra`` streams) in one round trip."""
    indexed = await redis.smembers(keys.queues_index_key())
    streams = sorted({_str(s) for s in indexed} | set(extra))
    # TIME on its own: a cluster pipeline refuses a command without a key (on a cluster any
    # node's clock will do; they agree to within the age this reports)
    seconds, micros = await redis.time()
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", count=1)
        replies: list[Any] = await pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    lengths: dict[str, int] = {}
    oldest_ms = now_ms
    for i, stream in enumerate(streams):
        lengths[stream] = int(replies[2 * i])
        first = replies[1 + 2 * i]
        if first:
            oldest_ms = min(oldest_ms, entry_ms(first[0][0]))
    return QueueSnapshot(lengths, max(0.0, (now_ms - oldest_ms) / 1000.0))


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Waiting for the lake commit of admitted queue entries (Definite ``wait: true``).

The protocol with the lake worker (:mod:`strictgate.worker.lake_sink`), all in Redis under
the entries' user hash tag:

1. before admission, the request :func:`watch_commits` its queue
   (:func:`quota.keys.commit_waiters_key`, a counter with a TTL);
2. the worker, after each commit, looks at the counters of the queues it committed entries
   of, and for a watched queue sets :func:`quota.keys.committed_key` of each entry to the
   snapshot id that holds its rows (with a short TTL), before acknowledging the entries;
3. the request polls those markers (:func:`wait_for_commit`), then
   :func:`unwatch_commits`.

Watching before admission makes it race-free: the worker reads an entry only after it is
admitted, so it sees the counter of any request waiting for it. Queues nobody watches get
no markers: a commit then costs one extra round trip (the counters), no memory.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import redis.asyncio as aioredis

from quota import keys

WATCH_SLACK_S = 10.0
"""Seconds a watch counter outlives the wait that set it, so an API process that dies
mid-wait leaves markers being written for at most that much longer."""
POLL_FIRST_S = 0.02
"""The first pause between two looks at the markers; each next one :data:`POLL_GROWTH` times
longer, up to :data:`POLL_MAX_S`."""
POLL_MAX_S = 0.25
POLL_GROWTH = 1.5
CALL_TIMEOUT_S = 1.0
"""A Redis call of the wait that takes longer fails (``TimeoutError``)."""

# Decrement, and delete at zero, in one step: a DECR of an expired counter would leave a
# negative counter without a TTL, and a DEL after a separate DECR could drop another
# request's fresh INCR.
_UNWATCH = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECR', KEYS[1]) <= 0 then
  redis.call('DEL', KEYS[1])
end
return 0
"""


async def watch_commits(redis: aioredis.Redis, user_id: str, project_id: str,
                        dataset_id: str, timeout_s: float) -> None:
    """Count one more request waiting for commits of the queue, for at most ``timeout_s``
    (plus :data:`WATCH_SLACK_S`). Raises what Redis raises
    (:data:`strictgate.unavailable.REDIS_FAILURES`)."""
    key = keys.commit_waiters_key(user_id, project_id, dataset_id)
    ttl = math.ceil(timeout_s + WATCH_SLACK_S)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        # NX sets a TTL on a fresh counter, GT only ever extends one: a request with a
        # shorter wait never cuts a longer one's watch short
        pipe.expire(key, ttl, nx=True)
        pipe.expire(key, ttl, gt=True)
        await pipe.execute()


async def unwatch_commits(redis: aioredis.Redis, user_id: str, project_id: str,
                          dataset_id: str) -> None:
    """Undo one :func:`watch_commits` (nothing when its counter has expired)."""
    key = keys.commit_waiters_key(user_id, project_id, dataset_id)
    await redis.eval(_UNWATCH, 1, key)


async def wait_for_commit(redis: aioredis.Redis, user_id: str, project_id: str,
                          dataset_id: str, entry_ids: Sequence[str],
                          timeout_s: float) -> int | None:
    """The snapshot id holding the rows of every entry of ``entry_ids`` (queue stream ids of
    the dataset's queue): the largest of their commits' snapshots, so all their rows are
    visible at it. None when they are not all committed within ``timeout_s`` (or when
    ``entry_ids`` is empty: nothing to wait for).

    Polls the markers, first after :data:`POLL_FIRST_S`, then at growing intervals up to
    :data:`POLL_MAX_S`. Needs a :func:`watch_commits` of the queue taken before the entries
    were admitted. Raises what Redis raises (:data:`strictgate.unavailable.REDIS_FAILURES`;
    a call slower than :data:`CALL_TIMEOUT_S` raises ``TimeoutError``)."""
    if not entry_ids:
        return None
    names = [keys.committed_key(user_id, project_id, dataset_id, e) for e in entry_ids]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pause = POLL_FIRST_S
    while True:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            # one slot: every marker carries the user's hash tag
            found = await redis.mget(names)
        snapshots = [int(value) for value in found if value is not None]
        if len(snapshots) == len(names):
            return max(snapshots)
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(pause, left))
        pause = min(pause * POLL_GROWTH, POLL_MAX_S)

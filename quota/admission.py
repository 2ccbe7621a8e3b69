"""Admission: idempotency + monthly quota + enqueue in one Lua script, one round trip.

:meth:`QuotaService.admit` queues one entry (``admit.lua``, the hot path of every request);
:meth:`QuotaService.admit_many` queues one entry per dataset of a request that carries
records for several (OrcaSheets), all or nothing, in one script as well
(``admit_many.lua``): quota checked once for the total, every queue's bound checked before
any is written, one idempotency record. Every key of one user carries the user's hash tag,
so both scripts touch one slot of a Redis Cluster; entries of different users are refused.

Client event ids (OneSight's ``event_id``: a resend is a no-op) are decided in that same
script, optimistically: ``admit_many`` is given the keys of the request's ids
(:func:`quota.keys.event_id_key`, under the user's tag too); one already remembered answers
:class:`EventsSeen` and changes nothing, and the caller admits the other events again. A
request whose events were all seen is an admission of no entry: nothing is counted, but it
answers the quota state and stores its idempotency record.

Retries, deliberately
---------------------
An admission is sent once per attempt, outside redis-py's retry loop (see
:mod:`quota.script`), and the whole call, retries included, is bounded by ``deadline_s``
with :func:`asyncio.timeout_at` (socket timeouts of the client may end an attempt sooner):

* NOSCRIPT and cluster redirections are re-sent at once: the server refused without running.
  So is a full connection pool (:class:`~redis.exceptions.MaxConnectionsError`): nothing
  was sent yet.
* A connection error or socket timeout leaves the outcome unknown: the script may have run
  and only its reply been lost. With an idempotency key a second attempt is safe (the
  script answers the first outcome as :class:`Duplicate`), so it is retried while the
  deadline allows. Without one, a retry could count and queue the records twice, so the
  caller gets :class:`Unavailable` at once and the client decides (503 + Retry-After).
* The deadline expiring is :class:`Unavailable` too. Cancelling a command makes redis-py drop
  its connection, so a late reply is never read by another request.

The month is Redis's
--------------------
Usage keys carry their month, and every key of a cluster script must be named by the caller,
so the caller guesses the month (the one Redis gave last, its own clock before that) and the
script checks the guess against ``TIME``: a wrong guess changes nothing and answers Redis's
time, and the call is sent once more with that month's keys and expiry. API instances whose
clocks disagree therefore count a moment into the same month; normally it is one round trip.

Reads and writes of the admin side (:meth:`QuotaService.get_limit`, ``set_limit``,
``usage``) are idempotent; they keep the client's own retries and are bounded by the same
deadline, raising :class:`QuotaUnavailableError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quota import keys
from quota.periods import (
    current_period,
    expire_at,
    parse_period,
    period_at,
    period_end,
    period_start,
)
from quota.results import (
    AdmissionResult,
    Admitted,
    Duplicate,
    EventsSeen,
    IdempotencyConflict,
    QueueFull,
    QuotaExceeded,
    QuotaUnavailableError,
    Unavailable,
    UsageReport,
    remaining_of,
)
from quota.script import AnyRedis, Arg, OneShotScript, ReplicationUnconfirmed
from strictgate.queue_entry import QueueEntry

__all__ = [
    "EVENT_WINDOW_S",
    "IDEMPOTENCY_TTL_S",
    "MAX_ENTRIES",
    "MAX_EVENT_KEYS",
    "MAX_LIMIT",
    "AdmissionResult",
    "Admitted",
    "Duplicate",
    "EventsSeen",
    "IdempotencyConflict",
    "QueueFull",
    "QuotaExceeded",
    "QuotaService",
    "QuotaUnavailableError",
    "Unavailable",
    "UsageReport",
]

log = logging.getLogger("strictgate.quota")

IDEMPOTENCY_TTL_S = 24 * 3600
"""How long an admitted Idempotency-Key keeps answering with its first outcome."""

MAX_LIMIT = 2**53 - 1
"""Largest monthly limit: Lua numbers are doubles, exact up to 2**53."""

MAX_ENTRIES = 1000
"""Most entries (datasets) :meth:`QuotaService.admit_many` takes at once: the script's work,
and the time Redis runs nothing else, grows with them."""

MAX_EVENT_KEYS = 1000
"""Most client event ids one admission checks and remembers (a request's events)."""

EVENT_WINDOW_S = 7 * 86400
"""Default time an accepted client event id is remembered: a resend within it is
acknowledged and not counted or stored again."""

RETRY_AFTER_S = 1.0
KEY_CACHE_SIZE = 10_000
RETRY_BACKOFF_S = 0.05
POOL_WAIT_S = 0.002

# Errors after which the script may or may not have run.
_UNCERTAIN = (RedisConnectionError, RedisTimeoutError, OSError)

# Replies of admit.lua (first element); admit_many.lua adds _EVENTS_SEEN.
_ADMITTED, _EXCEEDED, _DUPLICATE, _CONFLICT, _OTHER_PERIOD, _QUEUE_FULL = 1, 2, 3, 4, 5, 6
_EVENTS_SEEN = 7

DEFAULT_MAX_QUEUE_RECORDS = 5_000_000
# Retry-After of a full queue: the worker drains hundreds of thousands of records a second,
# so a few seconds is enough for a backlog at the bound to fall below it again
QUEUE_FULL_RETRY_AFTER_S = 5.0

# Sends of one admission when Redis's month differs from the guess: the second has Redis's
# month; a third only if the month turned between the two.
PERIOD_ATTEMPTS = 3


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def idempotency_digest(idempotency_key: str) -> str:
    """The key's SHA-256: bounded key names, and the client's key is never stored raw."""
    return hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()


class QuotaService:
    """Monthly record quotas of users, counted exactly in Redis (standalone or cluster)."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        default_limit: int,
        deadline_s: float,
        clock: Callable[[], datetime],
        max_queue_records: int = DEFAULT_MAX_QUEUE_RECORDS,
        wait_replicas: int = 0,
    ) -> None:
        if default_limit < -1:
            raise ValueError("default_limit must be >= -1")
        if deadline_s <= 0:
            raise ValueError("deadline_s must be > 0")
        self.redis = redis
        self.default_limit = default_limit
        self.deadline_s = deadline_s
        # backlog bound per dataset queue (records admitted and not yet written)
        self.max_queue_records = max_queue_records
        self.clock = clock
        # on a cluster with replicas: an admission answers only once that many replicas
        # hold it (WAIT, half the deadline at most), so a failover loses nothing acknowledged
        wait = {"wait_replicas": wait_replicas, "wait_timeout_ms": int(deadline_s * 500)}
        self._script = OneShotScript(redis, "admit.lua", **wait)
        self._many_script = OneShotScript(redis, "admit_many.lua", **wait)
        # Queue keys this process has put into the worker's index set. A global key cannot
        # be touched by the script on a cluster (another slot), and SADD on every request
        # would be a second round trip; once per queue per process costs nothing.
        self._indexed: set[str] = set()
        # Hot-path caches: id validation and key formatting per combination, month math
        # per month. Both are pure functions of their keys.
        self._key_cache: dict[tuple[str, str, str, str], tuple[str, ...]] = {}
        self._period_cache: tuple[str, datetime, int, int, int] | None = None
        # The month Redis answered last: the next admission's guess (see admit).
        self._period_hint: str | None = None

    async def preload(self) -> None:
        """Load the admission scripts into Redis ahead of the first request (optional:
        a missing script is loaded on first use)."""
        await self._bounded(self._script.preload())
        await self._bounded(self._many_script.preload())

    # --- admission ---------------------------------------------------------------------

    async def admit(
        self,
        entry: QueueEntry,
        *,
        count: int,
        idempotency_key: str | None,
        request_digest: str,
    ) -> AdmissionResult:
        """Count ``count`` records (those of ``entry``) against the month of ``entry``'s
        user and queue ``entry`` in its dataset's queue, or neither. See the module
        docstring for what is retried."""
        # 0: an entry carrying only quarantined records (counted against nothing)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("count must be an integer >= 0")
        user_id, project_id = entry.user_id, entry.project_id
        # The month is Redis's (see admit.lua): guess the one it answered last (this
        # process's clock before the first answer), and when the script says the guess is
        # wrong, which changed nothing, send once more with the month it gave.
        period = self._period_hint or current_period(self.clock())
        idem = None
        if idempotency_key is not None:
            idem = keys.idempotency_key(user_id, project_id, idempotency_digest(idempotency_key))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        for _ in range(PERIOD_ATTEMPTS):
            resets_at, starts, ends, expires = self._period_times(period)
            script_keys = self._keys(user_id, project_id, entry.dataset_id, period)
            if idem is not None:
                script_keys.append(idem)
            args: list[Arg] = [count, self.default_limit, expires, IDEMPOTENCY_TTL_S,
                               request_digest, starts, ends, self.max_queue_records]
            args += entry.to_args()
            reply = await self._run(self._script, script_keys, args, idem is not None,
                                    deadline)
            if isinstance(reply, Unavailable):
                return reply
            if int(reply[0]) != _OTHER_PERIOD:
                break
            period = self._period_hint = period_at(int(reply[1]))
        else:
            # Only if Redis's month changed between attempts PERIOD_ATTEMPTS times in a row.
            return Unavailable("period_changed", RETRY_AFTER_S)
        self._period_hint = period
        queue = script_keys[3]

        outcome = int(reply[0])
        if outcome == _ADMITTED:
            limit, used = int(reply[1]), int(reply[2])
            await self._index_queue(queue, deadline)
            entry_id = _text(reply[3])
            return Admitted(
                used=used, limit=limit, remaining=remaining_of(limit, used),
                resets_at=resets_at, entry_id=entry_id, entry_ids=(entry_id,),
            )
        if outcome == _EXCEEDED:
            return _exceeded(reply, count, period, resets_at)
        if outcome == _DUPLICATE:
            return _duplicate(reply, resets_at)
        if outcome == _CONFLICT:
            return IdempotencyConflict()
        if outcome == _QUEUE_FULL:
            return QueueFull(queued=int(reply[1]), retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
                             dataset_id=entry.dataset_id)
        raise RuntimeError(f"unexpected admission reply {outcome!r}")

    async def admit_many(
        self,
        entries: Sequence[QueueEntry],
        *,
        counts: Sequence[int],
        idempotency_key: str | None,
        request_digest: str,
        event_keys: Sequence[str] = (),
        event_window_s: int = EVENT_WINDOW_S,
        user_id: str | None = None,
        project_id: str | None = None,
    ) -> AdmissionResult:
        """Queue every entry of ``entries`` (one per dataset, all of one user and project),
        ``counts[i]`` records each, and count their total against the user's month: all of
        them or nothing.

        The quota is checked once for the total; each entry goes to its dataset's queue,
        whose backpressure counter grows by its own count, and one queue at or past its
        bound refuses the whole request (:class:`QueueFull` names that dataset). One
        idempotency record covers the request: its replay is a :class:`Duplicate` with the
        total count and every entry id. :class:`Admitted` lists the entry ids in the order
        given. Retries and :class:`Unavailable` are those of :meth:`admit` (module
        docstring). One entry without event keys is :meth:`admit` itself (same script, same
        stored record).

        ``event_keys`` (:func:`quota.keys.event_id_key` of the request's client event ids)
        are checked after the idempotency record and before the quota: if any is
        remembered, nothing changes and the answer is :class:`EventsSeen` with their
        positions; the caller drops those events and calls again. Otherwise, once the
        entries are queued and counted, every one is remembered for ``event_window_s``
        seconds, in the same script: concurrent resends and other API instances see either
        none or all of them.

        ``entries`` may be empty (with ``counts`` empty), when every event of the request
        was accepted before: then ``user_id`` and ``project_id`` name whose quota headers
        and idempotency record it is, and the answer is :class:`Admitted` with the usage
        unchanged, ``entry_ids`` ``()`` and ``entry_id`` ``""`` (any ``event_keys`` given
        are remembered; nothing else is written but the idempotency record).

        Raises ValueError, before Redis, for more than :data:`MAX_ENTRIES` entries,
        ``counts`` not one integer >= 0 per entry (0: an entry of quarantined records
        only), entries of several users or projects or
        of another than ``user_id``/``project_id`` when given (their keys would not share
        one slot of a cluster), no entry and no ``user_id``/``project_id``, two entries for
        one dataset, more than :data:`MAX_EVENT_KEYS` event keys, an event key that is not
        one of this user and project or given twice, or ``event_window_s`` not an integer
        >= 1.
        """
        user_id, project_id = _owner(entries, counts, user_id, project_id)
        _check_event_keys(event_keys, event_window_s, user_id, project_id)
        if len(entries) == 1 and not event_keys:
            return await self.admit(entries[0], count=counts[0],
                                    idempotency_key=idempotency_key,
                                    request_digest=request_digest)
        total = sum(counts)
        entry_args: list[Arg] = []
        for entry in entries:
            fields = entry.to_args()
            entry_args.append(len(fields))
            entry_args += fields
        period = self._period_hint or current_period(self.clock())
        idem = None
        if idempotency_key is not None:
            idem = keys.idempotency_key(user_id, project_id, idempotency_digest(idempotency_key))
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        for _ in range(PERIOD_ATTEMPTS):
            resets_at, starts, ends, expires = self._period_times(period)
            script_keys: list[str] = []
            for entry in entries:
                built = self._keys(user_id, project_id, entry.dataset_id, period)
                if not script_keys:
                    script_keys += built[:3]
                script_keys += built[3:]
            if not entries:
                script_keys += (keys.quota_limit_key(user_id),
                                keys.usage_total_key(user_id, period),
                                keys.usage_delta_key(user_id, period))
            script_keys += event_keys
            if idem is not None:
                script_keys.append(idem)
            args: list[Arg] = [len(entries), self.default_limit, expires, IDEMPOTENCY_TTL_S,
                               request_digest, starts, ends, self.max_queue_records, total,
                               len(event_keys), event_window_s]
            args += counts
            args += entry_args
            reply = await self._run(self._many_script, script_keys, args, idem is not None,
                                    deadline)
            if isinstance(reply, Unavailable):
                return reply
            if int(reply[0]) != _OTHER_PERIOD:
                break
            period = self._period_hint = period_at(int(reply[1]))
        else:
            return Unavailable("period_changed", RETRY_AFTER_S)
        self._period_hint = period

        outcome = int(reply[0])
        if outcome == _ADMITTED:
            limit, used = int(reply[1]), int(reply[2])
            entry_ids = tuple(_text(r) for r in reply[3:])
            await self._index_queues(script_keys[3:3 + 2 * len(entries):2], deadline)
            return Admitted(
                used=used, limit=limit, remaining=remaining_of(limit, used),
                resets_at=resets_at, entry_id=entry_ids[0] if entry_ids else "",
                entry_ids=entry_ids,
            )
        if outcome == _EVENTS_SEEN:
            return EventsSeen(positions=tuple(int(j) - 1 for j in reply[1:]))
        if outcome == _EXCEEDED:
            return _exceeded(reply, total, period, resets_at)
        if outcome == _DUPLICATE:
            return _duplicate(reply, resets_at)
        if outcome == _CONFLICT:
            return IdempotencyConflict()
        if outcome == _QUEUE_FULL:
            return QueueFull(queued=int(reply[1]), retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
                             dataset_id=entries[int(reply[2]) - 1].dataset_id)
        raise RuntimeError(f"unexpected admission reply {outcome!r}")

    async def _run(
        self, script: OneShotScript, script_keys: list[str], args: list[Arg],
        retry_safe: bool, deadline: float,
    ) -> Any:
        """One call of an admission script (retried as the module docstring says): its
        reply, or :class:`Unavailable`."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                # the deadline rides with the call (one timer for all calls, no timeout
                # context or task per call on the hot path: quota.coalesce)
                return await script.run(script_keys, args, deadline)
            except TimeoutError:
                return Unavailable("timeout", RETRY_AFTER_S)
            except MaxConnectionsError:
                # Every pooled connection is busy: nothing was sent, so waiting for one and
                # trying again is safe with or without an idempotency key.
                if deadline - loop.time() <= POOL_WAIT_S:
                    return Unavailable("pool_exhausted", RETRY_AFTER_S)
                await asyncio.sleep(POOL_WAIT_S)
            except _UNCERTAIN as exc:
                if not retry_safe or deadline - loop.time() <= RETRY_BACKOFF_S:
                    return Unavailable(_reason(exc), RETRY_AFTER_S)
                await asyncio.sleep(RETRY_BACKOFF_S)
            except ReplicationUnconfirmed:
                # Ran on the master, not confirmed by its replicas: a failover could still
                # lose it, so the client is told the outcome is unknown (its retry with the
                # same Idempotency-Key answers the first outcome if it survived).
                return Unavailable("replication_unconfirmed", RETRY_AFTER_S)
            except (RedisError, RedisClusterException) as exc:
                # A server error reply (OOM, cluster down, a broken counter): fail closed.
                log.warning("admission failed: %s", type(exc).__name__)
                return Unavailable("redis_error", RETRY_AFTER_S)

    def _period_times(self, period: str) -> tuple[datetime, int, int, int]:
        """``(resets_at, start, end, usage key expiry)`` of ``period`` (unix seconds but the
        first), computed once per month."""
        cached = self._period_cache
        if cached is None or cached[0] != period:
            end = period_end(period)
            cached = self._period_cache = (
                period, end, int(period_start(period).timestamp()), int(end.timestamp()),
                expire_at(period),
            )
        return cached[1], cached[2], cached[3], cached[4]

    def _keys(self, user_id: str, project_id: str, dataset_id: str, period: str) -> list[str]:
        """The script's first five keys (validated and built once per combination)."""
        cache_key = (user_id, project_id, dataset_id, period)
        built = self._key_cache.get(cache_key)
        if built is None:
            queue = keys.queue_key(user_id, project_id, dataset_id)
            built = (
                keys.quota_limit_key(user_id),
                keys.usage_total_key(user_id, period),
                keys.usage_delta_key(user_id, period),
                queue,
                keys.queued_records_key(queue),
            )
            if len(self._key_cache) >= KEY_CACHE_SIZE:
                self._key_cache.clear()  # crude bound; refills with what is hot
            self._key_cache[cache_key] = built
        return list(built)

    async def _index_queue(self, queue: str, deadline: float) -> None:
        """Add ``queue`` to the worker's index set once per process (see
        :meth:`_index_queues`)."""
        if queue not in self._indexed:
            await self._index_queues((queue,), deadline)

    async def _index_queues(self, queues: Sequence[str], deadline: float) -> None:
        """Add those of ``queues`` this process has not indexed yet to the worker's index
        set, in one SADD.

        Best effort by design: the records are already admitted, so failing here must not
        turn a 202 into a 503 (the client would retry and, without an idempotency key, be
        counted twice). The worker also SCANs for queues, and the next admission retries.
        """
        new = [queue for queue in queues if queue not in self._indexed]
        if not new:
            return
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(self.redis.sadd(keys.queues_index_key(), *new), left)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            log.warning("could not index queue (the worker's scan finds it): %s",
                        type(exc).__name__)
            return
        self._indexed.update(new)

    # --- limits and usage ----------------------------------------------------------------

    async def get_limit(self, user_id: str) -> int:
        """The user's monthly limit: the stored one, else the default (-1 = unlimited)."""
        raw = await self._bounded(self.redis.get(keys.quota_limit_key(user_id)))
        return self.default_limit if raw is None else int(raw)

    async def set_limit(self, user_id: str, limit: int) -> None:
        """Store the user's monthly limit (-1 = unlimited); applies to the next admission."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not -1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from -1 to {MAX_LIMIT}")
        await self._bounded(self.redis.set(keys.quota_limit_key(user_id), limit))

    async def usage(self, user_id: str, period: str | None = None) -> UsageReport:
        """Limit, usage and flush state of ``user_id`` in ``period`` (default: this month by
        Redis's clock, the month admissions count into)."""
        if period is None:
            period = await self._bounded(self._server_period(user_id))
        assert period is not None
        parse_period(period)
        report: UsageReport = await self._bounded(self._usage(user_id, period))
        return report

    async def _server_period(self, user_id: str) -> str:
        """This month by the clock of the server holding ``user_id``'s keys."""
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()
            node = self.redis.get_node_from_key(keys.quota_limit_key(user_id))
            reply = await self.redis.execute_command("TIME", target_nodes=node)
        else:
            reply = await self.redis.time()
        return period_at(int(reply[0]))

    async def _usage(self, user_id: str, period: str) -> UsageReport:
        limit_raw, total_raw, delta_raw = await self.redis.mget([
            keys.quota_limit_key(user_id),
            keys.usage_total_key(user_id, period),
            keys.usage_delta_key(user_id, period),
        ])
        limit = self.default_limit if limit_raw is None else int(limit_raw)
        used = int(total_raw or 0)
        unflushed = int(delta_raw or 0) + await self._pending(user_id, period)
        return UsageReport(
            limit=limit, used=used, remaining=remaining_of(limit, used), period=period,
            resets_at=period_end(period), flushed=max(0, used - unflushed),
            unflushed=unflushed,
        )

    async def _pending(self, user_id: str, period: str) -> int:
        """Records of deltas a flush has renamed away but not yet written to the ledger."""
        pattern = keys.usage_pending_key(user_id, period, "*")
        options: dict[str, Any] = {}
        if isinstance(self.redis, RedisCluster):
            # All of the user's keys live in one slot: scan only the node that owns it.
            await self.redis.initialize()
            options["target_nodes"] = self.redis.get_node_from_key(
                keys.quota_limit_key(user_id)
            )
        total = 0
        async for key in self.redis.scan_iter(match=pattern, count=1000, **options):
            value = await self.redis.get(key)
            total += int(value or 0)
        return total

    async def _bounded(self, call: Any) -> Any:
        """Await ``call`` within the deadline; Redis trouble becomes QuotaUnavailableError."""
        try:
            return await asyncio.wait_for(call, self.deadline_s)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise QuotaUnavailableError(_reason(exc)) from exc


def _owner(entries: Sequence[QueueEntry], counts: Sequence[int], user_id: str | None,
           project_id: str | None) -> tuple[str, str]:
    """The user and project of an :meth:`QuotaService.admit_many` call, its entries and
    counts checked (ValueError as that method says)."""
    if isinstance(counts, str | bytes) or len(counts) != len(entries):
        raise ValueError("counts must hold one count per entry")
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"admit_many takes at most {MAX_ENTRIES} entries")
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("every count must be an integer >= 0")
    if entries:
        user_id = entries[0].user_id if user_id is None else user_id
        project_id = entries[0].project_id if project_id is None else project_id
    if user_id is None or project_id is None:
        raise ValueError("an admission of no entry must name its user and project")
    if any(e.user_id != user_id or e.project_id != project_id for e in entries):
        # every key of one admission must share one hash tag (one cluster slot)
        raise ValueError("entries of one admission must be of one user and project")
    if len({e.dataset_id for e in entries}) != len(entries):
        raise ValueError("entries of one admission must be of distinct datasets")
    return user_id, project_id


def _check_event_keys(event_keys: Sequence[str], event_window_s: int, user_id: str,
                      project_id: str) -> None:
    """Refuse (ValueError) event keys that are too many, repeated or not built by
    :func:`quota.keys.event_id_key` for ``user_id`` and ``project_id`` (another hash tag
    would be another cluster slot), and a window that is not an integer >= 1 (the script's
    ``SET ... EX`` must not fail after its first write)."""
    if (isinstance(event_window_s, bool) or not isinstance(event_window_s, int)
            or event_window_s < 1):
        raise ValueError("event_window_s must be an integer >= 1")
    if isinstance(event_keys, str | bytes) or len(event_keys) > MAX_EVENT_KEYS:
        raise ValueError(f"event_keys must be a sequence of at most {MAX_EVENT_KEYS} keys")
    if not event_keys:
        return
    prefix = keys.event_id_key_prefix(user_id, project_id)
    size = len(prefix) + keys.EVENT_ID_DIGEST_CHARS
    for key in event_keys:
        if not isinstance(key, str) or len(key) != size or not key.startswith(prefix):
            raise ValueError("every event key must be an event_id_key of the admission's "
                             "user and project")
    if len(set(event_keys)) != len(event_keys):
        raise ValueError("event keys of one admission must be distinct")


def _exceeded(reply: Any, requested: int, period: str, resets_at: datetime) -> QuotaExceeded:
    """The :class:`QuotaExceeded` of a script's reply ``{2, limit, used, now_s, now_us}``."""
    limit, used = int(reply[1]), int(reply[2])
    server_time = datetime.fromtimestamp(int(reply[3]), UTC).replace(microsecond=int(reply[4]))
    return QuotaExceeded(
        limit=limit, used=used, requested=requested, remaining=remaining_of(limit, used),
        period=period, resets_at=resets_at, server_time=server_time,
    )


def _duplicate(reply: Any, resets_at: datetime) -> Duplicate:
    """The :class:`Duplicate` of a script's reply ``{3, limit, used, count, ids}`` (ids
    joined by ``,`` when the first admission queued several entries, empty when none)."""
    limit, used = int(reply[1]), int(reply[2])
    stored = _text(reply[4])
    # an admission of no entry (every event seen before) stored no id at all
    entry_ids = tuple(stored.split(",")) if stored else ()
    return Duplicate(
        count=int(reply[3]), entry_id=entry_ids[0] if entry_ids else "", used=used,
        limit=limit, remaining=remaining_of(limit, used), resets_at=resets_at,
        entry_ids=entry_ids,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    return "redis_error"

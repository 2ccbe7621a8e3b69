"""Can the Redis in use lose acknowledged writes? Read from its persistence config
(``CONFIG GET appendonly / appendfsync / save``) at start and whenever it comes back.

A 2xx means "durably queued" only if Redis has fsynced the write before replying:
``appendonly yes`` with ``appendfsync always``. Anything else is logged once as a warning and
shown in ``/readyz``'s body (the service is still ready: just not power-loss safe).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from strictgate.redis_health import client_where, is_connection_problem
from strictgate.unavailable import REDIS_FAILURES

log = logging.getLogger("strictgate.durability")

UNKNOWN = "unknown"
NO_AOF = "no-aof"
SAFE = "always"
MESSAGE_CHARS = 400

_EMBEDDED_HINT = "STRICTGATE_REDIS_FSYNC=always (the default) makes a 2xx survive power loss"
_EXTERNAL_HINT = "for a 2xx that survives power loss, set appendonly yes and appendfsync always"


@dataclasses.dataclass(frozen=True, slots=True)
class Durability:
    """What the Redis in use promises for an acknowledged write."""

    redis: str
    """``always``/``everysec``/``no`` (its appendfsync, AOF on), ``no-aof``, or ``unknown``."""
    warning: str | None = None
    """Why a 2xx may not survive power loss (None: it does)."""

    def fields(self) -> dict[str, str]:
        """The JSON object shown in ``/readyz``."""
        out = {"redis": self.redis}
        if self.warning is not None:
            out["warning"] = self.warning
        return out


def assess(where: str, appendonly: str, appendfsync: str, save: str, *,
           embedded: bool) -> Durability:
    """The :class:`Durability` of a server with these config values."""
    hint = _EMBEDDED_HINT if embedded else _EXTERNAL_HINT
    if appendonly != "yes":
        if save.strip():
            lost = (f"(appendonly no; snapshots: save {save[:60]!r}): records and quota "
                    "counts acknowledged since its last snapshot are lost")
        else:
            lost = "(appendonly no, no snapshots): everything it holds is lost"
        return Durability(NO_AOF, f"Redis at {where} runs without AOF {lost} if it restarts "
                                  f"or loses power; {hint}")
    if appendfsync == SAFE:
        return Durability(SAFE)
    window = {"everysec": "about the last second", "no": "the last ~30 s"}.get(
        appendfsync, "some time")
    return Durability(appendfsync[:20], (
        f"Redis at {where} runs appendfsync {appendfsync[:20]}: records and quota counts "
        f"acknowledged in {window} can be lost on power loss (not on a crash); {hint}"))


def _unknown(where: str, reason: str) -> Durability:
    return Durability(UNKNOWN, (
        f"could not read the persistence config of Redis at {where} (CONFIG GET: "
        f"{reason[:120]}): cannot tell whether a 2xx survives power loss; "
        f"{_EXTERNAL_HINT}")[:MESSAGE_CHARS])


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def probe(client: aioredis.Redis, timeout_s: float, *, embedded: bool) -> Durability:
    """Read the server's persistence config and assess it (on a cluster: every master's, the
    first that can lose writes wins). Raises the connection error if a server is not
    reachable (the caller probes again when it is)."""
    if not isinstance(client, RedisCluster):
        return await _probe_node(client, client_where(client), timeout_s, embedded=embedded)
    await asyncio.wait_for(client.initialize(), timeout_s)
    found = Durability(UNKNOWN, None)
    for node in client.get_primaries():
        found = await _probe_node(client, f"{node.host}:{node.port}", timeout_s,
                                  embedded=embedded, target_nodes=node)
        if found.warning is not None:
            break
    return found


async def _probe_node(client: aioredis.Redis, where: str, timeout_s: float, *, embedded: bool,
                      **target: object) -> Durability:
    values: dict[str, str] = {}
    try:
        for name in ("appendonly", "appendfsync", "save"):  # one each: Redis < 7 takes one
            reply = await asyncio.wait_for(client.config_get(name, **target), timeout_s)
            if name not in reply:  # a server that hides it (managed services do)
                return _unknown(where, f"no {name} in the reply")
            values[name] = _text(reply[name])
    except ResponseError as exc:  # CONFIG renamed, disabled or not allowed by an ACL
        return _unknown(where, f"{type(exc).__name__}: {exc}")
    return assess(where, values["appendonly"], values["appendfsync"], values["save"],
                  embedded=embedded)


class DurabilityReport:
    """The current :class:`Durability` of one client's server; logs a change to an unsafe
    state once."""

    def __init__(self, client: aioredis.Redis, timeout_s: float, *, embedded: bool) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._embedded = embedded
        self.current = Durability(UNKNOWN, None)

    async def refresh(self) -> Durability:
        """Probe again; log the warning if it differs from the last one logged. An
        unreachable server keeps the last known state (its outage is logged elsewhere)."""
        try:
            found = await probe(self._client, self._timeout_s, embedded=self._embedded)
        except REDIS_FAILURES as exc:
            if not is_connection_problem(exc):
                found = _unknown(client_where(self._client), f"{type(exc).__name__}: {exc}")
            else:
                if self.current.redis == UNKNOWN and self.current.warning is None:
                    self.current = _unknown(client_where(self._client), "not reachable")
                return self.current
        if found != self.current and found.warning is not None:
            log.warning("durability: %s", found.warning)
        self.current = found
        return found

    def fields(self) -> dict[str, str]:
        """The ``durability`` object of ``/readyz``'s body."""
        return self.current.fields()

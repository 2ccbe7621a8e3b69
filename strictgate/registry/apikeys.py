"""Project API keys: JWTs the service signs (HS256), verified cheaply, revocable everywhere.

A key is a JWT with claims ``project_id``, ``user_id``, ``kid``, ``iat`` (``kid`` also in the
header). Its metadata (never the token) lives in Redis twice: in the project's hash, for
listing, and under ``registry:kid:<kid>``, which is what verification checks. Revoking deletes
both and bumps ``registry:generation``; every process re-checks its cache of verified tokens
when the counter moves (see :mod:`strictgate.registry.generation`), so a revoked key stops working
on every instance within the poll interval (0.5 s by default).
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import math
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jwt
import orjson
import redis.asyncio as aioredis

from quota.keys import ID_PATTERN, api_key_by_kid_key, api_keys_key, check_id
from strictgate.registry.generation import GenerationPoll, bump_generation
from strictgate.registry.timestamps import iso

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 4096
MAX_CACHED = 10_000
REQUIRED_CLAIMS = ("kid", "user_id", "iat")

PROJECT_CLAIM_MISSING = "Project not found in API token claims"
INVALID_KEY = "Invalid API key"
EXPIRED_KEY = "API key expired"
REVOKED_KEY = "Unknown or revoked API key"


class AuthError(Exception):
    """A token was refused; ``message`` and ``code`` go to the client as they are."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _invalid() -> AuthError:
    return AuthError(INVALID_KEY, "invalid_api_key")


def pinned_header(token: str) -> dict[str, Any]:
    """The token's header, if it names :data:`ALGORITHM`; else :class:`AuthError`.

    The first of two independent algorithm pins: this one reads the header itself, so a
    token claiming ``none``, another HMAC or an asymmetric algorithm is refused whatever the
    JWT library would make of it (see :func:`signed_claims` for the second).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid() from None
    if header.get("alg") != ALGORITHM:
        raise _invalid()
    return header


def signed_claims(token: str, secret: str) -> dict[str, Any]:
    """The claims of ``token`` if it is signed with ``secret`` by :data:`ALGORITHM` and
    carries :data:`REQUIRED_CLAIMS`; else :class:`AuthError`.

    The second algorithm pin: the library verifies with this one algorithm only, whatever
    the header says, so the signature check never depends on :func:`pinned_header`.
    """
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM],
            # Time claims are checked by the caller against the injected clock.
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError:
        raise _invalid() from None
    if not isinstance(claims, dict):
        raise _invalid()
    return claims


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for. The project always comes from here."""

    project_id: str
    user_id: str
    key_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``api_key`` is shown once and never stored."""

    key_id: str
    api_key: str


@dataclasses.dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed (no secret)."""

    key_id: str
    project_id: str
    user_id: str
    created_at: str

    def to_json(self) -> dict[str, str]:
        """The admin API's shape."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    exp: float | None


def _is_number(value: Any) -> bool:
    # NaN and infinities are not times: an "exp": Infinity must not make a key eternal.
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and ID_PATTERN.match(value) is not None


class KeyService:
    """Create, list, revoke and verify project API keys."""

    def __init__(
        self,
        redis: aioredis.Redis,
        secret: str,
        *,
        clock: Callable[[], datetime],
        refresh_interval_s: float = 0.5,
        max_cached: int = MAX_CACHED,
    ) -> None:
        if not secret:
            raise ValueError("the signing secret must not be empty")
        self._redis = redis
        self._secret = secret
        self._clock = clock
        self._max_cached = max_cached
        self._cache: collections.OrderedDict[str, _Verified] = collections.OrderedDict()
        self._poll = GenerationPoll(redis, interval_s=refresh_interval_s)

    # --- admin ----------------------------------------------------------------------------

    async def create(self, project_id: str, user_id: str) -> CreatedKey:
        """Sign a new key for ``user_id`` in ``project_id``; older keys stay live (rotation)."""
        check_id(project_id)
        check_id(user_id)
        key_id = "k" + secrets.token_hex(12)
        now = self._clock()
        info = KeyInfo(key_id, project_id, user_id, iso(now))
        token = jwt.encode(
            {"project_id": project_id, "user_id": user_id, "kid": key_id,
             "iat": int(now.timestamp())},
            self._secret, algorithm=ALGORITHM, headers={"kid": key_id},
        )
        meta = orjson.dumps(info.to_json())
        # The listing entry first: the key becomes usable only once it can also be revoked.
        await self._redis.hset(api_keys_key(project_id), key_id, meta)
        await self._redis.set(api_key_by_kid_key(key_id), meta)
        return CreatedKey(key_id, token)

    async def list(self, project_id: str) -> builtins.list[KeyInfo]:
        """The live keys of a project, oldest first."""
        rows = await self._redis.hgetall(api_keys_key(project_id))
        infos = [KeyInfo(**orjson.loads(raw)) for raw in rows.values()]
        return sorted(infos, key=lambda k: (k.created_at, k.key_id))

    async def revoke(self, project_id: str, key_id: str) -> bool:
        """Revoke a key of ``project_id``; False if it has no such key."""
        check_id(key_id)
        if not await self._redis.hexists(api_keys_key(project_id), key_id):
            return False
        # Verification looks at the by-kid entry: delete it first.
        await self._redis.delete(api_key_by_kid_key(key_id))
        await self._redis.hdel(api_keys_key(project_id), key_id)
        await bump_generation(self._redis)
        self._cache = collections.OrderedDict(
            (t, v) for t, v in self._cache.items() if v.principal.key_id != key_id
        )
        return True

    # --- hot path -------------------------------------------------------------------------

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified recently, when no Redis call is due; else None
        (then call :meth:`verify`, which also gives the precise error)."""
        if not self._poll.fresh():
            return None
        cached = self._cache.get(token)
        if cached is None or (cached.exp is not None and self._clock().timestamp() >= cached.exp):
            return None
        return cached.principal

    async def verify(self, token: str) -> Principal:
        """The principal of a valid, live token; :class:`AuthError` otherwise."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise _invalid()
        await self._poll.maybe_refresh(self._revalidate)
        now = self._clock().timestamp()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.exp is not None and now >= cached.exp:
                del self._cache[token]
                raise AuthError(EXPIRED_KEY, "api_key_expired")
            self._cache.move_to_end(token)
            return cached.principal
        epoch = self._poll.epoch
        verified = self._check_token(token, now)
        await self._check_live(verified.principal)
        # A verification that overlapped a refresh may predate a revocation: don't keep it.
        if epoch == self._poll.epoch:
            self._cache[token] = verified
            if len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return verified.principal

    def _check_token(self, token: str, now: float) -> _Verified:
        """Signature, algorithm and claims (no Redis)."""
        header = pinned_header(token)
        claims = signed_claims(token, self._secret)
        kid = claims["kid"]
        if not _valid_id(kid) or header.get("kid", kid) != kid:
            raise _invalid()
        if not _valid_id(claims["user_id"]) or not _is_number(claims["iat"]):
            raise _invalid()
        project_id = claims.get("project_id")
        if not _valid_id(project_id):
            raise AuthError(PROJECT_CLAIM_MISSING, "project_not_found")
        exp = claims.get("exp")
        if exp is not None and (not _is_number(exp) or now >= exp):
            raise AuthError(EXPIRED_KEY, "api_key_expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_number(nbf) or now < nbf):
            raise _invalid()
        assert isinstance(project_id, str)  # _valid_id checked it
        return _Verified(Principal(project_id, claims["user_id"], kid),
                         float(exp) if exp is not None else None)

    async def _check_live(self, principal: Principal) -> None:
        raw = await self._redis.get(api_key_by_kid_key(principal.key_id))
        if raw is None:
            raise AuthError(REVOKED_KEY, "api_key_revoked")
        meta = orjson.loads(raw)
        if (meta.get("project_id"), meta.get("user_id")) != (
            principal.project_id, principal.user_id
        ):
            raise _invalid()

    async def _revalidate(self) -> None:
        """Drop cached tokens whose key was revoked."""
        kids = sorted({v.principal.key_id for v in self._cache.values()})
        if not kids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for kid in kids:
                pipe.exists(api_key_by_kid_key(kid))
            alive = await pipe.execute()
        revoked = {kid for kid, live in zip(kids, alive, strict=True) if not live}
        if revoked:
            self._cache = collections.OrderedDict(
                (t, v) for t, v in self._cache.items() if v.principal.key_id not in revoked
            )

    async def ready(self) -> bool:
        """Whether key metadata can be read."""
        return await self._poll.ping()

"""Project API keys against a real Redis: create, verify, revoke, rotate, every rejection."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis

from quota.keys import api_key_by_kid_key, api_keys_key
from strictgate.registry.apikeys import (
    EXPIRED_KEY,
    INVALID_KEY,
    PROJECT_CLAIM_MISSING,
    REVOKED_KEY,
    AuthError,
    KeyService,
    Principal,
    pinned_header,
    signed_claims,
)
from tests.redis_mode import async_client

SECRET = "apikeys-test-secret-" + "0123456789abcdef" * 4
T0 = datetime(2026, 6, 10, 10, 58, tzinfo=UTC)


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(aredis: aioredis.Redis, clock: Clock) -> KeyService:
    return KeyService(aredis, SECRET, clock=clock)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _reject(service: KeyService, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await service.verify(token)
    return info.value


async def test_create_verify_and_claims(service: KeyService) -> None:
    created = await service.create("p1", "alice")
    header = jwt.get_unverified_header(created.api_key)
    claims = jwt.decode(created.api_key, SECRET, algorithms=["HS256"])
    assert header["alg"] == "HS256" and header["kid"] == created.key_id
    assert claims == {"project_id": "p1", "user_id": "alice", "kid": created.key_id,
                      "iat": int(T0.timestamp())}
    assert await service.verify(created.api_key) == Principal("p1", "alice", created.key_id)
    # again, from the cache
    assert await service.verify(created.api_key) == Principal("p1", "alice", created.key_id)


async def test_list_has_no_secrets_and_metadata_is_stored_by_kid(
    service: KeyService, aredis: aioredis.Redis
) -> None:
    a = await service.create("p1", "alice")
    b = await service.create("p1", "bob")
    await service.create("p2", "carol")
    listed = [k.to_json() for k in await service.list("p1")]
    assert {k["key_id"] for k in listed} == {a.key_id, b.key_id}
    assert all(set(k) == {"key_id", "project_id", "user_id", "created_at"} for k in listed)
    assert all(k["created_at"] == "2026-06-10T10:58:00.000Z" for k in listed)
    stored = await aredis.hgetall(api_keys_key("p1"))
    assert all(SECRET.encode() not in bytes(v) for v in stored.values())  # type: ignore[arg-type]
    assert await aredis.exists(api_key_by_kid_key(a.key_id)) == 1


async def test_rotation_several_live_keys_then_revoke_old(service: KeyService) -> None:
    old = await service.create("p1", "alice")
    new = await service.create("p1", "alice")
    assert old.key_id != new.key_id
    assert (await service.verify(old.api_key)).key_id == old.key_id
    assert (await service.verify(new.api_key)).key_id == new.key_id
    assert await service.revoke("p1", old.key_id) is True
    err = await _reject(service, old.api_key)
    assert (err.message, err.code) == (REVOKED_KEY, "api_key_revoked")
    assert (await service.verify(new.api_key)).key_id == new.key_id
    assert [k.key_id for k in await service.list("p1")] == [new.key_id]


async def test_revoke_unknown_or_other_projects_key_is_false(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    assert await service.revoke("p1", "knope") is False
    assert await service.revoke("p2", key.key_id) is False
    assert (await service.verify(key.api_key)).project_id == "p1"


def _forge(claims: dict[str, Any], *, secret: str = SECRET, **header: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=header or None)


async def test_alg_none_is_rejected(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    claims = jwt.decode(key.api_key, options={"verify_signature": False})
    token = _b64({"alg": "none", "typ": "JWT", "kid": key.key_id}) + "." + _b64(claims) + "."
    assert (await _reject(service, token)).message == INVALID_KEY
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert (await _reject(service, unsigned)).message == INVALID_KEY


async def test_other_algorithms_are_rejected(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    claims = jwt.decode(key.api_key, options={"verify_signature": False})
    for alg in ("HS384", "HS512"):
        token = jwt.encode(claims, SECRET, algorithm=alg, headers={"kid": key.key_id})
        assert (await _reject(service, token)).code == "invalid_api_key"


# The two algorithm pins, each on its own: a test that only goes through verify() would
# pass with either one removed, since the other still refuses the token.

CLAIMS = {"project_id": "p1", "user_id": "alice", "kid": "k1", "iat": 1_780_000_000}


@pytest.mark.parametrize("alg", ["HS384", "HS512", "none", "None", "RS256", "ES256", "hs256",
                                 "HS256 ", None])
def test_header_pin_refuses_any_other_algorithm(alg: str | None) -> None:
    header: dict[str, Any] = {"typ": "JWT", "kid": "k1"}
    if alg is not None:
        header["alg"] = alg
    genuine = jwt.encode(CLAIMS, SECRET, algorithm="HS256", headers={"kid": "k1"})
    # the genuine token's payload and signature under the other header
    forged = _b64(header) + "." + genuine.split(".", 1)[1]
    with pytest.raises(AuthError) as info:
        pinned_header(forged)
    assert (info.value.message, info.value.code) == (INVALID_KEY, "invalid_api_key")
    assert pinned_header(genuine)["alg"] == "HS256"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_signature_pin_refuses_another_hmac_with_the_right_secret(alg: str) -> None:
    forged = jwt.encode(CLAIMS, SECRET, algorithm=alg, headers={"kid": "k1"})
    with pytest.raises(AuthError) as info:
        signed_claims(forged, SECRET)
    assert (info.value.message, info.value.code) == (INVALID_KEY, "invalid_api_key")
    genuine = jwt.encode(CLAIMS, SECRET, algorithm="HS256", headers={"kid": "k1"})
    assert signed_claims(genuine, SECRET) == CLAIMS


def test_signature_pin_refuses_unsigned_tokens() -> None:
    for alg in ("none", "None"):
        unsigned = _b64({"alg": alg, "typ": "JWT"}) + "." + _b64(CLAIMS) + "."
        with pytest.raises(AuthError):
            signed_claims(unsigned, SECRET)


async def test_wrong_signature_is_rejected(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    claims = jwt.decode(key.api_key, options={"verify_signature": False})
    forged = _forge(claims, secret="another-secret-0123456789abcdef0123456789", kid=key.key_id)
    assert (await _reject(service, forged)).message == INVALID_KEY
    head, body, sig = key.api_key.split(".")
    tampered = f"{head}.{_b64({**claims, 'project_id': 'p2'})}.{sig}"
    assert (await _reject(service, tampered)).message == INVALID_KEY
    flipped = f"{head}.{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
    assert (await _reject(service, flipped)).message == INVALID_KEY


async def test_unknown_kid_is_rejected(service: KeyService) -> None:
    claims = {"project_id": "p1", "user_id": "alice", "kid": "knope", "iat": 1}
    err = await _reject(service, _forge(claims, kid="knope"))
    assert (err.message, err.code) == (REVOKED_KEY, "api_key_revoked")


async def test_kid_of_another_user_or_project_is_rejected(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    for changed in ({"project_id": "p2"}, {"user_id": "mallory"}):
        claims = {"project_id": "p1", "user_id": "alice", "kid": key.key_id, "iat": 1, **changed}
        assert (await _reject(service, _forge(claims, kid=key.key_id))).message == INVALID_KEY


async def test_header_kid_must_match_claim(service: KeyService) -> None:
    a = await service.create("p1", "alice")
    b = await service.create("p1", "alice")
    claims = {"project_id": "p1", "user_id": "alice", "kid": a.key_id, "iat": 1}
    assert (await _reject(service, _forge(claims, kid=b.key_id))).message == INVALID_KEY


async def test_expired_exp_is_rejected_and_future_exp_accepted(
    service: KeyService, clock: Clock
) -> None:
    key = await service.create("p1", "alice")
    base = {"project_id": "p1", "user_id": "alice", "kid": key.key_id, "iat": 1}
    now = int(T0.timestamp())
    err = await _reject(service, _forge({**base, "exp": now - 1}, kid=key.key_id))
    assert (err.message, err.code) == (EXPIRED_KEY, "api_key_expired")
    live = _forge({**base, "exp": now + 60}, kid=key.key_id)
    assert (await service.verify(live)).key_id == key.key_id
    # a cached token expires too
    clock.now = T0 + timedelta(seconds=61)
    assert (await _reject(service, live)).code == "api_key_expired"
    err = await _reject(service, _forge({**base, "exp": "soon"}, kid=key.key_id))
    assert err.code == "api_key_expired"


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_a_non_finite_exp_never_makes_a_key_eternal(
    service: KeyService, exp: str
) -> None:
    key = await service.create("p1", "alice")
    payload = json.dumps({"project_id": "p1", "user_id": "alice", "kid": key.key_id, "iat": 1,
                          "exp": 0}).replace('"exp": 0', f'"exp": {exp}')
    token = jwt.api_jws.encode(payload.encode(), SECRET, algorithm="HS256",
                               headers={"kid": key.key_id, "typ": "JWT"})
    assert (await _reject(service, token)).code == "api_key_expired"


async def test_not_before_in_the_future_is_rejected(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    claims = {"project_id": "p1", "user_id": "alice", "kid": key.key_id, "iat": 1,
              "nbf": int(T0.timestamp()) + 60}
    assert (await _reject(service, _forge(claims, kid=key.key_id))).code == "invalid_api_key"


async def test_missing_project_claim_has_the_seeds_message(service: KeyService) -> None:
    key = await service.create("p1", "alice")
    for project in (None, "", 5, "bad id"):
        claims: dict[str, Any] = {"user_id": "alice", "kid": key.key_id, "iat": 1}
        if project is not None:
            claims["project_id"] = project
        err = await _reject(service, _forge(claims, kid=key.key_id))
        assert (err.message, err.code) == (PROJECT_CLAIM_MISSING, "project_not_found")
    assert PROJECT_CLAIM_MISSING == "Project not found in API token claims"


@pytest.mark.parametrize("missing", ["kid", "user_id", "iat"])
async def test_missing_required_claims_are_rejected(service: KeyService, missing: str) -> None:
    key = await service.create("p1", "alice")
    claims = {"project_id": "p1", "user_id": "alice", "kid": key.key_id, "iat": 1}
    del claims[missing]
    assert (await _reject(service, _forge(claims, kid=key.key_id))).message == INVALID_KEY


@pytest.mark.parametrize("bad", [{"iat": "yesterday"}, {"iat": True}, {"user_id": 7},
                                 {"user_id": "a b"}, {"kid": 12}])
async def test_claims_of_the_wrong_type_are_rejected(
    service: KeyService, bad: dict[str, Any]
) -> None:
    key = await service.create("p1", "alice")
    claims = {"project_id": "p1", "user_id": "alice", "kid": key.key_id, "iat": 1, **bad}
    assert (await _reject(service, _forge(claims))).message == INVALID_KEY


@pytest.mark.parametrize("token", [
    "", "garbage", "a.b.c", "a.b", "....", "eyJ.eyJ.sig", "\x00\xff", "é.é.é",
    "x" * 5000, _b64({"alg": "HS256"}) + ".not-base64!." + "sig",
    _b64({"alg": "HS256"}) + "." + base64.urlsafe_b64encode(b"[1,2]").decode() + ".sig",
])
async def test_garbage_is_rejected(service: KeyService, token: str) -> None:
    err = await _reject(service, token)
    assert (err.message, err.code) == (INVALID_KEY, "invalid_api_key")


async def test_revocation_reaches_another_instance_within_a_second(
    aredis: aioredis.Redis, redis_url: str, clock: Clock
) -> None:
    other_client = async_client(redis_url)
    try:
        here = KeyService(aredis, SECRET, clock=clock)
        there = KeyService(other_client, SECRET, clock=clock)
        key = await here.create("p1", "alice")
        keep = await here.create("p1", "alice")
        assert (await there.verify(key.api_key)).key_id == key.key_id  # cached over there
        assert await here.revoke("p1", key.key_id)
        started = time.monotonic()
        while True:
            try:
                await there.verify(key.api_key)
            except AuthError as exc:
                assert exc.code == "api_key_revoked"
                break
            assert time.monotonic() - started < 1.0, "revocation not seen within 1 s"
            await asyncio.sleep(0.02)
        assert (await there.verify(keep.api_key)).key_id == keep.key_id
    finally:
        await other_client.aclose()


async def test_verified_tokens_are_served_from_the_cache(
    service: KeyService, aredis: aioredis.Redis
) -> None:
    key = await service.create("p1", "alice")
    await service.verify(key.api_key)
    # Delete the metadata behind the service's back (no generation bump): the cache answers
    # until the periodic full revalidation, without a Redis lookup per request.
    await aredis.delete(api_key_by_kid_key(key.key_id))
    assert (await service.verify(key.api_key)).key_id == key.key_id


def test_empty_secret_is_refused(aredis: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        KeyService(aredis, "", clock=Clock())

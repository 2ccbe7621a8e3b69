"""The shared, coalescing connection of the admission script: replies reach their own
callers, in order, through timeouts and connection loss (real Redis)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from quota.coalesce import CoalescingChannel
from quota.script import pack


async def test_concurrent_calls_get_their_own_replies_in_one_connection(
    aredis: aioredis.Redis,
) -> None:
    channel = CoalescingChannel(aredis)
    before = len(await aredis.client_list())
    try:
        replies = await asyncio.gather(
            *(channel.call(pack(["ECHO", f"r{i}"])) for i in range(500))
        )
        assert replies == [f"r{i}".encode() for i in range(500)]
        # 500 concurrent calls, one more connection on the server
        assert len(await aredis.client_list()) == before + 1
    finally:
        await channel.aclose()


async def test_an_error_reply_goes_to_its_caller_only(aredis: aioredis.Redis) -> None:
    channel = CoalescingChannel(aredis)
    try:
        results = await asyncio.gather(
            channel.call(pack(["ECHO", "a"])),
            channel.call(pack(["NOSUCHCOMMAND"])),
            channel.call(pack(["ECHO", "c"])),
            return_exceptions=True,
        )
        assert results[0] == b"a" and results[2] == b"c"
        assert isinstance(results[1], ResponseError)
    finally:
        await channel.aclose()


async def test_a_caller_that_gives_up_never_shifts_the_replies(aredis: aioredis.Redis) -> None:
    channel = CoalescingChannel(aredis)
    try:
        # BLPOP holds the connection 0.3 s on the server: the next call waits behind it
        blocking = asyncio.ensure_future(channel.call(pack(["BLPOP", "nothing", "0.3"])))
        await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await channel.call(pack(["ECHO", "late"]))
        assert await channel.call(pack(["ECHO", "next"])) == b"next"
        assert await blocking is None
    finally:
        await channel.aclose()


async def test_a_killed_connection_fails_calls_in_flight_then_reconnects(
    aredis: aioredis.Redis, redis_url: str
) -> None:
    channel = CoalescingChannel(aredis)
    killer = aioredis.Redis.from_url(redis_url)
    try:
        assert await channel.call(pack(["CLIENT", "SETNAME", "coalesced"])) == b"OK"
        in_flight = asyncio.ensure_future(channel.call(pack(["BLPOP", "nothing", "2"])))
        await asyncio.sleep(0.05)
        await killer.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        with pytest.raises((RedisConnectionError, OSError)):
            await in_flight
        assert await channel.call(pack(["ECHO", "again"])) == b"again"
    finally:
        await killer.aclose()
        await channel.aclose()


async def test_a_deadline_fails_the_call_in_time_and_keeps_the_order(
    aredis: aioredis.Redis,
) -> None:
    channel = CoalescingChannel(aredis)
    loop = asyncio.get_running_loop()
    try:
        blocking = asyncio.ensure_future(channel.call(pack(["BLPOP", "nothing", "0.4"])))
        await asyncio.sleep(0.02)
        # a far deadline first arms the shared timer; a nearer one must still fire on time
        far = asyncio.ensure_future(channel.call(pack(["ECHO", "far"]), loop.time() + 30))
        started = loop.time()
        with pytest.raises(TimeoutError):
            await channel.call(pack(["ECHO", "near"]), started + 0.1)
        assert 0.08 <= loop.time() - started < 0.3
        # the replies behind the BLPOP still reach their own callers
        assert await far == b"far"
        assert await channel.call(pack(["ECHO", "next"]), loop.time() + 5) == b"next"
        assert await blocking is None
    finally:
        await channel.aclose()


async def test_deadlines_of_answered_calls_fire_nothing(aredis: aioredis.Redis) -> None:
    channel = CoalescingChannel(aredis)
    loop = asyncio.get_running_loop()
    try:
        replies = await asyncio.gather(*(
            channel.call(pack(["ECHO", f"r{i}"]), loop.time() + 0.05) for i in range(200)))
        assert replies == [f"r{i}".encode() for i in range(200)]
        await asyncio.sleep(0.1)  # past every deadline: nothing answered fails late
        assert await channel.call(pack(["ECHO", "after"]), loop.time() + 0.05) == b"after"
    finally:
        await channel.aclose()


def test_pack_sends_text_and_numbers_and_refuses_anything_else() -> None:
    assert pack(["SET", "k\u00e9", b"\x00v", 42, -1, 1.5]) == (
        b"*6\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n\x00v\r\n$2\r\n42\r\n$2\r\n-1\r\n"
        b"$3\r\n1.5\r\n")
    for wrong in (None, True, ["list"], {"d": 1}):
        with pytest.raises(TypeError):
            pack(["SET", "k", wrong])  # type: ignore[list-item]

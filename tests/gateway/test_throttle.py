"""The shared throttle against a real redis-server."""

import asyncio
import time

import pytest
from redis.asyncio import Redis

from bot.sender.throttle import Throttle, connection_id


async def test_never_more_than_calls_in_any_window(redis: Redis) -> None:
    throttle = Throttle(redis, "t1", calls=5, period=0.5, margin=0)
    times: list[float] = []

    async def caller() -> None:
        for _ in range(4):
            await throttle.acquire()
            times.append(time.monotonic())

    await asyncio.gather(*(caller() for _ in range(3)))  # 12 calls, several "processes"
    times.sort()
    assert len(times) == 12
    for i in range(len(times) - 5):
        # any 6 consecutive calls span at least one period
        assert times[i + 5] - times[i] >= 0.5 - 0.02


async def test_free_calls_go_at_once_then_wait(redis: Redis) -> None:
    throttle = Throttle(redis, "t2", calls=3, period=10, margin=0)
    assert [await throttle.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await throttle.try_acquire()
    assert 9.0 < wait <= 10.0
    assert 9.0 < await throttle.available_in() <= 10.0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await throttle.acquire()


async def test_pause_holds_every_caller(redis: Redis) -> None:
    one = Throttle(redis, "t3", calls=100, period=60)
    two = Throttle(redis, "t3", calls=100, period=60)  # another process, same connection
    await one.pause(0.4)
    await one.pause(0.05)  # a shorter pause never shortens a longer one
    assert await two.try_acquire() > 0.2
    started = time.monotonic()
    await two.acquire()
    assert time.monotonic() - started >= 0.2
    assert await one.available_in() == 0.0


async def test_connections_are_independent(redis: Redis) -> None:
    a = Throttle(redis, connection_id("https://api.messagemedia.com", "key-a"), calls=1, period=60)
    b = Throttle(redis, connection_id("https://api.messagemedia.com", "key-b"), calls=1, period=60)
    assert await a.try_acquire() == 0.0
    assert await b.try_acquire() == 0.0
    assert await a.try_acquire() > 0


def test_connection_id_hides_the_key() -> None:
    ident = connection_id("https://x", "very-secret-key")
    assert "secret" not in ident
    assert len(ident) == 16


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        Throttle(None, "x", calls=0)  # type: ignore[arg-type]


async def test_the_margin_keeps_calls_in_the_window_longer(redis: Redis) -> None:
    throttle = Throttle(redis, "t5", calls=1, period=10)  # default margin: 0.5 s
    assert await throttle.try_acquire() == 0.0
    assert 10.0 < await throttle.try_acquire() <= 10.5
    assert Throttle(redis, "t6", calls=1, period=100).period_ms == 102_000

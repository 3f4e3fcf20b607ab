"""The shared throttle against a real redis-server."""

import asyncio
import time

import pytest
from redis.asyncio import Redis

from bot.sender.throttle import Throttle, connection_id


@pytest.mark.cluster
async def test_never_more_than_calls_in_any_window(redis: Redis) -> None:
    throttle = Throttle(redis, "t1", calls=5, period=0.5)
    times: list[float] = []

    async def caller() -> None:
        for _ in range(4):
            await throttle.acquire()
            times.append(time.monotonic())
            await throttle.release()

    await asyncio.gather(*(caller() for _ in range(3)))  # 12 calls, several "processes"
    times.sort()
    assert len(times) == 12
    for i in range(len(times) - 5):
        # any 6 consecutive calls span at least one period
        assert times[i + 5] - times[i] >= 0.5 - 0.02


async def test_free_calls_go_at_once_then_wait(redis: Redis) -> None:
    throttle = Throttle(redis, "t2", calls=3, period=10, in_flight=5)
    assert [await throttle.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    # Not answered yet: in flight for up to 5 s, then counted for the period.
    wait = await throttle.try_acquire()
    assert 14.0 < wait <= 15.0
    assert 14.0 < await throttle.available_in() <= 15.0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await throttle.acquire()


@pytest.mark.cluster
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


async def test_a_call_counts_until_a_period_after_its_answer(redis: Redis) -> None:
    throttle = Throttle(redis, "t5", calls=1, period=10, in_flight=30)
    assert await throttle.try_acquire() == 0.0
    assert 39.0 < await throttle.available_in() <= 40.0  # in flight: its answer may be late
    await asyncio.sleep(0.3)
    await throttle.release()
    assert 9.5 < await throttle.available_in() <= 10.0  # from the answer on, one period
    await throttle.release()  # nothing more to release: a no-op
    assert 9.5 < await throttle.available_in() <= 10.0


async def test_late_arrivals_never_crowd_a_window_where_the_provider_counts(
    redis: Redis,
) -> None:
    """The provider counts a call when it arrives, anywhere between our taking it and its
    answer. However late calls arrive, no window of the provider's holds more than the
    limit, and a backlog still goes at the limit's pace."""
    calls, period = 4, 0.4
    throttle = Throttle(redis, "t7", calls=calls, period=period)
    arrivals: list[float] = []
    delays = [0.0, 0.6, 0.05, 0.3, 0.0, 0.5, 0.1, 0.0, 0.45, 0.2, 0.0, 0.35]

    async def caller(mine: list[float]) -> None:
        for delay in mine:
            await throttle.acquire()
            await asyncio.sleep(delay)  # on its way: scheduling, connection set-up
            arrivals.append(time.monotonic())  # the provider counts it now
            await asyncio.sleep(0.01)  # the answer comes back
            await throttle.release()

    started = time.monotonic()
    await asyncio.gather(*(caller(delays[i::3]) for i in range(3)))
    arrivals.sort()
    assert len(arrivals) == len(delays)
    for i in range(len(arrivals) - calls):
        assert arrivals[i + calls] - arrivals[i] >= period - 0.01, arrivals
    # 12 calls at 4 per 0.4 s: at least two full periods, and not far beyond what the
    # delays themselves cost.
    assert time.monotonic() - started >= 2 * period


class _CountingTries(Throttle):
    def __init__(self, *args: object, **options: float) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.tries = 0

    async def try_acquire(self) -> float:
        self.tries += 1
        return await super().try_acquire()


async def test_a_waiting_call_is_taken_on_the_first_try_after_its_slot_frees(
    redis: Redis,
) -> None:
    """The wait the throttle gives is exact (to the microsecond, rounded up): one sleep,
    then the call, never an early try that has to sleep again."""
    throttle = _CountingTries(redis, "t8", calls=2, period=0.3, max_sleep=1.0)
    for _ in range(6):
        throttle.tries = 0
        await throttle.acquire()
        await throttle.release()
        assert throttle.tries <= 2  # free at once, or one wait and then the call


async def test_waits_are_not_rounded_to_the_millisecond(redis: Redis) -> None:
    throttle = Throttle(redis, "t9", calls=1, period=10, in_flight=5)
    assert await throttle.try_acquire() == 0.0
    await throttle.release()
    waits = {await throttle.available_in() for _ in range(5)}
    assert all(9.0 < wait <= 10.0 for wait in waits)
    # microseconds pass between two looks; with whole milliseconds most would be equal
    assert len(waits) >= 4

"""The sender's pacing under the provider's throttle, against a real redis-server and the
real sandbox over HTTP: the batch is made ready before its call is taken, a batch whose
call does not come goes back in order, and a backlog drains under the sandbox's own limit
without a 429. No assertion is about speed: only order, counts and windows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.sandbox import Sandbox, SandboxConfig
from bot.sender import loop
from bot.sender.limiter import RateLimiter
from bot.sender.throttle import Throttle
from bot.storage.keys import inflight
from bot.storage.store import Store
from tests.gateway import test_sender
from tests.gateway.test_sender import SenderFactory, drained, queue, received, send_calls, sms

store = test_sender.store
make_sender = test_sender.make_sender

CALLS, PERIOD = 3, 0.5


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The sandbox enforcing the provider's limit, scaled: CALLS per PERIOD, 429 past it."""
    config = SandboxConfig(port=0, step_delay=0.01, time_scale=0.01, throttle=(CALLS, PERIOD))
    async with Sandbox(config) as sb:
        yield sb


class _Watching(Throttle):
    """The throttle, noting the worker's in-flight marker each time a call is taken."""

    def __init__(self, redis: Redis, worker: str, **options: float) -> None:
        super().__init__(redis, f"pacing-{worker}", **options)  # type: ignore[arg-type]
        self.redis = redis
        self.worker = worker
        self.markers: list[list[str] | None] = []

    async def acquire(self) -> float:
        raw = await self.redis.get(inflight(self.worker))
        self.markers.append(json.loads(raw) if raw is not None else None)
        return await super().acquire()


async def test_a_backlog_drains_under_the_providers_limit_without_a_429(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    requests = await queue(store, [sms(i) for i in range(40)])
    throttle = Throttle(redis, "pacing-backlog", calls=CALLS, period=PERIOD)
    sender = await make_sender(throttle=throttle, batch_size=4, buffer_max=8)
    await drained(redis)
    calls = send_calls(sandbox)
    assert [c["status"] for c in calls] == [202] * len(calls)  # not one 429
    assert len(calls) >= 10  # 40 messages, 4 a call: at least three full windows
    assert sum(c["messages"] for c in calls) == 40 == sender.counters.messages_sent
    assert all(received(sandbox, r) == 1 for r in requests)
    assert sender.counters.retries["rate_limited"] == 0


def calls_made(sandbox: Sandbox) -> list[frozenset[str]]:
    """The gw_ids of each call the sandbox accepted, in the order accepted (a call's
    messages share their ``submitted`` time)."""
    by_call: dict[object, set[str]] = {}
    for message in sorted(sandbox.messages(), key=lambda m: m.submitted):
        by_call.setdefault(message.submitted, set()).add(message.request.metadata["gw_id"])
    return [frozenset(ids) for ids in by_call.values()]


async def test_the_batch_is_ready_when_its_call_is_taken(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """Screened and marked before the call is taken: between taking a call and sending it
    only the request is left (the marker already names the batch, and those of the other
    batches on their way: at most ``max_in_flight`` of them)."""
    requests = await queue(store, [sms(i) for i in range(20)])
    throttle = _Watching(redis, "w1", calls=CALLS, period=PERIOD)
    sender = await make_sender("w1", throttle=throttle, batch_size=4, buffer_max=8)
    await drained(redis)
    await sandbox.wait_idle()
    made = calls_made(sandbox)
    assert len(throttle.markers) == len(send_calls(sandbox)) == len(made) >= 5
    assert sorted(gw_id for ids in made for gw_id in ids) == sorted(r.gw_id for r in requests)
    for marker in throttle.markers:
        assert marker is not None
        named = set(marker)
        # Whole batches on their way, at most max_in_flight of them.
        holding = [ids for ids in made if ids <= named]
        assert sum(len(ids) for ids in holding) == len(named) == len(marker)
        assert 1 <= len(holding) <= sender.max_in_flight
    # Each call's batch was named when a call was taken for it.
    assert all(any(ids <= set(m or []) for m in throttle.markers) for ids in made)
    assert await redis.get(inflight("w1")) is None  # cleared once recorded


class _LateOnce(RateLimiter):
    """Holds back its first call longer than the sender waits for it, then lets every
    call go."""

    def __init__(self) -> None:
        self.asked = 0

    async def acquire(self) -> float:
        self.asked += 1
        if self.asked == 1:
            await asyncio.sleep(5.0)  # longer than the sender's patience
        return 0.0

    async def pause(self, seconds: float) -> None:
        pass


async def test_a_batch_whose_call_does_not_come_goes_back_in_order(
    redis: Redis,
    store: Store,
    sandbox: Sandbox,
    make_sender: SenderFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "_CALL_PATIENCE", 0.1)
    texts = [f"part {i}" for i in range(6)]
    requests = await queue(store, [sms(7, text) for text in texts])  # one conversation
    limiter = _LateOnce()
    sender = await make_sender(throttle=limiter, batch_size=2)
    await drained(redis)
    assert limiter.asked == len(send_calls(sandbox)) + 1  # the first call never came
    got = [m["content"] for m in sandbox.handset(requests[0].destination).received]
    assert got == texts  # in order, each once
    assert sender.counters.possible_duplicates == 0
    assert await redis.get(inflight("w1")) is None

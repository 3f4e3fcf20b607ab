"""More than one provider call in flight, against a real redis-server and the real sandbox
over HTTP: two conversations' backlogs under the sandbox's own limit go in calls that
overlap at the provider, but never two calls holding messages of one conversation at once,
and each conversation's messages arrive in order, without a 429. No assertion is about
speed: only order, counts and overlaps."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from redis.asyncio import Redis

from bot.sandbox import Sandbox, SandboxConfig
from bot.sender.throttle import Throttle
from bot.sinch.models import OutboundMessage, ProviderMessage
from bot.storage.store import Store
from tests.gateway import test_sender
from tests.gateway.test_sender import SenderFactory, drained, handset, queue, send_calls, sms

store = test_sender.store
make_sender = test_sender.make_sender

CALLS, PERIOD = 4, 0.5
LATENCY = 0.2
"""Seconds the sandbox holds every send call before answering it."""


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The sandbox enforcing the provider's limit, scaled (CALLS per PERIOD, 429 past it),
    holding every send call LATENCY seconds."""
    config = SandboxConfig(port=0, step_delay=0.01, time_scale=0.01, throttle=(CALLS, PERIOD))
    async with Sandbox(config) as sb:
        sb.set_faults([{"endpoint": "POST /v1/messages", "kind": "latency", "delay": LATENCY}])
        yield sb


async def test_two_conversations_go_in_overlapping_calls_each_in_order(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    texts = [f"{n}" for n in range(12)]
    first = await queue(store, [sms(1, text) for text in texts])
    second = await queue(store, [sms(2, text) for text in texts])
    client = sandbox.client(request_timeout=5.0)
    made: list[tuple[float, float, set[str]]] = []
    send = client.send_messages

    async def watched(messages: Sequence[OutboundMessage]) -> list[ProviderMessage]:
        started = time.monotonic()
        try:
            return await send(messages)
        finally:
            made.append((started, time.monotonic(), {m.destination_number for m in messages}))

    client.send_messages = watched  # type: ignore[method-assign]
    throttle = Throttle(redis, "in-flight", calls=CALLS, period=PERIOD)
    sender = await make_sender(throttle=throttle, client=client, batch_size=4)
    assert sender.max_in_flight == 2
    await drained(redis)
    await sandbox.wait_idle()

    calls = send_calls(sandbox)
    assert [c["status"] for c in calls] == [202] * len(calls) and len(calls) >= 6  # no 429
    assert sender.counters.retries["rate_limited"] == 0
    # Two calls at once at the provider (each is held LATENCY seconds after it arrived).
    arrivals = sorted(c["time"] for c in calls)
    assert any(b - a < LATENCY / 2 for a, b in itertools.pairwise(arrivals))
    # Never two calls in flight with messages of one conversation.
    assert len(made) == len(calls)
    overlapping = 0
    for i, (start, end, numbers) in enumerate(made):
        for other_start, other_end, other_numbers in made[i + 1 :]:
            if start < other_end and other_start < end:
                overlapping += 1
                assert not numbers & other_numbers
    assert overlapping >= 1
    # Each conversation's messages arrive in order, once each.
    for requests, number in ((first, handset(1)), (second, handset(2))):
        got = [m["content"] for m in sandbox.handset(number).received]
        assert got == texts
        assert sorted(m["metadata"]["gw_id"] for m in sandbox.handset(number).received) == sorted(
            r.gw_id for r in requests
        )
    await client.aclose()


async def test_one_in_flight_makes_the_sender_serial(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    await queue(store, [sms(i) for i in range(16)])  # 16 conversations: nothing in common
    throttle = Throttle(redis, "serial", calls=CALLS, period=PERIOD)
    sender = await make_sender(throttle=throttle, batch_size=4, max_in_flight=1)
    await drained(redis)
    await sandbox.wait_idle()
    calls = send_calls(sandbox)
    assert [c["status"] for c in calls] == [202] * len(calls) == [202] * 4
    arrivals = sorted(c["time"] for c in calls)
    # Each call arrives after the one before was answered (held LATENCY seconds).
    assert all(b - a >= LATENCY for a, b in itertools.pairwise(arrivals))
    assert sender.counters.messages_sent == 16

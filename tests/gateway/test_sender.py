"""The sender against a real redis-server and the real sandbox provider over HTTP.

Throttles are small (a few calls per second) and backoffs tiny so the file stays fast; no
assertion is about speed, only about order, counts and the throttle's windows.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.outbox.queue import queue_requests
from bot.receipts import records, timeline
from bot.sandbox import Sandbox
from bot.sender.batching import (
    Item,
    build_message,
    describe_invalid,
    halves,
    invalid_indexes,
    rcs_from_wire,
    take_batch,
)
from bot.sender.limiter import RateLimiter
from bot.sender.loop import Sender, failure_field
from bot.sender.throttle import Throttle
from bot.sinch.client import SinchClient
from bot.sinch.models import OutboundMessage, RcsCard, RcsChoice, RcsMessage
from bot.storage.events import OutboundRequest, prepare_rcs, prepare_sms
from bot.storage.keys import (
    DLQ,
    OUTBOX_GROUP,
    PartitionKeys,
    alive,
    conversation_key,
    inflight,
    partition_of,
)
from bot.storage.store import Store, text, text_map
from bot.streams.leases import WorkerRegistry

P = 4
TTL = 3_600_000
LEASE_TTL = 1.0
OURS = "+61491570157"


def handset(i: int) -> str:
    return f"+6149100{i:04d}"


def sms(i: int, text: str | None = None) -> OutboundRequest:
    number = handset(i)
    message = OutboundMessage(content=text or f"hello {i}", destination_number=number)
    return prepare_sms(message, conversation_key(OURS, number))


async def queue(store: Store, requests: list[OutboundRequest]) -> list[OutboundRequest]:
    await queue_requests(store, P, requests, ttl_ms=TTL, timeline_max=100)
    return requests


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Wait until ``check()`` holds; a Redis connection error in it (a pooled connection
    the server closed during an outage test) means "not yet"."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await check():
                return
        except RedisConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def outbox_left(redis: Redis) -> int:
    return sum([await redis.xlen(PartitionKeys(p).outbox) for p in range(P)])


async def drained(redis: Redis) -> None:
    async def empty() -> bool:
        return await outbox_left(redis) == 0

    await eventually(empty)


async def record(redis: Redis, request: OutboundRequest) -> dict[str, str]:
    keys = PartitionKeys(partition_of(request.destination, P))
    found = await records.read(redis, keys, request.gw_id)
    assert found is not None
    return found


async def statuses(redis: Redis, requests: list[OutboundRequest]) -> set[str]:
    return {(await record(redis, r))["status"] for r in requests}


def received(sandbox: Sandbox, request: OutboundRequest) -> int:
    return sum(
        1
        for m in sandbox.handset(request.destination).received
        if (m.get("metadata") or {}).get("gw_id") == request.gw_id
    )


def send_calls(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list(sandbox.stats()["send_calls"])


async def dead_letters(redis: Redis) -> list[dict[str, str]]:
    return [text_map(fields) for _, fields in await redis.xrange(DLQ) or []]


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e.get("event") == name]


SenderFactory = Callable[..., Awaitable[Sender]]


@pytest.fixture
async def store(redis: Redis) -> Store:
    return Store(redis)


@pytest.fixture
async def make_sender(redis: Redis, store: Store, sandbox: Sandbox) -> AsyncIterator[SenderFactory]:
    """Start senders (each with its worker's registry, fast retries); every one is stopped,
    its registry too, and its client closed."""
    made: list[tuple[Sender, SinchClient]] = []

    async def make(
        worker: str = "w1",
        *,
        throttle: RateLimiter | None = None,
        client: SinchClient | None = None,
        start: bool = True,
        cls: type[Sender] = Sender,
        registry: WorkerRegistry | None = None,
        lease_ttl: float = LEASE_TTL,
        **options: Any,
    ) -> Sender:
        client = client or sandbox.client(request_timeout=5.0)
        throttle = throttle or Throttle(redis, "test", calls=5, period=1.0)
        registry = registry or WorkerRegistry(
            redis, worker_id=worker, partitions=P, lease_ttl=lease_ttl
        )
        settings: dict[str, Any] = {
            "registry": registry,
            "ttl_ms": TTL,
            "timeline_max": 100,
            "max_deliveries": 3,
            "retry_attempts": 4,
            "retry_timeout": 10.0,
            "retry_wait_initial": 0.01,
            "retry_wait_max": 0.05,
            "retry_wait_jitter": 0.01,
            "error_backoff": 0.2,
            "block": 0.1,
            "drain_timeout": 5.0,
        }
        settings.update(options)
        sender = cls(store, client, throttle, **settings)
        made.append((sender, client))
        if start:
            await registry.start()
            await sender.start()
        return sender

    yield make
    for sender, client in made:
        await sender.stop()
        await sender.registry.stop()
        await client.aclose()


# --------------------------------------------------------------------------- batching


@pytest.mark.cluster
async def test_250_messages_leave_in_three_calls_once_each(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    requests = await queue(store, [sms(i) for i in range(250)])
    sender = await make_sender()
    await drained(redis)

    calls = send_calls(sandbox)
    assert [c["messages"] for c in calls] == [100, 100, 50]
    assert all(c["status"] == 202 for c in calls)
    assert all(received(sandbox, r) == 1 for r in requests)
    assert sender.counters.calls == 3
    assert sender.counters.messages_sent == 250
    assert sender.counters.batch_sizes == Counter({100: 2, 50: 1})

    first = await record(redis, requests[0])
    assert first["status"] == "sent"
    assert first["message_id"]
    assert first["attempts"] == "1"
    assert sandbox.message(first["message_id"]).request.metadata["gw_id"] == requests[0].gw_id
    keys = PartitionKeys(partition_of(requests[0].destination, P))
    entries = await timeline.read(redis, keys, requests[0].conversation)
    assert [e["kind"] for e in entries] == ["outbound", "sent"]
    assert entries[1]["data"] == {
        "gw_id": requests[0].gw_id,
        "message_id": first["message_id"],
        "segments": 1,
    }
    # Nothing left pending, nothing marked in flight.
    for p in range(P):
        summary = await redis.xpending(PartitionKeys(p).outbox, OUTBOX_GROUP)
        assert summary["pending"] == 0
    assert await redis.exists(inflight("w1")) == 0


async def test_a_lone_message_leaves_at_once(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    sender = await make_sender(block=5.0)  # a long block: a lone message must not wait for it
    await eventually(lambda: _ready(sender))
    for i in range(3):
        await queue(store, [sms(i)])
        await drained(redis)
        # It left alone, in its own call: nothing waited for more messages to come.
        assert [c["messages"] for c in send_calls(sandbox)] == [1] * (i + 1)


async def _ready(sender: Sender) -> bool:
    return sender.ready


@pytest.mark.cluster
async def test_two_senders_never_exceed_the_shared_throttle(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    requests = await queue(store, [sms(i) for i in range(60)])
    one = await make_sender(
        "w1", throttle=Throttle(redis, "shared", calls=5, period=1.0), batch_size=5, buffer_max=5
    )
    two = await make_sender(
        "w2", throttle=Throttle(redis, "shared", calls=5, period=1.0), batch_size=5, buffer_max=5
    )
    await drained(redis)

    calls = send_calls(sandbox)
    assert all(1 <= c["messages"] <= 5 for c in calls)
    assert sum(c["messages"] for c in calls) == 60
    times = sorted(c["time"] for c in calls)
    assert len(times) >= 12
    for i in range(len(times) - 5):
        # any 6 consecutive calls span at least one period (transit jitter aside)
        assert times[i + 5] - times[i] >= 1.0 - 0.05
    assert one.counters.calls > 0
    assert two.counters.calls > 0
    assert all(received(sandbox, r) == 1 for r in requests)


async def test_sms_and_rcs_go_in_separate_calls(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    number = handset(900)
    rcs = prepare_rcs(
        RcsMessage(destination_number=number, text="Pick one", choices=[RcsChoice(text="A")]),
        conversation_key(OURS, number),
    )
    requests = await queue(store, [sms(1), rcs, sms(2)])
    await make_sender()
    await drained(redis)

    calls = send_calls(sandbox)
    assert sorted((c["path"], c["messages"]) for c in calls) == sorted(
        [("/v1/messages", 2), ("/v1/int-power-automate/send-message-v2", 1)]
    )
    for request in requests:
        assert (await record(redis, request))["status"] == "sent"


# --------------------------------------------------------------------------- provider faults


async def test_server_errors_are_retried_and_the_batch_sent_once(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """Failure table row 5: 500 x3, then 202."""
    sandbox.set_faults([{"endpoint": "POST /v1/messages", "kind": "error", "count": 3}])
    requests = await queue(store, [sms(i) for i in range(5)])
    sender = await make_sender(throttle=Throttle(redis, "t", calls=10, period=1.0))
    await drained(redis)

    assert [c["status"] for c in send_calls(sandbox)] == [500, 500, 500, 202]
    assert all(received(sandbox, r) == 1 for r in requests)
    assert sender.counters.retries["server_error"] == 3
    assert (await record(redis, requests[0]))["attempts"] == "4"


async def test_rate_limit_pauses_every_sender(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """Failure table row 6: 429 with Retry-After holds every process for that long."""
    sandbox.set_faults(
        [{"endpoint": "POST /v1/messages", "kind": "rate_limit", "retry_after": 1, "count": 1}]
    )
    requests = await queue(store, [sms(i) for i in range(20)])
    # One call per 0.2 s: no other call can be on the wire when the 429 answers.
    one = await make_sender(
        "w1", throttle=Throttle(redis, "rl", calls=1, period=0.2), batch_size=5, buffer_max=5
    )
    two = await make_sender(
        "w2", throttle=Throttle(redis, "rl", calls=1, period=0.2), batch_size=5, buffer_max=5
    )
    await drained(redis)

    calls = send_calls(sandbox)
    limited = [c for c in calls if c["status"] == 429]
    assert len(limited) == 1
    after = [c for c in calls if c["time"] > limited[0]["time"]]
    assert len(after) >= 4
    assert all(c["time"] >= limited[0]["time"] + 1.0 for c in after)
    assert one.counters.retries["rate_limited"] + two.counters.retries["rate_limited"] == 1
    assert all(received(sandbox, r) == 1 for r in requests)


async def test_a_timeout_is_retried_and_the_possible_duplicate_logged(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """Failure table row 7: the provider acts on the call although the client gave up."""
    sandbox.set_faults(
        [{"endpoint": "POST /v1/messages", "kind": "timeout", "delay": 0.6, "count": 1}]
    )
    requests = await queue(store, [sms(i) for i in range(3)])
    with structlog.testing.capture_logs() as logs:
        sender = await make_sender(client=sandbox.client(request_timeout=0.3))
        await drained(redis)
        await sandbox.wait_idle()
        await asyncio.sleep(0.5)  # the abandoned call is processed after its delay

    warnings = events(logs, "possible duplicate send")
    assert len(warnings) == 1
    assert warnings[0]["cause"] == "timeout"
    assert sorted(warnings[0]["gw_ids"]) == sorted(r.gw_id for r in requests)
    assert sender.counters.retries["timeout"] == 1
    assert sender.counters.possible_duplicates == 3
    for request in requests:
        assert (await record(redis, request))["status"] == "sent"
        assert 1 <= received(sandbox, request) <= 2


@pytest.mark.parametrize(("kind", "copies"), [("drop", 1), ("drop_after", 2)])
async def test_a_dropped_connection_is_retried(
    redis: Redis,
    store: Store,
    sandbox: Sandbox,
    make_sender: SenderFactory,
    kind: str,
    copies: int,
) -> None:
    """``drop``: nothing happened, the retry sends once. ``drop_after``: the provider took
    the call and the answer was lost, so the retry sends a logged duplicate."""
    sandbox.set_faults([{"endpoint": "POST /v1/messages", "kind": kind, "count": 1}])
    requests = await queue(store, [sms(i) for i in range(4)])
    with structlog.testing.capture_logs() as logs:
        sender = await make_sender()
        await drained(redis)

    assert [c["dropped"] for c in send_calls(sandbox)] == [True, False]
    assert sender.counters.retries["transport"] == 1
    assert all(received(sandbox, r) == copies for r in requests)
    assert await statuses(redis, requests) == {"sent"}
    # The outcome of a dropped connection is unknown either way: logged.
    assert len(events(logs, "possible duplicate send")) == 1


class _Unchecked(Sender):
    """A sender whose pre-validation lets one message through: the provider must catch it."""

    unchecked: str = ""

    def build(self, request: OutboundRequest) -> OutboundMessage | RcsMessage:
        if request.gw_id == self.unchecked:
            body = request.body
            valid = OutboundMessage.model_validate({**body, "content": "ok"})
            return valid.model_copy(update={"content": body["content"]})
        return super().build(request)


async def test_one_bad_message_among_twenty_fails_alone(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    requests = [sms(i) for i in range(20)]
    bad = requests[7] = OutboundRequest(
        requests[7].gw_id,
        requests[7].conversation,
        "sms",
        {**requests[7].body, "content": "x" * 5001},
        text="x" * 5001,
    )
    await queue(store, requests)
    _Unchecked.unchecked = bad.gw_id
    await make_sender(cls=_Unchecked)
    await drained(redis)

    assert [(c["status"], c["messages"]) for c in send_calls(sandbox)] == [(400, 0), (202, 19)]
    failed = await record(redis, bad)
    assert failed["status"] == "failed"
    assert re.fullmatch(r"/messages/\d+/content: .*5000 characters", failed["error"])
    assert received(sandbox, bad) == 0
    assert all(received(sandbox, r) == 1 for r in requests if r is not bad)
    keys = PartitionKeys(partition_of(bad.destination, P))
    entries = await timeline.read(redis, keys, bad.conversation)
    assert [e["kind"] for e in entries] == ["outbound", "failed"]


async def test_an_invalid_message_never_reaches_the_provider(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    good = sms(1)
    bad = OutboundRequest(
        "bad1",
        conversation_key(OURS, "+6149"),
        "sms",
        {"content": "hi", "destination_number": "+6149"},
    )
    await queue(store, [good, bad])
    sender = await make_sender()
    await drained(redis)

    assert [c["messages"] for c in send_calls(sandbox)] == [1]
    failed = await record(redis, bad)
    assert failed["status"] == "failed"
    assert "destination_number" in failed["error"]
    assert sender.counters.failed == 1


@pytest.mark.cluster
async def test_an_unreadable_entry_goes_to_the_dead_letter_stream(
    redis: Redis, make_sender: SenderFactory
) -> None:
    sender = await make_sender()
    await eventually(lambda: _ready(sender))
    stream = PartitionKeys(2).outbox
    entry = text(await redis.xadd(stream, {"junk": "1"}))
    await drained(redis)

    (fields,) = await dead_letters(redis)
    assert (fields["source"], fields["entry"], fields["group"]) == (stream, entry, OUTBOX_GROUP)
    assert (fields["partition"], fields["kind"]) == ("2", "outbound")
    assert json.loads(fields["fields"]) == {"junk": "1"}
    assert fields["reason"].startswith("not an outbound request")
    assert sender.counters.dead_lettered == 1


async def test_a_refused_call_burns_no_message(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """403 (and 401): an account problem, not the messages' fault; they wait and go later."""
    sandbox.set_faults(
        [{"endpoint": "POST /v1/messages", "kind": "error", "status": 403, "count": 2}]
    )
    requests = await queue(store, [sms(i) for i in range(3)])
    with structlog.testing.capture_logs() as logs:
        sender = await make_sender(max_deliveries=1)
        await drained(redis)

    assert [c["status"] for c in send_calls(sandbox)] == [403, 403, 202]
    assert sender.counters.refused == 2
    assert sender.counters.failed == 0
    assert await statuses(redis, requests) == {"sent"}
    assert len([e for e in logs if e["log_level"] == "error"]) == 2


@pytest.mark.cluster
async def test_a_message_that_keeps_failing_is_given_up_and_dead_lettered(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    sandbox.set_faults([{"endpoint": "POST /v1/messages", "kind": "error", "status": 503}])
    (request,) = await queue(store, [sms(1)])
    sender = await make_sender(
        throttle=Throttle(redis, "t", calls=50, period=1.0), retry_attempts=2, max_deliveries=2
    )
    await drained(redis)

    assert len(send_calls(sandbox)) == 4  # 2 rounds of 2 attempts
    failed = await record(redis, request)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("gave up after 2 failed attempts")
    (dead,) = await dead_letters(redis)
    assert json.loads(dead["fields"])["id"] == request.gw_id
    assert dead["deliveries"] == "2"
    keys = PartitionKeys(partition_of(request.destination, P))
    assert await redis.hlen(keys.failures()) == 0
    assert sender.counters.dead_lettered == 1


# --------------------------------------------------------------------------- bisection


async def test_a_rejection_naming_no_message_is_bisected(
    redis: Redis, store: Store, make_sender: SenderFactory
) -> None:
    """A narrow unit test: a provider that rejects any call holding one message, without
    saying which. The batch is halved until that message is alone."""
    bad_number = handset(5)
    calls: list[int] = []

    def provider(request: httpx.Request) -> httpx.Response:
        messages = json.loads(request.content)["messages"]
        calls.append(len(messages))
        if any(m["destination_number"] == bad_number for m in messages):
            return httpx.Response(400, json={"message": "Request failed"})
        return httpx.Response(
            202,
            json={
                "messages": [{**m, "message_id": f"id-{m['destination_number']}"} for m in messages]
            },
        )

    client = SinchClient(
        api_key="k",
        api_secret="s",
        base_url="http://provider",
        transport=httpx.MockTransport(provider),
    )
    requests = await queue(store, [sms(i) for i in range(8)])
    await make_sender(client=client, throttle=Throttle(redis, "t", calls=50, period=1.0))
    await drained(redis)

    assert calls[0] == 8
    assert sorted(calls) == [1, 1, 2, 2, 4, 4, 8]  # halves until the bad one is alone
    for request in requests:
        found = await record(redis, request)
        if request.destination == bad_number:
            assert found["status"] == "failed"
            assert found["error"] == "HTTP 400: Request failed"
        else:
            assert found["status"] == "sent"
            assert found["message_id"] == f"id-{request.destination}"


# --------------------------------------------------------------------------- crashes and stop


async def held_by_the_provider(
    redis: Redis, sandbox: Sandbox, worker: str, queued: int | None = None
) -> bool:
    """A call of ``worker`` is held by the provider (not answered yet) and marked; with
    ``queued``, every other call was answered and recorded: the worker's in-flight marker
    names exactly the messages not answered (of ``queued``)."""
    calls = send_calls(sandbox)
    marked = json.loads(await redis.get(inflight(worker)) or b"[]")
    answered = sum(c["messages"] for c in calls if c["status"] is not None)
    held = sum(1 for c in calls if c["status"] is None) == 1
    if queued is not None:
        return held and answered > 0 and answered + len(marked) == queued
    return held and bool(marked)


@pytest.mark.cluster
async def test_a_dead_workers_entries_are_claimed_and_at_most_one_batch_duplicated(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """Failure table row 2: worker A dies with a batch on the wire (the provider acts on it
    later); worker B takes over A's entries and sends them; only that batch goes twice, and
    it is logged."""
    sandbox.set_faults(
        [{"endpoint": "POST /v1/messages", "kind": "timeout", "delay": 0.5, "count": 1}]
    )
    requests = await queue(store, [sms(i) for i in range(150)])
    a = await make_sender("A")

    await eventually(lambda: held_by_the_provider(redis, sandbox, "A", 150))
    await a.abort()  # a crash: nothing recorded, the in-flight marker stays
    await a.registry.halt()  # no more heartbeats: A's leases expire, B takes them
    await redis.delete(alive("A"))
    in_flight = set(json.loads(await redis.get(inflight("A")) or b"[]"))
    assert len(in_flight) in (50, 100)  # the batch the provider holds (the other is recorded)

    with structlog.testing.capture_logs() as logs:
        b = await make_sender("B")
        await drained(redis)
        await sandbox.wait_idle()
        await asyncio.sleep(0.6)  # A's call is processed after its delay

    (warning,) = events(logs, "possible duplicate send after a crash")
    assert set(warning["gw_ids"]) == in_flight
    assert b.counters.claimed == len(in_flight)  # what A had on the wire was left pending
    copies = {r.gw_id: received(sandbox, r) for r in requests}
    assert all(n >= 1 for n in copies.values())
    twice = {gw for gw, n in copies.items() if n == 2}
    assert max(copies.values()) <= 2
    assert twice <= in_flight  # at most the one in-flight batch
    print(f"crash: {len(twice)} of {len(requests)} messages sent twice, all in the logged batch")
    assert await statuses(redis, requests) == {"sent"}
    assert await redis.exists(inflight("A")) == 0
    for p in range(P):
        consumers = await redis.xinfo_consumers(PartitionKeys(p).outbox, OUTBOX_GROUP)
        assert all(c["name"] != b"A" for c in consumers)


async def test_a_live_workers_entries_are_left_alone(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    starved = Throttle(redis, "starved", calls=1, period=30.0)
    assert await starved.try_acquire() == 0.0  # A will wait for a call that does not come
    await queue(store, [sms(i) for i in range(10)])
    a = await make_sender("A", throttle=starved)

    async def holding() -> bool:
        return a.buffered == 10

    await eventually(holding)
    # B holds no lease (its registry does not run) but is told it has every partition:
    # each take-over is refused by the fence, so nothing is taken from A.
    b = await make_sender("B", start=False)
    await b.start()
    for partition in range(P):
        await b.partition_acquired(partition)

    async def fenced_everywhere() -> bool:
        return b.counters.tally.fenced == P and not b.partitions

    await eventually(fenced_everywhere)
    assert b.counters.claimed == 0
    assert a.buffered == 10
    assert send_calls(sandbox) == []


async def test_stop_leaves_unsent_entries_pending_for_a_restart(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    requests = await queue(store, [sms(i) for i in range(30)])
    first = await make_sender(
        "w1", throttle=Throttle(redis, "slow", calls=1, period=30.0), batch_size=10
    )
    await eventually(lambda: _calls_at_least(sandbox, 1))
    await first.stop()  # the first batch went; the rest waits for a call that won't come
    await first.registry.stop()  # the worker leaves; it comes back below
    assert [c["messages"] for c in send_calls(sandbox)] == [10]
    assert await outbox_left(redis) == 20
    assert await redis.exists(inflight("w1")) == 0

    again = await make_sender("w1")  # a restart: its own pending entries first
    await drained(redis)
    assert again.counters.messages_sent == 20
    assert all(received(sandbox, r) == 1 for r in requests)


async def _calls_at_least(sandbox: Sandbox, n: int) -> bool:
    return len([c for c in send_calls(sandbox) if c["status"] == 202]) >= n


async def test_stop_waits_for_the_batch_on_the_wire(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    sandbox.set_faults([{"endpoint": "POST /v1/messages", "kind": "latency", "delay": 0.3}])
    requests = await queue(store, [sms(i) for i in range(5)])
    sender = await make_sender()
    await eventually(lambda: _inflight(redis, "w1"))
    await sender.stop()
    assert await statuses(redis, requests) == {"sent"}
    assert await outbox_left(redis) == 0
    assert await redis.exists(inflight("w1")) == 0


async def _inflight(redis: Redis, worker: str) -> bool:
    return bool(await redis.exists(inflight(worker)))


async def test_survives_a_redis_outage(tmp_path: Any, sandbox: Sandbox) -> None:
    """Its own redis-server, killed and restarted (AOF): the loop backs off and carries on."""
    from bot.storage.redis_server import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    redis = Redis.from_url(server.url)
    store = Store(redis)
    client = sandbox.client()
    registry = WorkerRegistry(redis, worker_id="w1", partitions=P, lease_ttl=LEASE_TTL)
    sender = Sender(
        store,
        client,
        Throttle(redis, "t", calls=50, period=1.0),
        registry=registry,
        ttl_ms=TTL,
        timeline_max=100,
        max_deliveries=3,
        block=0.1,
    )
    try:
        await registry.start()
        await sender.start()
        await queue(store, [sms(1)])
        await drained(redis)
        server.kill()
        await asyncio.sleep(0.3)
        server.start()
        fresh = Redis.from_url(server.url)  # this test's pooled connections died
        try:
            requests = await queue(Store(fresh), [sms(i) for i in range(2, 6)])
            await drained(fresh)
        finally:
            await fresh.aclose()
        assert all(received(sandbox, r) == 1 for r in requests)
        assert sum(sender.counters.errors.values()) >= 1
    finally:
        await sender.stop()
        await registry.stop()
        await client.aclose()
        await redis.aclose()
        server.stop()


# --------------------------------------------------------------------------- pure logic


def _item(i: int, channel: str = "sms") -> Item:
    request = sms(i)
    if channel == "rcs":
        request = prepare_rcs(RcsMessage(destination_number=handset(i), text="t"), "c")
    return Item(0, f"{i}-0", {}, request, build_message(request))


def test_take_batch_keeps_the_other_channel_in_place() -> None:
    buffer = deque([_item(0), _item(1, "rcs"), _item(2), _item(3), _item(4, "rcs")])
    batch = take_batch(buffer, 2)
    assert [i.entry_id for i in batch] == ["0-0", "2-0"]
    assert [i.entry_id for i in buffer] == ["1-0", "3-0", "4-0"]
    assert [i.entry_id for i in take_batch(buffer)] == ["1-0", "4-0"]
    assert take_batch(deque()) == []


def test_invalid_indexes_and_halves() -> None:
    details = [
        "/messages/3/destination_number: must be E.164",
        "/messages/3/content: too long",
        "/messages/12: out of range",
        "/: something general",
    ]
    assert invalid_indexes(details, 10) == {3: details[:2]}
    assert invalid_indexes(["bad request"], 10) == {}
    items = [_item(i) for i in range(5)]
    first, second = halves(items)
    assert (len(first), len(second)) == (3, 2)


@pytest.mark.parametrize(
    "message",
    [
        RcsMessage(destination_number=handset(1), text="hi", fallback_text="hi (sms)"),
        RcsMessage(
            destination_number=handset(1),
            source_number=OURS,
            text="pick",
            choices=[RcsChoice(text="A"), RcsChoice(text="Web", url="https://x.example")],
            metadata={"k": "v"},
            delivery_report=True,
        ),
        RcsMessage(
            destination_number=handset(1),
            card=RcsCard(
                title="T",
                description="D",
                media_url="https://x.example/i.png",
                choices=[RcsChoice(text="B", postback_data="b")],
            ),
        ),
        RcsMessage(
            destination_number=handset(1),
            carousel=[RcsCard(title="one"), RcsCard(title="two")],
            choices=[RcsChoice(text="C")],
            callback_url="https://cb.example/x",
        ),
    ],
)
def test_rcs_bodies_round_trip(message: RcsMessage) -> None:
    body = message.to_api()
    assert rcs_from_wire(body).to_api() == body


def test_rcs_nonsense_is_a_value_error() -> None:
    bodies: list[Any] = [
        {"destination_number": handset(1)},
        {"rcs_message": {"text_message": 3}},
        [],
    ]
    for body in bodies:
        with pytest.raises(ValueError, match=r".") as raised:
            rcs_from_wire(body)
        assert describe_invalid(raised.value)


def test_failure_field_is_apart_from_the_engines() -> None:
    assert failure_field("1-0") == "out:1-0"


async def test_with_partition_ownership_a_new_owner_sends_old_entries_before_new_ones(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """Order across a crash: A owns every partition and dies with replies pending; replies
    queued after that are newer. B, gaining the partitions, sends A's pending entries first,
    so each conversation's messages reach the handset in order (A's in-flight batch may
    arrive twice, adjacent to itself, and is logged)."""
    sandbox.set_faults(
        [{"endpoint": "POST /v1/messages", "kind": "timeout", "delay": 0.5, "count": 1}]
    )
    first = await queue(store, [sms(i % 5, f"{i // 5}") for i in range(150)])  # 5 conversations
    a = await make_sender("A", lease_ttl=3.0)
    # Its first batch holds messages of every conversation: no other batch goes meanwhile.
    await eventually(lambda: held_by_the_provider(redis, sandbox, "A"))
    await a.abort()
    await a.registry.halt()  # the crash: A's leases expire after 3 s
    later = await queue(store, [sms(i % 5, f"{30 + i // 5}") for i in range(50)])
    with structlog.testing.capture_logs() as logs:
        b = await make_sender("B", lease_ttl=3.0)
        await asyncio.sleep(0.3)
        assert b.counters.calls == 0  # owns nothing yet: sends nothing
        # A's leases expire; B acquires them
        await drained(redis)
        await sandbox.wait_idle()
        await asyncio.sleep(0.6)
    assert events(logs, "possible duplicate send after a crash")
    assert await statuses(redis, first + later) == {"sent"}
    for conversation in range(5):
        texts = [int(m["content"]) for m in sandbox.handset(handset(conversation)).received]
        assert sorted(set(texts)) == list(range(40))
        # in order, ignoring re-sent copies of the crash's in-flight batch
        assert first_occurrences(texts) == list(range(40)), texts
        assert len(texts) - 40 <= 100


def first_occurrences(values: list[int]) -> list[int]:
    seen: set[int] = set()
    result = []
    for value in values:
        if value not in seen:
            seen.add(value)
            result.append(value)
    return result


async def test_partitions_move_to_a_joining_worker_without_duplicates(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """A second worker joins while the first has calls on the wire: leases are handed over
    only after the first worker's call carrying that partition's messages is recorded, so
    nothing is sent twice."""
    sandbox.set_faults([{"endpoint": "POST /v1/messages", "kind": "latency", "delay": 1.0}])
    requests = await queue(store, [sms(i) for i in range(160)])
    one = WorkerRegistry(redis, worker_id="one", partitions=P, lease_ttl=1.0)
    two = WorkerRegistry(redis, worker_id="two", partitions=P, lease_ttl=1.0)
    small = {"batch_size": 20, "buffer_max": 20}  # batches mix partitions
    a = await make_sender("one", registry=one, start=False, **small)
    b = await make_sender("two", registry=two, start=False, **small)
    try:
        await one.start()
        await a.start()
        await eventually(lambda: _calls_at_least(sandbox, 1))
        await two.start()  # joins: half the partitions move while calls are on the wire
        await b.start()
        await drained(redis)
        await sandbox.wait_idle()
    finally:
        await two.stop()
        await one.stop()
    assert a.counters.messages_sent > 0
    assert b.counters.messages_sent > 0  # partitions really moved
    copies = [received(sandbox, r) for r in requests]
    assert copies == [1] * len(requests)
    assert a.counters.possible_duplicates == b.counters.possible_duplicates == 0


class _Counting(RateLimiter):
    """A rate limiter that holds nothing back and counts what it was asked."""

    def __init__(self) -> None:
        self.acquired = 0
        self.paused: list[float] = []

    async def acquire(self) -> float:
        self.acquired += 1
        return 0.0

    async def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


async def test_any_rate_limiter_can_hold_the_calls(
    redis: Redis, store: Store, sandbox: Sandbox, make_sender: SenderFactory
) -> None:
    """The throttle is one implementation of the sender's RateLimiter seam: every call takes
    from the limiter first, and a 429 pauses it."""
    sandbox.set_faults(
        [{"endpoint": "POST /v1/messages", "kind": "rate_limit", "retry_after": 1, "count": 1}]
    )
    requests = await queue(store, [sms(i) for i in range(3)])
    limiter = _Counting()
    sender = await make_sender(throttle=limiter)
    await drained(redis)
    assert [c["status"] for c in send_calls(sandbox)] == [429, 202]
    assert limiter.acquired == sender.counters.calls == 2
    assert limiter.paused == [1]
    assert all(received(sandbox, r) == 1 for r in requests)

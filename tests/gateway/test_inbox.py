"""The inbox consumer against a real Redis: order, batching, leases and fencing, session
conflicts, poison and undecodable entries, Redis restarts and graceful drains.

Each "worker" is a WorkerRegistry plus an InboxConsumer with its own worker id, so two of
them in one event loop behave like two processes sharing one Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.inbox.handling import EventContext, GatewayLimits, Session
from bot.inbox.worker import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PATIENCE,
    TURN,
    InboxConsumer,
    failure_field,
)
from bot.sinch.models import InboundMessage, parse_inbound
from bot.storage.events import InboxEvent
from bot.storage.keys import (
    INBOX_GROUP,
    WORKERS,
    PartitionKeys,
    conversation_key,
    partition_of,
)
from bot.storage.redis_server import RedisServer
from bot.storage.store import Store
from bot.streams import dlq
from bot.streams.leases import WorkerRegistry

P = 8
OURS = "+61491570100"
TTL = 0.5


def handset(i: int) -> str:
    return f"+614915702{i:02d}"


def conv(i: int) -> str:
    return conversation_key(OURS, handset(i))


def keys_of(i: int) -> PartitionKeys:
    return PartitionKeys(partition_of(handset(i), P))


async def send(redis: Redis, i: int, text: str) -> str:
    """Enqueue an inbound message from handset ``i`` as the ingress would."""
    event = parse_inbound(
        {
            "reply_id": uuid.uuid4().hex,
            "source_number": handset(i),
            "destination_number": OURS,
            "content": text,
        }
    )
    entry_id = await redis.xadd(keys_of(i).inbox, InboxEvent(conv(i), event).to_fields())
    return entry_id.decode()


async def seen(redis: Redis, i: int) -> list[str]:
    """What the handler committed for conversation ``i``, in order."""
    raw = await redis.hgetall(keys_of(i).session(conv(i)))
    return list(Session.from_hash(conv(i), raw).data.get("seen", []))


async def replies(redis: Redis, i: int) -> list[str]:
    """Texts of the replies queued in the outbox for conversation ``i``."""
    entries = await redis.xrange(keys_of(i).outbox)
    return [fields[b"x"].decode() for _, fields in entries if fields[b"c"].decode() == conv(i)]


async def pending(redis: Redis) -> int:
    total = 0
    for p in range(P):
        if await redis.exists(PartitionKeys(p).inbox):
            total += (await redis.xpending(PartitionKeys(p).inbox, INBOX_GROUP))["pending"]
    return total


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 15.0) -> None:
    """Wait until ``check()`` holds (``limit`` seconds only guard against a hang)."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        try:
            if await check():
                return
        except RedisConnectionError:
            pass  # the Redis restart test polls through the outage
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@dataclass
class Recorder:
    """A handler that records what it was called with and what it committed: each message
    is appended to the session's ``seen`` list and answered with ``re: <text>``."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    """text → failures left (-1: always)."""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    """text → the handler waits for this event before going on."""
    reached: dict[str, asyncio.Event] = field(default_factory=dict)
    """text → set when the handler starts on it."""
    delay: float = 0.0
    hook: Callable[[EventContext], Awaitable[None]] | None = None

    def calls_for(self, text: str) -> int:
        return sum(1 for _, t in self.calls if t == text)

    def reach(self, text: str) -> asyncio.Event:
        return self.reached.setdefault(text, asyncio.Event())

    async def handle(self, ctx: EventContext) -> None:
        message = ctx.event.event
        assert isinstance(message, InboundMessage)
        text = message.content or ""
        self.calls.append((ctx.conversation, text))
        self.reach(text).set()
        if text in self.gates:
            await self.gates[text].wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hook is not None:
            await self.hook(ctx)
        left = self.fail.get(text, 0)
        if left:
            self.fail[text] = left - 1 if left > 0 else left
            raise RuntimeError(f"cannot handle {text}")
        ctx.session.data.setdefault("seen", []).append(text)
        ctx.save()
        ctx.reply(f"re: {text}")


@dataclass
class Worker:
    registry: WorkerRegistry
    consumer: InboxConsumer
    handler: Recorder


@asynccontextmanager
async def worker(
    redis: Redis,
    name: str,
    handler: Recorder | None = None,
    *,
    max_deliveries: int = 3,
    batch_size: int = 100,
    lease_ttl: float = TTL,
    concurrency: int | None = DEFAULT_CONCURRENCY,
    patience: float = DEFAULT_PATIENCE,
) -> AsyncIterator[Worker]:
    """A registry and a consumer, started; stopped cleanly on exit (a no-op after halt)."""
    handler = handler or Recorder()
    registry = WorkerRegistry(redis, worker_id=name, partitions=P, lease_ttl=lease_ttl)
    consumer = InboxConsumer(
        Store(redis),
        registry,
        handler,
        limits=GatewayLimits(),
        max_deliveries=max_deliveries,
        batch_size=batch_size,
        block_ms=200,
        retry_delay=0.01,
        retry_delay_max=0.05,
        drain_timeout=10.0,
        concurrency=concurrency,
        patience=patience,
    )
    await consumer.start()
    await registry.start()
    try:
        yield Worker(registry, consumer, handler)
    finally:
        await registry.stop()
        await consumer.stop()


async def crash(w: Worker) -> None:
    """Kill a worker without releasing anything: tasks cancelled, heartbeat stopped."""
    await w.consumer.halt()
    await w.registry.halt()


# --------------------------------------------------------------------------- order


@pytest.mark.cluster
async def test_interleaved_conversations_are_handled_in_order_in_one_batch_per_partition(
    redis: Redis,
) -> None:
    sent: dict[int, list[str]] = {i: [] for i in range(6)}
    for n in range(10):
        for i in range(6):
            text = f"c{i}-{n}"
            sent[i].append(text)
            await send(redis, i, text)
    partitions = {partition_of(handset(i), P) for i in range(6)}

    async with worker(redis, "w1") as w:
        await eventually(lambda: _all_seen(redis, sent))
        stats = w.consumer.stats

    for i, texts in sent.items():
        assert await seen(redis, i) == texts
        assert [t for c, t in w.handler.calls if c == conv(i)] == texts
        assert await replies(redis, i) == [f"re: {t}" for t in texts]
    # Everything was waiting before the worker started: one read, one commit per partition,
    # the later events of a conversation seeing the earlier ones' session changes.
    assert stats.batches == len(partitions)
    assert stats.processed == 60
    assert sum(stats.batch_sizes.elements()) == 60
    assert stats.conflicts == 0
    assert await pending(redis) == 0
    assert [await redis.xlen(PartitionKeys(p).inbox) for p in partitions] == [0] * len(partitions)


def two_partitions() -> tuple[int, int]:
    """Two handsets in different partitions."""
    first = 0
    other = next(
        i for i in range(1, 50) if partition_of(handset(i), P) != partition_of(handset(0), P)
    )
    return first, other


async def test_a_partition_waiting_for_its_turn_gets_one_bigger_batch(redis: Redis) -> None:
    """One work slot: while another partition holds it, the messages arriving in a second
    partition wait, and are read and committed as one batch when its turn comes."""
    a, b = two_partitions()
    recorder = Recorder(gates={"hold": asyncio.Event()})
    async with worker(redis, "w1", recorder, concurrency=1, patience=30.0) as w:
        await send(redis, a, "hold")
        await recorder.reach("hold").wait()
        texts = [f"b-{n}" for n in range(5)]
        for text in texts:
            await send(redis, b, text)
        await asyncio.sleep(0.3)  # b's task woke up and waits for the slot
        assert await seen(redis, b) == []
        recorder.gates["hold"].set()
        await eventually(lambda: _all_seen(redis, {a: ["hold"], b: texts}))
        stats = w.consumer.stats
    assert stats.batch_sizes[5] == 1
    assert stats.batches == 2
    assert w.consumer.slots is not None and w.consumer.slots.overflows == 0


async def test_a_slow_handler_holds_its_slot_but_never_stalls_the_other_partitions(
    redis: Redis,
) -> None:
    a, b = two_partitions()
    recorder = Recorder(gates={"slow": asyncio.Event()})
    async with worker(redis, "w1", recorder, concurrency=1, patience=0.1) as w:
        await send(redis, a, "slow")
        await recorder.reach("slow").wait()
        await send(redis, b, "quick")
        # Handled while the slow handler still holds the only slot: it went ahead.
        await eventually(lambda: _all_seen(redis, {b: ["quick"]}))
        assert await seen(redis, a) == []
        assert w.consumer.slots is not None and w.consumer.slots.overflows >= 1
        recorder.gates["slow"].set()
        await eventually(lambda: _all_seen(redis, {a: ["slow"], b: ["quick"]}))


async def test_a_partition_backing_off_after_a_failure_gives_its_slot_back(
    redis: Redis,
) -> None:
    """One slot and a patience longer than the test: the other partition can only get its
    turn if the failing one gives the slot back while it sleeps before each retry."""
    a, b = two_partitions()
    recorder = Recorder(fail={"bad": 2})
    async with worker(redis, "w1", recorder, concurrency=1, patience=60.0) as w:
        await send(redis, a, "bad")
        await send(redis, b, "good")
        await eventually(lambda: _all_seen(redis, {a: ["bad"], b: ["good"]}))
        assert w.consumer.slots is not None and w.consumer.slots.overflows == 0
    assert recorder.calls_for("bad") == 3


async def test_a_long_batch_lets_the_event_loop_run_between_its_events(redis: Redis) -> None:
    """Handlers that never wait (as most do) still give the loop a turn every TURN seconds
    of a batch, so the webhooks' answers do not wait for the whole batch."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    seen_ticks: list[int] = []

    async def busy(ctx: EventContext) -> None:
        seen_ticks.append(ticks)
        end = time.perf_counter() + TURN / 2
        while time.perf_counter() < end:  # CPU work, no await
            pass

    texts = [f"m{n}" for n in range(40)]
    for text in texts:
        await send(redis, 0, text)
    running = asyncio.create_task(ticker())
    try:
        async with worker(redis, "w1", Recorder(hook=busy)) as w:
            await eventually(lambda: _all_seen(redis, {0: texts}))
            assert w.consumer.stats.batch_sizes[40] == 1  # one batch of all of them
    finally:
        running.cancel()
    # Every other event or so the ticker ran: the batch did not hold the loop throughout.
    assert len(set(seen_ticks)) >= 10


async def _all_seen(redis: Redis, sent: dict[int, list[str]]) -> bool:
    for i, texts in sent.items():
        if len(await seen(redis, i)) < len(texts):
            return False
    return True


@pytest.mark.cluster
async def test_two_workers_share_partitions_and_keep_each_conversation_in_order(
    redis: Redis,
) -> None:
    """Failure table row 10: two processes, one conversation's messages in arrival order,
    no lost or doubled update, while the partitions move from one worker to the other."""
    sent: dict[int, list[str]] = {i: [] for i in range(10)}

    async def produce(rounds: int, tag: str) -> None:
        for n in range(rounds):
            for i in range(10):
                if i == 0 or n % 3 == 0:  # conversation 0 is the busy one
                    text = f"{tag}{i}-{n}"
                    sent[i].append(text)
                    await send(redis, i, text)
            await asyncio.sleep(0.005)

    async with worker(redis, "a", Recorder(delay=0.001)) as a:
        await produce(20, "x")
        async with worker(redis, "b", Recorder(delay=0.001)) as b:
            await produce(40, "y")  # rebalancing happens while messages flow

            async def fair() -> bool:
                return len(a.registry.owned) == len(b.registry.owned) == P // 2

            await eventually(fair)
            await produce(10, "z")
            await eventually(lambda: _all_seen(redis, sent))
            assert a.registry.owned | b.registry.owned == set(range(P))
            assert not a.registry.owned & b.registry.owned
            assert a.consumer.stats.processed > 0
            assert b.consumer.stats.processed > 0

    for i, texts in sent.items():
        assert await seen(redis, i) == texts
        assert await replies(redis, i) == [f"re: {t}" for t in texts]
    assert await pending(redis) == 0


# --------------------------------------------------------------------------- crashes and fences


@pytest.mark.cluster
async def test_a_crashed_worker_is_taken_over_and_every_entry_takes_effect_once(
    redis: Redis,
) -> None:
    """Failure table row 1: a worker dies after reading, before committing; another claims
    its entries once the leases expire and handles them, each with exactly one effect."""
    texts = [f"m{n}" for n in range(5)]
    gate = asyncio.Event()
    a_handler = Recorder(gates={"m3": gate})
    for text in texts:
        await send(redis, 1, text)
    await send(redis, 2, "other")
    async with worker(redis, "a", a_handler) as a:
        await asyncio.wait_for(a_handler.reach("m3").wait(), 10)
        await crash(a)  # m0..m2 handled, nothing committed
        assert await pending(redis) >= 5

        async with worker(redis, "b") as b:
            await eventually(lambda: _all_seen(redis, {1: texts, 2: ["other"]}))

            async def owns_all() -> bool:
                return b.registry.owned == set(range(P))

            await eventually(owns_all)

    assert await seen(redis, 1) == texts
    assert await replies(redis, 1) == [f"re: {t}" for t in texts]
    assert [t for _, t in b.handler.calls if t in texts] == texts
    assert await pending(redis) == 0
    consumers = await redis.xinfo_consumers(keys_of(1).inbox, INBOX_GROUP)
    assert [c["name"] for c in consumers] == [b"b"]  # the dead worker's consumer is forgotten


@pytest.mark.cluster
async def test_a_paused_worker_cannot_commit_after_its_lease_expired(redis: Redis) -> None:
    """A worker stalls mid-batch longer than its lease; another takes the partition over and
    handles the batch; when the first wakes up, its commit is refused (fenced)."""
    gate = asyncio.Event()
    a_handler = Recorder(gates={"m1": gate})
    texts = ["m0", "m1", "m2"]
    async with worker(redis, "a", a_handler) as a:
        for text in texts:
            await send(redis, 1, text)
        await asyncio.wait_for(a_handler.reach("m1").wait(), 10)
        await a.registry.halt()  # the pause: no heartbeat, no renewal; the task waits on

        async def lease_expired() -> bool:
            return not await redis.exists(keys_of(1).lease)

        await eventually(lease_expired)
        async with worker(redis, "b"):
            await eventually(lambda: _all_seen(redis, {1: texts}))
            gate.set()  # the paused worker wakes up and tries to commit its stale batch

            async def a_stopped() -> bool:
                return keys_of(1).partition not in a.consumer.partitions

            await eventually(a_stopped)
            assert a.consumer.stats.fenced >= 1
            assert a.consumer.stats.processed == 0
        await a.consumer.stop()

    assert await seen(redis, 1) == texts
    assert await replies(redis, 1) == [f"re: {t}" for t in texts]
    assert await pending(redis) == 0


@pytest.mark.cluster
async def test_a_session_changed_underneath_makes_the_batch_run_again(redis: Redis) -> None:
    keys = keys_of(1)
    changed = False

    async def someone_else_writes(ctx: EventContext) -> None:
        nonlocal changed
        if not changed:
            changed = True
            await redis.hset(
                keys.session(conv(1)),
                mapping={"v": "7", "state": "", "data": json.dumps({"seen": ["external"]})},
            )

    handler = Recorder(hook=someone_else_writes)
    await send(redis, 1, "m0")
    await send(redis, 1, "m1")
    async with worker(redis, "w", handler) as w:
        await eventually(lambda: _all_seen(redis, {1: ["external", "m0", "m1"]}))
        stats = w.consumer.stats

    assert await seen(redis, 1) == ["external", "m0", "m1"]
    assert (await redis.hget(keys.session(conv(1)), "v")) == b"8"
    assert stats.conflicts == 1
    assert handler.calls_for("m0") == 2  # handled again on the fresh session
    assert await replies(redis, 1) == ["re: m0", "re: m1"]  # the refused run wrote nothing


# --------------------------------------------------------------------------- failures


async def test_a_failing_entry_is_retried_in_place_and_later_entries_wait(redis: Redis) -> None:
    handler = Recorder(fail={"flaky": 2})
    for text in ["m0", "flaky", "m1"]:
        await send(redis, 1, text)
    async with worker(redis, "w", handler, max_deliveries=3) as w:
        await eventually(lambda: _all_seen(redis, {1: ["m0", "flaky", "m1"]}))
        stats = w.consumer.stats

    assert await seen(redis, 1) == ["m0", "flaky", "m1"]
    assert handler.calls_for("flaky") == 3
    # The entry before the failing one is handled again on a clean batch and committed (once)
    # before the retries; it is not handled again after that.
    assert handler.calls_for("m0") == 2
    assert stats.failed == 2
    assert stats.dead_lettered == 0
    assert await redis.hkeys(keys_of(1).failures()) == [b"v"]  # only the commit counter
    assert await dlq.count(redis) == 0


@pytest.mark.cluster
async def test_a_poison_entry_goes_to_the_dlq_and_comes_back_by_replay(redis: Redis) -> None:
    """Failure table row 14: after max_deliveries failures the entry is dead-lettered, the
    stream keeps flowing; replay brings it back once the handler is fixed."""
    handler = Recorder(fail={"poison": -1})
    ids = {}
    for text in ["m0", "poison", "m1"]:
        ids[text] = await send(redis, 1, text)
    await send(redis, 2, "elsewhere")
    async with worker(redis, "w", handler, max_deliveries=3) as w:
        await eventually(lambda: _all_seen(redis, {1: ["m0", "m1"], 2: ["elsewhere"]}))
        assert handler.calls_for("poison") == 3
        assert w.consumer.stats.dead_lettered == 1
        assert w.consumer.stats.failed == 3
        assert await pending(redis) == 0
        assert await redis.hkeys(keys_of(1).failures()) == [b"v"]

        [dead] = await dlq.list_dead(redis)
        assert (dead.source, dead.entry, dead.partition, dead.group, dead.kind) == (
            keys_of(1).inbox,
            ids["poison"],
            keys_of(1).partition,
            INBOX_GROUP,
            "inbox",
        )
        assert dead.deliveries == 3
        assert dead.reason == "RuntimeError: cannot handle poison"
        assert InboxEvent.from_fields("0-1", dict(dead.fields), 1).conversation == conv(1)

        handler.fail.clear()  # the handler is fixed
        assert await dlq.replay(redis, "all") == 1
        await eventually(lambda: _all_seen(redis, {1: ["m0", "m1", "poison"]}))

    assert await seen(redis, 1) == ["m0", "m1", "poison"]
    assert await dlq.count(redis) == 0


async def test_undecodable_entries_go_straight_to_the_dlq(redis: Redis) -> None:
    keys = keys_of(1)
    bad_json = {"k": "message", "c": conv(1), "e": "{not json"}
    await send(redis, 1, "m0")
    await redis.xadd(keys.inbox, bad_json)
    await redis.xadd(keys.inbox, {b"junk": b"\xff\xfe"})
    await send(redis, 1, "m1")
    async with worker(redis, "w") as w:
        await eventually(lambda: _all_seen(redis, {1: ["m0", "m1"]}))
        stats = w.consumer.stats

    assert stats.dead_lettered == 2
    assert stats.failed == 0
    first, second = await dlq.list_dead(redis)
    assert dict(first.fields) == bad_json
    assert first.reason.startswith("undecodable inbox entry: ValidationError")
    assert second.reason.startswith("undecodable inbox entry: UnicodeDecodeError")
    assert await pending(redis) == 0
    assert await redis.xlen(keys.inbox) == 0
    # Replayed, the raw bytes come back exactly as they were.
    await dlq.replay(redis, [second.id])
    [(_, fields)] = await redis.xrange(keys.inbox)
    assert fields == {b"junk": b"\xff\xfe"}


# --------------------------------------------------------------------------- Redis and shutdown


async def test_the_consumer_survives_a_redis_restart_and_loses_nothing(tmp_path: Path) -> None:
    """Failure table row 4: redis-server is killed mid-run and restarted from its AOF; the
    consumer backs off, reconnects, and every accepted entry takes effect exactly once."""
    server = RedisServer(tmp_path / "redis").start()
    redis = Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=2.0)
    sent: dict[int, list[str]] = {i: [] for i in range(4)}

    async def produce(tag: str, count: int) -> None:
        for n in range(count):
            for i in range(4):
                text = f"{tag}{i}-{n}"
                while True:
                    try:
                        await send(redis, i, text)
                        break
                    except RedisConnectionError:
                        await asyncio.sleep(0.05)
                sent[i].append(text)

    try:
        async with worker(redis, "w", Recorder(delay=0.002), batch_size=5, lease_ttl=1.0) as w:
            await produce("a", 25)

            async def some_done() -> bool:
                return w.consumer.stats.processed >= 20

            await eventually(some_done)
            assert w.consumer.stats.processed < 100  # mid-run
            server.kill()
            await asyncio.sleep(0.3)
            server.start()
            await produce("b", 10)
            await eventually(lambda: _all_seen(redis, sent), limit=30)
            assert w.consumer.stats.errors >= 1

        for i, texts in sent.items():
            assert await seen(redis, i) == texts
            assert await replies(redis, i) == [f"re: {t}" for t in texts]
        assert await pending(redis) == 0
    finally:
        await redis.aclose()
        server.stop()


async def test_graceful_stop_finishes_the_batch_in_hand_and_releases(redis: Redis) -> None:
    """Failure table row 15: stop reading, finish and commit the batch in hand, release the
    leases; the rest waits in the stream for the next worker, in order."""
    texts = [f"m{n}" for n in range(20)]
    handler = Recorder(delay=0.02)
    for text in texts:
        await send(redis, 1, text)
    async with worker(redis, "a", handler, batch_size=5) as a:
        await asyncio.wait_for(handler.reach("m6").wait(), 10)  # inside the second batch
        await a.registry.stop()
        await a.consumer.stop()
        done = await seen(redis, 1)
        assert done == texts[: len(done)]
        assert len(done) == 10  # both batches read so far were committed whole
        assert [t for _, t in handler.calls] == done  # nothing handled and left uncommitted
        assert await pending(redis) == 0
        assert not await redis.exists(keys_of(1).lease)
        assert await redis.zscore(WORKERS, "a") is None
        assert not await a.registry.is_alive("a")

    async with worker(redis, "b"):
        await eventually(lambda: _all_seen(redis, {1: texts}))
    assert await seen(redis, 1) == texts


async def test_stop_during_a_retry_backoff_leaves_the_entry_for_the_next_owner(
    redis: Redis,
) -> None:
    handler = Recorder(fail={"flaky": -1})
    ids = {text: await send(redis, 1, text) for text in ["m0", "flaky", "m1"]}
    async with worker(redis, "a", handler, max_deliveries=100) as a:
        a.consumer.retry_delay = a.consumer.retry_delay_max = 30.0  # a long backoff
        await eventually(lambda: _all_seen(redis, {1: ["m0"]}))
        await asyncio.wait_for(a.registry.stop(), 10)  # does not wait out the backoff
    assert await pending(redis) == 2  # flaky and the entry after it
    assert await redis.hget(keys_of(1).failures(), failure_field(ids["flaky"])) == b"1"

    handler.fail.clear()
    async with worker(redis, "b", handler):
        await eventually(lambda: _all_seen(redis, {1: ["m0", "flaky", "m1"]}))
    assert await redis.hkeys(keys_of(1).failures()) == [b"v"]


@pytest.mark.cluster
async def test_a_resent_commit_is_not_applied_twice(redis: Redis) -> None:
    """The client may re-send a command whose reply was lost (redis-py retries on a dropped
    connection). A commit applied once and sent again must be refused, not applied twice:
    the partition's commit counter guards it."""
    store = Store(redis)
    sent_twice = False
    original = store.run

    async def run_twice(batch: Any) -> list[Any]:
        nonlocal sent_twice
        if not sent_twice and any(op[0] == "xack" for op in batch.ops):
            sent_twice = True
            await original(batch)  # applied; "the reply was lost", the client re-sends
        return await original(batch)

    store.run = run_twice  # type: ignore[method-assign]
    await send(redis, 1, "m0")
    await send(redis, 1, "m1")
    registry = WorkerRegistry(redis, worker_id="w", partitions=P, lease_ttl=TTL)
    consumer = InboxConsumer(
        store, registry, Recorder(), limits=GatewayLimits(), max_deliveries=3, block_ms=100
    )
    await consumer.start()
    await registry.start()
    try:
        await eventually(lambda: _all_seen(redis, {1: ["m0", "m1"]}))
        await send(redis, 1, "m2")
        await eventually(lambda: _all_seen(redis, {1: ["m0", "m1", "m2"]}))
    finally:
        await registry.stop()
        await consumer.stop()
    assert sent_twice
    assert await seen(redis, 1) == ["m0", "m1", "m2"]
    assert await replies(redis, 1) == ["re: m0", "re: m1", "re: m2"]


@pytest.mark.parametrize("bad", [0, -1])
def test_invalid_settings_are_refused(bad: int) -> None:
    registry = WorkerRegistry(Redis(), worker_id="w", partitions=1, lease_ttl=1)
    with pytest.raises(ValueError, match="max_deliveries"):
        InboxConsumer(
            Store(Redis()), registry, Recorder(), limits=GatewayLimits(), max_deliveries=bad
        )

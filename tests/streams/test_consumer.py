"""The partitioned stream consumer on its own, against a real redis-server: a minimal
consumer that records what it handled, fails on purpose and commits fenced batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.storage.keys import DLQ, PartitionKeys
from bot.storage.store import Batch, CommitConflict, Store, text, text_map
from bot.streams.consumer import Partition, PartitionedConsumer
from bot.streams.leases import WorkerRegistry
from bot.streams.reader import Entry, Fenced, Letter, StreamSpec

P = 2
PART = 1
KEYS = PartitionKeys(PART)
SPEC = StreamSpec("test", "tester", lambda keys: keys.inbox, "t:", "test entry")


class Collector(PartitionedConsumer[Partition]):
    """Handles ``x`` fields in order, one fenced commit per batch; fails the texts in
    ``fail`` (always) and dead-letters them after ``max_deliveries``; waits at ``gate``
    before committing, when given."""

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        *,
        fail: set[str] | None = None,
        max_deliveries: int = 3,
        gate: asyncio.Event | None = None,
    ) -> None:
        super().__init__(store, registry, SPEC, block=0.1, retry_delay=0.01, retry_delay_max=0.05)
        self.fail = fail or set()
        self.max_deliveries = max_deliveries
        self.gate = gate
        self.handled: list[str] = []
        self.reached = asyncio.Event()
        """Set when a batch is in hand (before the gate)."""
        self.failures: list[tuple[str, int]] = []

    def new_partition(self, partition: int) -> Partition:
        return Partition(self, partition)

    async def handle(self, part: Partition, entries: Sequence[Entry]) -> None:
        self.reached.set()
        if self.gate is not None:
            await self.gate.wait()
        stream = part.stream
        batch = stream.fence(Batch())
        done: list[str] = []
        failed: dict[str, int] = {}
        letters: list[Letter] = []
        handled: list[str] = []
        for entry in entries:
            value = entry.text_fields().get("x", "")
            if value in self.fail:
                count = stream.add_failure(batch, entry.id)
                self.failures.append((value, count))
                if count >= self.max_deliveries:
                    letters.append(Letter(PART, entry.id, entry.fields, "always fails", count))
                    done.append(entry.id)
                else:
                    failed[entry.id] = count
            else:
                handled.append(value)
                done.append(entry.id)
        self.tally.dead_lettered += await stream.dead_letter(letters)
        stream.ack(batch, done)
        try:
            await batch.commit(self.store)
        except CommitConflict as exc:
            if exc.reason == "fenced":
                raise Fenced from exc
            raise
        stream.settle(done, failed)
        self.handled += handled
        if failed:
            stream.rewind()  # retry the failed ones, in stream order


@asynccontextmanager
async def node(
    redis: Redis, name: str, *, lease_ttl: float = 1.0, **options: Any
) -> AsyncIterator[tuple[WorkerRegistry, Collector]]:
    registry = WorkerRegistry(redis, worker_id=name, partitions=P, lease_ttl=lease_ttl)
    consumer = Collector(Store(redis), registry, **options)
    await consumer.start()
    await registry.start()
    try:
        yield registry, consumer
    finally:
        await registry.stop()
        await consumer.stop()


async def add(redis: Redis, *values: str) -> list[str]:
    return [text(await redis.xadd(KEYS.inbox, {"x": value})) for value in values]


async def eventually(check: Callable[[], Awaitable[bool] | bool], limit: float = 15.0) -> None:
    """Wait until ``check()`` holds (``limit`` only guards against a hang)."""
    async with asyncio.timeout(limit):
        while True:
            result = check()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.01)


async def pending_of(redis: Redis, consumer: str) -> int:
    found = await redis.xpending_range(
        KEYS.inbox, SPEC.group, min="-", max="+", count=100, consumername=consumer
    )
    return len(found)


@pytest.mark.cluster
async def test_a_crashed_owners_pending_entries_are_taken_over_first(redis: Redis) -> None:
    gate = asyncio.Event()
    await add(redis, "a0", "a1", "a2")
    async with node(redis, "A", gate=gate) as (registry_a, a):
        await asyncio.wait_for(a.reached.wait(), 10)  # A holds the batch, uncommitted
        await a.halt()  # the crash: no commit, no release, no heartbeat
        await registry_a.halt()
        assert await pending_of(redis, "A") == 3
        await add(redis, "b0")  # newer than what A had read

        async with node(redis, "B") as (_, b):
            await eventually(lambda: len(b.handled) == 4)
            assert b.handled == ["a0", "a1", "a2", "b0"]  # A's entries first, in order
            assert b.tally.claimed == 3
            consumers = await redis.xinfo_consumers(KEYS.inbox, SPEC.group)
            assert [c["name"] for c in consumers] == [b"B"]  # A is forgotten
    assert a.handled == []
    assert await redis.xlen(KEYS.inbox) == 0


async def test_a_worker_that_lost_the_lease_reads_nothing_more(redis: Redis) -> None:
    async with node(redis, "A", lease_ttl=30.0) as (registry, a):
        await add(redis, "m0")
        await eventually(lambda: a.handled == ["m0"])
        await redis.set(KEYS.lease, "thief", px=60_000)  # the lease moved behind A's back
        await add(redis, "m1")  # wakes A's wait: its next read is fenced

        await eventually(lambda: PART not in a.partitions)
        assert a.tally.fenced == 1
        assert a.handled == ["m0"]
        assert await pending_of(redis, "A") == 0  # m1 was not taken from the new owner
        assert await redis.xlen(KEYS.inbox) == 1
        assert PART in registry.owned  # the registry has not noticed yet: the fence did
        await redis.set(KEYS.lease, "A", px=60_000)  # so that the registry's stop is clean


@pytest.mark.cluster
async def test_a_failing_entry_is_counted_then_dead_lettered(redis: Redis) -> None:
    ids = await add(redis, "m0", "bad", "m1")
    async with node(redis, "A", fail={"bad"}, max_deliveries=3) as (_, a):
        await eventually(lambda: a.handled == ["m0", "m1"] and a.tally.dead_lettered == 1)
        assert a.failures == [("bad", 1), ("bad", 2), ("bad", 3)]

    (entry,) = await redis.xrange(DLQ)
    letter = text_map(entry[1])
    assert (letter["source"], letter["entry"], letter["group"], letter["kind"]) == (
        KEYS.inbox,
        ids[1],
        SPEC.group,
        "test",
    )
    assert (letter["partition"], letter["deliveries"]) == (str(PART), "3")
    assert await redis.xlen(KEYS.inbox) == 0
    assert await redis.hkeys(KEYS.failures()) == []


async def test_a_failure_count_survives_a_take_over(redis: Redis) -> None:
    (bad,) = await add(redis, "bad")
    async with node(redis, "A", fail={"bad"}, max_deliveries=100) as (registry_a, a):
        await eventually(lambda: len(a.failures) >= 2)
        await a.halt()
        await registry_a.halt()
    counted = int(text(await redis.hget(KEYS.failures(), SPEC.failure_field(bad))))
    assert counted == len(a.failures)

    async with node(redis, "B", fail={"bad"}, max_deliveries=counted + 1) as (_, b):
        await eventually(lambda: b.tally.dead_lettered == 1)
        assert b.failures == [("bad", counted + 1)]  # counting went on where A left it
    assert await redis.xlen(DLQ) == 1


async def test_a_release_waits_for_the_batch_in_hand(redis: Redis) -> None:
    gate = asyncio.Event()
    await add(redis, "m0", "m1")
    async with node(redis, "A", gate=gate) as (registry, a):
        await asyncio.wait_for(a.reached.wait(), 10)
        stopping = asyncio.create_task(registry.stop())  # gives every partition back
        await eventually(lambda: PART in registry.releasing)
        await add(redis, "m2")  # arrives while the partition drains: not read
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done()
        assert await redis.get(KEYS.lease) == b"A"  # held until the batch is committed

        gate.set()
        await stopping
        assert a.handled == ["m0", "m1"]
        assert not await redis.exists(KEYS.lease)
        assert a.partitions == set()
        assert a.tally.fenced == 0
    assert await redis.xlen(KEYS.inbox) == 1  # m2 waits for the next owner
    assert await pending_of(redis, "A") == 0
    consumers = await redis.xinfo_consumers(KEYS.inbox, SPEC.group)
    assert [c["name"] for c in consumers] == [b"A"]  # idle: the next take-over forgets it

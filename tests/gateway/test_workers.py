"""Worker registry against a real Redis: heartbeats, fair shares of partition leases,
take-over after a crash, lost leases, releases that wait for the listeners, the recorded
partition count."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.core.config import ConfigError
from bot.storage.keys import META, WORKERS, PartitionKeys, alive
from bot.storage.redis_server import RedisServer
from bot.streams.leases import PartitionCountMismatch, WorkerRegistry, new_worker_id

TTL = 0.4


async def eventually(check: Callable[[], bool | Awaitable[bool]], limit: float = 10.0) -> None:
    """Wait until ``check()`` holds (``limit`` seconds only guard against a hang)."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@dataclass
class Listener:
    """Records what the registry told it; releases can be made slow."""

    events: list[tuple[str, int]] = field(default_factory=list)
    release_delay: float = 0.0

    def of(self, kind: str) -> list[int]:
        return [p for k, p in self.events if k == kind]

    async def partition_acquired(self, partition: int) -> None:
        self.events.append(("acquired", partition))

    async def partition_released(self, partition: int) -> None:
        self.events.append(("releasing", partition))
        await asyncio.sleep(self.release_delay)
        self.events.append(("released", partition))

    async def partition_lost(self, partition: int) -> None:
        self.events.append(("lost", partition))


def registry(redis: Redis, name: str, partitions: int = 8, ttl: float = TTL) -> WorkerRegistry:
    return WorkerRegistry(redis, worker_id=name, partitions=partitions, lease_ttl=ttl)


async def holders(redis: Redis, partitions: int = 8) -> list[str | None]:
    values = [await redis.get(PartitionKeys(p).lease) for p in range(partitions)]
    return [v.decode() if v else None for v in values]


def test_worker_ids_name_the_host_and_process_and_are_unique() -> None:
    first, second = new_worker_id(), new_worker_id()
    host, pid, _ = first.rsplit(":", 2)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert first != second


@pytest.mark.cluster
async def test_a_lone_worker_takes_every_partition_and_gives_them_back(redis: Redis) -> None:
    listener = Listener()
    reg = registry(redis, "solo")
    reg.add_listener(listener)
    await reg.start()
    try:
        assert reg.owned == set(range(8))
        assert sorted(listener.of("acquired")) == list(range(8))
        assert await holders(redis) == ["solo"] * 8
        assert await redis.hget(META, "partitions") == b"8"
        assert await reg.is_alive("solo")
        assert not await reg.is_alive("nobody")
        assert await redis.zscore(WORKERS, "solo") is not None
        ttl = await redis.pttl(PartitionKeys(0).lease)
        assert 0 < ttl <= TTL * 1000
    finally:
        await reg.stop()
    assert reg.owned == set()
    assert sorted(listener.of("released")) == list(range(8))
    assert await holders(redis) == [None] * 8
    assert not await redis.exists(alive("solo"))
    assert await redis.zscore(WORKERS, "solo") is None


async def test_a_different_partition_count_is_refused_with_a_clear_error(redis: Redis) -> None:
    first = registry(redis, "a", partitions=16)
    await first.start()
    await first.stop()
    second = registry(redis, "b", partitions=32)
    with pytest.raises(PartitionCountMismatch) as caught:
        await second.start()
    assert str(caught.value).startswith(
        "Redis data uses 16 partitions, SINCHBOT_PARTITIONS=32; set SINCHBOT_PARTITIONS=16"
    )
    assert isinstance(caught.value, ConfigError)
    assert await holders(redis, 32) == [None] * 32  # nothing was taken


@pytest.mark.cluster
async def test_workers_share_the_partitions_fairly(redis: Redis) -> None:
    regs = [registry(redis, name) for name in ("a", "b", "c")]
    for reg in regs:
        await reg.start()
    try:

        def balanced() -> bool:
            counts = sorted(len(r.owned) for r in regs)
            return counts == [2, 3, 3] and not any(r.releasing for r in regs)

        await eventually(balanced)
        assert set().union(*(r.owned for r in regs)) == set(range(8))
        for reg in regs:
            assert reg.live == ["a", "b", "c"]
        assert [r.fair_share() for r in regs] == [3, 3, 2]
        lease_holders = await holders(redis)
        for reg in regs:
            assert {p for p, h in enumerate(lease_holders) if h == reg.worker_id} == reg.owned

        await regs[2].stop()  # one leaves cleanly: the others take its share at once

        def halves() -> bool:
            return [len(r.owned) for r in regs[:2]] == [4, 4]

        await eventually(halves)
    finally:
        for reg in regs:
            await reg.stop()


async def test_shares_add_up_to_the_partition_count(redis: Redis) -> None:
    """16 partitions over 5 workers: 4+3+3+3+3, never 4+4+4+4+0."""
    regs = [registry(redis, f"w{n}", partitions=16) for n in range(5)]
    for reg in regs:
        await reg.start()
    try:

        def balanced() -> bool:
            counts = sorted(len(r.owned) for r in regs)
            return counts == [3, 3, 3, 3, 4] and not any(r.releasing for r in regs)

        await eventually(balanced)
        assert set().union(*(r.owned for r in regs)) == set(range(16))
        assert len(regs[0].owned) == 4  # the remainder goes to the first worker by id
    finally:
        for reg in regs:
            await reg.stop()


@pytest.mark.cluster
async def test_a_crashed_workers_partitions_are_taken_over_after_the_lease_ttl(
    redis: Redis,
) -> None:
    a, b = registry(redis, "a"), registry(redis, "b")
    watcher = Listener()
    b.add_listener(watcher)
    await a.start()
    await b.start()
    try:
        await eventually(lambda: len(a.owned) == len(b.owned) == 4)
        taken_from_a = set(a.owned)
        await a.halt()  # a crash: nothing released, no more heartbeats
        assert await holders(redis) != [None] * 8

        await eventually(lambda: b.owned == set(range(8)))
        assert taken_from_a <= set(watcher.of("acquired"))
        assert not await b.is_alive("a")
        assert await holders(redis) == ["b"] * 8
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.cluster
async def test_a_lease_taken_by_another_worker_is_reported_lost(redis: Redis) -> None:
    listener = Listener()
    reg = registry(redis, "a", partitions=2)
    reg.add_listener(listener)
    await reg.start()
    try:
        # Someone else holds partition 1 now (as if our lease had expired during a pause).
        await redis.set(PartitionKeys(1).lease, "intruder", px=60_000)
        await eventually(lambda: listener.of("lost") == [1])
        assert reg.owned == {0}
        await redis.delete(PartitionKeys(1).lease)  # the intruder leaves
        await eventually(lambda: reg.owned == {0, 1})
        assert listener.of("acquired").count(1) == 2
    finally:
        await reg.stop()


async def test_a_release_waits_for_the_listeners_before_deleting_the_lease(
    redis: Redis,
) -> None:
    listener = Listener(release_delay=TTL * 2)  # longer than a lease: renewals go on
    reg = registry(redis, "a", partitions=2)
    reg.add_listener(listener)
    await reg.start()
    stopping = asyncio.create_task(reg.stop())
    await eventually(lambda: len(listener.of("releasing")) == 2)
    await asyncio.sleep(TTL * 1.5)
    assert await holders(redis, 2) == ["a", "a"]  # still ours while the listener finishes
    assert listener.of("released") == []
    await stopping
    assert sorted(listener.of("released")) == [0, 1]
    assert listener.of("lost") == []
    assert await holders(redis, 2) == [None, None]


async def test_leases_not_renewed_in_time_are_dropped_and_taken_again_after_an_outage(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    redis = Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=1.0)
    listener = Listener()
    reg = registry(redis, "a", partitions=2)
    reg.add_listener(listener)
    try:
        await reg.start()
        server.kill()
        # We cannot know whether Redis expired the leases meanwhile: stop using them.
        await eventually(lambda: sorted(listener.of("lost")) == [0, 1])
        assert reg.owned == set()
        server.start()
        await eventually(lambda: reg.owned == {0, 1})
        assert sorted(listener.of("acquired")) == [0, 0, 1, 1]
    finally:
        await reg.stop()
        await redis.aclose()
        server.stop()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="partitions"):
        WorkerRegistry(Redis(), partitions=0, lease_ttl=1)
    with pytest.raises(ValueError, match="lease_ttl"):
        WorkerRegistry(Redis(), partitions=1, lease_ttl=0)

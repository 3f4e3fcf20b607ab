"""Workers and partition leases: which process consumes which partition.

Every gateway process runs one :class:`WorkerRegistry`. It heartbeats (a liveness key and
a deadline in the :data:`~bot.storage.keys.WORKERS` sorted set, on Redis's clock) and keeps
a fair share of the partitions (``partitions / live workers``, the remainder spread over the
first workers by id, so the shares add up exactly), each under a lease:
``SET <lease> <worker id> NX PX <ttl>``, renewed every ``lease_ttl / 3`` with a
compare-and-pexpire script. The lease value is what the batch script fences on
(:meth:`bot.storage.store.Batch.fence`), so a worker that lost a lease — it paused, Redis
was unreachable, the lease expired and someone else took it — can never write again for
that partition.

Components that work per partition (the inbox consumer) subscribe as a
:class:`PartitionListener` and are told when a partition is acquired, when the registry
wants to give one back (finish the batch in hand, then return: the lease is deleted after),
and when one is lost (stop at once: the commit would be refused anyway).

A worker that crashes simply stops renewing: its leases expire after ``lease_ttl`` and the
survivors, whose fair share grew, take them over.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import time
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisError

from bot.core.aio import cancel_and_wait
from bot.core.config import ConfigError
from bot.storage.connection import RedisClient, node_key
from bot.storage.keys import META, WORKERS, PartitionKeys, alive
from bot.storage.store import text

log = structlog.get_logger(__name__)

META_PARTITIONS = "partitions"
"""Field of :data:`~bot.storage.keys.META` holding the partition count of the data."""

# Record our deadline (Redis clock), forget workers whose deadline passed, list the live ones.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Extend a lease only if we still hold it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Give a lease back only if we still hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class PartitionCountMismatch(ConfigError):
    """The Redis data was written with another partition count than the one configured."""


class PartitionListener(Protocol):
    """Something that works per partition and must follow the registry's leases.

    The registry calls these from its own tasks; they should return promptly
    (:meth:`partition_released` may take as long as finishing the batch in hand).
    """

    async def partition_acquired(self, partition: int) -> None:
        """The lease of ``partition`` is ours: start working on it."""
        ...

    async def partition_released(self, partition: int) -> None:
        """The registry gives ``partition`` back: finish the batch in hand, commit it and
        stop; return when done (the lease is deleted once every listener returned)."""
        ...

    async def partition_lost(self, partition: int) -> None:
        """The lease of ``partition`` is gone (expired or taken): stop at once, without
        committing (a commit would be refused by the fence anyway)."""
        ...


def new_worker_id() -> str:
    """``host:pid:random``: unique per process start, readable in ``XINFO CONSUMERS``."""
    # "w" + hex: never all digits, so log masking never mistakes it for a phone number.
    return f"{socket.gethostname()}:{os.getpid()}:w{secrets.token_hex(4)}"


class WorkerRegistry:
    """This process's membership in the worker pool and the partition leases it holds.

    Args:
        redis: the gateway's Redis.
        worker_id: this worker's name (default :func:`new_worker_id`); it is the lease value
            and the consumer name in every stream group.
        partitions: the configured partition count (``SINCHBOT_PARTITIONS``).
        lease_ttl: seconds a lease lasts without renewal (``SINCHBOT_LEASE_TTL``); leases are
            renewed and the heartbeat refreshed every ``lease_ttl / 3``.
        listener_timeout: seconds a :meth:`PartitionListener.partition_released` may take
            before the registry logs it and deletes the lease anyway.

    ``start()`` checks the partition count recorded in Redis, heartbeats, takes its first
    share of partitions and runs the maintenance loop; ``stop()`` releases every lease
    (letting the listeners finish their batches first) and leaves the pool.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        worker_id: str | None = None,
        partitions: int,
        lease_ttl: float,
        listener_timeout: float = 60.0,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if not lease_ttl > 0:
            raise ValueError("lease_ttl must be positive")
        self.redis = redis
        self.worker_id = worker_id or new_worker_id()
        self.partitions = partitions
        self.lease_ttl = lease_ttl
        self.listener_timeout = listener_timeout
        self.owned: set[int] = set()
        """Partitions whose lease we hold and work on (not those being released)."""
        self.releasing: set[int] = set()
        """Partitions we still hold while their listeners finish before the release."""
        self.live: list[str] = []
        """Ids of the live workers at the last heartbeat (this one included), sorted."""
        self._renewed: dict[int, float] = {}  # partition → monotonic time the last renewal was sent
        self._listeners: list[PartitionListener] = []
        self._release_tasks: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._looping = False
        self._heartbeat: Any = redis.register_script(_HEARTBEAT)
        self._renew: Any = redis.register_script(_RENEW)
        self._release: Any = redis.register_script(_RELEASE)

    # ------------------------------------------------------------------ public API

    @property
    def ttl_ms(self) -> int:
        return max(1, round(self.lease_ttl * 1000))

    @property
    def interval(self) -> float:
        """Seconds between two heartbeats / lease renewals."""
        return self.lease_ttl / 3

    @property
    def held(self) -> set[int]:
        """Every partition whose lease we hold (owned and being released)."""
        return self.owned | self.releasing

    @property
    def live_workers(self) -> int:
        """Live workers at the last heartbeat (this one included)."""
        return len(self.live)

    def fair_share(self) -> int:
        """How many partitions this worker should hold: ``partitions / live workers``,
        the remainder going one each to the first workers by id, so the shares add up to
        the partition count exactly (never more than ``ceil(partitions / live)``)."""
        live = self.live or [self.worker_id]
        base, extra = divmod(self.partitions, len(live))
        rank = live.index(self.worker_id) if self.worker_id in live else len(live) - 1
        return base + (1 if rank < extra else 0)

    def add_listener(self, listener: PartitionListener) -> None:
        """Follow the leases from now on (call :meth:`partition_acquired` yourself for the
        partitions already in :attr:`owned`)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: PartitionListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def is_alive(self, worker_id: str) -> bool:
        """Whether ``worker_id`` heartbeated within its lease TTL."""
        return bool(await self.redis.exists(alive(worker_id)))

    async def check_partitions(self) -> None:
        """Record the partition count on first use; refuse data written with another one.

        Raises:
            PartitionCountMismatch: the data uses another partition count.
        """
        await self.redis.hsetnx(META, META_PARTITIONS, str(self.partitions))
        recorded = text(await self.redis.hget(META, META_PARTITIONS))
        if recorded and recorded != str(self.partitions):
            raise PartitionCountMismatch(
                f"Redis data uses {recorded} partitions, SINCHBOT_PARTITIONS={self.partitions}; "
                f"set SINCHBOT_PARTITIONS={recorded} (the count cannot change under existing "
                "data) or point SINCHBOT_REDIS_URL at an empty database"
            )

    async def start(self) -> None:
        """Check the partition count, join the pool, take a first share of partitions and
        start the maintenance loop.

        Raises:
            PartitionCountMismatch: the Redis data uses another partition count.
            redis.exceptions.RedisError: Redis cannot be reached right now.
        """
        if self._task is not None:
            return
        self._stopping = False
        await self.check_partitions()
        await self._tick()
        self._task = asyncio.create_task(self._loop(), name=f"registry {self.worker_id}")
        log.info(
            "worker started",
            worker=self.worker_id,
            partitions=sorted(self.owned),
            live_workers=self.live_workers,
        )

    async def stop(self) -> None:
        """Release every lease (each listener finishes its batch first) and leave the pool.

        The heartbeat and renewals keep running while the listeners drain, so a slow drain
        does not lose the leases; Redis errors are logged, never raised.
        """
        if self._task is None:
            return
        self._stopping = True
        for partition in sorted(self.owned):
            self._begin_release(partition)
        tasks = list(self._release_tasks.values())
        if tasks:
            await asyncio.wait(tasks)
        await self._cancel_loop()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(WORKERS, self.worker_id)
                pipe.delete(alive(self.worker_id))
                await pipe.execute()
        except RedisError as exc:
            log.warning("could not leave the worker pool", worker=self.worker_id, error=str(exc))
        log.info("worker stopped", worker=self.worker_id)

    async def halt(self) -> None:
        """Stop heartbeating and renewing at once, releasing nothing and telling nobody.

        What a crash or a long pause looks like to the other workers: the leases expire
        after ``lease_ttl``. For tests and emergencies; :meth:`stop` is the clean way out.
        """
        for task in self._release_tasks.values():
            task.cancel()
        await self._cancel_loop()

    # ------------------------------------------------------------------ the loop

    async def _cancel_loop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._looping = False  # the loop also stops by itself at its next turn
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        failures = 0
        self._looping = True
        while self._looping:
            await asyncio.sleep(self.interval)
            try:
                await self._tick()
                failures = 0
            except RedisError as exc:
                failures += 1
                log.warning(
                    "worker heartbeat failed",
                    worker=self.worker_id,
                    error=str(exc),
                    failures=failures,
                )
                await self._expire_local()
            except Exception:
                log.exception("worker maintenance failed", worker=self.worker_id)
                await self._expire_local()

    async def _tick(self) -> None:
        """Heartbeat, renew, then rebalance: release above the fair share, acquire below.

        The heartbeat and the renewals of each Redis Cluster master's partitions go
        concurrently, each on its own (one server: two round trips at once), so a master
        that is down — a failover under way — costs only the leases it holds: the others are
        renewed. A failed heartbeat is raised after the renewals, and the rebalance waits
        for the next tick.
        """
        held = sorted(self.held)
        sent = time.monotonic()
        groups: dict[str, list[int]] = {}
        for partition in held:
            node = await node_key(self.redis, PartitionKeys(partition).lease)
            groups.setdefault(node, []).append(partition)
        heartbeat, *renewals = await asyncio.gather(
            self._beat(),
            *(self._renew_group(group) for group in groups.values()),
            return_exceptions=True,
        )
        lost = []
        failed: BaseException | None = None
        for group, replies in zip(groups.values(), renewals, strict=True):
            if isinstance(replies, BaseException):
                failed = failed or replies  # not renewed: lost locally after lease_ttl
                continue
            for partition, renewed in zip(group, replies, strict=True):
                if int(renewed):
                    self._renewed[partition] = sent
                else:
                    lost.append(partition)
        for partition in lost:
            await self._lose(partition, "taken or expired")
        await self._expire_local()
        if isinstance(heartbeat, BaseException):
            raise heartbeat
        self.live = heartbeat
        if failed is not None:
            raise failed
        if self._stopping:
            return
        share = self.fair_share()
        count = len(self.owned) + len(self.releasing)
        if count > share:
            for partition in sorted(self.owned)[-(count - share) :]:
                self._begin_release(partition)
        elif count < share:
            await self._acquire(share - count)

    async def _beat(self) -> list[str]:
        """Record our deadline and liveness; the live workers, sorted."""
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._heartbeat(keys=[WORKERS], args=[self.worker_id, self.ttl_ms], client=pipe)
            pipe.set(alive(self.worker_id), "1", px=self.ttl_ms)
            replies = await pipe.execute()
        return sorted(text(member) for member in replies[0])

    async def _renew_group(self, partitions: list[int]) -> list[Any]:
        """Renew the leases of ``partitions`` (one master's) in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                await self._renew(
                    keys=[PartitionKeys(partition).lease],
                    args=[self.worker_id, self.ttl_ms],
                    client=pipe,
                )
            return list(await pipe.execute())

    async def _acquire(self, wanted: int) -> None:
        candidates = [p for p in range(self.partitions) if p not in self.held]
        random.shuffle(candidates)  # workers starting together try different partitions
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in candidates:
                pipe.exists(PartitionKeys(partition).lease)
            taken = await pipe.execute()
        free = [p for p, t in zip(candidates, taken, strict=True) if not t][:wanted]
        if not free:
            return
        sent = time.monotonic()
        async with self.redis.pipeline(transaction=False) as pipe:
            for partition in free:
                pipe.set(PartitionKeys(partition).lease, self.worker_id, nx=True, px=self.ttl_ms)
            results = await pipe.execute()
        acquired = [p for p, ok in zip(free, results, strict=True) if ok]
        refused = [p for p, ok in zip(free, results, strict=True) if not ok]
        if refused:
            # A SET the client re-sent after a dropped connection answers "not set" although
            # the first one took the lease: check who holds it.
            async with self.redis.pipeline(transaction=False) as pipe:
                for partition in refused:
                    pipe.get(PartitionKeys(partition).lease)
                holders = await pipe.execute()
            acquired += [
                p for p, h in zip(refused, holders, strict=True) if text(h) == self.worker_id
            ]
        for partition in acquired:
            self._renewed[partition] = sent
            self.owned.add(partition)
        if acquired:
            log.info(
                "partitions acquired",
                worker=self.worker_id,
                partitions=sorted(acquired),
                owned=len(self.owned),
                live_workers=self.live_workers,
            )
        for partition in acquired:
            await self._notify("partition_acquired", partition)

    async def _expire_local(self) -> None:
        """Drop leases we could not renew in time: Redis may already have expired them."""
        now = time.monotonic()
        for partition in sorted(self.held):
            if now >= self._renewed.get(partition, now) + self.lease_ttl:
                await self._lose(partition, "not renewed in time")

    async def _lose(self, partition: int, why: str) -> None:
        if partition not in self.held:
            return
        self.owned.discard(partition)
        self.releasing.discard(partition)
        self._renewed.pop(partition, None)
        log.warning("partition lease lost", worker=self.worker_id, partition=partition, why=why)
        await self._notify("partition_lost", partition)

    def _begin_release(self, partition: int) -> None:
        if partition not in self.owned or partition in self._release_tasks:
            return
        self.owned.discard(partition)
        self.releasing.add(partition)
        task = asyncio.create_task(self._release_one(partition), name=f"release p{partition}")
        self._release_tasks[partition] = task
        task.add_done_callback(lambda _: self._release_tasks.pop(partition, None))

    async def _release_one(self, partition: int) -> None:
        try:
            await asyncio.wait_for(
                self._notify("partition_released", partition), self.listener_timeout
            )
        except TimeoutError:
            log.error(
                "listeners did not finish the partition in time; releasing it anyway",
                worker=self.worker_id,
                partition=partition,
                timeout=self.listener_timeout,
            )
        if partition not in self.releasing:  # lost meanwhile
            return
        self.releasing.discard(partition)
        self._renewed.pop(partition, None)
        try:
            await self._release(keys=[PartitionKeys(partition).lease], args=[self.worker_id])
        except RedisError as exc:
            # It expires by itself after lease_ttl.
            log.warning(
                "could not release a lease",
                worker=self.worker_id,
                partition=partition,
                error=str(exc),
            )
            return
        log.info("partition released", worker=self.worker_id, partition=partition)

    async def _notify(self, event: str, partition: int) -> None:
        for listener in list(self._listeners):
            try:
                await getattr(listener, event)(partition)
            except Exception:
                log.exception(
                    "partition listener failed",
                    worker=self.worker_id,
                    partition=partition,
                    event=event,
                )

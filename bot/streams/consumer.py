"""The partitioned stream consumer: a task per owned partition, following the leases.

A :class:`PartitionedConsumer` is a :class:`~bot.streams.leases.PartitionListener` of the
process's :class:`~bot.streams.leases.WorkerRegistry`. For every partition the registry
leases to this worker it runs one task on that partition's stream
(:class:`~bot.streams.reader.PartitionStream`):

1. **Take over.** Ensure the consumer group, claim every pending entry of the partition
   (fenced), load its failure counts; :meth:`~PartitionedConsumer.taken_over` is told what
   was found.
2. **Consume.** :meth:`~PartitionedConsumer.consume` reads our own pending entries first,
   then new ones, as many as :meth:`~PartitionedConsumer.room` allows, and hands each batch
   to :meth:`~PartitionedConsumer.handle` (with ``slots``, :mod:`bot.streams.slots`, only so
   many partitions read and handle at once: under load the others' batches grow while they
   wait their turn); with nothing to read it waits for the next entry
   (``XREAD BLOCK``, at most :meth:`~PartitionedConsumer.idle_timeout`), for a wake-up
   (:meth:`Partition.wake_up`) or for a drain. :meth:`~PartitionedConsumer.tend` runs before
   every read (work that is not a read: finished deliveries to record, retries that are due).
3. **Finish.** Asked to drain (the registry gives the partition back, or the consumer
   stops), the loop stops reading and :meth:`~PartitionedConsumer.finish` completes the work
   in hand; the lease is deleted only after that (within ``drain_timeout``, then the task is
   cancelled and what it had in hand stays pending for the next owner).

The lease lost (expired or taken), the task is cancelled at once: nothing it would commit
could pass the fence anyway. A read, a claim or a commit refused by the fence
(:class:`~bot.streams.reader.Fenced`) ends the task the same way. A Redis error (or any
other) backs off, doubling from ``retry_delay`` to ``retry_delay_max``, and starts over from
the take-over: whatever was in hand is still pending in the stream, so nothing is lost.
:meth:`~PartitionedConsumer.ended` is told whenever a task is over, however it ended.

Subclasses supply what differs: how a batch of entries is handled and committed
(:meth:`~PartitionedConsumer.handle`), and the hooks above. Every log line of a partition's
task carries ``partition`` and ``worker`` (:mod:`structlog.contextvars`); the counters shared
by every consumer are in :class:`PartitionTally`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from redis.exceptions import RedisError

from bot.core.aio import cancel_and_wait
from bot.storage.connection import RedisClient
from bot.storage.store import Store
from bot.streams.leases import WorkerRegistry
from bot.streams.reader import (
    Entry,
    Fenced,
    PartitionStream,
    StreamScripts,
    StreamSpec,
    TakeOver,
)
from bot.streams.slots import Slots

__all__ = ["Partition", "PartitionTally", "PartitionedConsumer"]

log = structlog.get_logger(__name__)


@dataclass
class PartitionTally:
    """What the partition tasks of one consumer went through (for metrics)."""

    claimed: int = 0
    """Entries claimed by take-overs (an earlier owner's, or our own from before)."""
    fenced: int = 0
    """Reads, claims or commits refused because the partition moved to another worker."""
    restarts: Counter[str] = field(default_factory=Counter)
    """Times a task backed off and started over, by exception type (Redis outages...)."""
    dead_lettered: int = 0
    """Entries copied to the dead-letter stream."""


class Partition:
    """One owned partition: its stream and the task working on it. Subclass it to keep
    per-partition state (:meth:`PartitionedConsumer.new_partition`)."""

    def __init__(self, consumer: PartitionedConsumer[Any], partition: int) -> None:
        self.partition = partition
        self.me = consumer.worker_id
        self.kind = consumer.spec.kind
        self.stream = PartitionStream(
            consumer.redis, consumer.scripts, consumer.spec, partition, self.me
        )
        self.keys = self.stream.keys
        self.draining = asyncio.Event()
        """Set when the partition is to stop: given back, the consumer stopping, or lost."""
        self.woken = asyncio.Event()
        """Set to cut a wait short (:meth:`wake_up`)."""
        self.idle = asyncio.Event()
        """Set while the task waits (for entries, a wake-up or a backoff), not working."""
        self.took_over = False
        """The take-over is done (the task consumes)."""
        self.task: asyncio.Task[None] | None = None
        self.slots = consumer.slots
        self.holding = False
        """This partition holds one of :attr:`slots` (it reads or handles a batch)."""
        self.backoff = consumer.retry_delay
        self.context: dict[str, Any] = {"partition": partition, "worker": self.me}
        """Bound to every log line of the partition's task."""
        self.log = log.bind(**self.context)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def wake_up(self) -> None:
        """Cut the current wait short (something for :meth:`PartitionedConsumer.tend`)."""
        self.woken.set()

    async def drain(self, patience: float) -> None:
        """Stop reading, let the task finish what it has in hand (cancelled after
        ``patience`` seconds)."""
        self.draining.set()
        self.woken.set()
        if self.task is None:
            return
        done, _ = await asyncio.wait({self.task}, timeout=patience)
        if not done:
            self.log.error(
                f"{self.kind} partition did not drain in time; cancelling", seconds=patience
            )
            await self.abort()

    async def abort(self) -> None:
        """Stop at once; whatever is not committed stays pending for the next owner."""
        self.draining.set()
        self.woken.set()
        if self.task is not None and not self.task.done():
            await cancel_and_wait(self.task)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Hold a work slot (if the consumer has :attr:`slots`) while reading and handling
        a batch."""
        if self.slots is None:
            yield
            return
        await self.slots.acquire()
        self.holding = True
        try:
            yield
        finally:
            if self.holding:
                self.holding = False
                self.slots.release()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless asked to drain; returns whether we are draining. A work
        slot held is given back for the sleep and taken again after it."""
        held = self.holding and self.slots is not None
        if held:
            assert self.slots is not None
            self.holding = False
            self.slots.release()
        self.idle.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.draining.wait(), seconds)
        finally:
            self.idle.clear()
            if held:
                assert self.slots is not None
                await self.slots.acquire()
                self.holding = True
        return self.draining.is_set()

    async def rest(self, seconds: float) -> None:
        """Wait for a wake-up (or a drain) at most ``seconds``."""
        self.idle.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), seconds)
        finally:
            self.idle.clear()

    async def wait_for_entries(self, seconds: float) -> None:
        """Wait for a new entry in the stream, a wake-up or a drain, at most ``seconds``."""
        self.idle.set()
        try:
            await self.stream.wait(seconds, self.woken)
        finally:
            self.idle.clear()


P = TypeVar("P", bound=Partition)


class PartitionedConsumer(ABC, Generic[P]):
    """Consumes ``spec``'s stream of every partition this worker holds (see the module
    docstring).

    Args:
        store: the gateway's Redis (a client with ``decode_responses=False``; its
            ``socket_timeout``, if any, must exceed ``block``).
        registry: this process's :class:`~bot.streams.leases.WorkerRegistry`; the consumer
            follows its leases and uses its worker id as the consumer name.
        spec: which stream of each partition, and its consumer group.
        block: longest wait for new entries before reading again (checking the lease).
        retry_delay: first backoff after an error; it doubles up to ``retry_delay_max``.
        retry_delay_max: longest backoff.
        drain_timeout: seconds a partition may take to finish what it has in hand when it is
            released or the consumer stops; then its task is cancelled.
        slots: at most this many partitions read and handle a batch at once (None: no
            bound); see :mod:`bot.streams.slots`.
    """

    leave_group = False
    """Whether a partition given back cleanly forgets our consumer in its group (when it
    holds nothing pending); else the next owner's take-over forgets it."""

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        spec: StreamSpec,
        *,
        block: float = 1.0,
        retry_delay: float = 0.25,
        retry_delay_max: float = 10.0,
        drain_timeout: float = 30.0,
        slots: Slots | None = None,
    ) -> None:
        self.store = store
        self.slots = slots
        self.redis: RedisClient = store.redis
        self.registry = registry
        self.spec = spec
        self.block = block
        self.retry_delay = retry_delay
        self.retry_delay_max = max(retry_delay, retry_delay_max)
        self.drain_timeout = drain_timeout
        self.tally = PartitionTally()
        self.scripts = StreamScripts(self.redis)
        self.parts: dict[int, P] = {}
        """The partitions with a task (running, or ended by itself)."""
        self._running = False

    @property
    def worker_id(self) -> str:
        return self.registry.worker_id

    @property
    def partitions(self) -> set[int]:
        """Partitions with a running task."""
        return {p for p, part in self.parts.items() if part.running}

    @property
    def ready(self) -> bool:
        """Started, and every partition the registry holds for us is taken over."""
        return self._running and all(
            p in self.parts and self.parts[p].took_over for p in self.registry.owned
        )

    def live(self, partition: int) -> P | None:
        """``partition``'s task when it runs and is not draining."""
        part = self.parts.get(partition)
        if part is None or not part.running or part.draining.is_set():
            return None
        return part

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Follow the registry's leases: a task per owned partition, now and from now on."""
        if self._running:
            return
        self._running = True
        self.registry.add_listener(self)
        for partition in sorted(self.registry.owned):
            await self.partition_acquired(partition)

    async def stop(self) -> None:
        """Stop reading, let every partition finish what it has in hand, stop following the
        leases. The leases themselves are given back by
        :meth:`~bot.streams.leases.WorkerRegistry.stop` (stopped first, it drains this
        consumer the same way; either order works)."""
        self._running = False
        self.registry.remove_listener(self)
        parts = list(self.parts.values())
        self.parts.clear()
        await asyncio.gather(*(self._end(part, drain=True) for part in parts))

    async def halt(self) -> None:
        """Cancel every partition task at once, committing nothing (what a crash looks like;
        for tests)."""
        self._running = False
        self.registry.remove_listener(self)
        parts = list(self.parts.values())
        self.parts.clear()
        await asyncio.gather(*(self._end(part, drain=False) for part in parts))

    async def _end(self, part: P, *, drain: bool) -> None:
        if drain:
            await part.drain(self.drain_timeout)
        else:
            await part.abort()

    # ------------------------------------------------------------------ PartitionListener

    async def partition_acquired(self, partition: int) -> None:
        if not self._running:
            return
        old = self.parts.pop(partition, None)
        if old is not None:
            await old.abort()
        part = self.new_partition(partition)
        self.parts[partition] = part
        part.task = asyncio.create_task(self._run(part), name=f"{self.spec.kind} p{partition}")

    async def partition_released(self, partition: int) -> None:
        part = self.parts.pop(partition, None)
        if part is not None:
            await self._end(part, drain=True)

    async def partition_lost(self, partition: int) -> None:
        part = self.parts.pop(partition, None)
        if part is not None:
            await self._end(part, drain=False)

    # ------------------------------------------------------------------ what subclasses supply

    @abstractmethod
    def new_partition(self, partition: int) -> P:
        """The state of a newly acquired partition (a :class:`Partition`, or a subclass
        keeping more)."""

    @abstractmethod
    async def handle(self, part: P, entries: Sequence[Entry]) -> None:
        """Work on entries just read (ours pending first, in stream order, then new ones);
        what is not committed stays pending."""

    async def taken_over(self, part: P, found: TakeOver) -> None:
        """The take-over is done (default: log what was claimed from others)."""
        if found.claimed:
            part.log.info(
                f"{self.spec.kind}: took over pending entries",
                entries=found.claimed,
                holders=found.holders,
            )

    def room(self, part: P) -> int:
        """How many entries to read now (0: wait for a wake-up first)."""
        return 100

    def idle_timeout(self, part: P) -> float:
        """Longest wait when there is nothing to read (default :attr:`block`)."""
        return self.block

    async def tend(self, part: P) -> None:
        """Work to do before each read (default none)."""

    async def finish(self, part: P) -> None:
        """The partition drains: complete the work in hand (default: nothing to do, the
        batch in hand is committed by :meth:`handle`). Retried after a Redis error."""

    def ended(self, part: P) -> None:
        """The partition's task is over, whichever way (drained, cancelled, fenced):
        forget what it had in hand. Must not block."""

    # ------------------------------------------------------------------ the task

    async def consume(self, part: P) -> None:
        """Read and hand over batches until the partition drains."""
        while not part.draining.is_set():
            part.woken.clear()  # before the work: a wake-up during it cuts the next wait
            await self.tend(part)
            if part.draining.is_set():
                return
            room = self.room(part)
            if room <= 0:
                await part.rest(self.idle_timeout(part))
                continue
            async with part.working():
                if part.draining.is_set():
                    return
                entries = await part.stream.read(room)
                part.backoff = self.retry_delay
                if entries:
                    await self.handle(part, entries)
            if not entries:
                await part.wait_for_entries(self.idle_timeout(part))

    async def _run(self, part: P) -> None:
        # The task's own context (a copy of its creator's): start from a clean one.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**part.context)
        try:
            await self._work(part)
        finally:
            self.ended(part)

    async def _work(self, part: P) -> None:
        while True:
            try:
                if not part.draining.is_set():
                    await part.stream.ensure_group()
                    found = await part.stream.take_over()
                    self.tally.claimed += found.claimed
                    await self.taken_over(part, found)
                    part.took_over = True
                    await self.consume(part)
                await self.finish(part)
                if self.leave_group:
                    await part.stream.leave()
                return
            except Fenced:
                self.tally.fenced += 1
                part.log.warning(f"{self.spec.kind} partition moved to another worker; stopping")
                return
            except RedisError as exc:
                self.tally.restarts[type(exc).__name__] += 1
                part.log.warning(
                    f"{self.spec.kind}: Redis failed; backing off",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=part.backoff,
                )
            except Exception as exc:
                self.tally.restarts[type(exc).__name__] += 1
                part.log.exception(
                    f"{self.spec.kind} partition failed; backing off", retry_in=part.backoff
                )
            part.took_over = False
            if part.draining.is_set():
                # Finishing failed: try again after the backoff (the drain timeout bounds it).
                part.idle.set()
                await asyncio.sleep(part.backoff)
                part.idle.clear()
            else:
                await part.pause(part.backoff)
            part.backoff = min(part.backoff * 2, self.retry_delay_max)

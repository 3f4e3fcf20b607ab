"""The sender: drains the outboxes of the partitions this worker holds to the provider,
batched, under the shared rate limiter, retried, and never lost.

:class:`Sender` is a partitioned stream consumer (:mod:`bot.streams.consumer`) of the
partitions' outbox streams (consumer group ``sender``). For every partition whose lease this
worker holds, a reader task takes over the entries still pending there (whoever read them:
a crashed or departed owner) and reads them first, oldest first, then new ones, into ONE
bounded buffer shared by all partitions. Every read is a fenced script on that partition's
stream alone (no cross-slot command). Entries that cannot be sent end at the reader: an
unreadable one is dead-lettered, an invalid message is recorded failed on its own (messages
are validated with the provider's rules before they may join a batch: one bad message makes
the provider reject the whole call), an entry deleted while pending is acknowledged.

One send loop per process: with something buffered it lets the reads under way land, waits
until a provider call of the :class:`~bot.sender.limiter.RateLimiter`
(:class:`~bot.sender.throttle.Throttle`, shared by every process) is about to free
(``prepare_ahead``), takes up to ``batch_size`` (≤ 100) messages of one channel (SMS/MMS or
RCS) from the buffer, across partitions (:func:`~bot.sender.batching.take_batch`), and hands
them to a delivery task, which screens them and writes the in-flight marker, then takes the
call and sends them in it (:mod:`bot.sender.attempts`: the suppression screen, retries, the
shared 429 pause, a 400's blame and bisection, 401/403): when the call frees, only the
request is left to do. There is no fixed linger: when calls are free a lone reply leaves at
once; when they are scarce, batches fill while the loop waits for a call.

Up to ``max_in_flight`` (2) batches are between being taken and the end of their calls at
once, each with at most one call on the wire: while one batch's call is on the wire the
next one is ready and waiting for its call, so a call that frees does not wait for the one
before it to be answered (a single serial loop has no slack: any call slower than the one a
period before it delays every later one). A batch never holds a message of a conversation
another batch still holds (from being taken until its outcomes are recorded and whatever it
put back is in the buffer again): a conversation has at most one call on the wire, and its
messages leave in the order they were queued. A batch's outcomes are recorded after its
last call was released (the other batch's call does not wait for it), and the batch counts
against ``max_in_flight`` until they are.

Per batch, its ids are written to the worker's in-flight marker before the call
(:mod:`bot.sender.inflight`; it names every batch on the wire) and taken out once the
outcome is recorded (:mod:`bot.sender.recording`: per partition one atomic batch of
records, timeline entries and acknowledgements, the partitions' batches committed together).
After a crash the first worker to take over one of the dead worker's partitions logs
``possible duplicate send after a crash`` with the marker's ids: at most the batches on their
way (``max_in_flight``: on the wire, or answered and not yet recorded) are sent twice.

A conversation's messages reach the provider in order, across crashes and hand-overs: only
the lease holder reads a partition, its pending entries go before new ones, a conversation
is in at most one batch at a time, and messages put back after a failed call go to the
front of the buffer before their conversation is free again. A partition given back (a
rebalance) first lets the read under way land, forgets its buffered entries (they stay
pending for the next owner) and waits until no call of ours carries its messages; only then
is its lease deleted, so the next owner neither sends again what is on our wire nor misses
what our last read took. A partition lost (its lease expired) is forgotten at once. A
delivery that fails (a Redis outage) makes the loop wait for the others, then start over
from the pending entries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from bot.core.aio import cancel_and_wait
from bot.sender.attempts import Attempts, BatchState, gw_ids
from bot.sender.batching import Item, ProviderModel, build_message, describe_invalid, take_batch
from bot.sender.counters import SenderCounters
from bot.sender.inflight import InflightMarker
from bot.sender.limiter import RateLimiter
from bot.sender.recording import OUTBOX, Outcome, Recorder, failure_field
from bot.sinch.client import SinchClient
from bot.sinch.models import MAX_MESSAGES_PER_CALL
from bot.storage.events import OutboundRequest
from bot.storage.store import Store
from bot.streams.consumer import Partition, PartitionedConsumer
from bot.streams.leases import WorkerRegistry
from bot.streams.reader import Entry, TakeOver

__all__ = ["Sender", "SenderCounters", "failure_field"]

log = structlog.get_logger(__name__)

_PAGE = 100
"""Entries one read takes at most."""

_HINT_STEP = 1.0
"""Longest sleep between two looks at how soon a call frees."""

_CALL_PATIENCE = 1.0
"""Seconds a batch made ready waits for its call before it goes back to the buffer."""


@dataclass(eq=False)
class _Delivery:
    """One batch between being taken from the buffer and the end of its delivery."""

    state: BatchState
    number: int
    """Unique among this process's batches (its place in the in-flight marker)."""
    items: list[Item]
    calling: bool = True
    """Not through its calls and their recording yet (it counts against ``max_in_flight``)."""
    waiting: bool = True
    """Has not taken its call yet (the loop's hint counts the calls it will take)."""


class Sender(PartitionedConsumer[Partition]):
    """Drains the outboxes of the partitions this worker holds (see the module docstring).

    Args:
        store: the gateway's Redis.
        client: the provider client (it does not retry; the sender does).
        throttle: the rate limiter every provider call goes through (the provider-call
            throttle shared by every process).
        registry: this process's :class:`~bot.streams.leases.WorkerRegistry`: the sender
            drains the partitions whose leases it holds, with its worker id as consumer
            name.
        ttl_ms: lifetime of message records, timelines and a narrowed in-flight marker.
        timeline_max: length bound of a conversation's timeline.
        max_deliveries: failed rounds of retries after which a message is given up
            (dead-lettered).
        retry_attempts: calls per batch before a retryable failure counts against the
            messages (stamina ``attempts``); ``retry_timeout`` bounds the time of those
            retries.
        retry_wait_initial: first backoff; it doubles up to ``retry_wait_max``, plus up to
            ``retry_wait_jitter`` of random jitter.
        rate_limit_pause: pause after a 429 without ``Retry-After``.
        error_backoff: wait after the provider refused a call (401/403...), and the cap of
            the wait after a batch failed its retries.
        batch_size: messages per call (at most 100, the provider's limit).
        buffer_max: bound of the buffer of read but unsent entries.
        block: seconds a reader waits for new entries before reading again (checking its
            lease).
        drain_timeout: how long a partition given back (or :meth:`stop`) waits for the batch
            on the wire.
        prepare_ahead: how long before a provider call frees (as the rate limiter tells)
            the next batch is taken, screened and marked, so that it leaves the moment the
            call frees.
        max_in_flight: batches between being taken and the end of their calls at once
            (each with at most one call on the wire; never two holding messages of one
            conversation). 1 makes the sender serial.
    """

    def __init__(
        self,
        store: Store,
        client: SinchClient,
        throttle: RateLimiter,
        *,
        registry: WorkerRegistry,
        ttl_ms: int,
        timeline_max: int,
        max_deliveries: int,
        retry_attempts: int = 5,
        retry_timeout: float | None = 120.0,
        retry_wait_initial: float = 0.5,
        retry_wait_max: float = 10.0,
        retry_wait_jitter: float = 1.0,
        rate_limit_pause: float = 60.0,
        error_backoff: float = 30.0,
        batch_size: int = MAX_MESSAGES_PER_CALL,
        buffer_max: int = 1000,
        block: float = 0.5,
        drain_timeout: float = 30.0,
        prepare_ahead: float = 0.05,
        max_in_flight: int = 2,
    ) -> None:
        if not 1 <= batch_size <= MAX_MESSAGES_PER_CALL:
            raise ValueError(f"batch_size must be 1 to {MAX_MESSAGES_PER_CALL}")
        if max_deliveries <= 0 or retry_attempts <= 0 or max_in_flight <= 0:
            raise ValueError("max_deliveries, retry_attempts and max_in_flight must be positive")
        super().__init__(
            store,
            registry,
            OUTBOX,
            block=block,
            retry_delay=0.1,
            retry_delay_max=5.0,
            drain_timeout=drain_timeout,
        )
        self.client = client
        self.throttle = throttle
        self.batch_size = batch_size
        self.buffer_max = max(buffer_max, batch_size)
        self.prepare_ahead = max(0.0, prepare_ahead)
        self.max_in_flight = max_in_flight
        self.counters = SenderCounters(tally=self.tally)
        self.recorder = Recorder(store, self.counters, ttl_ms=ttl_ms, timeline_max=timeline_max)
        self.attempts = Attempts(
            client,
            throttle,
            self.redis,
            self.counters,
            partitions=registry.partitions,
            max_deliveries=max_deliveries,
            retry_attempts=retry_attempts,
            retry_timeout=retry_timeout,
            retry_wait_initial=retry_wait_initial,
            retry_wait_max=retry_wait_max,
            retry_wait_jitter=retry_wait_jitter,
            rate_limit_pause=rate_limit_pause,
            error_backoff=error_backoff,
            stopping=lambda: self._stopping,
            worker_id=registry.worker_id,
        )
        self.marker = InflightMarker(self.redis, registry.worker_id, unknown_ttl_ms=ttl_ms)
        self._buffer: deque[Item] = deque()
        self._held: set[tuple[int, str]] = set()
        """Entries in the buffer or on the wire (a reader skips them when it reads them
        again)."""
        self._arrived = asyncio.Event()
        self._waiting_room: set[int] = set()
        """Partitions whose reader waits for room in the buffer."""
        self._wire: Counter[int] = Counter()
        """Partitions of the batches being delivered, by batches (a release waits until
        they are recorded)."""
        self._busy: Counter[tuple[int, str]] = Counter()
        """Conversations of the batches being delivered (no other batch may take their
        messages)."""
        self._deliveries: dict[asyncio.Task[None], BatchState] = {}
        self._calling = 0
        """Deliveries taken and not yet through their calls and recording (at most
        ``max_in_flight``)."""
        self._waiting = 0
        """Deliveries that have not taken their call yet."""
        self._batches = 0
        self._stirred = asyncio.Event()
        """Set (and replaced) whenever a delivery is through its calls or ends, or entries
        arrive."""
        self._failure: Exception | None = None
        """What made a delivery fail (the loop starts over once the others ended)."""
        self._resume_at = 0.0
        """Loop time before which no batch is taken (a refusal's or failed batch's pause)."""
        self._stopping = False
        self._aborted = False
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(worker=registry.worker_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the send loop and follow the leases: a reader per partition held (Redis
        outages are survived, not fatal)."""
        if self._task is not None:
            return
        self._stopping = self._aborted = False
        self._task = asyncio.create_task(self._loop(), name=f"sender:{self.worker_id}")
        await super().start()

    async def stop(self) -> None:
        """Stop reading; finish and record the batch on the wire (within ``drain_timeout``);
        leave buffered, unsent entries pending for a restart or another worker (they never
        left, so nothing is sent twice)."""
        self._stopping = True
        self._stir()
        # A batch not on the wire (screened, waiting for its call) is abandoned now: its
        # messages stay pending. One on the wire, or being recorded, finishes.
        for delivery, state in list(self._deliveries.items()):
            if not (state.on_wire or state.recording):
                delivery.cancel()
        await super().stop()  # each partition: its last read lands, the wire is waited for
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task)  # the loop itself is never on the wire
        deliveries = set(self._deliveries)
        if not deliveries:
            return
        _, late = await asyncio.wait(deliveries, timeout=self.drain_timeout)
        if late:
            self._log.warning("sender stop: the batch on the wire did not finish in time")
            for delivery in late:
                await cancel_and_wait(delivery)

    async def abort(self) -> None:
        """Stop at once, finishing and recording nothing: what a crash leaves behind (entries
        pending, the in-flight marker kept). For tests and emergency shutdowns."""
        self._aborted = self._stopping = True
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for delivery in list(self._deliveries):
            await cancel_and_wait(delivery)
        await super().halt()

    async def halt(self) -> None:
        """:meth:`abort`."""
        await self.abort()

    def build(self, request: OutboundRequest) -> ProviderModel:
        """The validated provider model of ``request`` (``ValueError`` when the provider
        would reject it). Override to change what is checked before batching."""
        return build_message(request)

    @property
    def ready(self) -> bool:
        """The send loop runs and every partition held is taken over."""
        return super().ready and self._task is not None

    @property
    def buffered(self) -> int:
        """Entries read and waiting for a call."""
        return len(self._buffer)

    # ------------------------------------------------------------------ partition readers

    def new_partition(self, partition: int) -> Partition:
        return Partition(self, partition)

    def room(self, part: Partition) -> int:
        free = self.buffer_max - len(self._buffer)
        if free <= 0:
            self._waiting_room.add(part.partition)
            return 0
        return max(1, min(_PAGE, free // max(1, len(self.partitions))))

    async def taken_over(self, part: Partition, found: TakeOver) -> None:
        """Log what was claimed; take the in-flight marker of a dead worker we took entries
        from."""
        await super().taken_over(part, found)
        for worker in found.holders:
            if worker != self.worker_id and not await self.registry.is_alive(worker):
                await self._recover_marker(worker)

    async def handle(self, part: Partition, entries: Sequence[Entry]) -> None:
        await self._accept(part.partition, entries)

    async def finish(self, part: Partition) -> None:
        """The partition is given back (its last read has landed): forget its buffered
        entries and wait until no call of ours carries its messages."""
        self._forget(part.partition)
        while self._wire[part.partition] > 0:
            await self._stirred.wait()
        self._forget(part.partition)  # what a failed call put back meanwhile

    def ended(self, part: Partition) -> None:
        self._waiting_room.discard(part.partition)
        self._forget(part.partition)

    async def _accept(self, partition: int, entries: Sequence[Entry]) -> None:
        """Turn read entries into buffered items. Entries that cannot be sent end here: an
        unreadable one is dead-lettered, an invalid message is recorded failed, a deleted
        entry is acknowledged."""
        fresh: list[Item] = []
        outcomes: list[Outcome] = []
        gone: list[str] = []
        for entry in entries:
            if (partition, entry.id) in self._held:
                continue
            if entry.gone:
                gone.append(entry.id)
                continue
            fields = entry.text_fields()
            try:
                request = OutboundRequest.from_fields(entry.id, fields, partition)
            except ValueError as exc:
                error = f"not an outbound request: {exc}"
                outcomes.append(Outcome(partition, entry.id, fields, error=error, dead_letter=True))
                continue
            try:
                message = self.build(request)
            except ValueError as exc:
                reason = describe_invalid(exc)
                self._log.warning(
                    "invalid outbound message recorded failed", gw_id=request.gw_id, error=reason
                )
                outcomes.append(Outcome(partition, entry.id, fields, request, error=reason))
                continue
            fresh.append(Item(partition, entry.id, fields, request, message))
        if outcomes or gone:
            await self.recorder.record(outcomes, {partition: gone})
        if fresh:
            self._held.update(item.key for item in fresh)
            self._buffer.extend(fresh)
            self._arrived.set()
            self._stir()

    def _forget(self, partition: int) -> None:
        """Drop ``partition``'s buffered entries (they stay pending in Redis)."""
        kept: deque[Item] = deque()
        for item in self._buffer:
            if item.partition == partition:
                self._held.discard(item.key)
            else:
                kept.append(item)
        if len(kept) != len(self._buffer):
            self._buffer = kept
            self._wake_readers()

    def _wake_readers(self) -> None:
        """The buffer has room again: wake the readers that wait for it."""
        waiting, self._waiting_room = self._waiting_room, set()
        for partition in waiting:
            part = self.parts.get(partition)
            if part is not None:
                part.wake_up()

    async def _recover_marker(self, worker: str) -> None:
        ids = await self.marker.take(worker)
        if ids:
            self.counters.possible_duplicates += len(ids)
            self._log.warning(
                "possible duplicate send after a crash", dead=worker, messages=len(ids), gw_ids=ids
            )

    # ------------------------------------------------------------------ the send loop

    async def _loop(self) -> None:
        errors = 0
        recovered = False
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                if not recovered:  # this worker's marker, from a run that died
                    await self._recover_marker(self.worker_id)
                    recovered = True
                await self._after_failure()
                self._drop_stale()
                if not self._buffer:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                if self._calling >= self.max_in_flight:
                    await self._stirred.wait()  # a delivery gets through its calls
                    continue
                pause = self._resume_at - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                # The reads under way land, and the batch is taken, screened and marked,
                # before the call is taken, not after: nothing may delay a call between
                # taking it and sending it (the throttle's window counts calls from when
                # they are taken). Only once a call is about to free: messages read while
                # the loop waits still join the batch.
                await self._top_up()
                await self._until_call_near()
                if self._stopping:
                    break
                if self._failure is not None or self._resume_at > loop.time():
                    continue
                self._drop_stale()
                stirred = self._stirred
                batch = take_batch(self._buffer, self.batch_size, self._busy)
                self._wake_readers()
                if batch:
                    self._launch(batch)
                    errors = 0
                else:  # every buffered conversation has a batch on its way
                    await stirred.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Start over from this worker's pending entries: whatever the buffer held is
                # still pending in Redis, so nothing is lost.
                errors += 1
                self.counters.errors[type(exc).__name__] += 1
                self._log.warning(
                    "sender loop failed; retrying",
                    error=str(exc) or type(exc).__name__,
                    exc_info=not isinstance(exc, RedisError | OSError),
                )
                await self._settle_deliveries()
                self._start_over()
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(errors, 6)))

    def _stir(self) -> None:
        """Wake whoever waits for a delivery to move on, or for entries to arrive."""
        self._stirred.set()
        self._stirred = asyncio.Event()

    async def _after_failure(self) -> None:
        """When a delivery failed: raise what made it fail (the loop then starts over)."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def _settle_deliveries(self) -> None:
        """Wait until no delivery is under way (before the loop starts over: the entries
        of a batch on the wire are still pending, and must not be read again meanwhile)."""
        while self._deliveries:
            await asyncio.wait(set(self._deliveries))
        self._failure = None

    def _drop_stale(self) -> None:
        """Forget buffered entries of partitions no longer read (given back or lost)."""
        for partition in {item.partition for item in self._buffer}:
            if self.live(partition) is None:
                self._forget(partition)

    def _start_over(self) -> None:
        """Drop the buffer; every reader reads its pending entries from the oldest again."""
        self._buffer.clear()
        self._held.clear()
        for part in self.parts.values():
            part.stream.rewind()
            part.wake_up()

    async def _top_up(self) -> None:
        """Let the reads under way land before a call is taken for a batch (a partition just
        acquired is taking over, another is reading a page), at most ``block`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.block
        while len(self._buffer) < self.batch_size:
            busy = [
                part
                for part in self.parts.values()
                if part.running and not part.draining.is_set() and not part.idle.is_set()
            ]
            remaining = deadline - loop.time()
            if not busy or remaining <= 0:
                return
            waiters = [asyncio.ensure_future(part.idle.wait()) for part in busy]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _until_call_near(self) -> None:
        """Wait until a provider call frees within ``prepare_ahead`` seconds (at once when
        the limiter gives no hint), not counting the calls that batches made ready before
        wait for: the batch is made ready meanwhile, so that when its call frees only the
        request is left to do."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._stopping:
            stirred = self._stirred
            wait = await self.throttle.available_in(self._waiting)
            if wait <= self.prepare_ahead:
                break
            # In steps: a call of another process answered early frees its place early. A
            # call of ours answered (a delivery through its calls) or taken changes the
            # hint at once: a call on the wire counts as in flight until its answer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait - self.prepare_ahead, _HINT_STEP)):
                    await stirred.wait()
        self.counters.throttle_wait_seconds += loop.time() - started

    def _launch(self, items: list[Item]) -> None:
        """Hand ``items`` to a delivery task of their own; their conversations and
        partitions are the delivery's until it ends."""
        self._batches += 1
        delivery = _Delivery(BatchState(work=deque([items])), self._batches, items)
        self._calling += 1
        self._waiting += 1
        self._wire.update(item.partition for item in items)
        self._busy.update(item.conversation for item in items)
        task = asyncio.create_task(self._deliver(delivery), name=f"sender-batch:{delivery.number}")
        self._deliveries[task] = delivery.state

    def _called(self, delivery: _Delivery) -> None:
        """The delivery took its call (or will not wait for one any more)."""
        if delivery.waiting:
            delivery.waiting = False
            self._waiting -= 1

    def _through_calls(self, delivery: _Delivery) -> None:
        """The delivery's calls are over and recorded: the next batch may be made ready."""
        self._called(delivery)
        if delivery.calling:
            delivery.calling = False
            self._calling -= 1
            self._stir()

    async def _deliver(self, delivery: _Delivery) -> None:
        """Deliver one batch (see :meth:`_send_batch`), then give its conversations and
        partitions back. A failure is left for the loop, which starts over."""
        state = delivery.state
        try:
            await self._send_batch(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._failure is None:
                self._failure = exc
        finally:
            self._through_calls(delivery)
            self._wire.subtract(item.partition for item in delivery.items)
            self._busy.subtract(item.conversation for item in delivery.items)
            self._wire = +self._wire
            self._busy = +self._busy
            if state.pause:
                resume_at = asyncio.get_running_loop().time() + state.pause
                self._resume_at = max(self._resume_at, resume_at)
            task = asyncio.current_task()
            if task is not None:
                self._deliveries.pop(task, None)
            self._stir()

    async def _send_batch(self, delivery: _Delivery) -> None:
        """Screen the batch (one channel, pre-validated), write the in-flight marker, take
        the first call, send the messages and record what became of them (the call
        released first, so the other batch's call does not wait for the recording). When the call
        does not come within ``_CALL_PATIENCE`` (another process took it, or a shared pause
        began), the messages go back to the buffer."""
        state = delivery.state
        interrupted = True
        # Every line logged for this batch (the client's too) says which partitions it is of.
        with structlog.contextvars.bound_contextvars(
            partitions=sorted({item.partition for item in delivery.items}),
            batch=len(delivery.items),
        ):
            try:
                await self.attempts.screen(state)
                if state.work:
                    # The marker only matters until another worker takes over after a crash. It
                    # is written inside the ``try`` so that a stop cancelling this very write
                    # still clears it in ``_finish`` (the command may have reached Redis).
                    await self.marker.mark(gw_ids(state.work[0]), batch=delivery.number)
                    try:
                        called = await self.attempts.take_call(patience=_CALL_PATIENCE)
                    finally:
                        self._called(delivery)
                    if called:
                        await self.attempts.work(state)
                    else:
                        state.back.extend(state.rest())
                interrupted = False
            finally:
                # The batch counts against max_in_flight until recorded (``_deliver`` ends
                # it): the in-flight marker then never names more than max_in_flight
                # batches, which bounds what a crash can send twice.
                if not self._aborted:
                    state.recording = True
                    await self._finish(state, delivery.number, interrupted=interrupted)

    async def _finish(self, state: BatchState, number: int, *, interrupted: bool) -> None:
        """Record the batch's outcomes, put unsent messages back (those of partitions still
        read), and take the batch out of the in-flight marker (narrowed to unknown
        outcomes)."""
        if interrupted:
            state.left.extend(state.rest())
        await self.recorder.record(state.outcomes)
        for outcome in state.outcomes:
            self._held.discard((outcome.partition, outcome.entry_id))
        back: list[Item] = []
        for item in state.back:
            if not interrupted and self.live(item.partition) is not None:
                back.append(item)
            else:
                state.left.append(item)
        for item in state.left:
            self._held.discard(item.key)
        if back:
            self._buffer.extendleft(reversed(back))
            self._arrived.set()
        unknown = [i.gw_id for i in state.left + back if i.gw_id in state.unknown]
        await self.marker.settle(unknown, batch=number)

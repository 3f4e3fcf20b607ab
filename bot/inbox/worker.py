"""The inbox consumer: each owned partition's events, handled in order, a batch at a time.

:class:`InboxConsumer` is a partitioned stream consumer (:mod:`bot.streams.consumer`) of the
partitions' inbox streams (consumer group ``engine``): for every partition the
:class:`~bot.streams.leases.WorkerRegistry` leases to this worker, one task takes over the
entries a crashed or departed owner left pending, then reads a batch at a time, our own
pending entries first, then new ones (fenced reads: a worker that lost its lease cannot
take entries from the new owner). With nothing to read it waits with ``XREAD BLOCK`` for the
next entry, so a lone event goes at once and batches fill by themselves under load (no
fixed linger).

What is the inbox's own: a batch is handled like this. Decode the entries (one that cannot
be decoded goes straight to the dead-letter stream), load the sessions of all its
conversations in one pipeline, run the handler for each entry in order, one at a time, with
an :class:`~bot.inbox.handling.EventContext` sharing one :class:`~bot.storage.store.Batch`
and a per-batch session cache (the second event of a conversation sees the first's
changes), then commit **once**: the lease fence, the partition's commit counter, one
versioned write per changed session, every handler operation and the ``XACK``/``XDEL`` of
the entries. So the Redis work is per batch (three round trips), not per event.

- The commit is refused as ``fenced``: the partition moved to another worker. Stop,
  acknowledge nothing; the new owner handles the entries again (at-least-once handling,
  exactly-once effect: nothing of the refused batch was written).
- Refused as ``stale`` on a session: it changed underneath. Reload, handle the batch again.
- Refused on the commit counter: only our own commits move it while we hold the lease, so
  the client re-sent a commit that had been applied (its reply lost to a dropped
  connection); it is done, and is not applied twice.
- The handler raises for one entry: commit the entries before it (handled again on a clean
  batch), count a failure for it (``in:<entry>`` in the partition's failures hash, in the
  same commit), back off and retry it in place (later entries wait); after
  ``max_deliveries`` failures it goes to the dead-letter stream and the partition goes on.
- Redis unreachable: log, back off, start over from the take-over (an interrupted commit
  either happened entirely or not at all; the pending list tells which).

Every log line emitted while an event is handled (the engine's, the plugins', the provider
client's) carries the event's context through :mod:`structlog.contextvars`: ``partition``,
``worker``, ``conversation`` (phone numbers masked), ``entry``, ``event_kind`` and the ids the
event has (``event_id``, ``message_id``, ``gw_id``, ``timer``). The context is reset before
and after each event, so nothing a handler binds leaks into the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.core.crashpoints import crash_point
from bot.core.logs import LazyContext, mask_text
from bot.inbox.handling import EventContext, EventHandler, GatewayLimits
from bot.sinch.models import DeliveryReceipt, DeliveryStatus, InboundMessage
from bot.storage.events import GW_ID, InboxEvent
from bot.storage.keys import INBOX_GROUP
from bot.storage.sessions import RedisSessions, Session, SessionStore
from bot.storage.store import Batch, CommitConflict, Store, text
from bot.streams.consumer import Partition, PartitionedConsumer, PartitionTally
from bot.streams.leases import WorkerRegistry
from bot.streams.reader import Entry, Fenced, Letter, StreamSpec, TakeOver
from bot.streams.slots import Slots

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PATIENCE",
    "FAILURE_PREFIX",
    "INBOX",
    "TURN",
    "VERSION_FIELD",
    "InboxConsumer",
    "InboxStats",
    "event_kind",
    "failure_field",
    "log_context",
]

log = structlog.get_logger(__name__)

Fields = dict[bytes, bytes]

INBOX: Final = StreamSpec(
    kind="inbox",
    group=INBOX_GROUP,
    stream=lambda keys: keys.inbox,
    failure_prefix="in:",
    noun="inbox entry",
)
"""The inbox stream of each partition, as the inbox consumer reads it."""
VERSION_FIELD = "v"
"""Field of the partition's failures hash (``keys.failures()``) counting its commits: every
commit expects it unchanged, so a commit the client re-sent after a dropped connection (the
first one applied, its reply lost) is refused instead of applied twice."""
FAILURE_PREFIX = INBOX.failure_prefix
"""Prefix of an inbox entry's field in the failures hash (the sender's fields say ``out:``)."""
_PARTITION_GUARD = 2
"""Index of the partition-version guard in a commit's operations (the fence is 1)."""

DEFAULT_CONCURRENCY: Final = 2
"""Partitions of one process handling a batch at once, by default. Two keep one partition's
Redis round trip overlapping another's handling; more only shrink the batches (measured in
docs/benchmarks.md: gateway CPU per message falls by about a fifth from unbounded to two)."""
DEFAULT_PATIENCE: Final = 0.1
"""Seconds a partition waits for its turn at most (a slow handler does not stall the rest)."""

TURN: Final = 0.001
"""Seconds of handling after which a batch lets the event loop run other callbacks (the
webhooks' answers, other partitions' round trips) before its next event."""

_OUTAGE = (RedisConnectionError, RedisTimeoutError)
"""Errors that mean "Redis is not reachable right now", not "this entry is bad"."""


def event_kind(event: InboxEvent) -> str:
    """``message``, ``opt_out``, ``receipt``, ``timer``, ``timeout`` or ``command`` (for logs
    and metrics)."""
    inner = event.event
    return "receipt" if isinstance(inner, DeliveryReceipt) else inner.kind


def log_context(event: InboxEvent) -> dict[str, Any]:
    """What every log line of ``event``'s handling carries (besides the partition)."""
    values: dict[str, Any] = {
        "conversation": mask_text(event.conversation),
        "entry": event.entry_id,
        "event_kind": event_kind(event),
    }
    inner = event.event
    if isinstance(inner, InboundMessage | DeliveryReceipt):
        values["event_id"] = inner.event_id
        if inner.message_id:
            values["message_id"] = inner.message_id
        gw_id = inner.metadata.get(GW_ID)
        if gw_id:
            values["gw_id"] = gw_id
    else:
        values["timer"] = inner.id
    return values


def failure_field(entry_id: str) -> str:
    """Field of an inbox entry in its partition's failures hash (handler failures so far)."""
    return INBOX.failure_field(entry_id)


@dataclass
class InboxStats:
    """Counters of one consumer (for metrics)."""

    processed: int = 0
    """Events handled and committed."""
    failed: int = 0
    """Handler failures (each retry counts)."""
    batches: int = 0
    """Committed batches."""
    conflicts: int = 0
    """Batches handled again because a session changed underneath."""
    batch_sizes: Counter[int] = field(default_factory=Counter)
    """Committed batches by number of entries acknowledged."""
    kinds: Counter[str] = field(default_factory=Counter)
    """Events handled and committed, by :func:`event_kind`."""
    receipts: Counter[str] = field(default_factory=Counter)
    """Delivery receipts handled and committed, by status (``other`` for an unknown one)."""
    queued: int = 0
    """Messages the handlers queued (committed), deferred ones included."""
    deferred: int = 0
    """Messages the handlers queued that quiet hours held back (committed)."""
    tally: PartitionTally = field(default_factory=PartitionTally, repr=False)
    """The partition tasks' counters (kept by the stream consumer)."""

    @property
    def dead_lettered(self) -> int:
        """Entries moved to the dead-letter stream (handler failures and undecodable ones)."""
        return self.tally.dead_lettered

    @property
    def fenced(self) -> int:
        """Commits or reads refused because the partition moved to another worker."""
        return self.tally.fenced

    @property
    def errors(self) -> int:
        """Times a partition task backed off and started over (Redis unreachable, mostly)."""
        return sum(self.tally.restarts.values())


@dataclass
class _Item:
    """One stream entry of a batch."""

    entry_id: str
    fields: Fields
    event: InboxEvent | None = None
    error: str | None = None
    """Why the entry could not be decoded."""


@dataclass
class _Run:
    """The outcome of handling a prefix of a batch."""

    batch: Batch
    sessions: dict[str, Session]
    failed_at: int | None = None
    error: Exception | None = None
    queued: int = 0
    """Messages the handlers queued (deferred ones included)."""
    deferred: int = 0


class _InboxPartition(Partition):
    version = 0
    """The partition's commit count (see :data:`VERSION_FIELD`), read at the take-over."""


class InboxConsumer(PartitionedConsumer[_InboxPartition]):
    """Handles the inbox of every partition this worker owns (see the module docstring).

    Args:
        store: the gateway's Redis (a client with ``decode_responses=False``; its
            ``socket_timeout``, if any, must exceed ``block_ms``).
        registry: this process's :class:`~bot.streams.leases.WorkerRegistry`; the consumer
            follows its leases and uses its worker id as the consumer name.
        handler: decides what each event does.
        limits: timeline bounds and the TTL of written keys (sessions included).
        max_deliveries: handler failures of one entry before it is dead-lettered.
        batch_size: entries read and committed at a time per partition.
        block_ms: longest wait for new entries before checking the lease again.
        retry_delay: backoff after a handler failure (doubling per failure of the same
            entry, up to ``retry_delay_max``); also the first backoff after a Redis error.
        retry_delay_max: longest backoff.
        drain_timeout: seconds a partition may take to finish its batch when it is released
            or the consumer stops; then it is cancelled (its entries stay pending for the
            next owner).
        handler_timeout: seconds one handler call may take (then it counts as a failure).
        on_handled: told the :func:`event_kind` and the seconds of every handler call
            (failed ones and calls repeated after a conflict included), for metrics.
        sessions: where the conversations' sessions live (default: :class:`RedisSessions`
            on ``store``'s Redis).
        concurrency: at most this many partitions handle a batch at once (``None``: all
            of them); the others wait their turn, at most ``patience`` seconds, while their
            batches fill (:mod:`bot.streams.slots`).
        patience: longest wait for a turn (then a partition goes ahead anyway).
    """

    def __init__(
        self,
        store: Store,
        registry: WorkerRegistry,
        handler: EventHandler,
        *,
        limits: GatewayLimits,
        max_deliveries: int,
        batch_size: int = 100,
        block_ms: int = 1000,
        retry_delay: float = 0.25,
        retry_delay_max: float = 10.0,
        drain_timeout: float = 30.0,
        handler_timeout: float = 30.0,
        on_handled: Callable[[str, float], None] | None = None,
        sessions: SessionStore | None = None,
        concurrency: int | None = DEFAULT_CONCURRENCY,
        patience: float = DEFAULT_PATIENCE,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        super().__init__(
            store,
            registry,
            INBOX,
            block=max(1, block_ms) / 1000,
            retry_delay=retry_delay,
            retry_delay_max=retry_delay_max,
            drain_timeout=drain_timeout,
            slots=Slots(concurrency, patience) if concurrency else None,
        )
        self.handler = handler
        self.limits = limits
        self.max_deliveries = max_deliveries
        self.batch_size = batch_size
        self.handler_timeout = handler_timeout
        self.on_handled = on_handled
        self.sessions = sessions or RedisSessions(store.redis)
        self.stats = InboxStats(tally=self.tally)

    # ------------------------------------------------------------ the partition task

    def new_partition(self, partition: int) -> _InboxPartition:
        return _InboxPartition(self, partition)

    def room(self, part: _InboxPartition) -> int:
        return self.batch_size

    async def taken_over(self, part: _InboxPartition, found: TakeOver) -> None:
        await super().taken_over(part, found)
        part.version = int(found.state.get(VERSION_FIELD, "0"))

    async def handle(self, part: _InboxPartition, entries: Sequence[Entry]) -> None:
        """Handle and commit a batch read from the partition (see the module docstring)."""
        items = [self._decode(part, entry) for entry in entries]
        while items:
            items = await self._process(part, items)

    # ------------------------------------------------------------ batches

    def _decode(self, part: _InboxPartition, entry: Entry) -> _Item:
        item = _Item(entry.id, entry.fields)
        if entry.gone:
            return item
        try:
            item.event = InboxEvent.from_fields(entry.id, entry.fields, part.partition)
        except Exception as exc:
            item.error = f"undecodable inbox entry: {type(exc).__name__}: {exc}"
        return item

    async def _load_sessions(
        self, part: _InboxPartition, items: Sequence[_Item]
    ) -> dict[str, Session]:
        conversations = list(dict.fromkeys(i.event.conversation for i in items if i.event))
        return await self.sessions.load(part.keys, conversations)

    async def _execute(
        self, part: _InboxPartition, items: Sequence[_Item], loaded: dict[str, Session]
    ) -> _Run:
        """Run the handler over ``items`` in order, into one fresh batch; stop at the first
        failure."""
        batch = part.stream.fence(Batch())
        batch.write_versioned(part.keys.failures(), part.version, {})  # _PARTITION_GUARD
        run = _Run(batch, {})
        turn = time.perf_counter()
        for index, item in enumerate(items):
            event = item.event
            if event is None:
                continue
            conversation = event.conversation
            session = run.sessions.get(conversation)
            if session is None:
                # A copy: a run that fails part-way is handled again from what was loaded.
                stored = loaded.get(conversation)
                session = stored.copy() if stored else Session(conversation)
            ctx = EventContext(event, part.keys, run.batch, session, self.limits)
            started = time.perf_counter()
            if started - turn > TURN:
                # Handlers seldom wait for anything: without this a large batch would hold
                # the event loop (and the webhooks waiting on it) for its whole length.
                await asyncio.sleep(0)
                turn = started = time.perf_counter()
            try:
                # A hung handler must not stall its partition: a timeout is a failure of
                # this entry (retried, then dead-lettered).
                with LazyContext(partial(log_context, event), part.context):
                    async with asyncio.timeout(self.handler_timeout):
                        await self.handler.handle(ctx)
            except _OUTAGE:
                raise  # Redis trouble inside the handler: not this entry's fault
            except Exception as exc:
                self._observe(event, started)
                run.failed_at, run.error = index, exc
                return run
            self._observe(event, started)
            run.sessions[conversation] = ctx.session
            run.queued += len(ctx.replies)
            run.deferred += len(ctx.deferred)
        return run

    def _observe(self, event: InboxEvent, started: float) -> None:
        if self.on_handled is not None:
            self.on_handled(event_kind(event), time.perf_counter() - started)

    async def _dead_letter(
        self, part: _InboxPartition, letters: Sequence[tuple[_Item, str, int]], why: str
    ) -> None:
        """Copy entries to the dead-letter stream (once each; acknowledged by the next
        commit)."""
        self.tally.dead_lettered += await part.stream.dead_letter(
            [
                Letter(part.partition, item.entry_id, item.fields, reason, count, {"why": why})
                for item, reason, count in letters
            ]
        )

    async def _process(self, part: _InboxPartition, items: list[_Item]) -> list[_Item]:
        """Handle and commit ``items`` (or the part before a failing entry); returns the
        entries still to handle."""
        stream = part.stream
        undecodable = [(i, i.error, 0) for i in items if i.error is not None]
        await self._dead_letter(part, undecodable, "undecodable")
        loaded = await self._load_sessions(part, items)
        end = len(items)
        failure: tuple[int, Exception] | None = None
        while True:
            run = await self._execute(part, items[:end], loaded)
            if run.error is not None and run.failed_at is not None:
                # Handle the entries before the failing one again, cleanly, and commit them.
                failure = (run.failed_at, run.error)
                end = run.failed_at
                continue
            crash_point("after_handle_before_commit")
            batch = run.batch
            for session in run.sessions.values():
                if session.dirty:
                    self.sessions.save(batch, part.keys, session, ttl_ms=self.limits.ttl_ms)
            done = [i.entry_id for i in items[:end]]
            dead = False
            count = 0
            if failure is not None:
                item = items[failure[0]]
                count = stream.failures.get(item.entry_id, 0) + 1
                if count >= self.max_deliveries:
                    dead = True
                    reason = f"{type(failure[1]).__name__}: {failure[1]}"
                    await self._dead_letter(part, [(item, reason, count)], "failed")
                    done.append(item.entry_id)
                else:
                    stream.add_failure(batch, item.entry_id)
            stream.ack(batch, done)
            try:
                await batch.commit(self.store)
            except CommitConflict as exc:
                if exc.reason == "fenced":
                    raise Fenced from exc
                if exc.index == _PARTITION_GUARD:
                    # Only our own commits move the partition version while we hold the
                    # lease: this batch was applied already (by a re-sent command).
                    part.log.warning("inbox: the batch was committed already (re-sent commit)")
                    current = await self.redis.hget(part.keys.failures(), VERSION_FIELD)
                    part.version = int(text(current) or "0")
                    break
                self.stats.conflicts += 1
                part.log.info("inbox: a session changed underneath; handling the batch again")
                loaded = await self._load_sessions(part, items)
                end, failure = len(items), None
                continue
            part.version += 1
            break
        retried = {items[failure[0]].entry_id: count} if failure is not None and not dead else {}
        stream.settle(done, retried)
        self._committed(items[:end], done, run)
        if failure is None:
            return []
        index, error = failure
        item = items[index]
        self.stats.failed += 1
        part.log.warning(
            "inbox handler failed" if not dead else "inbox handler failed; entry dead-lettered",
            entry=item.entry_id,
            conversation=mask_text(item.event.conversation if item.event else ""),
            failures=count,
            max_deliveries=self.max_deliveries,
            exc_info=error,
        )
        if dead:
            return items[index + 1 :]
        delay = min(self.retry_delay * 2 ** (count - 1), self.retry_delay_max)
        if await part.pause(delay):
            return []  # draining: the entry stays pending for whoever owns the partition next
        return items[index:]

    def _committed(self, handled: Sequence[_Item], done: Sequence[str], run: _Run) -> None:
        stats = self.stats
        stats.processed += sum(1 for i in handled if i.event is not None)
        stats.batches += 1
        stats.batch_sizes[len(done)] += 1
        stats.queued += run.queued
        stats.deferred += run.deferred
        for item in handled:
            if item.event is None:
                continue
            stats.kinds[event_kind(item.event)] += 1
            inner = item.event.event
            if isinstance(inner, DeliveryReceipt):
                status = inner.status
                stats.receipts[status.value if isinstance(status, DeliveryStatus) else "other"] += 1

"""The inbox consumer: each owned partition's events, handled in order, a batch at a time.

For every partition the :class:`~bot.gateway.workers.WorkerRegistry` leases to this worker,
one task runs:

1. **Take over.** Claim every pending entry of the partition (``XAUTOCLAIM … 0 0-0
   JUSTID``, following the cursor; safe with no minimum idle time because we hold the
   lease): what a crashed or departed owner had read and not committed.
2. **Consume.** Read a batch at a time: our own pending entries first (the claimed ones,
   in id order, so they go before anything newer), then new ones (``XREADGROUP … >``).
   With nothing to read, wait with ``XREAD BLOCK`` for the next entry, so a lone event goes
   at once and batches fill by themselves under load (no fixed linger).

Claims and reads are **fenced**: a small script checks the partition's lease first, so a
worker that lost its lease cannot even take entries away from the new owner.

A batch is handled like this: decode the entries (one that cannot be decoded goes straight
to the dead-letter stream), load the sessions of all its conversations in one pipeline,
run the handler for each entry in order, one at a time, with an
:class:`~bot.gateway.handling.EventContext` sharing one :class:`~bot.gateway.store.Batch`
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
  batch), count a failure for it (``keys.failures()``, in the same commit), back off and
  retry; after ``max_deliveries`` failures it goes to the dead-letter stream and the
  partition goes on.
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
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.aio import cancel_and_wait
from bot.gateway import dlq
from bot.gateway.crashpoints import crash_point
from bot.gateway.events import GW_ID, InboxEvent
from bot.gateway.handling import EventContext, EventHandler, GatewayLimits, Session
from bot.gateway.keys import INBOX_GROUP, PartitionKeys
from bot.gateway.store import Batch, CommitConflict, Store, text, text_map
from bot.gateway.workers import WorkerRegistry
from bot.logs import mask_text
from bot.sinch.models import DeliveryReceipt, DeliveryStatus, InboundMessage

log = structlog.get_logger(__name__)

Fields = dict[bytes, bytes]
RawEntry = tuple[bytes | str, Fields]

CLAIM_COUNT = 100
"""Pending entries claimed per ``XAUTOCLAIM`` call during a take-over."""
CLAIM_ROUNDS = 10
"""``XAUTOCLAIM`` calls per script call (bounds the time the script holds Redis)."""
VERSION_FIELD = "v"
"""Field of the partition's failures hash (``keys.failures()``) counting its commits: every
commit expects it unchanged, so a commit the client re-sent after a dropped connection (the
first one applied, its reply lost) is refused instead of applied twice."""
FAILURE_PREFIX = "in:"
"""Prefix of an inbox entry's field in the failures hash (the sender's fields say ``out:``)."""
_PARTITION_GUARD = 2
"""Index of the partition-version guard in a commit's operations (the fence is 1)."""

# Read up to ARGV[3] entries, if the lease is still ours: our own pending entries first (a
# read whose reply was lost, e.g. retried by the client after a dropped connection, left them
# there), else new ones. With nothing to read, return the newest id in the stream: any entry
# added later has a greater id (wait for it with XREAD).
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
local mine = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '0')
if mine and mine[1] and #mine[1][2] > 0 then return {'ok', mine[1][2]} end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[2], '>')
if r then return {'ok', r[1][2]} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return {'idle', last[1][1]} end
return {'idle', '0-0'}
"""

# Claim every pending entry of the group for ARGV[1], if the lease is still ours: up to
# ARGV[5] rounds of ARGV[4] from cursor ARGV[3]; returns the next cursor ('0-0': done) and
# how many were claimed. When
# done, forget the consumers with nothing pending (workers that are gone).
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'fenced'} end
local cursor = ARGV[3]
local claimed = 0
for round = 1, tonumber(ARGV[5]) do
  local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, cursor, 'COUNT', ARGV[4], 'JUSTID')
  cursor = r[1]
  claimed = claimed + #r[2]
  if cursor == '0-0' then break end
end
if cursor == '0-0' then
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
    local name, pending
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if name ~= ARGV[1] and pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], name)
    end
  end
end
return {'ok', cursor, claimed}
"""

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
    return FAILURE_PREFIX + entry_id


class Fenced(Exception):
    """The partition's lease is no longer ours: stop without acknowledging anything."""


@dataclass
class InboxStats:
    """Counters of one consumer (for metrics)."""

    processed: int = 0
    """Events handled and committed."""
    failed: int = 0
    """Handler failures (each retry counts)."""
    dead_lettered: int = 0
    """Entries moved to the dead-letter stream (handler failures and undecodable ones)."""
    batches: int = 0
    """Committed batches."""
    conflicts: int = 0
    """Batches handled again because a session changed underneath."""
    fenced: int = 0
    """Commits or reads refused because the partition moved to another worker."""
    errors: int = 0
    """Times a partition task backed off and started over (Redis unreachable, mostly)."""
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


@dataclass
class _Item:
    """One stream entry of a batch."""

    entry_id: str
    fields: Fields
    event: InboxEvent | None = None
    error: str | None = None
    """Why the entry could not be decoded."""

    @property
    def gone(self) -> bool:
        """Deleted from the stream while pending (nothing to handle; just acknowledge)."""
        return not self.fields


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


def _pairs(flat: Sequence[Any]) -> Fields:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class InboxConsumer:
    """Handles the inbox of every partition this worker owns (see the module docstring).

    Args:
        store: the gateway's Redis (a client with ``decode_responses=False``; its
            ``socket_timeout``, if any, must exceed ``block_ms``).
        registry: this process's :class:`~bot.gateway.workers.WorkerRegistry`; the consumer
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
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.redis: Redis = store.redis
        self.registry = registry
        self.handler = handler
        self.limits = limits
        self.max_deliveries = max_deliveries
        self.batch_size = batch_size
        self.block_ms = max(1, block_ms)
        self.retry_delay = retry_delay
        self.retry_delay_max = max(retry_delay, retry_delay_max)
        self.drain_timeout = drain_timeout
        self.handler_timeout = handler_timeout
        self.on_handled = on_handled
        self.stats = InboxStats()
        self._parts: dict[int, _Partition] = {}
        self._running = False
        self.read_script: Any = self.redis.register_script(_READ)
        self.claim_script: Any = self.redis.register_script(_CLAIM)

    @property
    def worker_id(self) -> str:
        return self.registry.worker_id

    @property
    def partitions(self) -> set[int]:
        """Partitions with a running task."""
        return {p for p, part in self._parts.items() if part.running}

    async def start(self) -> None:
        """Follow the registry's leases: a task per owned partition, now and from now on."""
        if self._running:
            return
        self._running = True
        self.registry.add_listener(self)
        for partition in sorted(self.registry.owned):
            await self.partition_acquired(partition)

    async def stop(self) -> None:
        """Stop reading, let every partition finish and commit the batch in hand, stop
        following the leases. The leases themselves are given back by
        :meth:`WorkerRegistry.stop` (stopped first, it drains this consumer the same way;
        either order works)."""
        self._running = False
        self.registry.remove_listener(self)
        parts = list(self._parts.values())
        self._parts.clear()
        await asyncio.gather(*(part.drain(self.drain_timeout) for part in parts))

    async def halt(self) -> None:
        """Cancel every partition task at once, committing nothing (what a crash looks like;
        for tests)."""
        self._running = False
        self.registry.remove_listener(self)
        parts = list(self._parts.values())
        self._parts.clear()
        await asyncio.gather(*(part.abort() for part in parts))

    # -------------------------------------------------------- PartitionListener

    async def partition_acquired(self, partition: int) -> None:
        if not self._running:
            return
        old = self._parts.pop(partition, None)
        if old is not None:
            await old.abort()
        part = _Partition(self, partition)
        self._parts[partition] = part
        part.start()

    async def partition_released(self, partition: int) -> None:
        part = self._parts.pop(partition, None)
        if part is not None:
            await part.drain(self.drain_timeout)

    async def partition_lost(self, partition: int) -> None:
        part = self._parts.pop(partition, None)
        if part is not None:
            await part.abort()


class _Partition:
    """The task consuming one partition."""

    def __init__(self, consumer: InboxConsumer, partition: int) -> None:
        self.consumer = consumer
        self.redis = consumer.redis
        self.stats = consumer.stats
        self.partition = partition
        self.keys = PartitionKeys(partition)
        self.me = consumer.worker_id
        self.draining = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failures: dict[str, int] = {}
        """Handler failures so far, by entry id (mirrors ``keys.failures()``)."""
        self.version = 0
        """The partition's commit count (see :data:`VERSION_FIELD`), read at the take-over."""
        self.dead_letters_written: set[str] = set()
        self.backoff = consumer.retry_delay
        self.context: dict[str, Any] = {"partition": partition, "worker": self.me}
        """Bound to every log line of the partition's task."""
        self.log = log.bind(**self.context)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"inbox p{self.partition}")

    async def drain(self, patience: float) -> None:
        """Finish the batch in hand, then stop (cancelled after ``patience`` seconds)."""
        self.draining.set()
        if self.task is None:
            return
        done, _ = await asyncio.wait({self.task}, timeout=patience)
        if not done:
            self.log.error("inbox partition did not drain in time; cancelling", seconds=patience)
            await self.abort()

    async def abort(self) -> None:
        """Stop at once; whatever is not committed stays pending for the next owner."""
        self.draining.set()
        if self.task is not None and not self.task.done():
            await cancel_and_wait(self.task)

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless asked to drain; returns whether we are draining."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.draining.wait(), seconds)
        return self.draining.is_set()

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        # The task's own context (a copy of its creator's): start from a clean one.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**self.context)
        while not self.draining.is_set():
            try:
                await self._ensure_group()
                await self._take_over()
                await self._consume()
                return
            except Fenced:
                self.stats.fenced += 1
                self.log.warning("inbox partition moved to another worker; stopping")
                return
            except RedisError as exc:
                self.stats.errors += 1
                self.log.warning(
                    "inbox: Redis failed; backing off",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=self.backoff,
                )
            except Exception:
                self.stats.errors += 1
                self.log.exception("inbox partition failed; backing off", retry_in=self.backoff)
            if await self._pause(self.backoff):
                return
            self.backoff = min(self.backoff * 2, self.consumer.retry_delay_max)

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.inbox, INBOX_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _take_over(self) -> None:
        """Claim every pending entry of the partition (the reads give them first), and read
        the partition's failure counts and commit counter."""
        cursor = "0-0"
        claimed = 0
        while True:
            reply = await self.consumer.claim_script(
                keys=[self.keys.lease, self.keys.inbox],
                args=[self.me, INBOX_GROUP, cursor, CLAIM_COUNT, CLAIM_ROUNDS],
            )
            if text(reply[0]) == "fenced":
                raise Fenced
            cursor = text(reply[1])
            claimed += int(reply[2])
            if cursor == "0-0":
                break
        if claimed:
            self.log.info("inbox: took over pending entries", entries=claimed)
        raw = text_map(await self.redis.hgetall(self.keys.failures()))
        self.version = int(raw.pop(VERSION_FIELD, "0"))
        self.failures = {
            name.removeprefix(FAILURE_PREFIX): int(count)
            for name, count in raw.items()
            if name.startswith(FAILURE_PREFIX)
        }

    async def _consume(self) -> None:
        while not self.draining.is_set():
            reply = await self.consumer.read_script(
                keys=[self.keys.lease, self.keys.inbox],
                args=[self.me, INBOX_GROUP, self.consumer.batch_size],
            )
            status = text(reply[0])
            if status == "fenced":
                raise Fenced
            self.backoff = self.consumer.retry_delay
            if status == "ok":
                await self._handle([(entry[0], _pairs(entry[1] or [])) for entry in reply[1]])
            else:
                await self._wait_after(reply[1])

    async def _wait_after(self, last: bytes | str) -> None:
        """Wait until the stream has an entry after ``last``, ``block_ms`` passed, or we are
        asked to drain."""
        read = asyncio.ensure_future(
            self.redis.xread({self.keys.inbox: last}, count=1, block=self.consumer.block_ms)
        )
        drain = asyncio.ensure_future(self.draining.wait())
        try:
            await asyncio.wait({read, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (read, drain):
                waiting.cancel()
            await asyncio.gather(read, drain, return_exceptions=True)
        if read.done() and not read.cancelled():
            read.result()  # raise a Redis error, if any

    # ------------------------------------------------------------ batches

    @contextlib.contextmanager
    def _logging(self, event: InboxEvent) -> Iterator[None]:
        """Bind ``event``'s context to every log line while it is handled; reset it after
        (whatever the handler bound is dropped too)."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**self.context, **log_context(event))
        try:
            yield
        finally:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**self.context)

    def _decode(self, entry_id: bytes | str, fields: Fields | None) -> _Item:
        item = _Item(text(entry_id), fields or {})
        if item.gone:
            return item
        try:
            item.event = InboxEvent.from_fields(entry_id, item.fields, self.partition)
        except Exception as exc:
            item.error = f"undecodable inbox entry: {type(exc).__name__}: {exc}"
        return item

    async def _handle(self, entries: Sequence[RawEntry]) -> None:
        items = [self._decode(entry_id, fields) for entry_id, fields in entries]
        while items:
            items = await self._process(items)

    async def _load_sessions(self, items: Sequence[_Item]) -> dict[str, Fields]:
        conversations = list(dict.fromkeys(i.event.conversation for i in items if i.event))
        if not conversations:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for conversation in conversations:
                pipe.hgetall(self.keys.session(conversation))
            raws = await pipe.execute()
        return dict(zip(conversations, raws, strict=True))

    async def _execute(self, items: Sequence[_Item], raws: dict[str, Fields]) -> _Run:
        """Run the handler over ``items`` in order, into one fresh batch; stop at the first
        failure."""
        consumer = self.consumer
        batch = Batch().fence(self.keys.lease, self.me)
        batch.write_versioned(self.keys.failures(), self.version, {})  # _PARTITION_GUARD
        run = _Run(batch, {})
        for index, item in enumerate(items):
            event = item.event
            if event is None:
                continue
            conversation = event.conversation
            session = run.sessions.get(conversation)
            if session is None:
                session = Session.from_hash(conversation, raws.get(conversation) or {})
            ctx = EventContext(event, self.keys, run.batch, session, consumer.limits)
            started = time.perf_counter()
            try:
                # A hung handler must not stall its partition: a timeout is a failure of
                # this entry (retried, then dead-lettered).
                with self._logging(event):
                    async with asyncio.timeout(consumer.handler_timeout):
                        await consumer.handler.handle(ctx)
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
        observer = self.consumer.on_handled
        if observer is not None:
            observer(event_kind(event), time.perf_counter() - started)

    async def _process(self, items: list[_Item]) -> list[_Item]:
        """Handle and commit ``items`` (or the part before a failing entry); returns the
        entries still to handle."""
        consumer = self.consumer
        await self._dead_letter(
            [(i, i.error, 0) for i in items if i.error is not None], kind="undecodable"
        )
        raws = await self._load_sessions(items)
        end = len(items)
        failure: tuple[int, Exception] | None = None
        while True:
            run = await self._execute(items[:end], raws)
            if run.error is not None and run.failed_at is not None:
                # Handle the entries before the failing one again, cleanly, and commit them.
                failure = (run.failed_at, run.error)
                end = run.failed_at
                continue
            crash_point("after_handle_before_commit")
            batch = run.batch
            for conversation, session in run.sessions.items():
                if session.dirty:
                    batch.write_versioned(
                        self.keys.session(conversation),
                        session.version,
                        session.to_hash(),
                        ttl_ms=consumer.limits.ttl_ms,
                    )
            done = [i.entry_id for i in items[:end]]
            dead = False
            count = 0
            if failure is not None:
                item = items[failure[0]]
                count = self.failures.get(item.entry_id, 0) + 1
                reason = f"{type(failure[1]).__name__}: {failure[1]}"
                if count >= consumer.max_deliveries:
                    dead = True
                    await self._dead_letter([(item, reason, count)], kind="failed")
                    done.append(item.entry_id)
                else:
                    batch.hset(self.keys.failures(), {failure_field(item.entry_id): str(count)})
            batch.hdel(self.keys.failures(), [failure_field(i) for i in done if i in self.failures])
            batch.xack(self.keys.inbox, INBOX_GROUP, done)
            try:
                await batch.commit(consumer.store)
            except CommitConflict as exc:
                if exc.reason == "fenced":
                    raise Fenced from exc
                if exc.index == _PARTITION_GUARD:
                    # Only our own commits move the partition version while we hold the
                    # lease: this batch was applied already (by a re-sent command).
                    self.log.warning("inbox: the batch was committed already (re-sent commit)")
                    current = await self.redis.hget(self.keys.failures(), VERSION_FIELD)
                    self.version = int(text(current) or "0")
                    break
                consumer.stats.conflicts += 1
                self.log.info("inbox: a session changed underneath; handling the batch again")
                raws = await self._load_sessions(items)
                end, failure = len(items), None
                continue
            self.version += 1
            break
        self._committed(items[:end], done, run)
        if failure is None:
            return []
        index, error = failure
        item = items[index]
        consumer.stats.failed += 1
        self.log.warning(
            "inbox handler failed" if not dead else "inbox handler failed; entry dead-lettered",
            entry=item.entry_id,
            conversation=mask_text(item.event.conversation if item.event else ""),
            failures=count,
            max_deliveries=consumer.max_deliveries,
            exc_info=error,
        )
        if dead:
            return items[index + 1 :]
        self.failures[item.entry_id] = count
        delay = min(consumer.retry_delay * 2 ** (count - 1), consumer.retry_delay_max)
        if await self._pause(delay):
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
        for entry_id in done:
            self.failures.pop(entry_id, None)
            self.dead_letters_written.discard(entry_id)

    async def _dead_letter(self, letters: Sequence[tuple[_Item, str, int]], *, kind: str) -> None:
        """Copy entries to the dead-letter stream (once each; acknowledged by the next
        commit)."""
        fresh = [(i, r, n) for i, r, n in letters if i.entry_id not in self.dead_letters_written]
        if not fresh:
            return
        await dlq.dead_letter(
            self.redis,
            [
                dlq.DeadLetter.of(
                    source=self.keys.inbox,
                    entry=item.entry_id,
                    partition=self.partition,
                    group=INBOX_GROUP,
                    kind="inbox",
                    fields=item.fields,
                    reason=reason,
                    deliveries=count,
                )
                for item, reason, count in fresh
            ],
        )
        for item, reason, _ in fresh:
            self.dead_letters_written.add(item.entry_id)
            self.stats.dead_lettered += 1
            self.log.error(
                "inbox entry dead-lettered",
                entry=item.entry_id,
                why=kind,
                reason=mask_text(reason[:200]),
            )

"""The sender: drains every partition's durable outbox to the provider, batched, under the
shared throttle, retried, and never lost.

One loop per process reads the outbox streams through the consumer group ``sender`` (its
own pending entries first, then new ones from all partitions in one ``XREADGROUP``) into a
bounded buffer. There is no fixed linger: the loop takes a provider call from the shared
:class:`~bot.gateway.throttle.Throttle` first, then tops the buffer up without blocking and
sends up to 100 messages in that call. When calls are free a lone reply leaves at once; when
they are scarce, batches fill while the loop waits for a call.

Per call:

- messages are validated before they join a batch (one bad message makes the provider
  reject the whole call); an invalid one is recorded failed on its own;
- just before the call, one pipelined ``HMGET`` per partition screens the destinations
  against the suppression list (:mod:`bot.gateway.suppression`): a message to a handset
  that opted out is not sent but recorded final as ``suppressed`` (record, timeline,
  acknowledgement, with the batch's other outcomes), unless its origin is ``compliance``;
- the in-flight batch's ids are written to ``inflight(worker)`` before the call and cleared
  once its outcome is recorded, so whoever recovers after a crash can tell which messages
  may have left twice (at most this one batch);
- success: per partition one atomic batch marks the records sent (with the provider's
  ``message_id``), appends ``sent`` to the timelines and acknowledges the entries; the
  partitions' batches are committed together;
- 5xx, timeouts and connection errors are retried with backoff and jitter (stamina); a
  timeout or a dropped answer is an unknown outcome, logged as a possible duplicate;
- 429: the shared throttle pauses every process for ``Retry-After``, then the call is
  retried (that is not a failure of the messages);
- 400/422: the provider names the bad messages (``/messages/<i>/...``): those are recorded
  failed with its words and the rest resent; without an index the batch is bisected until
  the bad message is alone;
- 401/403 and other refusals: nothing is burnt, the messages wait and are retried later;
- a message whose calls failed ``max_deliveries`` times is recorded failed, copied to the
  dead-letter stream and acknowledged.

A janitor claims the pending entries of dead workers (their ``alive`` key is gone), logs the
possible duplicate of their in-flight batch, and removes their consumers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydantic
import stamina
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.aio import cancel_and_wait
from bot.gateway import records, suppression, timeline
from bot.gateway.crashpoints import crash_point
from bot.gateway.dlq import DeadLetter, dead_letter
from bot.gateway.events import OutboundRequest
from bot.gateway.keys import OUTBOX_GROUP, PartitionKeys, alive, inflight, partition_of
from bot.gateway.sending import (
    Item,
    ProviderModel,
    build_message,
    describe_invalid,
    halves,
    invalid_indexes,
    take_batch,
)
from bot.gateway.store import Batch, Store, text, text_map
from bot.gateway.throttle import Throttle
from bot.sinch.client import SinchClient
from bot.sinch.errors import (
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    SinchAPIError,
    SinchTimeoutError,
    SinchTransportError,
)
from bot.sinch.models import MAX_MESSAGES_PER_CALL, OutboundMessage, ProviderMessage, RcsMessage
from bot.sms import segments

log = structlog.get_logger(__name__)

# Remove a consumer only while it owns nothing (a worker thought dead may still be reading;
# deleting a consumer with pending entries would orphan them).
_DELETE_IDLE_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""

_PAGE = 100
_MARKER_TTL_MS = 24 * 3600 * 1000


def failure_field(entry_id: str) -> str:
    """Field of an outbox entry in its partition's ``failures`` hash (failed calls so far)."""
    return f"out:{entry_id}"


@dataclass
class SenderCounters:
    """What the sender did since it started (for metrics)."""

    calls: int = 0
    """Provider calls made (every attempt, bisection halves included)."""
    messages_sent: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    """Messages per successful call → number of such calls."""
    retries: Counter[str] = field(default_factory=Counter)
    """Retried calls by cause: ``server_error``, ``timeout``, ``transport``,
    ``rate_limited``, ``rejected`` (a 400 resolved by resending or bisecting)."""
    throttle_wait_seconds: float = 0.0
    failed: int = 0
    """Messages recorded failed (invalid, rejected by the provider, or given up)."""
    suppressed: int = 0
    """Messages not sent because their recipient opted out (recorded ``suppressed``)."""
    dead_lettered: int = 0
    possible_duplicates: int = 0
    """Messages whose send may have reached the provider twice (unknown outcomes, crashes)."""
    claimed: int = 0
    """Entries taken over from dead workers."""
    refused: int = 0
    """Calls the provider refused without judging the messages (401, 403...)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Loop errors (Redis outages...) by exception type."""


@dataclass
class _Outcome:
    """How one outbox entry ended: sent, failed, suppressed, or dropped as unreadable."""

    partition: int
    entry_id: str
    fields: dict[str, str]
    request: OutboundRequest | None = None
    sent: bool = False
    message_id: str = ""
    error: str = ""
    dead_letter: bool = False
    calls: int = 0
    deliveries: int = 0
    suppressed: suppression.OptOut | None = None
    """The recipient's opt-out, when the message was held back for it."""

    @classmethod
    def of_sent(cls, item: Item, message_id: str) -> _Outcome:
        return cls(
            item.partition,
            item.entry_id,
            item.fields,
            item.request,
            sent=True,
            message_id=message_id,
            calls=item.calls,
        )

    @classmethod
    def of_failed(cls, item: Item, error: str, *, dead_letter: bool = False) -> _Outcome:
        return cls(
            item.partition,
            item.entry_id,
            item.fields,
            item.request,
            error=error,
            dead_letter=dead_letter,
            calls=item.calls,
        )

    @classmethod
    def of_suppressed(cls, item: Item, opt_out: suppression.OptOut) -> _Outcome:
        return cls(
            item.partition,
            item.entry_id,
            item.fields,
            item.request,
            suppressed=opt_out,
            calls=item.calls,
        )


@dataclass
class _BatchState:
    """One batch on its way: what is left to send, what ended, what waits for later."""

    work: deque[list[Item]]
    current: list[Item] = field(default_factory=list)
    outcomes: list[_Outcome] = field(default_factory=list)
    back: list[Item] = field(default_factory=list)
    """Not sent; back to the buffer (retried later)."""
    left: list[Item] = field(default_factory=list)
    """Abandoned on stop: left pending in Redis for a restart or another worker."""
    unknown: set[str] = field(default_factory=set)
    """gw_ids of messages in calls whose outcome is unknown."""
    pause: float = 0.0

    def rest(self) -> list[Item]:
        items = list(self.current)
        for group in self.work:
            items.extend(group)
        self.current = []
        self.work.clear()
        return items


class _Abandon(Exception):
    """Stop working on a batch (the sender is stopping); its messages stay pending."""


def _gw_ids(items: Iterable[Item]) -> list[str]:
    return [item.gw_id for item in items]


def _maybe_processed(exc: SinchTransportError) -> bool:
    """Whether the provider may have acted on a call that failed this way."""
    cause = exc.__cause__
    return not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _entry_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _stream_entries(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """An ``XREADGROUP`` reply (RESP2 list or RESP3 map) as ``[(stream, [(id, fields)])]``."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    result = []
    for stream, entries in pairs:
        if isinstance(entries, list) and entries and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 wraps each stream's entries once more
        result.append(
            (text(stream), [(text(entry_id), text_map(fields)) for entry_id, fields in entries])
        )
    return result


class Sender:
    """Drains the outboxes of all ``partitions`` to the provider. See the module docstring.

    :param store: the gateway's Redis (``store.redis`` is used for stream commands).
    :param client: the provider client (it does not retry; the sender does).
    :param throttle: the provider-call throttle shared by every process.
    :param worker_id: this process's worker id: its consumer name in the ``sender`` group.
        The worker's heartbeat (``keys.alive(worker_id)``) is kept elsewhere; while it is
        missing, other senders treat this worker as dead and take its entries.
    :param partitions: the partition count (every partition's outbox is drained).
    :param ttl_ms: lifetime of message records, timelines and the in-flight marker.
    :param timeline_max: length bound of a conversation's timeline.
    :param max_deliveries: failed calls after which a message is given up (dead-lettered).
    :param claim_idle: how often (every ``claim_idle / 2`` s) the janitor looks for dead
        workers' entries.
    :param retry_attempts: calls per batch before a retryable failure counts against the
        messages (stamina ``attempts``); ``retry_timeout`` bounds the time of those retries.
    :param retry_wait_initial: first backoff; it doubles up to ``retry_wait_max``, plus up
        to ``retry_wait_jitter`` of random jitter.
    :param rate_limit_pause: pause after a 429 without ``Retry-After``.
    :param error_backoff: wait after the provider refused a call (401/403...), and the cap
        of the wait after a batch failed its retries.
    :param batch_size: messages per call (at most 100, the provider's limit).
    :param buffer_max: bound of the in-memory buffer of read but unsent entries.
    :param block: seconds a read waits for new entries when there is nothing to do.
    :param drain_timeout: how long :meth:`stop` waits for the batch on the wire.
    :param owned: the partitions this worker holds leases for (the worker registry's
        ``owned``). Given, the sender drains only those partitions' outboxes and, when it
        gains a partition, first takes over every entry still pending there (a crashed or
        departed owner's) in stream order: a conversation's messages leave in order even
        across crashes. Without it, every outbox is drained and a janitor claims dead
        workers' entries.
    """

    def __init__(
        self,
        store: Store,
        client: SinchClient,
        throttle: Throttle,
        *,
        worker_id: str,
        partitions: int,
        ttl_ms: int,
        timeline_max: int,
        max_deliveries: int,
        claim_idle: float,
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
        owned: Callable[[], AbstractSet[int]] | None = None,
    ) -> None:
        if partitions <= 0:
            raise ValueError("partitions must be positive")
        if not 1 <= batch_size <= MAX_MESSAGES_PER_CALL:
            raise ValueError(f"batch_size must be 1 to {MAX_MESSAGES_PER_CALL}")
        if max_deliveries <= 0 or retry_attempts <= 0:
            raise ValueError("max_deliveries and retry_attempts must be positive")
        self.store = store
        self.redis: Redis = store.redis
        self.client = client
        self.throttle = throttle
        self.worker_id = worker_id
        self.partitions = partitions
        self.ttl_ms = ttl_ms
        self.timeline_max = timeline_max
        self.max_deliveries = max_deliveries
        self.claim_idle = claim_idle
        self.retry_attempts = retry_attempts
        self.retry_timeout = retry_timeout
        self.retry_wait_initial = retry_wait_initial
        self.retry_wait_max = retry_wait_max
        self.retry_wait_jitter = retry_wait_jitter
        self.rate_limit_pause = rate_limit_pause
        self.error_backoff = error_backoff
        self.batch_size = batch_size
        self.buffer_max = max(buffer_max, batch_size)
        self.block = block
        self.drain_timeout = drain_timeout
        self.counters = SenderCounters()

        self._streams = {PartitionKeys(p).outbox: p for p in range(partitions)}
        self._owned = owned
        self._synced: set[int] = set()
        self._wire_partitions: set[int] = set()
        self._wire_done = asyncio.Event()
        # Partitions of the XREADGROUP under way: a release waits for it, or the read could
        # hand this worker entries the next owner never sees (out of order, after its own).
        self._reading: set[int] = set()
        self._read_done = asyncio.Event()
        self._wire_done.set()
        self._inflight_key = inflight(worker_id)
        self._delete_idle_consumer: Any = self.redis.register_script(_DELETE_IDLE_CONSUMER)
        self._buffer: deque[Item] = deque()
        self._held: set[tuple[int, str]] = set()
        self._ready = False
        self._prepared = asyncio.Event()
        self._stopping = False
        self._aborted = False
        self._on_wire = False
        self._failed_rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._janitor_task: asyncio.Task[None] | None = None
        self._log = log.bind(worker=worker_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the send loop and the janitor (Redis outages are survived, not fatal)."""
        if self._task is not None:
            return
        self._stopping = self._aborted = self._ready = False
        self._prepared.clear()
        self._task = asyncio.create_task(self._run(), name=f"sender:{self.worker_id}")
        if self._owned is None:
            self._janitor_task = asyncio.create_task(
                self._janitor(), name=f"sender-janitor:{self.worker_id}"
            )

    async def stop(self) -> None:
        """Stop reading; finish and record the batch on the wire (within ``drain_timeout``);
        leave buffered, unsent entries pending for a restart or another worker (they never
        left, so nothing is sent twice)."""
        self._stopping = True
        await self._cancel(self._janitor_task)
        self._janitor_task = None
        task, self._task = self._task, None
        if task is None:
            return
        if not self._on_wire:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.drain_timeout)
        if not done:
            self._log.warning("sender stop: the batch on the wire did not finish in time")
            await self._cancel(task)

    async def abort(self) -> None:
        """Stop at once, finishing and recording nothing: what a crash leaves behind (entries
        pending, the in-flight marker kept). For tests and emergency shutdowns."""
        self._aborted = self._stopping = True
        tasks = [t for t in (self._task, self._janitor_task) if t is not None]
        self._task = self._janitor_task = None
        for task in tasks:
            await self._cancel(task)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        await cancel_and_wait(task)

    def build(self, request: OutboundRequest) -> ProviderModel:
        """The validated provider model of ``request`` (``ValueError`` when the provider
        would reject it). Override to change what is checked before batching."""
        return build_message(request)

    @property
    def ready(self) -> bool:
        """The consumer groups exist and this worker's own pending entries were taken up."""
        return self._prepared.is_set() and self._task is not None

    @property
    def buffered(self) -> int:
        """Entries read and waiting for a call."""
        return len(self._buffer)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        errors = 0
        while not self._stopping:
            try:
                if not self._ready:
                    await self._prepare()
                    self._ready = True
                if self._owned is not None:
                    await self._sync_ownership()
                if not self._buffer:
                    await self._read(block=True)
                    continue
                await self._take_call()
                if self._stopping:
                    break
                await self._read(block=False)
                batch = take_batch(self._buffer, self.batch_size)
                pause = await self._deliver(batch) if batch else 0.0
                errors = 0
                if pause and not self._stopping:
                    await asyncio.sleep(pause)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Start over from this worker's pending entries: whatever the buffer held
                # is still pending in Redis, so nothing is lost.
                errors += 1
                self._ready = False
                self.counters.errors[type(exc).__name__] += 1
                self._log.warning(
                    "sender loop failed; retrying",
                    error=str(exc) or type(exc).__name__,
                    exc_info=not isinstance(exc, RedisError | OSError),
                )
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(errors, 6)))

    async def _take_call(self) -> None:
        self.counters.throttle_wait_seconds += await self.throttle.acquire()

    async def _prepare(self) -> None:
        """Create the consumer groups (idempotent), then take this worker's pending entries
        (left by an earlier run or a Redis outage) before anything new."""
        self._buffer.clear()
        self._held.clear()
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._streams:
            pipe.xgroup_create(stream, OUTBOX_GROUP, id="0", mkstream=True)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result
        self._synced.clear()
        marker = await self.redis.get(self._inflight_key)
        entries = await self._read_own_pending() if self._owned is None else []
        if marker is not None:
            self._check_marker(marker, entries, self.worker_id)
            await self.redis.delete(self._inflight_key)
        await self._accept(entries)
        self._prepared.set()

    async def _read_own_pending(self) -> list[tuple[int, str, dict[str, str]]]:
        cursors = dict.fromkeys(self._streams, "0")
        found: list[tuple[int, str, dict[str, str]]] = []
        while cursors:
            reply = await self.redis.xreadgroup(
                OUTBOX_GROUP,
                self.worker_id,
                streams=cursors,  # type: ignore[arg-type]
                count=_PAGE,
            )
            answered = set()
            for stream, entries in _stream_entries(reply):
                answered.add(stream)
                partition = self._streams[stream]
                found.extend((partition, entry_id, fields) for entry_id, fields in entries)
                if len(entries) < _PAGE:
                    cursors.pop(stream, None)
                else:
                    cursors[stream] = entries[-1][0]
            for stream in list(cursors):
                if stream not in answered:
                    del cursors[stream]
        return found

    async def _read(self, *, block: bool) -> None:
        """Read new entries into the buffer. Several rounds while streams answer with full
        pages and the buffer holds less than a batch (a hot partition fills a batch)."""
        for round_ in range(10):
            room = self.buffer_max - len(self._buffer)
            if room <= 0:
                return
            streams = self._active_streams()
            if not streams:
                if block:
                    await asyncio.sleep(self.block)
                return
            count = max(1, min(_PAGE, room // len(streams)))
            self._reading = {self._streams[stream] for stream in streams}
            self._read_done.clear()
            try:
                reply = await self.redis.xreadgroup(
                    OUTBOX_GROUP,
                    self.worker_id,
                    streams=dict.fromkeys(streams, ">"),
                    count=count,
                    block=int(self.block * 1000) if block and round_ == 0 else None,
                )
                entries: list[tuple[int, str, dict[str, str]]] = []
                full = False
                for stream, items in _stream_entries(reply):
                    partition = self._streams[stream]
                    entries.extend((partition, entry_id, fields) for entry_id, fields in items)
                    full = full or len(items) >= count
                if entries:
                    await self._accept(entries)
            finally:
                self._reading = set()
                self._read_done.set()
            if not full or len(self._buffer) >= self.batch_size:
                return

    async def _accept(
        self, entries: Sequence[tuple[int, str, dict[str, str]]], *, front: bool = False
    ) -> None:
        """Turn read entries into buffered items. Entries that cannot be sent end here: an
        unreadable one is dead-lettered, an invalid message is recorded failed, a deleted
        entry is acknowledged."""
        fresh: list[Item] = []
        outcomes: list[_Outcome] = []
        gone: dict[int, list[str]] = {}
        for partition, entry_id, fields in entries:
            if (partition, entry_id) in self._held:
                continue
            if not fields:
                gone.setdefault(partition, []).append(entry_id)
                continue
            try:
                request = OutboundRequest.from_fields(entry_id, fields, partition)
            except ValueError as exc:
                outcomes.append(
                    _Outcome(
                        partition,
                        entry_id,
                        fields,
                        error=f"not an outbound request: {exc}",
                        dead_letter=True,
                    )
                )
                continue
            try:
                message = self.build(request)
            except ValueError as exc:
                reason = describe_invalid(exc)
                self._log.warning(
                    "invalid outbound message recorded failed", gw_id=request.gw_id, error=reason
                )
                outcomes.append(_Outcome(partition, entry_id, fields, request, error=reason))
                continue
            fresh.append(Item(partition, entry_id, fields, request, message))
        for item in fresh:
            self._held.add(item.key)
        if front:
            self._buffer.extendleft(reversed(fresh))
        else:
            self._buffer.extend(fresh)
        if outcomes or gone:
            await self._record(outcomes, gone)

    # ------------------------------------------------------------------ one batch

    async def _deliver(self, items: list[Item]) -> float:
        """Send ``items`` (one channel, pre-validated; the caller took the first call) and
        record what became of them. Returns seconds to wait before the next batch."""
        state = _BatchState(work=deque([items]))
        interrupted = True
        self._wire_partitions = {item.partition for item in items}
        self._wire_done.clear()
        # Every line logged for this batch (the client's too) says which partitions it is of.
        with structlog.contextvars.bound_contextvars(
            partitions=sorted(self._wire_partitions), batch=len(items)
        ):
            try:
                await self._screen(state)
                if state.work:
                    # The marker only matters until another worker takes over after a crash. It
                    # is written inside the ``try`` so that a stop cancelling this very write
                    # still clears it in ``_finish`` (the command may have reached Redis).
                    await self.redis.set(
                        self._inflight_key, json.dumps(_gw_ids(state.work[0])), px=_MARKER_TTL_MS
                    )
                    await self._work(state)
                interrupted = False
            finally:
                try:
                    if not self._aborted:
                        await self._finish(state, interrupted=interrupted)
                finally:
                    self._wire_partitions = set()
                    self._wire_done.set()
        return state.pause

    async def _screen(self, state: _BatchState) -> None:
        """Take the messages to suppressed handsets out of the batch (``state.work`` holds
        the one group about to be sent) and make them ``suppressed`` outcomes: checked
        here, as late as possible, so that what was queued before an opt-out is stopped
        too. Compliance messages pass."""
        items = state.work[0]
        wanted: dict[int, set[str]] = {}
        for item in items:
            if item.request.origin != suppression.COMPLIANCE_ORIGIN:
                number = item.request.destination
                wanted.setdefault(partition_of(number, self.partitions), set()).add(number)
        found = await suppression.screen(self.redis, wanted) if wanted else {}
        if not found:
            return
        kept: list[Item] = []
        held: list[str] = []
        for item in items:
            number = item.request.destination
            opt_out = found.get(partition_of(number, self.partitions), {}).get(number)
            if opt_out is None or item.request.origin == suppression.COMPLIANCE_ORIGIN:
                kept.append(item)
            else:
                state.outcomes.append(_Outcome.of_suppressed(item, opt_out))
                held.append(item.gw_id)
        self._log.info("messages to opted-out handsets not sent", gw_ids=held)
        if kept:
            state.work[0] = kept
        else:
            state.work.popleft()

    async def _work(self, state: _BatchState) -> None:
        throttled = True
        while state.work:
            group = state.current = state.work.popleft()
            try:
                answer = await self._send(group, state, throttled=throttled)
            except _Abandon:
                state.left.extend(state.rest())
                return
            except InvalidRequestError as exc:
                self._rejected(group, exc, state)
            except (ServerError, SinchTransportError) as exc:
                if self._stopping:
                    state.left.extend(state.rest())
                    return
                await self._failed_call(group, exc, state)
            except SinchAPIError as exc:
                self.counters.refused += 1
                self._log.error(
                    "provider refused the call; the messages wait and are retried later",
                    status=exc.status_code,
                    error=exc.message,
                    gw_ids=_gw_ids(group),
                )
                state.back.extend(state.rest())
                state.pause = self.error_backoff
            else:
                crash_point("after_send_before_record")
                self._sent(group, answer, state)
                self._failed_rounds = 0
            finally:
                throttled = False
            state.current = []

    async def _send(
        self, group: list[Item], state: _BatchState, *, throttled: bool
    ) -> list[ProviderMessage] | None:
        """One group in one call, retried; a 429 pauses every process and tries again."""
        while True:
            if self._stopping:
                raise _Abandon
            try:
                return await self._attempts(group, state, throttled=throttled)
            except RateLimitedError as exc:
                throttled = False
                seconds = exc.retry_after or self.rate_limit_pause
                self.counters.retries["rate_limited"] += 1
                self._log.warning("provider rate limit: every sender holds", seconds=seconds)
                await self.throttle.pause(seconds)

    def _retryable(self, exc: Exception) -> bool:
        return isinstance(exc, ServerError | SinchTransportError) and not self._stopping

    async def _attempts(
        self, group: list[Item], state: _BatchState, *, throttled: bool
    ) -> list[ProviderMessage] | None:
        cause = ""
        async for attempt in stamina.retry_context(
            on=self._retryable,
            attempts=self.retry_attempts,
            timeout=self.retry_timeout,
            wait_initial=self.retry_wait_initial,
            wait_max=self.retry_wait_max,
            wait_jitter=self.retry_wait_jitter,
        ):
            with attempt:
                if attempt.num > 1:
                    self.counters.retries[cause] += 1
                    if self._stopping:
                        raise _Abandon
                if not throttled:
                    await self._take_call()
                throttled = False
                try:
                    return await self._call(group, state)
                except ServerError:
                    cause = "server_error"
                    raise
                except SinchTimeoutError:
                    cause = "timeout"
                    raise
                except SinchTransportError:
                    cause = "transport"
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, group: list[Item], state: _BatchState) -> list[ProviderMessage] | None:
        """One provider call. ``None``: accepted, but the answer could not be read."""
        self.counters.calls += 1
        for item in group:
            item.calls += 1
        self._on_wire = True
        try:
            if group[0].request.channel == "rcs":
                rcs = [m for m in (i.message for i in group) if isinstance(m, RcsMessage)]
                return await self.client.send_rcs(rcs)
            sms = [m for m in (i.message for i in group) if isinstance(m, OutboundMessage)]
            return await self.client.send_messages(sms)
        except pydantic.ValidationError as exc:
            self._log.error(
                "the provider accepted a call but its answer is unreadable",
                error=str(exc)[:300],
                gw_ids=_gw_ids(group),
            )
            return None
        except SinchTransportError as exc:
            if _maybe_processed(exc):
                ids = _gw_ids(group)
                state.unknown.update(ids)
                self.counters.possible_duplicates += len(ids)
                self._log.warning(
                    "possible duplicate send",
                    cause="timeout" if isinstance(exc, SinchTimeoutError) else "connection lost",
                    error=str(exc),
                    gw_ids=ids,
                )
            raise
        finally:
            self._on_wire = False

    def _sent(
        self, group: list[Item], answer: list[ProviderMessage] | None, state: _BatchState
    ) -> None:
        answer = answer or []
        if len(answer) != len(group):
            self._log.error(
                "the provider's answer does not match the call",
                sent=len(group),
                answered=len(answer),
            )
        for index, item in enumerate(group):
            message_id = answer[index].message_id if index < len(answer) else ""
            state.outcomes.append(_Outcome.of_sent(item, message_id))
        self.counters.messages_sent += len(group)
        self.counters.batch_sizes[len(group)] += 1

    def _rejected(self, group: list[Item], exc: InvalidRequestError, state: _BatchState) -> None:
        """The provider rejected the whole call: fail the messages it names and resend the
        rest, or bisect when it names none."""
        blamed = invalid_indexes(exc.details, len(group))
        if blamed:
            for index, details in blamed.items():
                state.outcomes.append(_Outcome.of_failed(group[index], "; ".join(details)))
            rest = [item for index, item in enumerate(group) if index not in blamed]
            if rest:
                state.work.appendleft(rest)
        elif len(group) == 1:
            state.outcomes.append(_Outcome.of_failed(group[0], str(exc)))
        else:
            first, second = halves(group)
            state.work.appendleft(second)
            state.work.appendleft(first)
        if state.work:
            self.counters.retries["rejected"] += 1
        self._log.warning(
            "provider rejected a batch",
            status=exc.status_code,
            messages=len(group),
            blamed=[group[i].gw_id for i in blamed] if blamed else None,
            details=exc.details[:5],
        )

    async def _failed_call(self, group: list[Item], exc: Exception, state: _BatchState) -> None:
        """Retries are exhausted: count a failed delivery for each message; give up on those
        at ``max_deliveries``, keep the others for later."""
        pipe = self.redis.pipeline(transaction=False)
        for item in group:
            pipe.hincrby(PartitionKeys(item.partition).failures(), failure_field(item.entry_id))
        counts = await pipe.execute()
        state.current = []
        later = state.rest()
        for item, count in zip(group, counts, strict=True):
            if int(count) >= self.max_deliveries:
                error = f"gave up after {count} failed attempts: {exc}"
                outcome = _Outcome.of_failed(item, error, dead_letter=True)
                outcome.deliveries = int(count)
                state.outcomes.append(outcome)
            else:
                state.back.append(item)
        state.back.extend(later)
        self._failed_rounds += 1
        state.pause = min(self.error_backoff, self.retry_wait_initial * 2**self._failed_rounds)
        self._log.warning(
            "batch failed after retries; kept for later",
            error=str(exc),
            messages=len(group),
            pause=state.pause,
        )

    async def _finish(self, state: _BatchState, *, interrupted: bool) -> None:
        """Record the batch's outcomes, put unsent messages back, and clear (or narrow) the
        in-flight marker."""
        if interrupted:
            state.left.extend(state.rest())
        self._on_wire = True
        try:
            await self._record(state.outcomes)
        finally:
            self._on_wire = False
        for item in state.left:
            self._held.discard(item.key)
        if state.back and not interrupted:
            self._buffer.extendleft(reversed(state.back))
        elif state.back:
            state.left.extend(state.back)
            for item in state.back:
                self._held.discard(item.key)
        still_unknown = [i.gw_id for i in state.left + state.back if i.gw_id in state.unknown]
        try:
            if still_unknown:
                await self.redis.set(
                    self._inflight_key, json.dumps(still_unknown), px=max(self.ttl_ms, 1000)
                )
            else:
                await self.redis.delete(self._inflight_key)
        except RedisError as exc:
            self._log.warning("could not update the in-flight marker", error=str(exc))

    # ------------------------------------------------------------------ recording

    async def _record(
        self, outcomes: Sequence[_Outcome], gone: dict[int, list[str]] | None = None
    ) -> None:
        """Write outcomes: per partition one atomic batch (records, timeline, ack), the
        partitions' batches together; dead letters first. Retried until Redis takes it: a
        sent message that is not recorded would be sent again."""
        batches: dict[int, Batch] = {}
        acks: dict[int, list[str]] = {p: list(ids) for p, ids in (gone or {}).items()}
        dead: list[_Outcome] = []
        for outcome in outcomes:
            keys = PartitionKeys(outcome.partition)
            batch = batches.setdefault(outcome.partition, Batch())
            acks.setdefault(outcome.partition, []).append(outcome.entry_id)
            if outcome.dead_letter:
                dead.append(outcome)
            request = outcome.request
            if request is None:
                continue
            if outcome.sent:
                self._record_sent(batch, keys, request, outcome)
            elif outcome.suppressed is not None:
                suppression.mark_suppressed(
                    batch,
                    keys,
                    request,
                    outcome.suppressed,
                    timeline_max=self.timeline_max,
                    ttl_ms=self.ttl_ms,
                )
            else:
                records.mark_failed(batch, keys, request.gw_id, outcome.error, ttl_ms=self.ttl_ms)
                timeline.append(
                    batch,
                    keys,
                    request.conversation,
                    "failed",
                    {"gw_id": request.gw_id, "error": outcome.error[:500]},
                    maxlen=self.timeline_max,
                    ttl_ms=self.ttl_ms,
                )
        for partition, ids in acks.items():
            keys = PartitionKeys(partition)
            batch = batches.setdefault(partition, Batch())
            batch.xack(keys.outbox, OUTBOX_GROUP, ids)
            batch.hdel(keys.failures(), [failure_field(i) for i in ids])
        if dead:
            await self._with_redis_retries(lambda: self._dead_letter(dead))
        await self._commit_all(list(batches.values()))
        for outcome in outcomes:
            self._held.discard((outcome.partition, outcome.entry_id))
            if outcome.suppressed is not None:
                self.counters.suppressed += 1
            elif not outcome.sent:
                self.counters.failed += 1 if outcome.request is not None else 0
        self.counters.dead_lettered += len(dead)
        for partition, ids in (gone or {}).items():
            for entry_id in ids:
                self._held.discard((partition, entry_id))

    def _record_sent(
        self, batch: Batch, keys: PartitionKeys, request: OutboundRequest, outcome: _Outcome
    ) -> None:
        attempts = max(1, outcome.calls)
        if outcome.message_id:
            records.mark_sent(
                batch,
                keys,
                request.gw_id,
                outcome.message_id,
                ttl_ms=self.ttl_ms,
                attempts=attempts,
            )
        else:
            batch.hset(
                keys.message(request.gw_id),
                {"status": records.SENT, "sent_at": f"{time.time():.3f}", "attempts": attempts},
                ttl_ms=self.ttl_ms,
            )
        timeline.append(
            batch,
            keys,
            request.conversation,
            "sent",
            {
                "gw_id": request.gw_id,
                "message_id": outcome.message_id,
                "segments": segments(request.text).segments,
            },
            maxlen=self.timeline_max,
            ttl_ms=self.ttl_ms,
        )

    async def _dead_letter(self, dead: Sequence[_Outcome]) -> None:
        letters = []
        for outcome in dead:
            self._log.error(
                "outbox entry dead-lettered",
                entry=outcome.entry_id,
                partition=outcome.partition,
                gw_id=outcome.request.gw_id if outcome.request else None,
                error=outcome.error[:300],
            )
            letters.append(
                DeadLetter.of(
                    source=PartitionKeys(outcome.partition).outbox,
                    entry=outcome.entry_id,
                    partition=outcome.partition,
                    group=OUTBOX_GROUP,
                    kind="outbound",
                    fields=outcome.fields,
                    reason=outcome.error[:1000],
                    deliveries=outcome.deliveries,
                )
            )
        await dead_letter(self.redis, letters)

    async def _commit_all(self, batches: list[Batch]) -> None:
        delay = 0.05
        while batches:
            results = await asyncio.gather(
                *(batch.commit(self.store) for batch in batches), return_exceptions=True
            )
            failed = []
            for batch, result in zip(batches, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, ResponseError) or not isinstance(result, RedisError):
                        raise result
                    failed.append(batch)
            if failed:
                self._log.warning("recording a batch failed; retrying", batches=len(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            batches = failed

    async def _with_redis_retries(self, step: Any) -> None:
        delay = 0.05
        while True:
            try:
                await step()
                return
            except ResponseError:
                raise
            except RedisError as exc:
                self._log.warning("redis write failed; retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ partition ownership

    async def partition_acquired(self, partition: int) -> None:
        """Registry listener: nothing to do now; the loop takes the partition over."""

    async def partition_released(self, partition: int) -> None:
        """Registry listener: the lease is handed over once this returns. Wait for a read of
        the partition under way, forget the partition's buffered entries (they stay pending
        for the next owner) and wait until no call of ours carries its messages: otherwise
        the next owner would take over entries that are on the wire and send them again,
        or never see entries our read took after the hand-over (and send later ones first)."""
        # A read under way may still deliver this partition's entries to us: let it land,
        # then forget them with the rest (they stay pending, and the next owner claims them).
        while partition in self._reading:
            await self._read_done.wait()
        self._forget(partition)
        while partition in self._wire_partitions:
            await self._wire_done.wait()

    async def partition_lost(self, partition: int) -> None:
        """Registry listener: the lease is already gone; forget the partition's entries."""
        self._forget(partition)

    def _forget(self, partition: int) -> None:
        self._buffer = deque(item for item in self._buffer if item.partition != partition)
        self._held = {key for key in self._held if key[0] != partition}
        self._synced.discard(partition)

    def _active_streams(self) -> list[str]:
        if self._owned is None:
            return list(self._streams)
        return [PartitionKeys(p).outbox for p in sorted(self._synced)]

    async def _sync_ownership(self) -> None:
        """Follow the leases: forget partitions we lost (their entries stay pending for the
        new owner), take over the pending entries of partitions we gained."""
        assert self._owned is not None
        current = set(self._owned())
        # Lost partitions, and entries put back after a call for a partition released
        # meanwhile: the next owner sends those.
        stale = (self._synced | {item.partition for item in self._buffer}) - current
        for partition in stale:
            self._forget(partition)
        for partition in sorted(current - self._synced):
            await self._take_over(partition)
            self._synced.add(partition)

    async def _take_over(self, partition: int) -> None:
        """Claim every entry pending in ``partition``'s outbox, whoever read it, and queue
        them ahead of anything new, oldest first."""
        stream = PartitionKeys(partition).outbox
        summary: Any = await self.redis.xpending(stream, OUTBOX_GROUP)
        consumers = [text(c["name"]) for c in (summary or {}).get("consumers") or []]
        entries: dict[str, dict[str, str]] = {}
        previous: dict[str, str] = {}
        for consumer in consumers:
            cursor = "-"
            while True:
                pending: list[dict[str, Any]] = await self.redis.xpending_range(
                    stream, OUTBOX_GROUP, min=cursor, max="+", count=_PAGE, consumername=consumer
                )
                ids: list[Any] = [text(p["message_id"]) for p in pending]
                if not ids:
                    break
                got: list[Any] = await self.redis.xclaim(
                    stream, OUTBOX_GROUP, self.worker_id, min_idle_time=0, message_ids=ids
                )
                found = {text(i): text_map(f) for i, f in got or [] if i is not None}
                for entry_id in ids:
                    entries[entry_id] = found.get(entry_id, {})
                    previous[entry_id] = consumer
                if len(ids) < _PAGE:
                    break
                cursor = f"({ids[-1]}"
            if consumer != self.worker_id:
                await self._delete_idle_consumer(keys=[stream], args=[OUTBOX_GROUP, consumer])
        ordered = sorted(entries, key=_entry_order)
        batch = [(partition, entry_id, entries[entry_id]) for entry_id in ordered]
        for worker in sorted(set(previous.values()) - {self.worker_id}):
            marker = await self.redis.get(inflight(worker))
            if marker is not None:
                self._check_marker(marker, batch, worker)
        if batch:
            self.counters.claimed += len(batch)
            self._log.info(
                "took over a partition's pending outbox entries",
                partition=partition,
                entries=len(batch),
            )
        await self._accept(batch, front=True)

    # ------------------------------------------------------------------ crash recovery

    async def _janitor(self) -> None:
        await self._prepared.wait()
        while True:
            try:
                await self.claim_dead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.warning(
                    "sender janitor pass failed",
                    error=str(exc) or type(exc).__name__,
                    exc_info=not isinstance(exc, RedisError | OSError),
                )
            await asyncio.sleep(max(self.claim_idle / 2, 0.05))

    async def claim_dead(self) -> int:
        """One janitor pass: take over the pending entries of every dead worker (its
        ``alive`` key is missing). Returns how many entries were claimed."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._streams:
            pipe.xpending(stream, OUTBOX_GROUP)
        owners: dict[str, list[str]] = {}
        for stream, summary in zip(
            self._streams, await pipe.execute(raise_on_error=False), strict=True
        ):
            if isinstance(summary, Exception) or not summary:
                continue
            for consumer in summary.get("consumers") or []:
                name = text(consumer["name"])
                if name != self.worker_id and int(consumer["pending"]) > 0:
                    owners.setdefault(name, []).append(stream)
        if not owners:
            return 0
        names = list(owners)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(alive(name))
        living = await pipe.execute()
        claimed = 0
        for name, is_alive in zip(names, living, strict=True):
            if not is_alive:
                claimed += await self._claim_from(name, owners[name])
        return claimed

    async def _claim_from(self, worker: str, streams: Sequence[str]) -> int:
        entries: list[tuple[int, str, dict[str, str]]] = []
        for stream in streams:
            partition = self._streams[stream]
            while True:
                pending: list[dict[str, Any]] = await self.redis.xpending_range(
                    stream, OUTBOX_GROUP, min="-", max="+", count=_PAGE, consumername=worker
                )
                if not pending:
                    break
                ids: list[Any] = [text(p["message_id"]) for p in pending]
                got: list[Any] = await self.redis.xclaim(
                    stream, OUTBOX_GROUP, self.worker_id, min_idle_time=0, message_ids=ids
                )
                found = {text(i): text_map(f) for i, f in got or [] if i is not None}
                entries.extend((partition, i, found.get(i, {})) for i in ids)
                if len(pending) < _PAGE:
                    break
            await self._delete_idle_consumer(keys=[stream], args=[OUTBOX_GROUP, worker])
        marker_key = inflight(worker)
        marker = await self.redis.get(marker_key)
        if marker is not None:
            self._check_marker(marker, entries, worker)
            await self.redis.delete(marker_key)
        self.counters.claimed += len(entries)
        self._log.warning(
            "claimed the outbox entries of a dead worker", dead=worker, entries=len(entries)
        )
        await self._accept(entries, front=True)
        return len(entries)

    def _check_marker(
        self, marker: bytes | str, entries: Sequence[tuple[int, str, dict[str, str]]], worker: str
    ) -> None:
        """Warn when a crashed worker's in-flight batch is among the entries taken over:
        those messages may have reached the provider and will be sent again."""
        try:
            listed = set(json.loads(text(marker)))
        except (ValueError, TypeError):
            return
        overlap = sorted({f.get("id", "") for _, _, f in entries} & listed)
        if overlap:
            self.counters.possible_duplicates += len(overlap)
            self._log.warning(
                "possible duplicate send after a crash",
                dead=worker,
                messages=len(overlap),
                gw_ids=overlap,
            )


__all__ = ["Sender", "SenderCounters", "failure_field"]

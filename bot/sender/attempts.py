"""The attempts of one batch: from the moment the send loop took it to the outcome of every
message in it.

:meth:`Attempts.screen` first takes out the messages to handsets on the suppression list
(:mod:`bot.outbox.suppression`, one pipelined ``HMGET`` per partition, as late as possible
so that what was queued before an opt-out is stopped too; ``compliance`` messages pass):
they end ``suppressed``. Then :meth:`Attempts.work` sends what is left, a group per call
(the loop already took the first call from the :class:`~bot.sender.limiter.RateLimiter`):

- 5xx, timeouts and connection errors are retried with backoff and jitter (stamina), each
  attempt taking a call first; a timeout or a dropped answer is an unknown outcome, logged
  as ``possible duplicate send``;
- 429: the rate limiter pauses every process for ``Retry-After``, then the call is retried
  (that is not a failure of the messages);
- 400/422: the provider names the bad messages (``/messages/<i>/...``): those fail with its
  words and the rest is resent; without an index the group is bisected until the bad
  message is alone;
- 401/403 and other refusals: nothing is burnt, the messages go back to the buffer and the
  loop waits ``error_backoff``;
- retries exhausted: one more failed delivery is counted for each message
  (``out:<entry>`` in its partition's failures hash); those at ``max_deliveries`` fail and
  are dead-lettered, the others go back to the buffer.

The sender stopping abandons the batch between attempts: its messages stay pending (they
may be on no wire, so nothing is sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
import pydantic
import stamina
import structlog
from redis.exceptions import RedisError

from bot.core.crashpoints import crash_point
from bot.outbox import suppression
from bot.sender.batching import Item, halves, invalid_indexes
from bot.sender.counters import SenderCounters
from bot.sender.limiter import RateLimiter
from bot.sender.recording import OUTBOX, Outcome
from bot.sinch.client import SinchClient
from bot.sinch.errors import (
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    SinchAPIError,
    SinchTimeoutError,
    SinchTransportError,
)
from bot.sinch.models import OutboundMessage, ProviderMessage, RcsMessage
from bot.storage.connection import RedisClient
from bot.storage.keys import PartitionKeys, partition_of

__all__ = ["Abandon", "Attempts", "BatchState", "gw_ids"]

log = structlog.get_logger(__name__)


@dataclass
class BatchState:
    """One batch on its way: what is left to send, what ended, what waits for later."""

    work: deque[list[Item]]
    current: list[Item] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    back: list[Item] = field(default_factory=list)
    """Not sent; back to the buffer (retried later)."""
    left: list[Item] = field(default_factory=list)
    """Abandoned on stop: left pending in Redis for a restart or another worker."""
    unknown: set[str] = field(default_factory=set)
    """gw_ids of messages in calls whose outcome is unknown."""
    pause: float = 0.0
    """Seconds the loop waits before its next batch."""
    on_wire: bool = False
    """A provider call of this batch is under way."""
    recording: bool = False
    """The batch's calls are over and its outcomes are being recorded."""

    def rest(self) -> list[Item]:
        items = list(self.current)
        for group in self.work:
            items.extend(group)
        self.current = []
        self.work.clear()
        return items


class Abandon(Exception):
    """Stop working on a batch (the sender is stopping); its messages stay pending."""


def gw_ids(items: Iterable[Item]) -> list[str]:
    return [item.gw_id for item in items]


def _maybe_processed(exc: SinchTransportError) -> bool:
    """Whether the provider may have acted on a call that failed this way."""
    cause = exc.__cause__
    return not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class Attempts:
    """Sends batches to the provider (see the module docstring).

    Args:
        client: the provider client (it does not retry; this does).
        limiter: every provider call takes a call from it first.
        redis: for the suppression screen and the failure counts.
        counters: where calls, retries, refusals and possible duplicates are counted.
        partitions: the partition count (where a destination's opt-out is kept).
        max_deliveries: failed rounds of retries after which a message is given up.
        retry_attempts: calls per group before a retryable failure counts against the
            messages (stamina ``attempts``); ``retry_timeout`` bounds their time.
        retry_wait_initial, retry_wait_max, retry_wait_jitter: stamina's backoff.
        rate_limit_pause: pause after a 429 without ``Retry-After``.
        error_backoff: wait after a refused call, and the cap of the wait after a batch
            failed its retries.
        stopping: whether the sender is stopping (then batches are abandoned).
        worker_id: for the logs.
    """

    def __init__(
        self,
        client: SinchClient,
        limiter: RateLimiter,
        redis: RedisClient,
        counters: SenderCounters,
        *,
        partitions: int,
        max_deliveries: int,
        retry_attempts: int,
        retry_timeout: float | None,
        retry_wait_initial: float,
        retry_wait_max: float,
        retry_wait_jitter: float,
        rate_limit_pause: float,
        error_backoff: float,
        stopping: Callable[[], bool],
        worker_id: str,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.redis = redis
        self.counters = counters
        self.partitions = partitions
        self.max_deliveries = max_deliveries
        self.retry_attempts = retry_attempts
        self.retry_timeout = retry_timeout
        self.retry_wait_initial = retry_wait_initial
        self.retry_wait_max = retry_wait_max
        self.retry_wait_jitter = retry_wait_jitter
        self.rate_limit_pause = rate_limit_pause
        self.error_backoff = error_backoff
        self.stopping = stopping
        self.on_wire = 0
        """Provider calls under way (of every batch)."""
        self._failed_rounds = 0
        self._log = log.bind(worker=worker_id)

    async def take_call(self, patience: float | None = None) -> bool:
        """Wait for a provider call from the rate limiter and take it; ``False`` when none
        came within ``patience`` seconds (then nothing was taken, or at worst a call that
        is counted and never made, which only ever errs on the safe side)."""
        started = time.monotonic()
        scope = asyncio.timeout(patience)
        try:
            async with scope:
                await self.limiter.acquire()
        except TimeoutError:
            if scope.expired():
                return False
            raise
        finally:
            self.counters.throttle_wait_seconds += time.monotonic() - started
        return True

    async def screen(self, state: BatchState) -> None:
        """Take the messages to suppressed handsets out of the batch (``state.work`` holds
        the one group about to be sent) and make them ``suppressed`` outcomes."""
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
                state.outcomes.append(Outcome.of_suppressed(item, opt_out))
                held.append(item.gw_id)
        self._log.info("messages to opted-out handsets not sent", gw_ids=held)
        if kept:
            state.work[0] = kept
        else:
            state.work.popleft()

    async def work(self, state: BatchState) -> None:
        """Send every group of ``state.work`` (the first call is taken already)."""
        throttled = True
        while state.work:
            group = state.current = state.work.popleft()
            try:
                answer = await self._send(group, state, throttled=throttled)
            except Abandon:
                state.left.extend(state.rest())
                return
            except InvalidRequestError as exc:
                self._rejected(group, exc, state)
            except (ServerError, SinchTransportError) as exc:
                if self.stopping():
                    state.left.extend(state.rest())
                    return
                await self._failed_call(group, exc, state)
            except SinchAPIError as exc:
                self.counters.refused += 1
                self._log.error(
                    "provider refused the call; the messages wait and are retried later",
                    status=exc.status_code,
                    error=exc.message,
                    gw_ids=gw_ids(group),
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
        self, group: list[Item], state: BatchState, *, throttled: bool
    ) -> list[ProviderMessage] | None:
        """One group in one call, retried; a 429 pauses every process and tries again."""
        while True:
            if self.stopping():
                raise Abandon
            try:
                return await self._attempts(group, state, throttled=throttled)
            except RateLimitedError as exc:
                throttled = False
                seconds = exc.retry_after or self.rate_limit_pause
                self.counters.retries["rate_limited"] += 1
                self._log.warning("provider rate limit: every sender holds", seconds=seconds)
                await self.limiter.pause(seconds)

    def _retryable(self, exc: Exception) -> bool:
        return isinstance(exc, ServerError | SinchTransportError) and not self.stopping()

    async def _attempts(
        self, group: list[Item], state: BatchState, *, throttled: bool
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
                    if self.stopping():
                        raise Abandon
                if not throttled:
                    await self.take_call()
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

    async def _call(self, group: list[Item], state: BatchState) -> list[ProviderMessage] | None:
        """One provider call. ``None``: accepted, but the answer could not be read."""
        self.counters.calls += 1
        for item in group:
            item.calls += 1
        self.on_wire += 1
        state.on_wire = True
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
                gw_ids=gw_ids(group),
            )
            return None
        except SinchTransportError as exc:
            if _maybe_processed(exc):
                ids = gw_ids(group)
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
            # Answered or failed: the call counts from now (a release that fails leaves it
            # counted as in flight for longer, which only ever errs on the safe side). The
            # batch counts as on the wire until then: a stop does not cancel it while its
            # answer is in hand and not yet noted.
            try:
                with contextlib.suppress(RedisError, OSError):
                    await self.limiter.release()
            finally:
                self.on_wire -= 1
                state.on_wire = False

    def _sent(
        self, group: list[Item], answer: list[ProviderMessage] | None, state: BatchState
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
            state.outcomes.append(Outcome.of_sent(item, message_id))
        self.counters.messages_sent += len(group)
        self.counters.batch_sizes[len(group)] += 1

    def _rejected(self, group: list[Item], exc: InvalidRequestError, state: BatchState) -> None:
        """The provider rejected the whole call: fail the messages it names and resend the
        rest, or bisect when it names none."""
        blamed = invalid_indexes(exc.details, len(group))
        if blamed:
            for index, details in blamed.items():
                state.outcomes.append(Outcome.of_failed(group[index], "; ".join(details)))
            rest = [item for index, item in enumerate(group) if index not in blamed]
            if rest:
                state.work.appendleft(rest)
        elif len(group) == 1:
            state.outcomes.append(Outcome.of_failed(group[0], str(exc)))
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

    async def _failed_call(self, group: list[Item], exc: Exception, state: BatchState) -> None:
        """Retries are exhausted: count a failed delivery for each message; give up on those
        at ``max_deliveries``, keep the others for later."""
        pipe = self.redis.pipeline(transaction=False)
        for item in group:
            pipe.hincrby(
                PartitionKeys(item.partition).failures(), OUTBOX.failure_field(item.entry_id)
            )
        counts = await pipe.execute()
        state.current = []
        later = state.rest()
        for item, count in zip(group, counts, strict=True):
            if int(count) >= self.max_deliveries:
                error = f"gave up after {count} failed attempts: {exc}"
                outcome = Outcome.of_failed(item, error, dead_letter=True)
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

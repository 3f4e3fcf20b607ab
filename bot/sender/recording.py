"""How outbox entries end: an :class:`Outcome` per entry (sent, failed, suppressed, or
dropped as unreadable), written by :class:`Recorder`.

Per partition, one atomic :class:`~bot.storage.store.Batch` marks the records (sent with the
provider's ``message_id``, failed with the reason, suppressed with the opt-out), appends to
the conversations' timelines and acknowledges the entries with their failure counts; the
partitions' batches are committed together. Entries given up are copied to the dead-letter
stream first (it is not in any partition's hash slot, so that is its own step). Both steps
are retried until Redis takes them: a sent message that is not recorded would be sent
again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from redis.exceptions import RedisError, ResponseError

from bot.core.sms import segments
from bot.outbox import suppression
from bot.receipts import records, timeline
from bot.sender.batching import Item
from bot.sender.counters import SenderCounters
from bot.storage.events import OutboundRequest
from bot.storage.keys import OUTBOX_GROUP, PartitionKeys
from bot.storage.store import Batch, Store
from bot.streams.reader import Letter, StreamSpec, write_letters

__all__ = ["OUTBOX", "Outcome", "Recorder", "failure_field"]

log = structlog.get_logger(__name__)

OUTBOX: Final = StreamSpec(
    kind="outbound",
    group=OUTBOX_GROUP,
    stream=lambda keys: keys.outbox,
    failure_prefix="out:",
    noun="outbox entry",
)
"""The outbox stream of each partition, as the sender reads it."""


def failure_field(entry_id: str) -> str:
    """Field of an outbox entry in its partition's ``failures`` hash (failed calls so far)."""
    return OUTBOX.failure_field(entry_id)


@dataclass
class Outcome:
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
    def of_sent(cls, item: Item, message_id: str) -> Outcome:
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
    def of_failed(cls, item: Item, error: str, *, dead_letter: bool = False) -> Outcome:
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
    def of_suppressed(cls, item: Item, opt_out: suppression.OptOut) -> Outcome:
        return cls(
            item.partition,
            item.entry_id,
            item.fields,
            item.request,
            suppressed=opt_out,
            calls=item.calls,
        )


class Recorder:
    """Writes outcomes (see the module docstring).

    Args:
        store: the gateway's Redis.
        counters: where ``failed``, ``suppressed`` and ``dead_lettered`` are counted.
        ttl_ms: lifetime of message records and timelines.
        timeline_max: length bound of a conversation's timeline.
    """

    def __init__(
        self, store: Store, counters: SenderCounters, *, ttl_ms: int, timeline_max: int
    ) -> None:
        self.store = store
        self.counters = counters
        self.ttl_ms = ttl_ms
        self.timeline_max = timeline_max

    async def record(
        self, outcomes: Sequence[Outcome], gone: Mapping[int, Sequence[str]] | None = None
    ) -> None:
        """Write ``outcomes`` and acknowledge their entries, and those of ``gone`` (by
        partition: entries deleted while pending, nothing to record)."""
        batches: dict[int, Batch] = {}
        acks: dict[int, list[str]] = {p: list(ids) for p, ids in (gone or {}).items()}
        dead: list[Outcome] = []
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
            batch.xack(OUTBOX.stream(keys), OUTBOX.group, ids)
            batch.hdel(keys.failures(), OUTBOX.failure_fields(ids))
        if dead:
            await self._with_redis_retries(lambda: self._dead_letter(dead))
        await self._commit_all(list(batches.values()))
        for outcome in outcomes:
            if outcome.suppressed is not None:
                self.counters.suppressed += 1
            elif not outcome.sent and outcome.request is not None:
                self.counters.failed += 1
        self.counters.dead_lettered += len(dead)

    def _record_sent(
        self, batch: Batch, keys: PartitionKeys, request: OutboundRequest, outcome: Outcome
    ) -> None:
        records.mark_sent(
            batch,
            keys,
            request.gw_id,
            outcome.message_id,
            ttl_ms=self.ttl_ms,
            attempts=max(1, outcome.calls),
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

    async def _dead_letter(self, dead: Sequence[Outcome]) -> None:
        await write_letters(
            self.store.redis,
            OUTBOX,
            [
                Letter(
                    outcome.partition,
                    outcome.entry_id,
                    outcome.fields,
                    outcome.error[:1000],
                    outcome.deliveries,
                    {"gw_id": outcome.request.gw_id if outcome.request else None},
                )
                for outcome in dead
            ],
        )

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
                log.warning("recording a batch failed; retrying", batches=len(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            batches = failed

    @staticmethod
    async def _with_redis_retries(step: Callable[[], Awaitable[None]]) -> None:
        delay = 0.05
        while True:
            try:
                await step()
                return
            except ResponseError:
                raise
            except RedisError as exc:
                log.warning("redis write failed; retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

"""Durable ingress: a provider event becomes an inbox stream entry exactly once.

A webhook (or, later, the polling loop) hands every parsed :class:`InboundMessage` or
:class:`DeliveryReceipt` to :class:`Ingress`. A Lua script sets each event's dedupe marker
(``SET seen NX PX ttl``) and, only if the marker was new, appends the event to its
partition's inbox stream, so "dedupe then enqueue" is a single atomic step: a crash can
never leave a marker without its entry (which would lose the event) or an entry without its
marker (which would let a redelivery through twice). The markers and the inbox share the
partition's hash tag, so the script is valid on Redis Cluster.

Group commit: the webhooks that arrive while a round trip is under way share the next one,
and their events go as one script call per partition (in arrival order within it), so a
busy gateway pays one round trip per group and one script call per partition in it, not one
per event.

:func:`route` decides where an event goes. Partitions follow the *handset* number, never
our own number, because receipts do not always carry our number and replies pushed to a
``callback_url`` omit it when the original message used the shared pool: routing by the
handset keeps every copy of an event in one partition, where its dedupe marker lives.

Redis errors propagate unchanged; the webhook answers 503 so the provider retries.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from bot.sinch.models import DeliveryReceipt, InboundMessage
from bot.storage.events import GW_CONVERSATION, InboxEvent
from bot.storage.keys import PartitionKeys, conversation_key, handset_of, partition_of
from bot.storage.store import Store, text

__all__ = ["Admission", "Event", "Ingress", "event_kind", "route"]

Event = InboundMessage | DeliveryReceipt

UNKNOWN_PREFIX = "unknown"
"""Conversation prefix of a receipt that names no handset: ``unknown:<message_id>``."""

# KEYS[1] = the partition's inbox stream, KEYS[1 + i] = event i's dedupe marker; ARGV[1] =
# marker TTL (ms), then for each event the count n of its entry's fields and values, then
# those n. Returns, per event in order, its new entry id, or false for a known event.
_ACCEPT = """
local out = {}
local at = 2
for i = 2, #KEYS do
  local n = tonumber(ARGV[at])
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1]) then
    out[i - 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, at + 1, at + n))
  else
    out[i - 1] = false
  end
  at = at + n + 1
end
return out
"""


def route(event: Event, partitions: int) -> tuple[str, int]:
    """The conversation an event belongs to and the partition that holds it.

    * inbound message: the conversation of the message it replies to (echoed ``gw_conv``
      of the same handset), else ``conversation_key(destination_number, source_number)``;
      partition of the handset (``source_number``);
    * receipt echoing our ``gw_conv`` metadata: that conversation, partition of its handset;
    * other receipts: ``conversation_key(sender, recipient)``, partition of the recipient;
    * a receipt with neither a recipient nor ``gw_conv``: ``unknown:<message_id>``,
      partition of the key's last part (the message id, or its end after a ``:``).

    In every case the partition is ``partition_of(handset_of(conversation), partitions)``.
    """
    if isinstance(event, InboundMessage):
        handset = event.source_number
        echoed = event.metadata.get(GW_CONVERSATION)
        # A reply echoes the metadata of the message it answers: keep it in that message's
        # conversation (a send from the shared pool is answered "to" a pool number).
        if echoed and handset_of(echoed) == handset:
            conversation = echoed
        else:
            conversation = conversation_key(event.destination_number, handset)
    else:
        echoed = event.metadata.get(GW_CONVERSATION)
        if echoed:
            conversation = echoed
            handset = handset_of(echoed)
        elif event.recipient:
            handset = event.recipient
            conversation = conversation_key(event.sender, handset)
        else:
            conversation = f"{UNKNOWN_PREFIX}:{event.message_id}"
            # Whatever the id holds (even ":"), the partition follows the key's last part.
            handset = handset_of(conversation)
    return conversation, partition_of(handset, partitions)


def event_kind(event: Event) -> str:
    """``message``, ``opt_out`` or ``receipt`` (for logs and metrics)."""
    return "receipt" if isinstance(event, DeliveryReceipt) else event.kind


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Ingress.admit` did with one event."""

    conversation: str
    partition: int
    entry_id: str | None
    """The new inbox entry id; ``None`` when the event was a duplicate."""

    @property
    def stored(self) -> bool:
        """True when the event was new and is now durable in its partition's inbox."""
        return self.entry_id is not None


_GROUP_MAX = 256
"""Largest group of webhook events sharing one Redis round trip."""


class Ingress:
    """Dedupe-and-enqueue of provider events into the partitioned inbox streams.

    Args:
        store: the gateway's Redis.
        partitions: the partition count (fixed for the life of the data).
        dedupe_ttl: seconds an event id is remembered; longer than the provider's retry
            window, so any redelivery is recognised.
    """

    def __init__(self, store: Store, partitions: int, dedupe_ttl: float) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if dedupe_ttl <= 0:
            raise ValueError("dedupe_ttl must be positive")
        self.store = store
        self.partitions = partitions
        self.dedupe_ttl = dedupe_ttl
        self._ttl_ms = max(1, round(dedupe_ttl * 1000))
        self._script: Any = store.redis.register_script(_ACCEPT)
        self.counts: Counter[tuple[str, str]] = Counter()
        """Events admitted by (:func:`event_kind`, ``accepted`` or ``duplicate``), for
        metrics."""
        self._pending: list[tuple[Event, asyncio.Future[Admission]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def route(self, event: Event) -> tuple[str, int]:
        """:func:`route` with this ingress's partition count."""
        return route(event, self.partitions)

    async def admit(self, event: Event) -> Admission:
        """Store ``event`` unless it was seen before (one atomic script call per event) and
        return once it is durable.

        Group commit: events admitted while a round trip is under way wait for the next one
        and share it (a pipeline of script calls), so under load the webhooks cost one
        Redis round trip per group instead of one each; a lone event leaves at once.
        Raises the Redis client's errors (connection, timeout, loading) unchanged.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Admission] = loop.create_future()
        self._pending.append((event, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="ingress-group-commit")
        return await future

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:_GROUP_MAX], self._pending[_GROUP_MAX:]
            try:
                admissions = await self.admit_many([event for event, _ in group])
            except asyncio.CancelledError:
                for _, future in group + self._pending:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), admission in zip(group, admissions, strict=True):
                if not future.done():
                    future.set_result(admission)

    async def accept(self, event: Event) -> bool:
        """True when ``event`` is now stored; False when it is a duplicate (already stored)."""
        return (await self.admit(event)).stored

    async def admit_many(self, events: Sequence[Event]) -> list[Admission]:
        """:meth:`admit` for several events in one round trip: a pipeline of one script call
        per partition (not a transaction across partitions; within one, its events are
        deduped and enqueued atomically, in order).

        Events are applied in order, so a duplicate within ``events`` is stored once.
        """
        if not events:
            return []
        now = time.time()
        routes = [self.route(event) for event in events]
        # partition → (its events' indices, KEYS, ARGV) of its one script call
        calls: dict[int, tuple[list[int], list[str], list[str]]] = {}
        for index, (event, (conversation, partition)) in enumerate(
            zip(events, routes, strict=True)
        ):
            call = calls.get(partition)
            if call is None:
                keys = PartitionKeys(partition)
                call = calls[partition] = ([], [keys.inbox], [str(self._ttl_ms)])
            indices, keys_list, args = call
            indices.append(index)
            keys_list.append(PartitionKeys(partition).seen(event.event_id))
            fields = InboxEvent(conversation, event, received_at=now).to_fields()
            args.append(str(2 * len(fields)))
            for name, value in fields.items():
                args.append(name)
                args.append(value)
        redis = self.store.redis
        results: list[Any] = [None] * len(events)
        todo = list(calls)
        for _attempt in range(2):
            pipe = redis.pipeline(transaction=False)
            for partition in todo:
                _indices, keys_list, args = calls[partition]
                pipe.evalsha(self._script.sha, len(keys_list), *keys_list, *args)
            replies = await pipe.execute(raise_on_error=False)
            missing = []
            for partition, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(partition)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    for index, result in zip(calls[partition][0], reply, strict=True):
                        results[index] = result
            if not missing:
                break
            # The server lost its script cache (a restart, SCRIPT FLUSH): those calls did
            # not run at all, so loading the script and sending them again is safe.
            self._script.sha = text(await redis.script_load(_ACCEPT))
            todo = missing
        else:
            raise NoScriptError("the ingress script could not be loaded")
        admissions = [
            Admission(conversation, partition, text(result) if result else None)
            for (conversation, partition), result in zip(routes, results, strict=True)
        ]
        for event, admission in zip(events, admissions, strict=True):
            self.counts[event_kind(event), "accepted" if admission.stored else "duplicate"] += 1
        return admissions

    async def accept_many(self, events: Sequence[Event]) -> list[bool]:
        """:meth:`accept` for several events in one round trip; one bool per event."""
        return [admission.stored for admission in await self.admit_many(events)]

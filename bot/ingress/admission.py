"""Durable ingress: a provider event becomes an inbox stream entry exactly once.

A webhook (or, later, the polling loop) hands every parsed :class:`InboundMessage` or
:class:`DeliveryReceipt` to :class:`Ingress`. A Lua script sets each event's dedupe marker
(``SET sb:{pN}:ev:<digest> 1 NX PX ttl``, :meth:`PartitionKeys.seen`) and, only if the
marker was new, appends the event to its partition's inbox stream, so "dedupe then enqueue"
is a single atomic step: a crash can never leave a marker without its entry (which would
lose the event) or an entry without its marker (which would let a redelivery through
twice). The markers and the inbox share the partition's hash tag, so the script is valid on
Redis Cluster.

Markers of earlier versions (``sb:{pN}:seen:<event id>``, :meth:`PartitionKeys.seen_legacy`)
still count: an event whose old marker exists is a duplicate (and gets no new marker), so a
redelivery of an event admitted before an upgrade is refused for the rest of its TTL.

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

from redis.exceptions import AskError, NoScriptError, TryAgainError

from bot.sinch.models import DeliveryReceipt, InboundMessage
from bot.storage.connection import ClusterUnavailable, NotReplicated, node_key, one_connection
from bot.storage.events import GW_CONVERSATION, InboxEvent
from bot.storage.keys import PartitionKeys, conversation_key, handset_of, partition_of
from bot.storage.store import Store, text

__all__ = ["Admission", "Event", "Ingress", "event_kind", "route"]

Event = InboundMessage | DeliveryReceipt

UNKNOWN_PREFIX = "unknown"
"""Conversation prefix of a receipt that names no handset: ``unknown:<message_id>``."""

# KEYS[1] = the partition's inbox stream, KEYS[2i] = event i's dedupe marker, KEYS[2i + 1]
# its marker as earlier versions named it (never written: an event it marks is known);
# ARGV[1] = marker TTL (ms), then for each event the count n of its entry's fields and
# values, then those n. Returns, per event in order, its new entry id, or false for a known
# event.
_ACCEPT = """
local out = {}
local at = 2
for i = 2, #KEYS, 2 do
  local n = tonumber(ARGV[at])
  if redis.call('EXISTS', KEYS[i + 1]) == 0
      and redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1]) then
    out[i / 2] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, at + 1, at + n))
  else
    out[i / 2] = false
  end
  at = at + n + 1
end
return out
"""

# The same for SINCHBOT_REDIS_WAIT_REPLICAS, where a known event also touches its marker
# (PEXPIRE to the time it has left): a write, so it moves this connection's replication
# offset past the first copy's writes (made on another connection, perhaps answered 503
# for want of a replica), and the WAIT after it covers them before the copy is answered
# "duplicate".
_ACCEPT_DURABLE = """
local out = {}
local at = 2
for i = 2, #KEYS, 2 do
  local n = tonumber(ARGV[at])
  local marker = KEYS[i]
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then marker = KEYS[i + 1] end
  if marker == KEYS[i] and redis.call('SET', marker, '1', 'NX', 'PX', ARGV[1]) then
    out[i / 2] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, at + 1, at + n))
  else
    out[i / 2] = false
    local left = redis.call('PTTL', marker)
    if left > 0 then redis.call('PEXPIRE', marker, left) end
  end
  at = at + n + 1
end
return out
"""

_DURABLE_ROUNDS = 5
"""Rounds of a durable group whose calls were redirected (a slot moving, a failover seen
late) or found no script, before its webhooks answer 503."""

_Calls = dict[int, tuple[list[int], list[str], list[str]]]
"""partition → (its events' indices, KEYS, ARGV) of its one script call."""


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
        wait_replicas: ``SINCHBOT_REDIS_WAIT_REPLICAS``: above 0, an event is admitted (its
            webhook answered 2xx) only once that many replicas of its master acknowledged
            it (``WAIT``), so a failover cannot lose it; else
            :class:`~bot.storage.connection.NotReplicated` is raised (503).
        wait_timeout: seconds that ``WAIT`` may take (``SINCHBOT_REDIS_WAIT_TIMEOUT``).
    """

    def __init__(
        self,
        store: Store,
        partitions: int,
        dedupe_ttl: float,
        *,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if dedupe_ttl <= 0:
            raise ValueError("dedupe_ttl must be positive")
        if wait_replicas < 0 or not wait_timeout > 0:
            raise ValueError("wait_replicas must be 0 or more, wait_timeout positive")
        self.store = store
        self.partitions = partitions
        self.dedupe_ttl = dedupe_ttl
        self.wait_replicas = wait_replicas
        self._wait_ms = max(1, round(wait_timeout * 1000))
        self._ttl_ms = max(1, round(dedupe_ttl * 1000))
        self._source = _ACCEPT_DURABLE if wait_replicas else _ACCEPT
        self._script: Any = store.redis.register_script(self._source)
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
        calls: _Calls = {}
        for index, (event, (conversation, partition)) in enumerate(
            zip(events, routes, strict=True)
        ):
            keys = PartitionKeys(partition)
            call = calls.get(partition)
            if call is None:
                call = calls[partition] = ([], [keys.inbox], [str(self._ttl_ms)])
            indices, keys_list, args = call
            indices.append(index)
            keys_list.append(keys.seen(event.event_id))
            keys_list.append(keys.seen_legacy(event.event_id))
            fields = InboxEvent(conversation, event, received_at=now).to_fields()
            args.append(str(2 * len(fields)))
            for name, value in fields.items():
                args.append(name)
                args.append(value)
        if self.wait_replicas:
            results = await self._run_durable(calls, len(events))
        else:
            results = await self._run(calls, len(events))
        admissions = [
            Admission(conversation, partition, text(result) if result else None)
            for (conversation, partition), result in zip(routes, results, strict=True)
        ]
        for event, admission in zip(events, admissions, strict=True):
            self.counts[event_kind(event), "accepted" if admission.stored else "duplicate"] += 1
        return admissions

    async def _run(self, calls: _Calls, count: int) -> list[Any]:
        """The script calls in one pipeline (again for those that found no script)."""
        redis = self.store.redis
        results: list[Any] = [None] * count
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
            self._script.sha = text(await redis.script_load(self._source))
            todo = missing
        else:
            raise NoScriptError("the ingress script could not be loaded")
        return results

    async def _run_durable(self, calls: _Calls, count: int) -> list[Any]:
        """The script calls grouped by master, each group sent on one connection and
        followed there by ``WAIT`` :attr:`wait_replicas` (a ``WAIT`` waits for the writes
        sent before it on its own connection). A call that was redirected (``MOVED``,
        ``ASK``, ``TRYAGAIN``) or found no script did not run: it goes in the next round.

        Raises:
            NotReplicated: a group's ``WAIT`` counted fewer replicas in time.
        """
        redis = self.store.redis
        results: list[Any] = [None] * count
        todo = list(calls)
        for attempt in range(_DURABLE_ROUNDS):
            groups: dict[str, list[int]] = {}
            for partition in todo:
                node = await node_key(redis, calls[partition][1][0])
                groups.setdefault(node, []).append(partition)
            replies = await asyncio.gather(
                *(
                    one_connection(
                        redis,
                        calls[group[0]][1][0],
                        [
                            ("EVALSHA", self._script.sha, len(keys), *keys, *args)
                            for keys, args in (calls[p][1:] for p in group)
                        ]
                        + [("WAIT", self.wait_replicas, self._wait_ms)],
                    )
                    for group in groups.values()
                )
            )
            todo, reload = [], False
            for group, group_replies in zip(groups.values(), replies, strict=True):
                *answers, acked = group_replies
                for partition, reply in zip(group, answers, strict=True):
                    if isinstance(reply, NoScriptError):
                        reload = True
                        todo.append(partition)
                    elif isinstance(reply, AskError | TryAgainError):  # MOVED is an ASK
                        todo.append(partition)
                    elif isinstance(reply, Exception):
                        raise reply
                    elif isinstance(acked, Exception):
                        raise acked
                    elif int(acked) < self.wait_replicas:
                        raise NotReplicated(
                            f"{acked} of {self.wait_replicas} replicas acknowledged the "
                            f"webhook's write in {self._wait_ms} ms"
                        )
                    else:
                        for index, result in zip(calls[partition][0], reply, strict=True):
                            results[index] = result
            if not todo:
                return results
            if reload:
                self._script.sha = text(await redis.script_load(self._source))
            else:
                await asyncio.sleep(0.02 * (attempt + 1))  # a slot on its way
        raise ClusterUnavailable("Redis Cluster unavailable: the webhook's slot kept moving")

    async def accept_many(self, events: Sequence[Event]) -> list[bool]:
        """:meth:`accept` for several events in one round trip; one bool per event."""
        return [admission.stored for admission in await self.admit_many(events)]

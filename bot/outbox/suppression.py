"""The suppression list: handsets that opted out get nothing but compliance messages.

A handset that texts STOP (or whose opt-out the provider reports, or that an operator opts
out) is *suppressed*: its entry sits in its partition's hash
:attr:`~bot.storage.keys.PartitionKeys.optout` (handset → :class:`OptOut` as JSON), in the
same hash slot as everything else of its conversations. Suppression is per handset, across
all of our numbers.

- Writes are operations added to a :class:`~bot.storage.store.Batch` (:func:`suppress`,
  :func:`unsuppress`), so a handler's opt-out commits atomically with the event that asked
  for it; each also records ``optout`` / ``optin`` on the conversation's timeline (the
  audit trail; an ``optout`` entry says whether the opt-out is confirmed and by whom:
  :data:`ConfirmedBy`). :func:`suppress_numbers` and :func:`unsuppress_number` do the same outside
  a handler (the management API).
- Reads: :func:`lookup` (one number, seeing the writes still pending in a handler's batch:
  a STOP and a START in one inbox batch must see each other), :func:`is_suppressed`,
  :func:`suppressed_among` (one ``HMGET``) and :func:`screen` (one pipelined ``HMGET`` per
  partition, for the sender).
- Enforcement is the sender's: before a batch goes on the wire it screens the destinations
  and records every message to a suppressed handset as final with status
  :data:`SUPPRESSED` (:func:`mark_suppressed`) instead of sending it, unless the message's
  origin is ``compliance`` (the one opt-out confirmation, opt-in confirmations, HELP).
  Checking there, and not when a message is queued, also stops what was queued before the
  opt-out arrived.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bot.receipts import records, timeline
from bot.storage.connection import RedisClient
from bot.storage.events import OutboundRequest
from bot.storage.keys import PartitionKeys, conversation_key, handset_of, partition_of
from bot.storage.store import RANK_ERROR, Batch, Store, text

__all__ = [
    "COMPLIANCE_ORIGIN",
    "SUPPRESSED",
    "ConfirmedBy",
    "OptOut",
    "Via",
    "conversations_of",
    "is_suppressed",
    "lookup",
    "mark_suppressed",
    "screen",
    "suppress",
    "suppress_numbers",
    "suppressed_among",
    "unsuppress",
    "unsuppress_number",
]

SUPPRESSED = "suppressed"
"""Final status of the record of a message not sent because its recipient opted out."""
COMPLIANCE_ORIGIN = "compliance"
"""The origin of messages sent even to a suppressed handset (confirmations, HELP)."""

Via = Literal["keyword", "provider", "api"]
"""How an opt-out or opt-in arrived: the handset's keyword, the provider's opt-out
notification, or an operator (management API)."""

ConfirmedBy = Literal["gateway", "provider"]
"""Who sent the handset its opt-out confirmation: our compliance handler (origin
``compliance``), or the provider, which blacklists the number and confirms by itself."""


def _confirmer(value: object) -> ConfirmedBy | None:
    """A stored ``confirmed_by`` read back (anything else: ``None``)."""
    if value == "gateway":
        return "gateway"
    if value == "provider":
        return "provider"
    return None


@dataclass(frozen=True)
class OptOut:
    """One handset's suppression entry."""

    at: str
    """When it was (last) suppressed, ISO 8601 UTC."""
    via: str
    """:data:`Via`, or ``unknown`` for an entry that could not be read."""
    word: str | None = None
    """The keyword the handset sent, when there was one."""
    conversation: str | None = None
    """The conversation it arrived in, when there was one."""
    confirmed: bool = False
    """The handset's opt-out confirmation went out (a repeated STOP gets no second one)."""
    confirmed_by: ConfirmedBy | None = None
    """Who sent it (:data:`ConfirmedBy`); ``None`` while unconfirmed, and for entries
    written before this was recorded."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> OptOut:
        """Decode an entry. An unreadable one still counts as an opt-out (``via``
        ``unknown``): when in doubt, do not send."""
        try:
            value = json.loads(text(raw))
            if not isinstance(value, dict):
                raise ValueError("not an object")
            return cls(
                at=str(value.get("at", "")),
                via=str(value.get("via", "unknown")),
                word=value.get("word"),
                conversation=value.get("conversation"),
                confirmed=bool(value.get("confirmed", False)),
                confirmed_by=_confirmer(value.get("confirmed_by")),
            )
        except ValueError:
            return cls(at="", via="unknown")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- batch writes


def _audit(
    batch: Batch,
    keys: PartitionKeys,
    conversation: str,
    kind: str,
    data: dict[str, Any],
    *,
    timeline_max: int,
    ttl_ms: int,
) -> None:
    timeline.append(batch, keys, conversation, kind, data, maxlen=timeline_max, ttl_ms=ttl_ms)


def suppress(
    batch: Batch,
    keys: PartitionKeys,
    number: str,
    *,
    via: Via,
    timeline_max: int,
    ttl_ms: int,
    word: str | None = None,
    conversation: str | None = None,
    confirmed: bool = False,
    confirmed_by: ConfirmedBy | None = None,
) -> OptOut:
    """Suppress ``number`` (in ``keys``'s partition: ``partition_of(number)``) and record
    ``optout`` on ``conversation``'s timeline (default: the shared pool's conversation with
    ``number``), with ``confirmed`` and ``confirmed_by``. Suppressing again rewrites the
    entry; pass on ``confirmed`` and ``confirmed_by`` from the previous one when no
    confirmation goes out this time. Returns the entry."""
    entry = OptOut(_now(), via, word, conversation, confirmed, confirmed_by)
    batch.hset(keys.optout, {number: entry.to_json()})
    _audit(
        batch,
        keys,
        conversation or conversation_key(None, number),
        "optout",
        _optout_data(entry),
        timeline_max=timeline_max,
        ttl_ms=ttl_ms,
    )
    return entry


def _optout_data(entry: OptOut) -> dict[str, Any]:
    """An ``optout`` timeline entry's data."""
    return {
        "via": entry.via,
        "word": entry.word,
        "confirmed": entry.confirmed,
        "confirmed_by": entry.confirmed_by,
    }


def unsuppress(
    batch: Batch,
    keys: PartitionKeys,
    number: str,
    *,
    via: Via,
    timeline_max: int,
    ttl_ms: int,
    word: str | None = None,
    conversation: str | None = None,
) -> None:
    """Opt ``number`` back in and record ``optin`` on ``conversation``'s timeline (default:
    the shared pool's conversation with ``number``)."""
    batch.hdel(keys.optout, [number])
    _audit(
        batch,
        keys,
        conversation or conversation_key(None, number),
        "optin",
        {"via": via, "word": word},
        timeline_max=timeline_max,
        ttl_ms=ttl_ms,
    )


def mark_suppressed(
    batch: Batch,
    keys: PartitionKeys,
    request: OutboundRequest,
    opt_out: OptOut,
    *,
    timeline_max: int,
    ttl_ms: int,
) -> str:
    """Record that ``request`` was not sent because its recipient opted out: the record's
    final status :data:`SUPPRESSED` (with the highest rank, so nothing moves it) and a
    ``suppressed`` timeline entry. Returns the reason given."""
    reason = f"the recipient opted out ({opt_out.via}"
    reason += f" {opt_out.word})" if opt_out.word else ")"
    records.update(
        batch,
        keys,
        request.gw_id,
        {"status": SUPPRESSED, "error": reason, "suppressed_at": f"{time.time():.3f}"},
        rank=RANK_ERROR,
        ttl_ms=ttl_ms,
    )
    timeline.append(
        batch,
        keys,
        request.conversation,
        SUPPRESSED,
        {"gw_id": request.gw_id, "reason": reason, "origin": request.origin},
        maxlen=timeline_max,
        ttl_ms=ttl_ms,
    )
    return reason


# --------------------------------------------------------------------------- reads


def _pending(batch: Batch, keys: PartitionKeys, number: str) -> tuple[bool, OptOut | None]:
    """What ``batch`` (not yet committed) does to ``number``'s entry, its last write
    winning: ``(False, None)`` when it does not touch it."""
    key = keys.optout
    if key not in batch.keys:
        return False, None
    index = batch.keys.index(key) + 1  # operations name their keys by 1-based index
    touched, entry = False, None
    for op in batch.ops:
        if len(op) < 3 or op[1] != index:
            continue
        if op[0] == "hset":
            flat = op[2]
            for name, value in zip(flat[::2], flat[1::2], strict=True):
                if name == number:
                    touched, entry = True, OptOut.from_json(value)
        elif op[0] == "hdel" and number in op[2]:
            touched, entry = True, None
    return touched, entry


async def lookup(
    redis: RedisClient, keys: PartitionKeys, number: str, *, batch: Batch | None = None
) -> OptOut | None:
    """``number``'s entry, or ``None`` when it is not suppressed. With ``batch`` (a
    handler's, not yet committed), the batch's own suppression writes count first."""
    if batch is not None:
        touched, entry = _pending(batch, keys, number)
        if touched:
            return entry
    raw: Any = await redis.hget(keys.optout, number)
    return None if raw is None else OptOut.from_json(raw)


async def is_suppressed(redis: RedisClient, partitions: int, number: str) -> bool:
    """Whether ``number`` opted out (committed state)."""
    keys = PartitionKeys(partition_of(number, partitions))
    return bool(await redis.hexists(keys.optout, number))


async def suppressed_among(
    redis: RedisClient, keys: PartitionKeys, numbers: Iterable[str]
) -> set[str]:
    """Which of ``numbers`` (all in ``keys``'s partition) opted out: one ``HMGET``."""
    wanted = list(dict.fromkeys(numbers))
    if not wanted:
        return set()
    values: list[Any] = await redis.hmget(keys.optout, wanted)
    return {number for number, value in zip(wanted, values, strict=True) if value is not None}


async def screen(
    redis: RedisClient, wanted: Mapping[int, Collection[str]]
) -> dict[int, dict[str, OptOut]]:
    """The suppressed numbers among ``wanted`` (partition → numbers in it), with their
    entries: one ``HMGET`` per partition, pipelined into one round trip."""
    asked = [(p, list(dict.fromkeys(numbers))) for p, numbers in wanted.items() if numbers]
    if not asked:
        return {}
    pipe = redis.pipeline(transaction=False)
    for partition, numbers in asked:
        pipe.hmget(PartitionKeys(partition).optout, numbers)
    replies = await pipe.execute()
    found: dict[int, dict[str, OptOut]] = {}
    for (partition, numbers), values in zip(asked, replies, strict=True):
        hits = {
            number: OptOut.from_json(value)
            for number, value in zip(numbers, values, strict=True)
            if value is not None
        }
        if hits:
            found[partition] = hits
    return found


async def conversations_of(
    redis: RedisClient, keys: PartitionKeys, numbers: Collection[str]
) -> dict[str, list[str]]:
    """The known conversations of each handset in ``numbers`` (all in ``keys``'s partition),
    from the partition's activity index, oldest activity first. One scan of the index:
    for rare operations, not the message path."""
    wanted = set(numbers)
    found: dict[str, list[tuple[float, str]]] = {}
    async for member, score in redis.zscan_iter(keys.conversations):
        conversation = text(member)
        handset = handset_of(conversation)
        if handset in wanted:
            found.setdefault(handset, []).append((float(score), conversation))
    return {number: [c for _, c in sorted(found[number])] for number in found}


# --------------------------------------------------------------------------- outside a handler


async def suppress_numbers(
    store: Store,
    partitions: int,
    numbers: Sequence[str],
    *,
    timeline_max: int,
    ttl_ms: int,
    via: Via = "api",
    word: str | None = None,
) -> set[str]:
    """Suppress ``numbers`` outside a handler (an operator's opt-out): one atomic batch
    per partition, an ``optout`` entry on every known conversation of each number (the
    shared pool's when there is none). An entry's ``confirmed`` and ``confirmed_by`` are
    kept. Returns the numbers that were not suppressed before."""
    by_partition: dict[int, list[str]] = {}
    for number in dict.fromkeys(numbers):
        by_partition.setdefault(partition_of(number, partitions), []).append(number)
    redis = store.redis
    existing = await screen(redis, by_partition)
    fresh: set[str] = set()
    batches: list[Batch] = []
    for partition, wanted in by_partition.items():
        keys = PartitionKeys(partition)
        before = existing.get(partition, {})
        known = await conversations_of(redis, keys, wanted)
        batch = Batch()
        for number in wanted:
            previous = before.get(number)
            if previous is None:
                fresh.add(number)
            listed = known.get(number, [])
            entry = suppress(
                batch,
                keys,
                number,
                via=via,
                word=word,
                conversation=listed[0] if listed else None,
                confirmed=previous.confirmed if previous else False,
                confirmed_by=previous.confirmed_by if previous else None,
                timeline_max=timeline_max,
                ttl_ms=ttl_ms,
            )
            for conversation in listed[1:]:
                _audit(
                    batch,
                    keys,
                    conversation,
                    "optout",
                    _optout_data(entry),
                    timeline_max=timeline_max,
                    ttl_ms=ttl_ms,
                )
        batches.append(batch)
    await asyncio.gather(*(batch.commit(store) for batch in batches))
    return fresh


async def unsuppress_number(
    store: Store,
    partitions: int,
    number: str,
    *,
    timeline_max: int,
    ttl_ms: int,
    via: Via = "api",
) -> bool:
    """Opt ``number`` back in outside a handler (an operator's decision), with an ``optin``
    entry on every known conversation of it. Returns whether it was suppressed (nothing is
    written when it was not). The provider's blacklist is the caller's business
    (``SinchClient.blacklist_remove``)."""
    keys = PartitionKeys(partition_of(number, partitions))
    redis = store.redis
    if not await redis.hexists(keys.optout, number):
        return False
    known = await conversations_of(redis, keys, [number])
    listed = known.get(number, [])
    batch = Batch()
    unsuppress(
        batch,
        keys,
        number,
        via=via,
        conversation=listed[0] if listed else None,
        timeline_max=timeline_max,
        ttl_ms=ttl_ms,
    )
    for conversation in listed[1:]:
        _audit(
            batch,
            keys,
            conversation,
            "optin",
            {"via": via, "word": None},
            timeline_max=timeline_max,
            ttl_ms=ttl_ms,
        )
    await batch.commit(store)
    return True

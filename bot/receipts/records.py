"""Records of outbound messages: what was asked, what the provider said, where it is now.

A record lives at ``sb:{pN}:msg:<gw_id>`` in the conversation's partition, created when the
message is queued and updated when it is sent and as receipts arrive (monotonically, see
:data:`bot.storage.store.RANK_ENROUTE` and friends). The provider's ``message_id`` maps back
to our id (:func:`find`).

**Shape.** A record is one string: a JSON object of short names (:data:`SHORT`), every value
a string, written by the batch script's ``rec`` operation (:meth:`Batch.record`). It leaves
out what its key or its other fields already say: ``gw_id`` (the key), ``to`` (the
conversation's handset, unless the message went elsewhere), ``segments`` and ``encoding``
(counted again from the text, unless the text was cut to :data:`TEXT_MAX`). Read back
(:func:`read`, :func:`read_many`), it is the same ``dict`` of long names and string values
the API always showed. Earlier versions wrote a hash of long names: such records are read
as they are, and written in their own shape, until they expire. A hash was ~500 B for a
short text, and became a hashtable (~1.1 KB and more) once any value passed the server's
``hash-max-ziplist-value`` (64 B: most texts); the string is ~330 B for the same record
(docs/operations.md, Sizing).

**Provider ids.** ``message_id → gw_id`` is a field of the partition's hash of the day the
message was sent, ``sb:{pN}:mids:<day>`` (days since the epoch, UTC), which expires
``ttl`` after that day's end: one key a day per partition instead of one per message, and
each mapping kept at least as long as its record. A provider id that is a UUID (they all
are) is the field as the base64url of its 16 bytes (:func:`provider_field`: 22 characters
instead of 36); day hashes of the previous version, named by the id as it is, and earlier
versions' keys (``sb:{pN}:mid:<message_id>``) are read too.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from redis.exceptions import ResponseError

from bot.core import fastjson
from bot.core.sms import segments
from bot.sinch.models import DeliveryReceipt, DeliveryStatus
from bot.storage.connection import RedisClient
from bot.storage.events import OutboundRequest
from bot.storage.keys import DAY_MS, PartitionKeys, handset_of
from bot.storage.store import (
    RANK_DELIVERED,
    RANK_ENROUTE,
    RANK_ERROR,
    RANK_SENT,
    RANK_SUBMITTED,
    Batch,
    text,
    text_map,
)

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"

TEXT_MAX: Final = 500
"""Characters of a message's text kept in its record."""

SHORT: Final[Mapping[str, str]] = {
    "status": "s",
    "rank": "r",
    "conversation": "c",
    "to": "to",
    "channel": "ch",
    "origin": "o",
    "text": "x",
    "segments": "sg",
    "encoding": "en",
    "queued_at": "q",
    "message_id": "m",
    "sent_at": "t",
    "attempts": "a",
    "status_code": "sc",
    "status_meaning": "sm",
    "status_at": "st",
    "billing_units": "b",
    "error": "e",
    "failed_at": "f",
    "deferred_until": "du",
    "deferred_reason": "dr",
    "released_at": "ra",
    "suppressed_at": "su",
}
"""A record's field names (as the API shows them) → their names in the stored JSON. A name
not listed is stored as it is."""

LONG: Final[Mapping[str, str]] = {short: long for long, short in SHORT.items()}
"""The stored names → the field names."""

_ORDER: Final = ("gw_id", *SHORT)
"""The fields in the order a record is shown (others after them, as stored)."""

_RANKS = {
    DeliveryStatus.ENROUTE: RANK_ENROUTE,
    DeliveryStatus.SUBMITTED: RANK_SUBMITTED,
    DeliveryStatus.DELIVERED: RANK_DELIVERED,
    DeliveryStatus.EXPIRED: RANK_ERROR,
    DeliveryStatus.REJECTED: RANK_ERROR,
    DeliveryStatus.FAILED: RANK_ERROR,
}


def receipt_rank(status: DeliveryStatus | str) -> int:
    """Progress rank of a delivery status (0 for statuses we do not know)."""
    return _RANKS.get(status, 0) if isinstance(status, DeliveryStatus) else 0


def pack(fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` under their stored names (:data:`SHORT`)."""
    return {SHORT.get(name, name): value for name, value in fields.items()}


def unpack(gw_id: str, stored: Mapping[str, str]) -> dict[str, str]:
    """A stored record (packed or a hash of an earlier version) as the API shows it: long
    names, string values, ``gw_id``, and ``to``, ``segments`` and ``encoding`` when the
    stored record leaves them to its other fields."""
    fields = {LONG.get(name, name): value for name, value in stored.items()}
    fields.setdefault("gw_id", gw_id)
    if "to" not in fields and "conversation" in fields:
        fields["to"] = handset_of(fields["conversation"])
    if "segments" not in fields and "text" in fields:
        info = segments(fields["text"])
        fields["segments"] = str(info.segments)
        fields.setdefault("encoding", str(info.encoding))
    ordered = {name: fields.pop(name) for name in _ORDER if name in fields}
    ordered.update(fields)
    return ordered


def fields_of(request: OutboundRequest, **extra: str) -> dict[str, str]:
    """The fields of a newly queued message's record, ``extra`` last (long names)."""
    fields = {
        "gw_id": request.gw_id,
        "status": QUEUED,
        "rank": "0",
        "conversation": request.conversation,
        "to": request.destination,
        "channel": request.channel,
        "origin": request.origin,
        "text": request.text[:TEXT_MAX],
    }
    info = segments(request.text)
    fields["segments"] = str(info.segments)
    fields["encoding"] = str(info.encoding)
    fields["queued_at"] = f"{request.created_at:.3f}"
    fields.update(extra)
    return fields


def _stored(fields: Mapping[str, str]) -> dict[str, str]:
    """What a new record stores of ``fields``: without what :func:`unpack` gets back."""
    kept = dict(fields)
    kept.pop("gw_id", None)
    if kept.get("to") == handset_of(kept.get("conversation", "")):
        del kept["to"]
    if "segments" in kept:
        info = segments(kept.get("text", ""))
        if (kept["segments"], kept.get("encoding")) == (str(info.segments), str(info.encoding)):
            del kept["segments"]
            kept.pop("encoding", None)
    return pack(kept)


def create(
    batch: Batch, keys: PartitionKeys, request: OutboundRequest, *, ttl_ms: int, **extra: str
) -> None:
    """The record of a newly queued message (``extra``: fields to add or override, long
    names, e.g. a deferred send's status)."""
    batch.set(
        keys.message(request.gw_id),
        fastjson.dumps(_stored(fields_of(request, **extra))),
        ttl_ms=ttl_ms,
    )


def update(
    batch: Batch,
    keys: PartitionKeys,
    gw_id: str,
    fields: Mapping[str, str],
    *,
    rank: int = -1,
    ttl_ms: int = 0,
) -> None:
    """Write ``fields`` (long names, string values) into a record, whichever its shape:
    always with ``rank`` -1, else only when ``rank`` is above the record's (a monotonic
    merge, the rank then becoming ``rank``)."""
    batch.record(keys.message(gw_id), rank, fields, pack(fields), ttl_ms)


def mark_sent(
    batch: Batch,
    keys: PartitionKeys,
    gw_id: str,
    message_id: str,
    *,
    ttl_ms: int,
    attempts: int = 1,
    now: float | None = None,
) -> None:
    """The provider accepted the message and gave it ``message_id`` (empty when it gave
    none: no mapping then). The status becomes ``sent`` only if no receipt moved it further
    already (the receipts of a message sent twice can arrive before the second copy is
    recorded)."""
    at = time.time() if now is None else now
    fields = {"sent_at": f"{at:.3f}", "attempts": str(attempts)}
    if message_id:
        fields = {"message_id": message_id, **fields}
    update(batch, keys, gw_id, fields, ttl_ms=ttl_ms)
    update(batch, keys, gw_id, {"status": SENT}, rank=RANK_SENT, ttl_ms=ttl_ms)
    if message_id:
        map_provider_id(batch, keys, message_id, gw_id, ttl_ms=ttl_ms, now=at)


_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def provider_field(message_id: str) -> str:
    """The field naming the provider's ``message_id`` in a provider ids' day hash: a UUID in
    its canonical form (lower case, dashed: the provider's ids) as the base64url of its 16
    bytes, 22 characters instead of 36; any other id as it is. Hashes written before this
    release name every id as it is (:func:`find_gw_ids` looks for both)."""
    if not _UUID.fullmatch(message_id):
        return message_id
    raw = bytes.fromhex(message_id.replace("-", ""))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def map_provider_id(
    batch: Batch,
    keys: PartitionKeys,
    message_id: str,
    gw_id: str,
    *,
    ttl_ms: int,
    now: float | None = None,
) -> None:
    """Map the provider's ``message_id`` to our id in the partition's hash of the day,
    which expires ``ttl_ms`` after the day ends."""
    now_ms = round((time.time() if now is None else now) * 1000)
    day = now_ms // DAY_MS
    batch.hset(
        keys.provider_ids(day),
        {provider_field(message_id): gw_id},
        ttl_ms=(day + 1) * DAY_MS - now_ms + ttl_ms,
    )


def mark_failed(batch: Batch, keys: PartitionKeys, gw_id: str, error: str, *, ttl_ms: int) -> None:
    """The message cannot be sent (the provider rejected it, or it was never valid)."""
    update(
        batch,
        keys,
        gw_id,
        {"status": FAILED, "error": error[:500], "failed_at": f"{time.time():.3f}"},
        rank=RANK_ERROR,
        ttl_ms=ttl_ms,
    )


def merge_receipt(
    batch: Batch, keys: PartitionKeys, gw_id: str, receipt: DeliveryReceipt, *, ttl_ms: int
) -> None:
    """Merge a delivery report into the record: the status only moves forward."""
    rank = receipt_rank(receipt.status)
    if rank == 0:
        return
    fields: dict[str, str] = {
        "status": str(receipt.status),
        "status_code": "" if receipt.status_code is None else str(receipt.status_code),
        "status_meaning": receipt.status_meaning or "",
        "status_at": f"{time.time():.3f}",
    }
    if receipt.billing_units is not None:
        fields["billing_units"] = str(receipt.billing_units)
    update(batch, keys, gw_id, fields, rank=rank, ttl_ms=ttl_ms)


def _decode(raw: Any) -> dict[str, str]:
    try:
        found = fastjson.loads(raw)
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in found.items()}


async def read_many(
    redis: RedisClient, wanted: Sequence[tuple[PartitionKeys, str]]
) -> list[dict[str, str] | None]:
    """The records of ``(partition keys, gw_id)`` pairs, in order (``None`` where there is
    none): one round trip, and one more for records of an earlier version (hashes)."""
    if not wanted:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for keys, gw_id in wanted:
            pipe.get(keys.message(gw_id))
        raws = await pipe.execute(raise_on_error=False)
    found: list[dict[str, str] | None] = [None] * len(wanted)
    hashes: list[int] = []
    for index, raw in enumerate(raws):
        if isinstance(raw, ResponseError) and "WRONGTYPE" in str(raw):
            hashes.append(index)
        elif isinstance(raw, Exception):
            raise raw
        elif raw is not None:
            found[index] = unpack(wanted[index][1], _decode(raw))
    if hashes:
        async with redis.pipeline(transaction=False) as pipe:
            for index in hashes:
                keys, gw_id = wanted[index]
                pipe.hgetall(keys.message(gw_id))
            for index, raw in zip(hashes, await pipe.execute(), strict=True):
                stored = text_map(raw)
                found[index] = unpack(wanted[index][1], stored) if stored else None
    return found


async def read(redis: RedisClient, keys: PartitionKeys, gw_id: str) -> dict[str, str] | None:
    """The record, or ``None``."""
    return (await read_many(redis, [(keys, gw_id)]))[0]


async def find_gw_id(
    redis: RedisClient,
    keys: PartitionKeys,
    message_id: str,
    *,
    ttl_ms: int,
    now: float | None = None,
) -> str | None:
    """Our id of the message the provider calls ``message_id`` in this partition (it was
    sent less than ``ttl_ms`` ago), or ``None``."""
    return (await find_gw_ids(redis, [keys], message_id, ttl_ms=ttl_ms, now=now))[0]


async def find_gw_ids(
    redis: RedisClient,
    partitions: Sequence[PartitionKeys],
    message_id: str,
    *,
    ttl_ms: int,
    now: float | None = None,
) -> list[str | None]:
    """:func:`find_gw_id` in each of ``partitions`` (one round trip): the id's field
    (:func:`provider_field`) in each day hash, the id as it is too where that differs (day
    hashes of an earlier version), then the key an earlier version wrote."""
    today = round((time.time() if now is None else now) * 1000) // DAY_MS
    days = [today - back for back in range(ttl_ms // DAY_MS + 2)]
    names = list(dict.fromkeys((provider_field(message_id), message_id)))
    async with redis.pipeline(transaction=False) as pipe:
        for keys in partitions:
            for day in days:
                for name in names:
                    pipe.hget(keys.provider_ids(day), name)
            pipe.get(keys.provider_id(message_id))
        replies = await pipe.execute()
    per = len(days) * len(names) + 1
    result: list[str | None] = []
    for start in range(0, len(replies), per):
        hit = next((r for r in replies[start : start + per] if r is not None), None)
        result.append(None if hit is None else text(hit))
    return result

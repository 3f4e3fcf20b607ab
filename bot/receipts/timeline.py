"""Each conversation's timeline: inbound messages, outbound messages, receipts and state
changes, newest last, bounded in length and age.

Writes are operations added to a :class:`~bot.storage.store.Batch`, so a timeline entry is
committed together with the change it records.

**Why a list.** The timeline is a Redis list of JSON entries (``sb:{pN}:tlog:<conversation>``:
``RPUSH``, ``LTRIM`` to ``SINCHBOT_TIMELINE_MAX``, ``PEXPIRE`` ``SINCHBOT_TIMELINE_TTL``), one
entry ``[id, kind, at, data]`` each. It used to be a stream, and most conversations are idle
ones with a few entries: a stream's first entry allocates a whole node (about 4 KB on Redis
6.2), a small list only what its entries take, so an idle conversation's one exchange (three
entries) costs about 0.9 KB instead of 4.3 KB (docs/benchmarks.md). Nothing the API or the
inspector show changed: the entries are read back as ``{"id", "kind", "at", "data"}``, the
``id`` still ``<milliseconds>-<sequence>`` (unique in its timeline, no longer a stream id);
nothing used a stream's own features (consumer groups, ranges by id). A timeline written as
a stream by an earlier version (``sb:{pN}:tl:<conversation>``) is read too, its entries
first, until it expires.

**Compact entries.** An entry is stored as ``[n, kind, ms, data]``: ``n`` the sequence part of
its id and ``ms`` its time (the id is ``<ms>-<n>``, ``at`` is ``ms / 1000``); the kinds every
exchange writes (:data:`SCHEMAS`: ``inbound``, ``outbound``, ``sent``, ``receipt``) by their
number, their data, when it has exactly the schema's fields in its order, as the list of its
values, and an ``outbound`` entry's ``to`` as ``0`` when it is the conversation's handset.
Read back, an entry is exactly what was appended. One exchange's three entries went from
~540 to ~330 bytes (a 640-byte allocation to 384). Entries of the ``[id, kind, at, data]``
form earlier versions wrote are read as they are.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any, Final

from bot.core import fastjson
from bot.storage.connection import RedisClient
from bot.storage.keys import PartitionKeys, handset_of
from bot.storage.store import Batch, text, text_map

_sequence = itertools.count()
"""Entry ids: ``<ms>-<n>``, ``n`` counting the entries this process wrote (with the ms, unique
in a timeline: one conversation is written by one partition holder at a time)."""


SCHEMAS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        "inbound",
        ("reply_id", "kind", "channel", "text", "in_reply_to", "message_id", "received_at"),
    ),
    ("outbound", ("gw_id", "to", "text", "origin")),
    ("sent", ("gw_id", "message_id", "segments")),
    ("receipt", ("gw_id", "message_id", "status", "status_code", "status_meaning")),
)
"""The kinds stored by number (their index) and, for data of exactly these fields in this
order, their data as the list of its values. Stored entries depend on it: never change or
reorder a listed kind, add new ones at the end."""

_NUMBERS: Final = {kind: number for number, (kind, _fields) in enumerate(SCHEMAS)}


def _packed(conversation: str, kind: str, data: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(kind, data)`` as stored."""
    number = _NUMBERS.get(kind)
    if number is None:
        return kind, data
    fields = SCHEMAS[number][1]
    if tuple(data) != fields:
        return number, data
    values = list(data.values())
    if kind == "outbound":
        if values[1] == 0:
            return number, data  # 0 stands for the handset
        if values[1] == handset_of(conversation):
            values[1] = 0
    return number, values


def _unpacked(conversation: str, kind: Any, data: Any) -> tuple[str, Any]:
    """``(kind, data)`` as appended."""
    if not isinstance(kind, int):
        return kind, data
    name, fields = SCHEMAS[kind]
    if not isinstance(data, list) or len(data) != len(fields):
        return name, data
    if name == "outbound" and data[1] == 0:
        data[1] = handset_of(conversation)
    return name, dict(zip(fields, data, strict=True))


def append(
    batch: Batch,
    keys: PartitionKeys,
    conversation: str,
    kind: str,
    data: Mapping[str, Any],
    *,
    maxlen: int,
    ttl_ms: int,
    at: float | None = None,
) -> None:
    """Record ``kind`` (``inbound``, ``outbound``, ``sent``, ``receipt``, ``state``,
    ``failed``...) on the conversation's timeline, and mark the conversation active."""
    ms = round((time.time() if at is None else at) * 1000)
    stored_kind, stored_data = _packed(conversation, kind, data)
    entry = [next(_sequence), stored_kind, ms, stored_data]
    batch.rpush(
        keys.timeline(conversation),
        [fastjson.dumps(entry, default=str)],
        maxlen=maxlen,
        ttl_ms=ttl_ms,
    )
    # Conversations whose timeline has expired leave the index too. (A batch writes one
    # RPUSH per timeline and one ZADD per conversation, however many entries it records.)
    batch.touch(keys.conversations, conversation, ms, prune_below=ms - ttl_ms)


def _entry(conversation: str, raw: bytes | str) -> dict[str, Any]:
    first, kind, at, data = fastjson.loads(raw)
    if isinstance(first, int):  # compact: [n, kind, ms, data]
        name, shown = _unpacked(conversation, kind, data)
        return {"id": f"{at}-{first}", "kind": name, "at": at / 1000, "data": shown}
    return {"id": first, "kind": kind, "at": float(at), "data": data}


def _stream_entry(entry_id: bytes | str, fields: Any) -> dict[str, Any]:
    f = text_map(fields)
    return {
        "id": text(entry_id),
        "kind": f.get("kind", ""),
        "at": float(f.get("at", "0")),
        "data": fastjson.loads(f.get("data", "{}")),
    }


async def read(
    redis: RedisClient, keys: PartitionKeys, conversation: str, *, limit: int = 200
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, oldest first: ``{"id", "kind", "at", "data"}``."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.timeline(conversation), -limit, -1)
        pipe.xrevrange(keys.timeline_stream(conversation), count=limit)
        listed, streamed = await pipe.execute()
    entries = [_stream_entry(i, f) for i, f in reversed(streamed or [])]
    entries.extend(_entry(conversation, raw) for raw in listed or [])
    return entries[-limit:]

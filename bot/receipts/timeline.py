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
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from bot.core import fastjson
from bot.storage.connection import RedisClient
from bot.storage.keys import PartitionKeys
from bot.storage.store import Batch, text, text_map

_sequence = itertools.count()
"""Entry ids: ``<ms>-<n>``, ``n`` counting the entries this process wrote (with the ms, unique
in a timeline: one conversation is written by one partition holder at a time)."""


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
    now = time.time() if at is None else at
    ms = round(now * 1000)
    entry = [f"{ms}-{next(_sequence)}", kind, round(now, 3), data]
    batch.rpush(
        keys.timeline(conversation),
        [fastjson.dumps(entry, default=str)],
        maxlen=maxlen,
        ttl_ms=ttl_ms,
    )
    # Conversations whose timeline has expired leave the index too. (A batch writes one
    # RPUSH per timeline and one ZADD per conversation, however many entries it records.)
    batch.touch(keys.conversations, conversation, ms, prune_below=ms - ttl_ms)


def _entry(raw: bytes | str) -> dict[str, Any]:
    entry_id, kind, at, data = fastjson.loads(raw)
    return {"id": entry_id, "kind": kind, "at": float(at), "data": data}


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
    entries.extend(_entry(raw) for raw in listed or [])
    return entries[-limit:]

"""Each conversation's timeline: inbound messages, outbound messages, receipts and state
changes, newest last, bounded in length and age.

Writes are operations added to a :class:`~bot.storage.store.Batch`, so a timeline entry is
committed together with the change it records.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bot.core import fastjson
from bot.storage.connection import RedisClient
from bot.storage.keys import PartitionKeys
from bot.storage.store import Batch, text, text_map


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
    batch.xadd(
        keys.timeline(conversation),
        {
            "kind": kind,
            "at": f"{now:.3f}",
            "data": fastjson.dumps(data, default=str),
        },
        maxlen=maxlen,
        ttl_ms=ttl_ms,
    )
    batch.zadd(keys.conversations, round(now * 1000), conversation)
    # Conversations whose timeline has expired leave the index too.
    batch.zprune(keys.conversations, round(now * 1000) - ttl_ms)


async def read(
    redis: RedisClient, keys: PartitionKeys, conversation: str, *, limit: int = 200
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, oldest first: ``{"id", "kind", "at", "data"}``."""
    entries: list[Any] = await redis.xrevrange(keys.timeline(conversation), count=limit) or []
    result = []
    for entry_id, fields in reversed(entries):
        f = text_map(fields)
        result.append(
            {
                "id": text(entry_id),
                "kind": f.get("kind", ""),
                "at": float(f.get("at", "0")),
                "data": fastjson.loads(f.get("data", "{}")),
            }
        )
    return result

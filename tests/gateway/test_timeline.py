"""The conversation timeline (bot/receipts/timeline.py): a list of JSON entries, trimmed to
its length, expiring with its TTL, read oldest first as the API shows it; a timeline an
earlier version wrote as a stream is still read (real Redis)."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from bot.receipts import timeline
from bot.storage.keys import PartitionKeys
from bot.storage.store import Batch, Store

KEYS = PartitionKeys(3)
CONV = "+61491570157:+61491570156"


async def write(redis: Redis, *entries: tuple[str, dict[str, object]], maxlen: int = 500) -> None:
    batch = Batch()
    for kind, data in entries:
        timeline.append(batch, KEYS, CONV, kind, data, maxlen=maxlen, ttl_ms=60_000)
    await batch.commit(Store(redis))


async def test_entries_are_read_back_oldest_first_with_their_ids(redis: Redis) -> None:
    await redis.flushall()
    await write(redis, ("inbound", {"text": "Grüße 😀"}), ("outbound", {"text": "hi", "n": 1}))
    await write(redis, ("sent", {"gw_id": "g1"}))
    entries = await timeline.read(redis, KEYS, CONV)
    assert [(e["kind"], e["data"]) for e in entries] == [
        ("inbound", {"text": "Grüße 😀"}),
        ("outbound", {"text": "hi", "n": 1}),
        ("sent", {"gw_id": "g1"}),
    ]
    assert len({e["id"] for e in entries}) == 3
    assert all(isinstance(e["at"], float) for e in entries)
    assert await redis.type(KEYS.timeline(CONV)) == b"list"
    assert 0 < await redis.pttl(KEYS.timeline(CONV)) <= 60_000
    assert await redis.zscore(KEYS.conversations, CONV) is not None
    assert [e["kind"] for e in await timeline.read(redis, KEYS, CONV, limit=2)] == [
        "outbound",
        "sent",
    ]


async def test_the_timeline_keeps_its_newest_entries(redis: Redis) -> None:
    await redis.flushall()
    await write(redis, *[("inbound", {"n": n}) for n in range(15)], maxlen=10)
    entries = await timeline.read(redis, KEYS, CONV)
    assert [e["data"]["n"] for e in entries] == list(range(5, 15))


async def test_a_timeline_written_as_a_stream_is_read_first(redis: Redis) -> None:
    await redis.flushall()
    old = KEYS.timeline_stream(CONV)
    await redis.xadd(old, {"kind": "inbound", "at": "1.500", "data": json.dumps({"text": "old"})})
    await write(redis, ("outbound", {"text": "new"}))
    entries = await timeline.read(redis, KEYS, CONV)
    assert [(e["kind"], e["data"]["text"]) for e in entries] == [
        ("inbound", "old"),
        ("outbound", "new"),
    ]
    assert entries[0]["at"] == 1.5
    assert [e["data"]["text"] for e in await timeline.read(redis, KEYS, CONV, limit=1)] == ["new"]


async def test_values_json_does_not_know_are_written_as_text(redis: Redis) -> None:
    await redis.flushall()
    await write(redis, ("state", {"at": KEYS}))  # any object: its str()
    [entry] = await timeline.read(redis, KEYS, CONV)
    assert entry["data"] == {"at": str(KEYS)}


async def test_a_batch_writes_each_timeline_and_index_entry_once(redis: Redis) -> None:
    await redis.flushall()
    other = "+61491570157:+61491570158"
    batch = Batch()
    for n in range(3):
        for conversation in (CONV, other):
            timeline.append(
                batch, KEYS, conversation, "inbound", {"n": n}, maxlen=2, ttl_ms=60_000, at=10.0 + n
            )
    assert [op[0] for op in batch.ops] == ["rpush", "touch", "rpush", "touch"]
    await batch.commit(Store(redis))
    for conversation in (CONV, other):
        entries = await timeline.read(redis, KEYS, conversation)
        assert [e["data"]["n"] for e in entries] == [1, 2]  # in order, trimmed to 2
        assert await redis.zscore(KEYS.conversations, conversation) == 12_000

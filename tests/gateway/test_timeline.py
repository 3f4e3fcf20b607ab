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


async def test_compact_entries_read_back_exactly_as_appended(redis: Redis) -> None:
    """The kinds of every exchange are stored by number with their data as a list of
    values (the handset as 0); read back, each entry is what was appended, whatever its
    fields; entries of the earlier ``[id, kind, at, data]`` form are read too."""
    await redis.flushall()
    handset = CONV.rsplit(":", 1)[1]
    appended: list[tuple[str, dict[str, object]]] = [
        (
            "inbound",
            {
                "reply_id": "r1",
                "kind": "message",
                "channel": "SMS",
                "text": "Grüße 😀",
                "in_reply_to": None,
                "message_id": None,
                "received_at": 1796419460.1895046,
            },
        ),
        ("outbound", {"gw_id": "g1", "to": handset, "text": "hi", "origin": "reply"}),
        ("outbound", {"gw_id": "g2", "to": "+61491570999", "text": "x", "origin": "api"}),
        ("outbound", {"gw_id": "g3", "to": 0, "text": "zero", "origin": "api"}),
        ("sent", {"gw_id": "g1", "message_id": "m1", "segments": 1}),
        ("sent", {"message_id": "m1", "gw_id": "g1", "segments": 1}),  # another order
        (
            "receipt",
            {
                "gw_id": "g1",
                "message_id": "m1",
                "status": "delivered",
                "status_code": 220,
                "status_meaning": None,
            },
        ),
        ("receipt", {"gw_id": None, "message_id": "m9", "status": "failed", "extra": [1]}),
        ("state", {"from": None, "to": "asked"}),
    ]
    await redis.rpush(
        KEYS.timeline(CONV), json.dumps(["1795710958015-7", "inbound", 1795710958.015, {"a": 1}])
    )
    await write(redis, *appended)
    entries = await timeline.read(redis, KEYS, CONV)
    assert entries[0] == {
        "id": "1795710958015-7",
        "kind": "inbound",
        "at": 1795710958.015,
        "data": {"a": 1},
    }
    assert [(e["kind"], e["data"]) for e in entries[1:]] == appended
    for entry in entries[1:]:
        assert entry["id"] == f"{round(entry['at'] * 1000)}-{entry['id'].split('-')[1]}"
    stored = await redis.lrange(KEYS.timeline(CONV), 1, 2)
    assert b'"to"' not in stored[1] and b"reply_id" not in stored[0]  # values only


async def test_one_exchange_takes_a_small_allocation(redis: Redis) -> None:
    """An idle conversation's three entries (inbound, outbound, sent) fit in one small
    list node: the list's MEMORY USAGE stays well under the ~720 B it was."""
    await redis.flushall()
    handset = CONV.rsplit(":", 1)[1]
    await write(
        redis,
        (
            "inbound",
            {
                "reply_id": "i-608-1796419460142761614",
                "kind": "message",
                "channel": "SMS",
                "text": "i608",
                "in_reply_to": None,
                "message_id": None,
                "received_at": 1796419460.1895046,
            },
        ),
        (
            "outbound",
            {
                "gw_id": "8658680ba638046d517477dd4e4e9344",
                "to": handset,
                "text": "Thanks, we got i608. Reply HELP for help.",
                "origin": "reply",
            },
        ),
        (
            "sent",
            {
                "gw_id": "8658680ba638046d517477dd4e4e9344",
                "message_id": "9083d2f0-2a7b-432e-980f-9e79b2c9dd61",
                "segments": 1,
            },
        ),
    )
    usage = await redis.memory_usage(KEYS.timeline(CONV), samples=0)
    assert usage is not None and usage < 560, usage

"""Queuing sends that come from outside a handler (API, CLI), against a real redis-server."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.outbox.queue import enqueue, queue_requests
from bot.receipts import records, timeline
from bot.sinch.models import OutboundMessage
from bot.storage.events import OutboundRequest, prepare_sms
from bot.storage.keys import PartitionKeys, conversation_key, partition_of
from bot.storage.store import Batch, Store
from tests.redis_fixtures import info_of_masters

pytestmark = pytest.mark.cluster  # on one server and on a Redis Cluster

P = 8
OURS = "+61491570157"


def request(i: int) -> OutboundRequest:
    number = f"+6149100{i:04d}"
    message = OutboundMessage(content=f"hello {i}", destination_number=number)
    return prepare_sms(message, conversation_key(OURS, number), origin="api")


async def script_calls(redis: Redis) -> int:
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for stats in await info_of_masters(redis, "commandstats")
        for name in ("evalsha", "eval")
    )


async def test_requests_are_queued_per_partition_in_one_batch_each(redis: Redis) -> None:
    store = Store(redis)
    await Batch().set("warm-up", "1").commit(store)  # load the script first
    requests = [request(i) for i in range(40)]
    by_partition = Counter(partition_of(r.destination, P) for r in requests)

    before = await script_calls(redis)
    await queue_requests(store, P, requests, ttl_ms=60_000, timeline_max=50)
    # Redis work per partition, not per message.
    assert await script_calls(redis) - before == len(by_partition)

    for partition, count in by_partition.items():
        entries: list[Any] = await redis.xrange(PartitionKeys(partition).outbox) or []
        assert len(entries) == count
        queued = [OutboundRequest.from_fields(i, f, partition) for i, f in entries]
        assert [q.gw_id for q in queued] == [
            r.gw_id for r in requests if partition_of(r.destination, P) == partition
        ]

    first = requests[0]
    keys = PartitionKeys(partition_of(first.destination, P))
    record = await records.read(redis, keys, first.gw_id)
    assert record is not None
    assert (record["status"], record["origin"], record["to"]) == (
        "queued",
        "api",
        first.destination,
    )
    (entry,) = await timeline.read(redis, keys, first.conversation)
    assert entry["kind"] == "outbound"
    assert entry["data"] == {
        "gw_id": first.gw_id,
        "to": first.destination,
        "text": "hello 0",
        "origin": "api",
    }
    assert await redis.zscore(keys.conversations, first.conversation) is not None
    assert await redis.pttl(keys.message(first.gw_id)) > 0


async def test_nothing_to_queue_writes_nothing(redis: Redis) -> None:
    await queue_requests(Store(redis), P, [], ttl_ms=60_000, timeline_max=50)
    assert await redis.dbsize() == 0


async def test_enqueue_adds_to_a_handlers_batch(redis: Redis) -> None:
    keys = PartitionKeys(1)
    batch = Batch()
    one = request(1)
    enqueue(batch, keys, one, ttl_ms=60_000)
    await batch.commit(Store(redis))
    assert await redis.xlen(keys.outbox) == 1
    record = await records.read(redis, keys, one.gw_id)
    assert record is not None
    assert record["status"] == "queued"

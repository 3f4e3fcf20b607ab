"""Handler context: replies, records and timeline entries commit in one batch (real Redis)."""

import pytest
from redis.asyncio import Redis

from bot.inbox.handling import EventContext, RecordingHandler, Session
from bot.receipts import records, timeline
from bot.sinch.models import parse_inbound, parse_receipt
from bot.storage.events import GW_ID, InboxEvent, OutboundRequest
from bot.storage.keys import PartitionKeys, conversation_key
from bot.storage.store import Batch, Store

pytestmark = pytest.mark.cluster  # on one server and on a Redis Cluster

H, OURS = "+61491570156", "+61491570157"
CONV = conversation_key(OURS, H)


async def test_reply_is_queued_recorded_and_on_the_timeline(redis: Redis) -> None:
    keys = PartitionKeys(3)
    inbound = parse_inbound(
        {"reply_id": "r1", "source_number": H, "destination_number": OURS, "content": "hi"}
    )
    ctx = EventContext(InboxEvent(CONV, inbound), keys, Batch(), Session(CONV))
    await RecordingHandler().handle(ctx)
    request = ctx.reply("Hello back")
    await ctx.batch.commit(Store(redis))

    assert request.body["source_number"] == OURS
    assert request.body["metadata"][GW_ID] == request.gw_id
    entries = await redis.xrange(keys.outbox)
    assert OutboundRequest.from_fields(*entries[0], partition=3).gw_id == request.gw_id
    record = await records.read(redis, keys, request.gw_id)
    assert record is not None
    assert (record["status"], record["to"], record["segments"], record["encoding"]) == (
        "queued",
        H,
        "1",
        "GSM-7",
    )
    kinds = [e["kind"] for e in await timeline.read(redis, keys, CONV)]
    assert kinds == ["inbound", "outbound"]
    assert await redis.zscore(keys.conversations, CONV) is not None


async def test_receipts_merge_into_the_record_monotonically(redis: Redis) -> None:
    keys = PartitionKeys(1)
    store = Store(redis)
    for status, code in [("delivered", "220"), ("enroute", "101"), ("submitted", "200")]:
        receipt = parse_receipt(
            {
                "delivery_report_id": status,
                "message_id": "m1",
                "status": status,
                "status_code": code,
                "metadata": {GW_ID: "g1"},
            }
        )
        ctx = EventContext(InboxEvent(CONV, receipt), keys, Batch(), Session(CONV))
        await RecordingHandler().handle(ctx)
        await ctx.batch.commit(store)
    record = await records.read(redis, keys, "g1")
    assert record is not None
    assert (record["status"], record["status_code"], record["status_meaning"]) == (
        "delivered",
        "220",
        "delivered",
    )
    assert [e["data"]["status"] for e in await timeline.read(redis, keys, CONV)] == [
        "delivered",
        "enroute",
        "submitted",
    ]


async def test_a_late_sent_record_never_moves_a_delivered_message_back(redis: Redis) -> None:
    """A message sent twice (a timeout, then a retry): the first copy's receipts arrive
    before the second copy's record. The record stays delivered, with the message id."""
    keys = PartitionKeys(2)
    store = Store(redis)
    receipt = parse_receipt(
        {
            "delivery_report_id": "d",
            "message_id": "m1",
            "status": "delivered",
            "status_code": "220",
            "metadata": {GW_ID: "g2"},
        }
    )
    ctx = EventContext(InboxEvent(CONV, receipt), keys, Batch(), Session(CONV))
    await RecordingHandler().handle(ctx)
    await ctx.batch.commit(store)
    batch = Batch()
    records.mark_sent(batch, keys, "g2", "m2", ttl_ms=60_000)
    await batch.commit(store)
    record = await records.read(redis, keys, "g2")
    assert record is not None
    assert (record["status"], record["message_id"]) == ("delivered", "m2")
    fresh = Batch()
    records.mark_sent(fresh, keys, "g3", "m3", ttl_ms=60_000)
    await fresh.commit(store)
    assert (await records.read(redis, keys, "g3") or {}).get("status") == "sent"

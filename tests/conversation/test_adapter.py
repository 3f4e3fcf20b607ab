"""The engine behind the gateway: GatewayEngineHandler over real EventContexts and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
import structlog
from redis.asyncio import Redis

from bot.conversation import (
    STATE_TIMEOUT_ID,
    AnswersPrompt,
    Context,
    Engine,
    Keyword,
    Router,
    State,
    States,
    TimerRef,
)
from bot.inbox.engine import GatewayEngineHandler
from bot.inbox.handling import EventContext, EventHandler, GatewayLimits, Session
from bot.inbox.worker import InboxConsumer
from bot.receipts import timeline
from bot.sinch.models import parse_inbound
from bot.storage.events import GW_ID, InboxEvent, OutboundRequest
from bot.storage.keys import PartitionKeys, conversation_key, partition_of, timer_member
from bot.storage.store import Batch, Store
from bot.streams.leases import WorkerRegistry

H, OURS = "+61491570156", "+61491570157"
CONV = conversation_key(OURS, H)


class Booking(States, name="adapter.booking"):
    asked = State(timeout=timedelta(hours=2))


def booking_router() -> Router:
    router = Router("booking")

    @router.message(Keyword("book"), state=None)
    async def book(ctx: Context) -> None:
        ctx.reply("Tue 10:00 is free. Reply Y to take it.", prompt="slot", metadata={"slot": "t10"})
        ctx.data["offered"] = "t10"
        ctx.goto(Booking.asked)

    @router.message(Keyword("Y"), AnswersPrompt("slot"), state=Booking.asked)
    async def take(ctx: Context, prompt: dict[str, str]) -> None:
        ctx.reply(f"Booked {prompt['slot']}.")
        ctx.end()

    return router


def message(text: str, metadata: dict[str, str] | None = None) -> InboxEvent:
    inbound = parse_inbound(
        {
            "reply_id": uuid.uuid4().hex,
            "source_number": H,
            "destination_number": OURS,
            "content": text,
            "metadata": metadata or {},
        }
    )
    return InboxEvent(CONV, inbound)


async def commit(ctx: EventContext, store: Store) -> None:
    """Commit the handler's batch as the inbox consumer does, with the session's versioned
    write."""
    if ctx.session.dirty:
        ctx.batch.write_versioned(
            ctx.keys.session(ctx.conversation),
            ctx.session.version,
            ctx.session.to_hash(),
            ttl_ms=ctx.limits.ttl_ms,
        )
    await ctx.batch.commit(store)


async def load(redis: Redis, keys: PartitionKeys) -> Session:
    return Session.from_hash(CONV, await redis.hgetall(keys.session(CONV)))


async def test_replies_reach_the_outbox_and_the_session_is_saved(redis: Redis) -> None:
    keys, store = PartitionKeys(3), Store(redis)
    handler = GatewayEngineHandler(Engine(booking_router()))
    ctx = EventContext(message("Book!"), keys, Batch(), Session(CONV))
    outcome = await handler.process(ctx)
    await commit(ctx, store)

    assert outcome.handled
    expiry = f"{STATE_TIMEOUT_ID}:booking"  # the booking plugin's flow's expiry
    assert [(ref.id, ref.name, ref.kind) for ref in outcome.scheduled] == [
        (expiry, Booking.asked.name, "timeout")
    ]  # left for the timer wiring
    entries = await redis.xrange(keys.outbox)
    assert len(entries) == 1
    request = OutboundRequest.from_fields(*entries[0], partition=3)
    assert request.text == "Tue 10:00 is free. Reply Y to take it."
    assert (request.destination, request.body["source_number"]) == (H, OURS)
    assert request.body["metadata"]["prompt"] == "slot"
    assert request.body["metadata"][GW_ID] == request.gw_id
    session = await load(redis, keys)
    assert (session.version, session.flows) == (
        1,
        {"booking": {"state": Booking.asked.name, "data": {"offered": "t10"}, "expiry": expiry}},
    )
    entries_on_timeline = await timeline.read(redis, keys, CONV)
    assert [e["kind"] for e in entries_on_timeline] == ["inbound", "outbound", "state"]
    assert entries_on_timeline[-1]["data"] == {
        "flow": "booking",
        "from": None,
        "to": Booking.asked.name,
    }

    # The handset answers the prompt; the provider echoes its metadata.
    ctx = EventContext(
        message("y", request.body["metadata"]), keys, Batch(), await load(redis, keys)
    )
    assert (await handler.process(ctx)).cancelled == (expiry,)
    await commit(ctx, store)
    session = await load(redis, keys)
    assert (session.version, session.flows) == (2, {})
    assert [
        OutboundRequest.from_fields(*e, partition=3).text for e in await redis.xrange(keys.outbox)
    ] == ["Tue 10:00 is free. Reply Y to take it.", "Booked t10."]
    kinds = [e["kind"] for e in await timeline.read(redis, keys, CONV)]
    assert kinds == ["inbound", "outbound", "state", "inbound", "outbound", "state"]


async def test_an_unhandled_event_is_only_recorded(redis: Redis) -> None:
    keys = PartitionKeys(1)
    handler = GatewayEngineHandler(Engine(booking_router()))
    ctx = EventContext(message("what?"), keys, Batch(), Session(CONV))
    with structlog.testing.capture_logs() as logs:
        await handler.handle(ctx)
    await commit(ctx, Store(redis))
    assert not ctx.session.dirty
    assert ctx.replies == []
    assert [e["kind"] for e in await timeline.read(redis, keys, CONV)] == ["inbound"]
    assert not [entry for entry in logs if entry["log_level"] == "warning"]


async def test_timers_are_stored_with_the_event_batch(redis: Redis) -> None:
    keys, store = PartitionKeys(2), Store(redis)
    handler = GatewayEngineHandler(Engine(booking_router()))
    ctx = EventContext(message("book"), keys, Batch(), Session(CONV))
    with structlog.testing.capture_logs() as logs:
        await handler.handle(ctx)
    await commit(ctx, store)
    assert not [entry for entry in logs if entry["log_level"] == "warning"]
    member = timer_member(CONV, f"{STATE_TIMEOUT_ID}:booking")
    assert await redis.zrange(keys.timers, 0, -1) == [member.encode()]
    stored = TimerRef.from_json(json.loads(await redis.hget(keys.timer_data, member) or b"{}"))
    assert (stored.kind, stored.name) == ("timeout", Booking.asked.name)

    # Leaving the state cancels the expiry in the same commit as the event.
    request = OutboundRequest.from_fields(*(await redis.xrange(keys.outbox))[0], partition=2)
    session = await load(redis, keys)
    ctx = EventContext(message("y", request.body["metadata"]), keys, Batch(), session)
    await handler.handle(ctx)
    await commit(ctx, store)
    assert await redis.zcard(keys.timers) == 0
    assert await redis.hlen(keys.timer_data) == 0


async def test_the_inbox_consumer_runs_the_engine(redis: Redis) -> None:
    """End to end through the gateway's consumer: both messages of a flow, in order."""
    partitions = 4
    keys = PartitionKeys(partition_of(H, partitions))
    handler: EventHandler = GatewayEngineHandler(Engine(booking_router()))
    registry = WorkerRegistry(redis, worker_id="w1", partitions=partitions, lease_ttl=1.0)
    consumer = InboxConsumer(
        Store(redis), registry, handler, limits=GatewayLimits(), max_deliveries=3, block_ms=100
    )
    await consumer.start()
    await registry.start()
    try:
        await redis.xadd(keys.inbox, message("BOOK").to_fields())

        async def state_is(expected: str | None, version: int) -> None:
            async with asyncio.timeout(10):
                while True:
                    session = await load(redis, keys)
                    state = session.flows.get("booking", {}).get("state")
                    if (state, session.version) == (expected, version):
                        return
                    await asyncio.sleep(0.02)

        await state_is(Booking.asked.name, 1)
        first = OutboundRequest.from_fields(*(await redis.xrange(keys.outbox))[0], partition=0)
        await redis.xadd(keys.inbox, message("Y", first.body["metadata"]).to_fields())
        await state_is(None, 2)
        texts = [fields[b"x"].decode() for _, fields in await redis.xrange(keys.outbox)]
        assert texts == ["Tue 10:00 is free. Reply Y to take it.", "Booked t10."]
    finally:
        await registry.stop()
        await consumer.stop()


def test_the_adapter_is_still_importable_from_bot_conversation_with_a_warning() -> None:
    import bot.conversation
    from bot.inbox import engine

    with pytest.warns(DeprecationWarning, match="moved to bot.inbox.engine"):
        old = bot.conversation.GatewayEngineHandler  # type: ignore[attr-defined]
    assert old is engine.GatewayEngineHandler
    with pytest.raises(AttributeError):
        bot.conversation.NoSuchName  # type: ignore[attr-defined]  # noqa: B018

"""Durable conversation timers against a real Redis: scheduled with the event's batch, fired
by the TimerPump into the owning partition's inbox, handled by the real engine in order,
cancellable, surviving a restart, and never fired by a worker that does not own the
partition."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from bot.conversation import (
    Context,
    Engine,
    GatewayEngineHandler,
    Keyword,
    Router,
    State,
    States,
    TimerRef,
    timer_key,
)
from bot.inbox.handling import GatewayLimits, RecordingHandler
from bot.inbox.timers import TimerPump
from bot.inbox.worker import InboxConsumer
from bot.receipts import timeline
from bot.sinch.models import parse_inbound
from bot.storage.events import InboxEvent, OutboundRequest
from bot.storage.keys import (
    INBOX_GROUP,
    PartitionKeys,
    conversation_key,
    partition_of,
    timer_member,
)
from bot.storage.store import Store
from bot.streams.leases import WorkerRegistry

P = 4
OURS = "+61491570100"
H = "+61491570301"
CONV = conversation_key(OURS, H)
KEYS = PartitionKeys(partition_of(H, P))


class Quiz(States, name="test_timers.quiz"):
    asked = State(timeout=timedelta(seconds=0.3))


@dataclass
class Log:
    """What the handlers saw, in order: ``(kind, detail)``."""

    seen: list[tuple[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[Any]:
        return [detail for k, detail in self.seen if k == kind]


def build_router(log: Log, *, delay: float = 0.3) -> Router:
    router = Router("test_timers")

    @router.message(Keyword("remind"))
    async def remind(ctx: Context) -> None:
        log.seen.append(("message", "remind"))
        ctx.schedule("nudge", delay=delay, payload={"n": 1}, id="r1")

    @router.message(Keyword("stop"))
    async def stop(ctx: Context) -> None:
        log.seen.append(("message", "stop"))
        ctx.cancel("r1")
        ctx.schedule("marker", delay=delay + 0.2)

    @router.message(Keyword("quiz"))
    async def quiz(ctx: Context) -> None:
        log.seen.append(("message", "quiz"))
        ctx.reply("2 + 2?")
        ctx.goto(Quiz.asked)

    @router.message()
    async def other(ctx: Context) -> None:
        log.seen.append(("message", ctx.message.content if ctx.message else None))

    @router.timer("nudge")
    async def nudge(ctx: Context, payload: dict[str, int]) -> None:
        log.seen.append(("timer", payload))
        ctx.reply(f"nudge {payload['n']}")

    @router.timer("marker")
    async def marker(ctx: Context) -> None:
        log.seen.append(("marker", None))

    @router.timeout(Quiz.asked)
    async def too_late(ctx: Context) -> None:
        log.seen.append(("timeout", ctx.state))
        ctx.reply("Too late!")
        ctx.end()

    return router


@dataclass
class Node:
    registry: WorkerRegistry
    consumer: InboxConsumer
    pump: TimerPump


@asynccontextmanager
async def node(redis: Redis, log: Log, name: str, *, delay: float = 0.3) -> AsyncIterator[Node]:
    """One worker process: registry, inbox consumer running the engine, timer pump."""
    store = Store(redis)
    registry = WorkerRegistry(redis, worker_id=name, partitions=P, lease_ttl=1.0)
    consumer = InboxConsumer(
        store,
        registry,
        GatewayEngineHandler(Engine(build_router(log, delay=delay))),
        limits=GatewayLimits(),
        max_deliveries=3,
        block_ms=100,
        retry_delay=0.01,
    )
    pump = TimerPump(store, registry, poll=0.05)
    await registry.start()
    await consumer.start()
    await pump.start()
    try:
        yield Node(registry, consumer, pump)
    finally:
        await pump.stop()
        await consumer.stop()
        await registry.stop()


async def send(redis: Redis, text: str, handset: str = H) -> None:
    inbound = parse_inbound(
        {
            "reply_id": uuid.uuid4().hex,
            "source_number": handset,
            "destination_number": OURS,
            "content": text,
        }
    )
    keys = PartitionKeys(partition_of(handset, P))
    fields = InboxEvent(conversation_key(OURS, handset), inbound).to_fields()
    await redis.xadd(keys.inbox, fields)  # type: ignore[arg-type]


async def eventually(check: Callable[[], Awaitable[bool] | bool], limit: float = 10.0) -> None:
    """Wait until ``check()`` holds (``limit`` only guards against a hang)."""
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def xrange(redis: Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(stream))


async def outbox_texts(redis: Redis) -> list[str]:
    entries = await xrange(redis, KEYS.outbox)
    return [OutboundRequest.from_fields(i, f, KEYS.partition).text for i, f in entries]


async def inbox_pending(redis: Redis) -> int:
    return int((await redis.xpending(KEYS.inbox, INBOX_GROUP))["pending"])


# --------------------------------------------------------------------------- tests


def test_timer_inbox_event_round_trips() -> None:
    ref = TimerRef("r1", "nudge", datetime(2030, 1, 1, tzinfo=UTC), {"n": 1})
    event = InboxEvent(CONV, ref, received_at=12.5)
    fields = event.to_fields()
    assert fields["k"] == "timer" and event.kind == "timer"
    back = InboxEvent.from_fields("1-0", fields, KEYS.partition)
    assert (back.conversation, back.event, back.kind, back.entry_id) == (CONV, ref, "timer", "1-0")


@pytest.mark.cluster
async def test_a_scheduled_timer_fires_once_through_the_inbox_in_order(redis: Redis) -> None:
    log = Log()
    async with node(redis, log, "w1") as n:
        await send(redis, "remind")
        # Stored with the event's batch, in the owning partition.
        member = timer_member(CONV, timer_key("test_timers", "r1"))  # the plugin's own id
        await eventually(lambda: redis.hexists(KEYS.timer_data, member))
        assert await redis.zscore(KEYS.timers, member) is not None
        stored = json.loads(await redis.hget(KEYS.timer_data, member) or b"{}")
        assert (stored["name"], stored["payload"]) == ("nudge", {"n": 1})

        await eventually(lambda: bool(log.of("timer")))
        await send(redis, "after")
        await eventually(lambda: "after" in log.of("message"))
        await eventually(lambda: inbox_pending_zero(redis))

        assert log.seen == [("message", "remind"), ("timer", {"n": 1}), ("message", "after")]
        assert n.pump.fired == 1
        assert await redis.zcard(KEYS.timers) == 0
        assert await redis.hlen(KEYS.timer_data) == 0
        assert await outbox_texts(redis) == ["nudge 1"]
        entry_id, fields = (await xrange(redis, KEYS.outbox))[0]
        body = OutboundRequest.from_fields(entry_id, fields, KEYS.partition).body
        assert (body["destination_number"], body["source_number"]) == (H, OURS)
        kinds = [e["kind"] for e in await timeline.read(redis, KEYS, CONV)]
        assert kinds == ["inbound", "timer", "outbound", "inbound"]


async def inbox_pending_zero(redis: Redis) -> bool:
    return await inbox_pending(redis) == 0


@pytest.mark.cluster
async def test_a_cancelled_timer_never_fires(redis: Redis) -> None:
    log = Log()
    async with node(redis, log, "w1") as n:
        await send(redis, "remind")
        await send(redis, "stop")
        # The marker is due after the cancelled timer would have been: once it fired,
        # the cancelled one had every chance to.
        await eventually(lambda: bool(log.of("marker")))
        assert log.seen == [("message", "remind"), ("message", "stop"), ("marker", None)]
        assert n.pump.fired == 1
        assert await redis.zcard(KEYS.timers) == 0


async def test_a_state_timeout_runs_the_timeout_handler(redis: Redis) -> None:
    log = Log()
    async with node(redis, log, "w1"):
        await send(redis, "quiz")
        await eventually(lambda: bool(log.of("timeout")))
        await eventually(lambda: inbox_pending_zero(redis))
        assert log.seen == [("message", "quiz"), ("timeout", Quiz.asked.name)]
        assert await outbox_texts(redis) == ["2 + 2?", "Too late!"]
        session = await redis.hgetall(KEYS.session(CONV))
        assert session[b"state"] == b""


@pytest.mark.cluster
async def test_a_pending_timer_survives_a_restart(redis: Redis) -> None:
    first = Log()
    member = timer_member(CONV, timer_key("test_timers", "r1"))
    async with node(redis, first, "w1", delay=1.0):
        await send(redis, "remind")
        await eventually(lambda: redis.hexists(KEYS.timer_data, member))
    # Everything stopped before the timer was due (it is 1 s ahead and the stop drains
    # promptly): it waits in Redis.
    if not first.of("timer"):
        assert await redis.zcard(KEYS.timers) == 1

    second = Log()
    async with node(redis, second, "w2"):
        await eventually(lambda: bool(first.of("timer") or second.of("timer")))
        await eventually(lambda: inbox_pending_zero(redis))
    assert len(first.of("timer")) + len(second.of("timer")) == 1
    assert await outbox_texts(redis) == ["nudge 1"]


async def test_a_timer_of_a_partition_we_do_not_own_is_not_fired(redis: Redis) -> None:
    other = 0 if KEYS.partition != 0 else 1
    foreign = PartitionKeys(other)
    await redis.set(foreign.lease, "someone-else", px=60_000)
    ref = TimerRef("x", "nudge", datetime.now(UTC) - timedelta(seconds=1), {"n": 9})
    member = timer_member("foreign:+61491570999", "x")
    await redis.zadd(foreign.timers, {member: int(ref.at.timestamp() * 1000)})
    await redis.hset(foreign.timer_data, member, json.dumps(ref.to_json()))

    log = Log()
    async with node(redis, log, "w1") as n:
        assert other not in n.registry.owned and KEYS.partition in n.registry.owned
        await send(redis, "remind")  # a timer in a partition we own, as the control
        await eventually(lambda: bool(log.of("timer")))
        # The pump ticked over every owned partition since the control timer was due.
        assert await n.pump.tick() >= 0
    assert log.of("timer") == [{"n": 1}]
    assert await redis.zscore(foreign.timers, member) is not None
    assert await redis.hget(foreign.timer_data, member) is not None
    assert not await redis.exists(foreign.inbox)


@pytest.mark.cluster
async def test_the_pump_fires_nothing_once_the_lease_is_lost(redis: Redis) -> None:
    """The script checks the lease: a worker whose lease moved cannot fire the timers of
    that partition, even before its registry notices."""
    registry = WorkerRegistry(redis, worker_id="w1", partitions=P, lease_ttl=1.0)
    await registry.start()
    try:
        pump = TimerPump(Store(redis), registry, poll=0.05)
        assert KEYS.partition in registry.owned
        ref = TimerRef("y", "nudge", datetime.now(UTC) - timedelta(seconds=1))
        member = timer_member(CONV, "y")
        await redis.zadd(KEYS.timers, {member: int(ref.at.timestamp() * 1000)})
        await redis.hset(KEYS.timer_data, member, json.dumps(ref.to_json()))
        await redis.set(KEYS.lease, "thief", px=60_000)
        await pump.tick()
        assert pump.fired == 0
        assert await redis.zcard(KEYS.timers) == 1
        await redis.set(KEYS.lease, "w1", px=60_000)
        await pump.tick()
        assert pump.fired == 1
        entries = await xrange(redis, KEYS.inbox)
        assert len(entries) == 1
        event = InboxEvent.from_fields(*entries[0], KEYS.partition)
        assert (event.conversation, event.event) == (CONV, ref)
    finally:
        await registry.stop()


async def test_recording_handler_records_a_timer(redis: Redis) -> None:
    """The default handler tolerates timer events: they land on the timeline only."""
    registry = WorkerRegistry(redis, worker_id="w1", partitions=P, lease_ttl=1.0)
    store = Store(redis)
    consumer = InboxConsumer(
        store, registry, RecordingHandler(), limits=GatewayLimits(forward=True), max_deliveries=3
    )
    ref = TimerRef("z", "nudge", datetime.now(UTC), {"n": 2})
    await redis.xadd(KEYS.inbox, InboxEvent(CONV, ref).to_fields())  # type: ignore[arg-type]
    await registry.start()
    await consumer.start()
    try:
        await eventually(lambda: inbox_pending_zero_or_missing(redis))
        entries = await timeline.read(redis, KEYS, CONV)
        assert [(e["kind"], e["data"]["name"]) for e in entries] == [("timer", "nudge")]
        assert not await redis.exists(KEYS.forward)
    finally:
        await consumer.stop()
        await registry.stop()


async def inbox_pending_zero_or_missing(redis: Redis) -> bool:
    groups = await redis.xinfo_groups(KEYS.inbox)
    if not groups:
        return False
    info = groups[0]
    return bool(info["pending"] == 0 and info["last-delivered-id"] != b"0-0")


async def test_a_timer_cancelled_after_it_fired_is_not_handled(redis: Redis) -> None:
    """The exact interleaving: the pump moves a due timer into the inbox, but a message that
    cancels it sits ahead of it in the inbox. The message is handled first; the fired timer
    is then stale and must not run."""
    from bot.inbox.handling import EventContext, Session
    from bot.storage.store import Batch

    log = Log()
    handler = GatewayEngineHandler(Engine(build_router(log, delay=0.05)))
    store = Store(redis)

    async def handle(event: InboxEvent) -> None:
        raw = await redis.hgetall(KEYS.session(CONV))
        session = Session.from_hash(CONV, raw)
        ctx = EventContext(event, KEYS, Batch(), session)
        await handler.handle(ctx)
        if session.dirty:
            ctx.batch.write_versioned(KEYS.session(CONV), session.version, session.to_hash())
        await ctx.batch.commit(store)

    def message(text: str) -> InboxEvent:
        inbound = parse_inbound(
            {
                "reply_id": uuid.uuid4().hex,
                "source_number": H,
                "destination_number": OURS,
                "content": text,
            }
        )
        return InboxEvent(CONV, inbound)

    registry = WorkerRegistry(redis, worker_id="solo", partitions=P, lease_ttl=5.0)
    pump = TimerPump(store, registry, poll=0.05)
    await registry.start()
    try:
        await handle(message("remind"))  # schedules r1 in 50 ms
        await asyncio.sleep(0.1)
        await pump.tick()  # r1 is due: fired into the inbox
        fired = [e for e in await redis.xrange(KEYS.inbox) if e[1][b"k"] == b"timer"]
        assert len(fired) == 1
        await handle(message("stop"))  # arrived earlier: handled first, cancels r1
        entry_id, fields = fired[0]
        await handle(InboxEvent.from_fields(entry_id, fields, KEYS.partition))
    finally:
        await registry.stop()
    assert log.of("timer") == []  # the stale timer did not run
    assert log.of("message") == ["remind", "stop"]
    session = Session.from_hash(CONV, await redis.hgetall(KEYS.session(CONV)))
    assert timer_key("test_timers", "r1") not in session.timers
    assert "marker" not in session.timers  # the marker is pending under its own generated id
    assert len(session.timers) == 1

"""Deferred sends against a real Redis: quiet hours hold a non-reply send back in the
partition's deferred set (record ``deferred``, timeline ``deferred``) while a reply leaves
at once; the DeferredPump moves a due send into the outbox exactly once, only with the
lease, a bounded number per call; and end to end, an API send in quiet hours answers
``deferred`` and reaches the sandbox handset once released.

A deferred send is made due the way time is moved in every test: by writing a score (its
release time, ms) in the past."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.api.routes import ApiDeps, api_routes
from bot.app.gateway import GATEWAY, Gateway
from bot.inbox.handling import EventContext, GatewayLimits, Session
from bot.outbox.deferred import DEFERRED, RELEASE_LIMIT, DeferredPump
from bot.outbox.queue import queue_requests
from bot.outbox.quiet_hours import QuietHours
from bot.receipts import records, timeline
from bot.sandbox import Sandbox
from bot.sinch.models import OutboundMessage, parse_inbound
from bot.storage.events import InboxEvent, OutboundRequest, prepare_sms
from bot.storage.keys import PartitionKeys, conversation_key, partition_of
from bot.storage.redis_server import free_port
from bot.storage.store import Batch, Store
from bot.streams.leases import WorkerRegistry
from tests.gateway.procutil import eventually
from tests.gateway.test_app import AUTH, TOKEN, get_json, production

P = 4
OURS = "+61491570157"
H = "+61491570156"  # an Australian mobile
CONV = conversation_key(OURS, H)
KEYS = PartitionKeys(partition_of(H, P))
SYD = ZoneInfo("Australia/Sydney")
POLICY = QuietHours.from_config({"AU": "20:00-09:00", "timezones": {"AU": "Australia/Sydney"}})
NIGHT = datetime(2030, 1, 10, 23, 0, tzinfo=SYD)  # 23:00 in Sydney
RELEASE = datetime(2030, 1, 11, 9, 0, tzinfo=SYD)  # when the window ends
DAY = datetime(2030, 1, 10, 12, 0, tzinfo=SYD)


def request(text: str, origin: str, handset: str = H) -> OutboundRequest:
    message = OutboundMessage(content=text, destination_number=handset, source_number=OURS)
    return prepare_sms(message, conversation_key(OURS, handset), origin=origin)


def context(now: datetime, policy: QuietHours | None = POLICY) -> EventContext:
    inbound = parse_inbound(
        {"reply_id": "r1", "source_number": H, "destination_number": OURS, "content": "hi"}
    )
    limits = GatewayLimits(quiet_hours=policy, clock=lambda: now)
    return EventContext(InboxEvent(CONV, inbound), KEYS, Batch(), Session(CONV), limits=limits)


async def outbox(redis: Redis, keys: PartitionKeys = KEYS) -> list[OutboundRequest]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(keys.outbox))
    return [OutboundRequest.from_fields(i, f, keys.partition) for i, f in entries]


async def make_due(redis: Redis, gw_id: str, keys: PartitionKeys = KEYS) -> None:
    """Move a deferred send's release time into the past."""
    await redis.zadd(keys.deferred, {gw_id: int(time.time() * 1000) - 1000}, xx=True)


@asynccontextmanager
async def owner(redis: Redis, name: str = "w1") -> AsyncIterator[WorkerRegistry]:
    registry = WorkerRegistry(redis, worker_id=name, partitions=P, lease_ttl=5.0)
    await registry.start()
    try:
        assert KEYS.partition in registry.owned
        yield registry
    finally:
        await registry.stop()


# ----------------------------------------------------------------------------- enqueue


async def test_a_timer_send_at_night_is_deferred_and_a_reply_is_not(redis: Redis) -> None:
    ctx = context(NIGHT)
    nudge = request("Still there?", "timer")
    answer = request("Thanks!", "reply")
    ctx.queue(nudge)
    ctx.queue(answer)
    await ctx.batch.commit(Store(redis))

    # Only the reply is in the outbox; the nudge waits, scored with its release time.
    assert [r.gw_id for r in await outbox(redis)] == [answer.gw_id]
    score = await redis.zscore(KEYS.deferred, nudge.gw_id)
    assert score == RELEASE.timestamp() * 1000
    stored = json.loads(await redis.hget(KEYS.deferred_data, nudge.gw_id) or b"[]")
    assert dict(zip(stored[::2], stored[1::2], strict=True)) == nudge.to_fields()

    record = await records.read(redis, KEYS, nudge.gw_id)
    assert record is not None
    assert record["status"] == DEFERRED
    assert record["deferred_until"] == "2030-01-10T22:00:00Z"
    assert record["deferred_reason"] == "quiet hours AU 20:00-09:00"
    assert await redis.pttl(KEYS.message(nudge.gw_id)) > 0
    answered = await records.read(redis, KEYS, answer.gw_id)
    assert answered is not None and answered["status"] == records.QUEUED

    entries = await timeline.read(redis, KEYS, CONV)
    assert [e["kind"] for e in entries] == ["outbound", "deferred", "outbound"]
    assert entries[1]["data"] == {
        "gw_id": nudge.gw_id,
        "until": "2030-01-10T22:00:00Z",
        "reason": "quiet hours AU 20:00-09:00",
    }


async def test_outside_quiet_hours_or_without_a_policy_nothing_is_deferred(redis: Redis) -> None:
    day = context(DAY)
    day.queue(request("Reminder: tomorrow 10:00", "timer"))
    no_policy = context(NIGHT, policy=None)
    no_policy.queue(request("Reminder: tomorrow 10:00", "timer"))
    compliance = context(NIGHT)
    compliance.queue(request("You are unsubscribed.", "compliance"))
    for ctx in (day, no_policy, compliance):
        await ctx.batch.commit(Store(redis))
    assert len(await outbox(redis)) == 3
    assert not await redis.exists(KEYS.deferred, KEYS.deferred_data)


async def test_queue_requests_defers_per_recipient_and_says_until_when(redis: Redis) -> None:
    other = "+12125551235"  # no quiet hours for the US; another partition
    requests = [request("Sale!", "api"), request("Sale!", "api", other)]
    deferred = await queue_requests(
        Store(redis), P, requests, ttl_ms=60_000, timeline_max=50, quiet_hours=POLICY, now=NIGHT
    )
    assert list(deferred) == [requests[0].gw_id]
    assert deferred[requests[0].gw_id].until == RELEASE
    assert await outbox(redis) == []
    us_keys = PartitionKeys(partition_of(other, P))
    assert us_keys != KEYS
    assert [r.gw_id for r in await outbox(redis, us_keys)] == [requests[1].gw_id]
    kinds = [e["kind"] for e in await timeline.read(redis, KEYS, CONV)]
    assert kinds == ["outbound", "deferred"]
    # Without a policy, the old behaviour: everything queued, nothing reported.
    assert await queue_requests(Store(redis), P, requests[:1], ttl_ms=60_000, timeline_max=50) == {}


# ----------------------------------------------------------------------------- the pump


async def defer(redis: Redis, *texts: str) -> list[OutboundRequest]:
    ctx = context(NIGHT)
    queued = [request(text, "timer") for text in texts]
    for r in queued:
        ctx.queue(r)
    await ctx.batch.commit(Store(redis))
    return queued


@pytest.mark.cluster
async def test_the_pump_releases_a_due_send_into_the_outbox_exactly_once(redis: Redis) -> None:
    early, later = await defer(redis, "first", "second")
    async with owner(redis) as registry:
        pump = DeferredPump(Store(redis), registry, poll=0.05)
        await pump.tick()  # nothing is due yet (the release is in 2030)
        assert (pump.released, await outbox(redis)) == (0, [])

        await make_due(redis, early.gw_id)
        wait = await pump.tick()
        assert 0 < wait <= pump.poll
        await pump.tick()
        await pump.tick()
        assert pump.released == 1
        [released] = await outbox(redis)
        assert released.gw_id == early.gw_id
        assert released.body == early.body
        assert (released.text, released.origin) == ("first", "timer")
        assert await redis.zrange(KEYS.deferred, 0, -1) == [later.gw_id.encode()]
        assert not await redis.hexists(KEYS.deferred_data, early.gw_id)
        record = await records.read(redis, KEYS, early.gw_id)
        assert record is not None
        assert record["status"] == records.QUEUED
        assert float(record["released_at"]) > 0
        assert record["deferred_until"] == "2030-01-10T22:00:00Z"  # kept, for the record
        still = await records.read(redis, KEYS, later.gw_id)
        assert still is not None and still["status"] == DEFERRED


@pytest.mark.cluster
async def test_the_pump_releases_nothing_without_the_lease(redis: Redis) -> None:
    [nudge] = await defer(redis, "nudge")
    await make_due(redis, nudge.gw_id)
    async with owner(redis) as registry:
        pump = DeferredPump(Store(redis), registry, poll=0.05)
        await redis.set(KEYS.lease, "thief", px=60_000)
        await pump.tick()
        assert pump.released == 0
        assert await outbox(redis) == []
        assert await redis.zcard(KEYS.deferred) == 1
        await redis.set(KEYS.lease, "w1", px=60_000)
        await pump.tick()
        assert pump.released == 1
        assert [r.gw_id for r in await outbox(redis)] == [nudge.gw_id]


async def test_a_partition_we_do_not_own_is_left_alone(redis: Redis) -> None:
    other = PartitionKeys((KEYS.partition + 1) % P)
    await redis.set(other.lease, "someone-else", px=60_000)
    await redis.zadd(other.deferred, {"foreign": 1})
    await redis.hset(other.deferred_data, "foreign", json.dumps(["id", "foreign"]))
    [nudge] = await defer(redis, "nudge")
    await make_due(redis, nudge.gw_id)
    async with owner(redis) as registry:
        assert other.partition not in registry.owned
        pump = DeferredPump(Store(redis), registry, poll=0.05)
        await pump.tick()
    assert pump.released == 1
    assert await redis.zcard(other.deferred) == 1
    assert not await redis.exists(other.outbox)


async def test_one_call_releases_a_bounded_number(redis: Redis) -> None:
    total = RELEASE_LIMIT + 20
    ctx = context(NIGHT)
    for i in range(total):
        ctx.queue(request(f"campaign {i}", "api"))
    await ctx.batch.commit(Store(redis))
    past = int(time.time() * 1000) - 1000
    await redis.zadd(KEYS.deferred, dict.fromkeys(await redis.zrange(KEYS.deferred, 0, -1), past))
    async with owner(redis) as registry:
        pump = DeferredPump(Store(redis), registry, poll=0.05)
        assert await pump.tick() == 0.0  # more are due: tick again at once
        assert len(await outbox(redis)) == RELEASE_LIMIT
        await pump.tick()
    texts = [r.text for r in await outbox(redis)]
    assert len(texts) == total and set(texts) == {f"campaign {i}" for i in range(total)}
    assert not await redis.exists(KEYS.deferred, KEYS.deferred_data)


async def test_an_unreadable_entry_is_dropped_counted_and_marked_failed(redis: Redis) -> None:
    [nudge] = await defer(redis, "nudge")
    await redis.hset(KEYS.deferred_data, nudge.gw_id, "not json")
    await make_due(redis, nudge.gw_id)
    async with owner(redis) as registry:
        pump = DeferredPump(Store(redis), registry, poll=0.05)
        await pump.tick()
    assert (pump.released, pump.unreadable) == (0, 1)
    assert await outbox(redis) == []
    record = await records.read(redis, KEYS, nudge.gw_id)
    assert record is not None
    assert (record["status"], record["error"]) == (records.FAILED, "deferred entry unreadable")
    assert not await redis.exists(KEYS.deferred, KEYS.deferred_data)


async def test_the_running_pump_releases_when_due_and_stops_cleanly(redis: Redis) -> None:
    [nudge] = await defer(redis, "nudge")
    async with owner(redis) as registry:
        pump = DeferredPump(Store(redis), registry, poll=0.05)
        await pump.start()
        await pump.start()  # idempotent
        try:
            await make_due(redis, nudge.gw_id)
            pump.wake()
            await eventually(lambda: pump.released == 1, what="the release")
        finally:
            await pump.stop()
        await pump.stop()  # idempotent
    assert [r.gw_id for r in await outbox(redis)] == [nudge.gw_id]


# ----------------------------------------------------------------------------- end to end


@asynccontextmanager
async def gateway_with_quiet_hours(
    settings_port: int, gateway: Gateway, now: datetime
) -> AsyncIterator[DeferredPump]:
    """The gateway's application as ``create_app`` builds it, but with the quiet-hours
    policy in the API and a DeferredPump next to the workers (the lead wires both into
    :class:`~bot.app.gateway.Gateway`)."""
    settings = gateway.settings
    deps = ApiDeps(
        store=gateway.store,
        partitions=settings.partitions,
        ttl_ms=gateway.ttl_ms,
        timeline_max=settings.timeline_max,
        max_body=settings.max_body,
        default_region=settings.default_region,
        api_token=TOKEN,
        client=gateway.client,
        ready=gateway.ready,
        throttle=gateway.throttle,
        quiet_hours=POLICY,
        clock=lambda: now,
    )
    pump = DeferredPump(gateway.store, gateway.registry, poll=0.05)

    async def lifetime(_app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        await pump.start()
        try:
            yield
        finally:
            await pump.stop()
            await gateway.stop()

    app = web.Application(client_max_size=settings.max_body)
    app[GATEWAY] = gateway
    app.add_routes(api_routes(deps))
    app.cleanup_ctx.append(lifetime)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", settings_port).start()
        yield pump
    finally:
        await runner.cleanup()


@pytest.mark.cluster
async def test_an_api_send_in_quiet_hours_is_deferred_then_reaches_the_handset(
    redis: Redis, redis_url: str, sandbox: Sandbox
) -> None:
    port = free_port()
    gw = f"http://127.0.0.1:{port}"
    gateway = Gateway(production(redis_url, sandbox, port))
    phone = sandbox.handset(H)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
        gateway_with_quiet_hours(port, gateway, NIGHT) as pump,
    ):
        async with http.post(
            f"{gw}/api/messages",
            json={"to": H, "content": "Your appointment is tomorrow", "from": OURS},
            headers=AUTH,
        ) as response:
            assert response.status == 202
            [item] = (await response.json())["messages"]
        assert item["status"] == "deferred"
        assert item["deferred_until"] == "2030-01-10T22:00:00Z"
        assert item["deferred_reason"] == "quiet hours AU 20:00-09:00"
        gw_id = item["id"]

        status, body = await get_json(http, f"{gw}/api/messages/{gw_id}?provider=0", AUTH)
        assert (status, body["record"]["status"]) == (200, "deferred")
        await pump.tick()  # the pump ran since the send: still nothing to release
        assert pump.released == 0
        assert await outbox(redis) == []

        await make_due(redis, gw_id)
        pump.wake()
        await eventually(lambda: bool(phone.received), what="the released message")
        [got] = phone.received
        assert (got["content"], got["metadata"]["gw_id"]) == ("Your appointment is tomorrow", gw_id)

        async def sent() -> bool:
            status, body = await get_json(http, f"{gw}/api/messages/{gw_id}?provider=0", AUTH)
            return status == 200 and body["record"]["status"] not in ("deferred", "queued")

        await eventually(sent, what="the sent record")
        url = f"{gw}/api/conversations/{quote(CONV, safe='')}?messages=0"
        status, view = await get_json(http, url, AUTH)
        assert status == 200
        kinds: list[Any] = [e["kind"] for e in view["timeline"]]
        assert kinds[:3] == ["outbound", "deferred", "sent"]
    assert pump.released == 1
    assert sum(c["messages"] for c in sandbox.stats()["send_calls"]) == 1

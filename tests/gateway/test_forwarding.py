"""Event forwarding against real Redis and real HTTP subscribers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.receipts.forwarding import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    Forwarder,
    forward,
    forward_event,
    forward_state,
    sign,
    verify,
)
from bot.sinch.models import parse_inbound, parse_receipt
from bot.storage.events import GW_ID, InboxEvent
from bot.storage.keys import DLQ, FORWARD_GROUP, PartitionKeys, alive, conversation_key
from bot.storage.redis_server import RedisServer
from bot.storage.store import Batch, Store
from bot.streams import dlq
from bot.streams.leases import WorkerRegistry

SECRET = "fwd-secret"
H, OURS = "+61491570156", "+61491570157"
CONV = conversation_key(OURS, H)
PARTITIONS = 4
WORKER = "w1"
LEASE_TTL = 1.0


class Receiver:
    """A subscriber: answers from ``statuses`` in turn (then ``default``), records calls."""

    def __init__(self, statuses: list[int] | None = None, default: int = 200) -> None:
        self.statuses = list(statuses or [])
        self.default = default
        self.delay = 0.0
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else self.default
        return web.Response(status=status, text="ok")

    def event_ids(self) -> list[str]:
        return [headers[EVENT_ID_HEADER] for headers, _ in self.calls]


@asynccontextmanager
async def receivers(*subs: Receiver) -> AsyncIterator[None]:
    runners = []
    try:
        for sub in subs:
            app = web.Application()
            app.router.add_post("/hook", sub.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            sub.url = f"http://127.0.0.1:{port}/hook?token=abc"
            runners.append(runner)
        yield
    finally:
        for runner in runners:
            await runner.cleanup()


def make_forwarder(store: Store, urls: list[str], **overrides: Any) -> Forwarder:
    """A forwarder following its own (not started) registry for ``WORKER``."""
    registry = WorkerRegistry(
        store.redis, worker_id=WORKER, partitions=PARTITIONS, lease_ttl=LEASE_TTL
    )
    options: dict[str, Any] = {
        "registry": registry,
        "max_deliveries": 5,
        "timeout": 2.0,
        "retry_attempts": 1,
        "retry_wait_initial": 0.01,
        "retry_wait_max": 0.02,
        "redelivery_delay": 0.05,
        "idle_interval": 0.1,
        "drain_timeout": 10.0,
    }
    options.update(overrides)
    return Forwarder(store, urls, SECRET, **options)


@asynccontextmanager
async def forwarding(store: Store, urls: list[str], **overrides: Any) -> AsyncIterator[Forwarder]:
    """A started forwarder whose worker holds the partitions; stopped on exit, then its
    registry (giving the partitions back)."""
    forwarder = make_forwarder(store, urls, **overrides)
    await forwarder.start()
    await forwarder.registry.start()
    try:
        yield forwarder
    finally:
        await forwarder.stop()
        await forwarder.registry.stop()


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0) -> None:
    """Wait until ``check()`` holds (a bound on waiting, not an assertion about speed).

    A Redis connection error inside the check means "not yet": after a Redis restart the
    test's own client may pick a pooled connection the server closed."""
    async with asyncio.timeout(within):
        while True:
            try:
                result = check()
                if await result if inspect.isawaitable(result) else result:
                    return
            except RedisConnectionError:
                pass
            await asyncio.sleep(0.01)


async def add_event(store: Store, partition: int = 1, event_type: str = "test.event") -> str:
    batch = Batch()
    event_id = forward(batch, PartitionKeys(partition), event_type, {"n": partition})
    await batch.commit(store)
    return event_id


async def settled(redis: Redis) -> bool:
    """Every forward stream is empty and nothing is pending."""
    for p in range(PARTITIONS):
        stream = PartitionKeys(p).forward
        if await redis.exists(stream) and await redis.xlen(stream):
            return False
    return True


@pytest.fixture
async def store(redis: Redis) -> Store:
    await redis.set(alive(WORKER), "1", px=60_000)
    return Store(redis)


def check_signature(headers: dict[str, str], body: bytes) -> None:
    """Verify the header independently of :func:`verify`: HMAC-SHA256 over ``t.body``."""
    parts = dict(p.split("=", 1) for p in headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(
        SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert abs(int(parts["t"]) - time.time()) < 300


@pytest.mark.cluster
async def test_delivers_signed_events_to_every_url(store: Store, redis: Redis) -> None:
    a, b = Receiver(), Receiver()
    inbound = parse_inbound(
        {"reply_id": "r1", "source_number": H, "destination_number": OURS, "content": "Y"}
    )
    receipt = parse_receipt(
        {
            "delivery_report_id": "d1",
            "message_id": "m1",
            "status": "delivered",
            "status_code": "220",
            "metadata": {GW_ID: "g1"},
        }
    )
    keys = PartitionKeys(2)
    batch = Batch()
    ids = [forward_event(batch, keys, InboxEvent(CONV, e)) for e in (inbound, receipt)]
    await batch.commit(store)

    async with receivers(a, b), forwarding(store, [a.url, b.url]):
        await eventually(lambda: settled(redis))

    for sub in (a, b):
        assert sorted(sub.event_ids()) == sorted(ids)
        for headers, body in sub.calls:
            check_signature(headers, body)
            assert verify(SECRET, body, headers[SIGNATURE_HEADER])
            assert not verify(SECRET, body + b" ", headers[SIGNATURE_HEADER])
            assert headers["Content-Type"] == "application/json"
            event = json.loads(body)
            assert set(event) == {"id", "type", "created", "data"}
            assert event["id"] == headers[EVENT_ID_HEADER]
            assert event["type"] == headers[EVENT_TYPE_HEADER]
    events = {json.loads(body)["type"]: json.loads(body) for _, body in a.calls}
    assert set(events) == {"message.received", "receipt.delivered"}
    assert events["message.received"]["data"]["content"] == "Y"
    assert events["message.received"]["data"]["from"] == H
    assert events["message.received"]["data"]["conversation"] == CONV
    assert events["receipt.delivered"]["data"]["gw_id"] == "g1"
    assert events["receipt.delivered"]["data"]["status_code"] == 220
    pending = await redis.xpending(keys.forward, FORWARD_GROUP)
    assert pending["pending"] == 0


async def test_opt_out_is_its_own_event_type(store: Store) -> None:
    opt_out = parse_inbound(
        {"notification_id": "n1", "source_number": H, "event": "OPT_OUT_SMS", "content": "STOP"}
    )
    keys = PartitionKeys(0)
    batch = Batch()
    forward_event(batch, keys, InboxEvent(CONV, opt_out))
    await batch.commit(store)
    entries = await store.redis.xrange(keys.forward)
    assert entries[0][1][b"type"] == b"message.opt_out"


async def test_retries_a_500_within_one_delivery(store: Store, redis: Redis) -> None:
    sub = Receiver(statuses=[500, 503])
    event_id = await add_event(store)
    async with receivers(sub), forwarding(store, [sub.url], retry_attempts=3, max_deliveries=1):
        await eventually(lambda: settled(redis))
    assert sub.event_ids() == [event_id] * 3
    assert await redis.xlen(DLQ) == 0


async def test_later_deliveries_skip_urls_that_succeeded(store: Store, redis: Redis) -> None:
    good, flaky = Receiver(), Receiver(statuses=[500, 502, 400])
    event_id = await add_event(store, partition=3)
    async with (
        receivers(good, flaky),
        forwarding(store, [good.url, flaky.url], max_deliveries=10),
    ):
        await eventually(lambda: settled(redis))
    assert good.event_ids() == [event_id]  # never re-posted after its 2xx
    assert flaky.event_ids() == [event_id] * 4  # 500, 502, 400 (a 4xx fails too), 200
    assert await redis.keys(forward_state(PartitionKeys(3), "*")) == []
    assert await redis.xlen(DLQ) == 0


async def test_a_4xx_is_not_retried_within_a_delivery(store: Store, redis: Redis) -> None:
    sub = Receiver(statuses=[404])
    await add_event(store)
    async with receivers(sub), forwarding(store, [sub.url], retry_attempts=3, max_deliveries=1):
        await eventually(lambda: settled(redis))
    assert len(sub.calls) == 1
    [(_, fields)] = await redis.xrange(DLQ)
    assert fields[b"reason"].endswith(b"HTTP 404")
    assert b"token" not in fields[b"reason"]  # the URL's query is not recorded


@pytest.mark.cluster
async def test_dead_letter_after_max_deliveries(store: Store, redis: Redis) -> None:
    good, broken = Receiver(), Receiver(default=500)
    event_id = await add_event(store, partition=0, event_type="receipt.failed")
    keys = PartitionKeys(0)
    async with (
        receivers(good, broken),
        forwarding(store, [good.url, broken.url], max_deliveries=3, retry_attempts=2),
    ):
        await eventually(lambda: settled(redis))
        await asyncio.sleep(0.2)  # a few more redelivery delays: nothing is posted again
    assert good.event_ids() == [event_id]
    assert broken.event_ids() == [event_id] * 6  # 3 deliveries x 2 attempts
    [letter] = await dlq.list_dead(redis)
    assert (letter.source, letter.group, letter.kind, letter.partition) == (
        keys.forward,
        FORWARD_GROUP,
        "forward",
        0,
    )
    assert letter.deliveries == 3
    assert "HTTP 500" in letter.reason
    assert letter.fields["id"] == event_id
    assert (await redis.xpending(keys.forward, FORWARD_GROUP))["pending"] == 0
    assert await redis.keys(forward_state(keys, "*")) == []


async def test_malformed_entry_goes_straight_to_the_dlq(store: Store, redis: Redis) -> None:
    sub = Receiver()
    await redis.xadd(PartitionKeys(1).forward, {"garbage": "1"})
    async with receivers(sub), forwarding(store, [sub.url]):
        await eventually(lambda: settled(redis))
    assert sub.calls == []
    [(_, fields)] = await redis.xrange(DLQ)
    assert fields[b"reason"] == b"malformed forward entry"


@pytest.mark.cluster
async def test_pending_events_are_taken_over_by_the_lease_holder_only(
    store: Store, redis: Redis
) -> None:
    """A partition's events are forwarded by its lease holder alone. What other consumers
    left pending there (a worker that died; one that lost the partition while delivering) is
    left alone while another worker holds the lease, and delivered by whoever holds it
    next."""
    sub = Receiver()
    keys = PartitionKeys(2)
    await redis.xgroup_create(keys.forward, FORWARD_GROUP, id="0", mkstream=True)
    ghost_event = await add_event(store, partition=2)
    await redis.xreadgroup(FORWARD_GROUP, "ghost", {keys.forward: ">"})  # then it died
    busy_event = await add_event(store, partition=2)
    await redis.set(alive("busy"), "1", px=60_000)
    await redis.set(keys.lease, "busy", px=60_000)  # another worker holds partition 2
    await redis.xreadgroup(FORWARD_GROUP, "busy", {keys.forward: ">"})  # still working
    async with receivers(sub), forwarding(store, [sub.url]) as forwarder:
        other_event = await add_event(store, partition=1)
        await eventually(lambda: bool(sub.calls))
        assert keys.partition not in forwarder.registry.owned
        assert sub.event_ids() == [other_event]  # nothing of partition 2
        pending = await redis.xpending_range(keys.forward, FORWARD_GROUP, "-", "+", 10)
        assert sorted(p["consumer"] for p in pending) == [b"busy", b"ghost"]

        await redis.delete(keys.lease)  # busy is gone: its lease expired
        await eventually(lambda: len(sub.calls) == 3)
    assert sorted(sub.event_ids()[1:]) == sorted([ghost_event, busy_event])
    assert await settled(redis)
    # The others are forgotten once their entries are taken; ours is removed when we stop.
    consumers = await redis.xinfo_consumers(keys.forward, FORWARD_GROUP)
    assert consumers == []


async def test_no_urls_means_nothing_is_consumed(store: Store, redis: Redis) -> None:
    await add_event(store, partition=1)
    forwarder = make_forwarder(store, [])
    assert not forwarder.enabled
    await forwarder.start()
    await asyncio.sleep(0.1)
    await forwarder.stop()
    assert await redis.xlen(PartitionKeys(1).forward) == 1
    assert await redis.xinfo_groups(PartitionKeys(1).forward) == []


async def test_stop_finishes_the_delivery_in_flight(store: Store, redis: Redis) -> None:
    sub = Receiver()
    sub.delay = 0.3
    await add_event(store)
    async with receivers(sub), forwarding(store, [sub.url]) as forwarder:
        await eventually(lambda: bool(sub.calls))
        await forwarder.stop()  # the POST is still waiting for its answer
    assert await settled(redis)
    assert len(sub.calls) == 1


async def test_survives_a_redis_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    redis = Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=1.0)
    sub = Receiver()
    try:
        await redis.set(alive(WORKER), "1", px=60_000)
        store = Store(redis)
        first = await add_event(store)
        async with receivers(sub), forwarding(store, [sub.url]):
            await eventually(lambda: len(sub.calls) == 1)
            await eventually(lambda: settled(redis))
            server.kill()
            await asyncio.sleep(0.3)  # the loop meets connection errors and backs off
            server.start()
            second = await add_event(store)
            await eventually(lambda: len(sub.calls) == 2, within=20)
            await eventually(lambda: settled(redis))
        assert sub.event_ids() == [first, second]
    finally:
        await redis.aclose()
        server.stop()


def test_verify_rejects_stale_and_foreign_signatures() -> None:
    body = b'{"id":"evt_1"}'
    now = 1_800_000_000
    header = sign(SECRET, body, now)
    assert verify(SECRET, body, header, now=now + 10)
    assert not verify(SECRET, body, header, now=now + 301)
    assert not verify("other", body, header, now=now)
    assert not verify(SECRET, body, "v1=" + header.rpartition("v1=")[2], now=now)
    assert not verify(SECRET, body, "garbage", now=now)
    # several v1 values (secret rotation): any one matching is enough
    assert verify(SECRET, body, f"t={now},v1=deadbeef,{header.split(',')[1]}", now=now)


def test_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        make_forwarder(Store(Redis()), ["ftp://example.com/x"])

"""The suppression list against a real redis-server, and its enforcement by the sender
against the sandbox provider: messages to opted-out handsets never reach the provider, are
recorded ``suppressed`` with a timeline entry and acknowledged; compliance messages pass;
what was queued before the opt-out is held back too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.outbox import suppression
from bot.outbox.queue import queue_requests
from bot.receipts import records, timeline
from bot.sandbox import Sandbox
from bot.sender.loop import Sender
from bot.sender.throttle import Throttle
from bot.sinch.models import OutboundMessage
from bot.storage.events import OutboundRequest, prepare_sms
from bot.storage.keys import PartitionKeys, conversation_key, partition_of
from bot.storage.store import Batch, Store
from bot.streams.leases import WorkerRegistry
from tests.gateway.procutil import eventually

P = 4
TTL = 3_600_000
TL_MAX = 100
OURS, OTHER = "+61491570157", "+61491570159"
H1, H2, H3 = "+61491570156", "+61491570158", "+61491570160"


def keys_of(number: str) -> PartitionKeys:
    return PartitionKeys(partition_of(number, P))


def sms(number: str, text: str = "hello", *, origin: str = "api") -> OutboundRequest:
    message = OutboundMessage(content=text, destination_number=number, source_number=OURS)
    return prepare_sms(message, conversation_key(OURS, number), origin=origin)


async def opt_out(store: Store, number: str, **options: object) -> None:
    batch = Batch()
    suppression.suppress(
        batch,
        keys_of(number),
        number,
        conversation=conversation_key(OURS, number),
        timeline_max=TL_MAX,
        ttl_ms=TTL,
        **{"via": "keyword", "word": "STOP", **options},  # type: ignore[arg-type]
    )
    await batch.commit(store)


async def kinds(redis: Redis, conversation: str) -> list[str]:
    keys = keys_of(conversation.rsplit(":", 1)[-1])
    return [entry["kind"] for entry in await timeline.read(redis, keys, conversation)]


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis)


# --------------------------------------------------------------------------- the list


@pytest.mark.cluster
async def test_suppress_and_unsuppress_commit_with_their_audit_entries(
    redis: Redis, store: Store
) -> None:
    conversation = conversation_key(OURS, H1)
    await opt_out(store, H1, confirmed=True)

    keys = keys_of(H1)
    entry = await suppression.lookup(redis, keys, H1)
    assert entry is not None
    assert (entry.via, entry.word, entry.conversation, entry.confirmed) == (
        "keyword",
        "STOP",
        conversation,
        True,
    )
    assert entry.at.startswith("20")
    assert await suppression.is_suppressed(redis, P, H1)
    assert not await suppression.is_suppressed(redis, P, H2)
    assert await suppression.suppressed_among(redis, keys, [H1, H1, "+61400000000"]) == {H1}
    assert await suppression.suppressed_among(redis, keys, []) == set()
    screened = await suppression.screen(redis, {keys.partition: {H1}, keys_of(H2).partition: {H2}})
    assert list(screened) == [keys.partition]
    assert screened[keys.partition][H1] == entry

    batch = Batch()
    suppression.unsuppress(
        batch,
        keys,
        H1,
        via="keyword",
        word="START",
        conversation=conversation,
        timeline_max=TL_MAX,
        ttl_ms=TTL,
    )
    await batch.commit(store)
    assert await suppression.lookup(redis, keys, H1) is None
    assert not await suppression.is_suppressed(redis, P, H1)
    entries = await timeline.read(redis, keys, conversation)
    assert [(e["kind"], e["data"]["word"]) for e in entries] == [
        ("optout", "STOP"),
        ("optin", "START"),
    ]


async def test_lookup_sees_the_writes_pending_in_a_handlers_batch(
    redis: Redis, store: Store
) -> None:
    keys = keys_of(H1)
    batch = Batch()
    assert await suppression.lookup(redis, keys, H1, batch=batch) is None
    suppression.suppress(batch, keys, H1, via="provider", timeline_max=TL_MAX, ttl_ms=TTL)
    pending = await suppression.lookup(redis, keys, H1, batch=batch)
    assert pending is not None and pending.via == "provider"
    assert await suppression.lookup(redis, keys, H1) is None  # nothing committed yet
    suppression.unsuppress(batch, keys, H1, via="keyword", timeline_max=TL_MAX, ttl_ms=TTL)
    assert await suppression.lookup(redis, keys, H1, batch=batch) is None

    await opt_out(store, H1)
    assert await suppression.lookup(redis, keys, H1, batch=Batch()) is not None
    undo = Batch()
    suppression.unsuppress(undo, keys, H1, via="keyword", timeline_max=TL_MAX, ttl_ms=TTL)
    assert await suppression.lookup(redis, keys, H1, batch=undo) is None


async def test_an_unreadable_entry_still_suppresses(redis: Redis) -> None:
    keys = keys_of(H1)
    await redis.hset(keys.optout, H1, "not json")
    entry = await suppression.lookup(redis, keys, H1)
    assert entry is not None and entry.via == "unknown"
    assert (await suppression.screen(redis, {keys.partition: [H1]}))[keys.partition][H1] == entry


async def test_operator_opt_outs_are_audited_on_every_conversation_of_the_number(
    redis: Redis, store: Store
) -> None:
    # H1 talked to two of our numbers; H2 never wrote.
    for ours in (OURS, OTHER):
        await queue_requests(
            store,
            P,
            [
                prepare_sms(
                    OutboundMessage(content="hi", destination_number=H1, source_number=ours),
                    conversation_key(ours, H1),
                )
            ],
            ttl_ms=TTL,
            timeline_max=TL_MAX,
        )
    await opt_out(store, H2, confirmed=True)

    fresh = await suppression.suppress_numbers(
        store, P, [H1, H2, H1], timeline_max=TL_MAX, ttl_ms=TTL
    )
    assert fresh == {H1}
    for ours in (OURS, OTHER):
        assert await kinds(redis, conversation_key(ours, H1)) == ["outbound", "optout"]
    entry = await suppression.lookup(redis, keys_of(H2), H2)
    assert entry is not None and entry.via == "api" and entry.confirmed  # flag kept
    assert await kinds(redis, conversation_key(OURS, H2)) == ["optout", "optout"]

    assert await suppression.unsuppress_number(store, P, H1, timeline_max=TL_MAX, ttl_ms=TTL)
    assert not await suppression.is_suppressed(redis, P, H1)
    for ours in (OURS, OTHER):
        assert await kinds(redis, conversation_key(ours, H1)) == ["outbound", "optout", "optin"]
    assert not await suppression.unsuppress_number(store, P, H1, timeline_max=TL_MAX, ttl_ms=TTL)
    # Never seen before: the shared pool's conversation carries the audit.
    await suppression.suppress_numbers(store, P, [H3], timeline_max=TL_MAX, ttl_ms=TTL)
    assert await kinds(redis, conversation_key(None, H3)) == ["optout"]


# --------------------------------------------------------------------------- the sender


@pytest.fixture
async def sender(redis: Redis, store: Store, sandbox: Sandbox) -> AsyncIterator[Sender]:
    client = sandbox.client(request_timeout=5.0)
    registry = WorkerRegistry(redis, worker_id="w1", partitions=P, lease_ttl=5.0)
    made = Sender(
        store,
        client,
        Throttle(redis, "test", calls=50, period=1.0),
        registry=registry,
        ttl_ms=TTL,
        timeline_max=TL_MAX,
        max_deliveries=3,
        block=0.05,
    )
    await registry.start()  # the sender drains the partitions it holds once started
    yield made
    await made.stop()
    await registry.stop()
    await client.aclose()


async def outbox_empty(redis: Redis) -> bool:
    return sum([await redis.xlen(PartitionKeys(p).outbox) for p in range(P)]) == 0


async def status(redis: Redis, request: OutboundRequest) -> str:
    found = await records.read(redis, keys_of(request.destination), request.gw_id)
    assert found is not None
    return found["status"]


@pytest.mark.cluster
async def test_the_sender_holds_back_messages_to_suppressed_handsets_queued_before_the_opt_out(
    redis: Redis, store: Store, sandbox: Sandbox, sender: Sender
) -> None:
    before = [sms(H1, "queued before the opt-out"), sms(H2, "to someone else")]
    await queue_requests(store, P, before, ttl_ms=TTL, timeline_max=TL_MAX)
    await opt_out(store, H1)  # after queueing, before sending
    confirmation = sms(H1, "You have been unsubscribed.", origin="compliance")
    await queue_requests(store, P, [confirmation], ttl_ms=TTL, timeline_max=TL_MAX)

    await sender.start()
    await eventually(lambda: outbox_empty(redis), timeout=10, what="a drained outbox")

    held, other = before
    assert await status(redis, held) == suppression.SUPPRESSED
    assert await status(redis, other) == "sent"
    assert await status(redis, confirmation) == "sent"
    sent_to_h1 = [m.request.content for m in sandbox.messages(H1)]
    assert sent_to_h1 == ["You have been unsubscribed."]
    assert [m.request.content for m in sandbox.messages(H2)] == ["to someone else"]
    assert [c["messages"] for c in sandbox.stats()["send_calls"]] == [2]  # one batch

    record = await records.read(redis, keys_of(H1), held.gw_id)
    assert record is not None and "opted out" in record["error"]
    entries = await timeline.read(redis, keys_of(H1), held.conversation)
    assert [e["kind"] for e in entries] == ["outbound", "optout", "outbound", "suppressed", "sent"]
    assert entries[3]["data"]["gw_id"] == held.gw_id
    assert "opted out (keyword STOP)" in entries[3]["data"]["reason"]
    assert sender.counters.suppressed == 1
    assert sender.counters.failed == 0


@pytest.mark.cluster
async def test_a_batch_of_only_suppressed_messages_makes_no_provider_call(
    redis: Redis, store: Store, sandbox: Sandbox, sender: Sender
) -> None:
    await opt_out(store, H1)
    await opt_out(store, H2)
    requests = [sms(H1, "one"), sms(H2, "two"), sms(H1, "three")]
    await queue_requests(store, P, requests, ttl_ms=TTL, timeline_max=TL_MAX)
    await sender.start()
    await eventually(lambda: outbox_empty(redis), timeout=10, what="a drained outbox")
    assert [await status(redis, r) for r in requests] == [suppression.SUPPRESSED] * 3
    assert sandbox.stats()["send_calls"] == []
    assert sender.counters.suppressed == 3
    assert await redis.get("sb:inflight:w1") is None

    # Opted in again: the next message leaves.
    assert await suppression.unsuppress_number(store, P, H1, timeline_max=TL_MAX, ttl_ms=TTL)
    again = sms(H1, "welcome back")
    await queue_requests(store, P, [again], ttl_ms=TTL, timeline_max=TL_MAX)
    await eventually(lambda: outbox_empty(redis), timeout=10, what="a drained outbox")
    assert await status(redis, again) == "sent"
    assert [m.request.content for m in sandbox.messages(H1)] == ["welcome back"]

"""Durable ingress: routing (pure) and atomic dedupe + enqueue (real Redis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from bot.ingress.admission import Admission, Ingress, route
from bot.sinch.models import DeliveryReceipt, InboundMessage, parse_inbound, parse_receipt
from bot.storage.events import GW_CONVERSATION, InboxEvent
from bot.storage.keys import PartitionKeys, handset_of, partition_of
from bot.storage.store import Store

pytestmark = pytest.mark.cluster  # on one server and on a Redis Cluster

P = 8
OURS = "+61491570157"
H = "+61491570156"


def inbound(event_id: str = "r1", *, source: str = H, to: str | None = OURS) -> InboundMessage:
    return InboundMessage(
        event_id=event_id, source_number=source, destination_number=to, content="Y"
    )


def receipt(
    event_id: str = "d1",
    *,
    recipient: str | None = H,
    sender: str | None = None,
    metadata: dict[str, str] | None = None,
    message_id: str = "m-1",
) -> DeliveryReceipt:
    return DeliveryReceipt(
        event_id=event_id,
        message_id=message_id,
        status="delivered",
        recipient=recipient,
        sender=sender,
        metadata=metadata or {},
    )


async def entries(redis: Redis, partition: int) -> list[InboxEvent]:
    raw: Any = await redis.xrange(PartitionKeys(partition).inbox)
    return [InboxEvent.from_fields(entry_id, fields, partition) for entry_id, fields in raw]


# ------------------------------------------------------------------ route (pure)


def test_inbound_routes_by_handset_to_its_conversation() -> None:
    assert route(inbound(), P) == (f"{OURS}:{H}", partition_of(H, P))
    # a reply to a shared-pool message carries no destination: same partition
    assert route(inbound(to=None), P) == (f"default:{H}", partition_of(H, P))


def test_receipt_prefers_the_echoed_conversation() -> None:
    other = "+61491570999"
    event = receipt(recipient=H, metadata={GW_CONVERSATION: f"{OURS}:{other}"})
    assert route(event, P) == (f"{OURS}:{other}", partition_of(other, P))


def test_receipt_without_echo_uses_sender_and_recipient() -> None:
    assert route(receipt(sender=OURS), P) == (f"{OURS}:{H}", partition_of(H, P))
    assert route(receipt(sender=None), P) == (f"default:{H}", partition_of(H, P))
    # an empty echoed value is no echo
    assert route(receipt(metadata={GW_CONVERSATION: ""}), P)[0] == f"default:{H}"


def test_receipt_naming_no_handset_goes_to_an_unknown_conversation() -> None:
    event = receipt(recipient=None, message_id="abc-123")
    assert route(event, P) == ("unknown:abc-123", partition_of("abc-123", P))


def test_shapes_of_one_event_share_a_partition() -> None:
    # the connector template (list metadata, source_address) and the callback_url push
    # (map metadata, source_number) of one report: same partition, so one dedupe marker
    conv = f"{OURS}:{H}"
    template = parse_receipt(
        {
            "delivery_report_id": "d9",
            "message_id": "m",
            "status": "delivered",
            "source_address": H,
            "metadata": [{"metadata_key": GW_CONVERSATION, "metadata_value": conv}],
        }
    )
    callback = parse_receipt(
        {
            "delivery_report_id": "d9",
            "message_id": "m",
            "status": "delivered",
            "source_number": H,
            "metadata": {GW_CONVERSATION: conv},
        }
    )
    assert route(template, P) == route(callback, P) == (conv, partition_of(H, P))
    reply = parse_inbound({"reply_id": "r9", "source_number": H, "content": "Y"})
    mo = parse_inbound(
        {"reply_id": "r9", "source_address": H, "destination_address": OURS, "content": "Y"}
    )
    assert route(reply, P)[1] == route(mo, P)[1]


numbers = st.from_regex(r"\+[0-9]{8,15}", fullmatch=True)
maybe_numbers = st.none() | numbers


@given(
    st.one_of(
        st.builds(inbound, st.text(min_size=1), source=numbers, to=maybe_numbers),
        st.builds(
            receipt,
            st.text(min_size=1),
            recipient=maybe_numbers,
            sender=maybe_numbers,
            metadata=st.one_of(
                st.just({}),
                st.builds(lambda o, h: {GW_CONVERSATION: f"{o}:{h}"}, maybe_numbers, numbers),
            ),
            message_id=st.text(min_size=1),
        ),
    ),
    st.integers(min_value=1, max_value=64),
)
def test_partition_always_follows_the_conversations_handset(
    event: InboundMessage | DeliveryReceipt, partitions: int
) -> None:
    conversation, partition = route(event, partitions)
    assert 0 <= partition < partitions
    assert partition == partition_of(handset_of(conversation), partitions)


def test_an_unknown_receipts_id_with_a_colon_still_lands_with_its_key() -> None:
    # Found by hypothesis: "unknown:<id>" with ":" in the id.
    event = receipt("r", recipient=None, sender=None, metadata={}, message_id="a:b")
    conversation, partition = route(event, 16)
    assert conversation == "unknown:a:b"
    assert partition == partition_of(handset_of(conversation), 16)


# ------------------------------------------------------------------ accept (real Redis)


async def test_accept_stores_once_and_remembers(redis: Redis) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=120.0)
    event = inbound("r-once")
    assert await ingress.accept(event) is True
    for _ in range(4):
        assert await ingress.accept(event) is False
    partition = partition_of(H, P)
    [stored] = await entries(redis, partition)
    assert stored.event == event
    assert stored.conversation == f"{OURS}:{H}"
    assert stored.kind == "message"
    ttl = await redis.pttl(PartitionKeys(partition).seen("r-once"))
    assert 110_000 < ttl <= 120_000
    # nothing anywhere else
    for other in range(P):
        if other != partition:
            assert await redis.exists(PartitionKeys(other).inbox) == 0


async def test_admit_reports_where_the_event_went(redis: Redis) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    first = await ingress.admit(receipt("d-admit", sender=OURS))
    assert first.stored and first.entry_id
    assert (first.conversation, first.partition) == (f"{OURS}:{H}", partition_of(H, P))
    again = await ingress.admit(receipt("d-admit", sender=OURS))
    assert again == Admission(first.conversation, first.partition, None)
    assert not again.stored


async def test_concurrent_copies_store_exactly_one(redis: Redis) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    results = await asyncio.gather(*(ingress.accept(inbound("r-race")) for _ in range(25)))
    assert results.count(True) == 1
    assert len(await entries(redis, partition_of(H, P))) == 1


async def test_dedupe_expires_after_the_ttl(redis: Redis) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    assert await ingress.accept(inbound("r-ttl"))
    # the marker expiring (the provider's retry window long past) admits the id again
    await redis.delete(PartitionKeys(partition_of(H, P)).seen("r-ttl"))
    assert await ingress.accept(inbound("r-ttl"))


async def test_accept_many_pipelines_in_order(redis: Redis) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    assert await ingress.accept(inbound("seen-before"))
    other = "+61491570777"
    batch: list[InboundMessage | DeliveryReceipt] = [
        inbound("a"),
        inbound("seen-before"),
        receipt("b", recipient=other),
        inbound("a"),  # a duplicate within the batch
        inbound("c", source=other),
    ]
    assert await ingress.accept_many(batch) == [True, False, True, False, True]
    assert await ingress.accept_many([]) == []
    ids = [e.event.event_id for e in await entries(redis, partition_of(H, P))]
    assert ids == ["seen-before", "a"]
    ids = [e.event.event_id for e in await entries(redis, partition_of(other, P))]
    assert ids == ["b", "c"]


async def test_a_group_is_one_script_call_per_partition(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: the events of a group go as one script call per partition, each
    partition's in arrival order, a copy within the group recognised."""
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    handsets = [f"+6149157{n:04d}" for n in range(40)]
    events = [inbound(f"grp-{n}", source=h) for n, h in enumerate(handsets)]
    await ingress.accept(inbound("grp-load"))  # the script is loaded
    calls: list[object] = []
    pipeline = redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        evalsha = pipe.evalsha

        def counted(*call: Any) -> Any:
            calls.append(call)
            return evalsha(*call)

        pipe.evalsha = counted  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(redis, "pipeline", counting)
    admissions = await ingress.admit_many([*events, events[3]])
    partitions = {partition_of(h, P) for h in handsets}
    assert len(calls) == len(partitions)
    assert [a.stored for a in admissions] == [True] * 40 + [False]
    for partition in partitions:
        ids = [e.event.event_id for e in await entries(redis, partition)]
        expected = [f"grp-{n}" for n, h in enumerate(handsets) if partition_of(h, P) == partition]
        assert ids[-len(expected) :] == expected


async def test_accept_many_survives_a_flushed_script_cache(redis: Redis) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    assert await ingress.accept(inbound("x1"))
    await redis.script_flush()  # as after a Redis restart
    assert await ingress.accept_many([inbound("x1"), inbound("x2")]) == [False, True]
    await redis.script_flush()
    assert await ingress.accept(inbound("x3"))


def test_bad_settings_are_refused(redis: Redis) -> None:
    with pytest.raises(ValueError, match="partitions"):
        Ingress(Store(redis), 0, 60.0)
    with pytest.raises(ValueError, match="dedupe_ttl"):
        Ingress(Store(redis), 4, 0)


def test_a_reply_stays_in_the_conversation_of_the_message_it_answers() -> None:
    from bot.ingress.admission import route as route_event

    reply = parse_inbound(
        {
            "reply_id": "r",
            "source_number": "+61491570156",
            "destination_number": "+61491570157",
            "content": "Y",
            "metadata": {"gw_conv": "default:+61491570156"},
        }
    )
    assert route_event(reply, 16)[0] == "default:+61491570156"
    spoofed = parse_inbound(
        {
            "reply_id": "r2",
            "source_number": "+61491570158",
            "destination_number": "+61491570157",
            "content": "Y",
            "metadata": {"gw_conv": "default:+61491570156"},
        }
    )
    assert route_event(spoofed, 16)[0] == "+61491570157:+61491570158"


async def test_concurrent_webhooks_share_round_trips(redis: Redis) -> None:
    """Group commit: 60 events admitted at once are stored in far fewer round trips, each
    caller answered with its own admission, duplicates still recognised."""
    from bot.storage.store import Store

    calls: list[int] = []

    class Counting(Ingress):
        async def admit_many(self, events: Any) -> list[Admission]:
            calls.append(len(events))
            return await super().admit_many(events)

    ingress = Counting(Store(redis), 16, 60)
    events = [
        parse_inbound(
            {"reply_id": f"g{i % 50}", "source_number": f"+6149157{i % 50:04d}", "content": "x"}
        )
        for i in range(60)
    ]
    admissions = await asyncio.gather(*(ingress.admit(e) for e in events))
    assert sum(a.stored for a in admissions) == 50
    assert sum(calls) == 60
    assert len(calls) <= 3


async def test_a_redis_failure_reaches_every_waiting_webhook(tmp_path: Any) -> None:
    from bot.storage.redis_server import RedisServer
    from bot.storage.store import Store

    server = RedisServer(tmp_path).start()
    client = Redis.from_url(server.url)
    ingress = Ingress(Store(client), 4, 60)
    try:
        server.kill()
        events = [
            parse_inbound({"reply_id": f"k{i}", "source_number": "+61491570156", "content": "x"})
            for i in range(5)
        ]
        results = await asyncio.gather(*(ingress.admit(e) for e in events), return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results)
        server.start()
        assert (await ingress.admit(events[0])).stored
    finally:
        await client.aclose()
        server.stop()


# ------------------------------------------------------------------ marker shapes


def test_markers_are_short_keys_in_their_partitions_slot() -> None:
    """A marker names its event by a 16-character digest: 30 characters or fewer for every
    partition count (a 32-byte allocation), the partition's hash tag kept."""
    for partition in (0, 9, 99, 1023):
        keys = PartitionKeys(partition)
        for event_id in ("r1", "9eca784a-54b9-44e9-a1c7-3c5fcc1241be", "mo:sha256:" + "f" * 32):
            marker = keys.seen(event_id)
            assert marker.startswith(f"sb:{keys.tag}:ev:") and len(marker) <= 30
            assert marker == keys.seen(event_id) != keys.seen(event_id + "x")
        assert keys.seen_legacy("r1") == f"sb:{keys.tag}:seen:r1"


async def test_a_redelivery_inside_the_ttl_is_refused_by_the_new_marker(redis: Redis) -> None:
    """The new marker is written with the entry, lives the whole dedupe TTL and refuses
    every copy until then; nothing is written under the earlier name."""
    ingress = Ingress(Store(redis), P, dedupe_ttl=1.5)
    event = inbound("r-short-ttl")
    keys = PartitionKeys(partition_of(H, P))
    started = time.monotonic()
    assert await ingress.accept(event)
    assert 1_000 < await redis.pttl(keys.seen(event.event_id)) <= 1_500
    assert await redis.exists(keys.seen_legacy(event.event_id)) == 0
    await asyncio.sleep(1.0)
    assert not await ingress.accept(event)  # still inside the TTL: a duplicate
    assert len(await entries(redis, keys.partition)) == 1
    await asyncio.sleep(max(0.0, 1.6 - (time.monotonic() - started)))
    assert await ingress.accept(event)  # the TTL is over: the provider's window long past
    assert len(await entries(redis, keys.partition)) == 2


async def test_markers_of_the_previous_version_still_dedupe(redis: Redis) -> None:
    """An event admitted before the upgrade (its marker ``sb:{pN}:seen:<event id>``, as the
    previous version wrote it) is a duplicate until that marker expires, in a group too;
    the old marker is not rewritten, and no new one is added beside it."""
    ingress = Ingress(Store(redis), P, dedupe_ttl=60.0)
    keys = PartitionKeys(partition_of(H, P))
    await redis.set(keys.seen_legacy("r-before-upgrade"), "1", nx=True, px=1_500)
    assert not await ingress.accept(inbound("r-before-upgrade"))
    assert await ingress.accept_many(
        [inbound("r-after-upgrade"), inbound("r-before-upgrade"), inbound("r-after-upgrade")]
    ) == [True, False, False]
    assert [e.event.event_id for e in await entries(redis, keys.partition)] == ["r-after-upgrade"]
    assert await redis.exists(keys.seen("r-before-upgrade")) == 0
    assert 0 < await redis.pttl(keys.seen_legacy("r-before-upgrade")) <= 1_500
    await eventually(lambda: _gone(redis, keys.seen_legacy("r-before-upgrade")))
    assert await ingress.accept(inbound("r-before-upgrade"))  # the old marker expired


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def eventually(check: Any, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.05)

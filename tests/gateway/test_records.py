"""Message records and provider ids as stored (real Redis: one server and a cluster): the
packed record reads back as the full record, the provider id finds it, and records and
mappings an earlier version wrote (a hash, a key per provider id) are still read, merged
and shown by the API."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from bot.api.openapi import MessageView
from bot.outbox.deferred import DEFERRED, DeferredPump
from bot.outbox.queue import enqueue
from bot.receipts import records
from bot.sinch.models import parse_receipt
from bot.storage.events import GW_ID, OutboundRequest, new_id
from bot.storage.keys import DAY_MS, PartitionKeys, conversation_key, partition_of
from bot.storage.store import RANK_DELIVERED, Batch, Store, text_map
from tests.gateway.test_api import ClientFactory, P, get, make_deps, serve

pytestmark = pytest.mark.cluster  # on one server and on a Redis Cluster

H, OURS = "+61491570156", "+61491570157"
CONV = conversation_key(OURS, H)
KEYS = PartitionKeys(partition_of(H, P))
TTL_MS = 3_600_000

OLD_RECORD = {
    "gw_id": "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld00",
    "status": "sent",
    "rank": "1",
    "conversation": CONV,
    "to": H,
    "channel": "sms",
    "origin": "reply",
    "text": "Your table is ready",
    "segments": "1",
    "encoding": "GSM-7",
    "queued_at": "1795710958.015",
    "message_id": "9eca784a-54b9-44e9-a1c7-3c5fcc1241be",
    "sent_at": "1795710958.027",
    "attempts": "1",
}
"""A record as versions before the packed record wrote it (docs/api.md's example)."""


def request(text: str, *, gw_id: str = "g-new", to: str = H) -> OutboundRequest:
    return OutboundRequest(
        gw_id,
        CONV,
        "sms",
        {"destination_number": to, "content": text},
        "reply",
        text=text,
        created_at=1795710958.015,
    )


def receipt(status: str, code: str, gw_id: str) -> Any:
    return parse_receipt(
        {
            "delivery_report_id": f"dr-{gw_id}-{status}",
            "message_id": "whatever",
            "status": status,
            "status_code": code,
            "metadata": {GW_ID: gw_id},
        }
    )


async def commit(redis: Redis, batch: Batch) -> list[Any]:
    return await batch.commit(Store(redis))


async def test_a_packed_record_reads_back_as_the_full_record(redis: Redis) -> None:
    sent = request("Your table is ready")
    batch = Batch()
    records.create(batch, KEYS, sent, ttl_ms=TTL_MS)
    records.mark_sent(batch, KEYS, sent.gw_id, OLD_RECORD["message_id"], ttl_ms=TTL_MS)
    await commit(redis, batch)
    assert await redis.type(KEYS.message(sent.gw_id)) in (b"string", "string")
    record = await records.read(redis, KEYS, sent.gw_id)
    assert record is not None
    expected = {**OLD_RECORD, "gw_id": sent.gw_id, "sent_at": record["sent_at"]}
    assert record == expected
    assert list(record) == list(expected)  # shown in the order it always was
    assert 0 < await redis.pttl(KEYS.message(sent.gw_id)) <= TTL_MS


async def test_what_the_record_cannot_count_again_is_kept(redis: Redis) -> None:
    """A text cut to TEXT_MAX keeps the whole text's segments; a message to another number
    than the conversation's handset keeps its ``to``; any text survives the script's JSON."""
    long_text = "ж" * 600  # UCS-2: 9 segments of the whole, 8 of the 500 kept
    other = "+61491570999"
    odd = 'Quote " back\\slash / slash, emoji 🎉, tab\t, 中文, \u2028 end'
    batch = Batch()
    records.create(batch, KEYS, request(long_text, gw_id="g-long"), ttl_ms=TTL_MS)
    records.create(batch, KEYS, request("hi", gw_id="g-other", to=other), ttl_ms=TTL_MS)
    records.create(batch, KEYS, request(odd, gw_id="g-odd"), ttl_ms=TTL_MS)
    await commit(redis, batch)
    # The script decodes and encodes the record again on every merge.
    batch = Batch()
    for gw_id in ("g-long", "g-other", "g-odd"):
        records.merge_receipt(batch, KEYS, gw_id, receipt("delivered", "220", gw_id), ttl_ms=0)
    assert await commit(redis, batch) == [1, 1, 1]
    long_record, other_record, odd_record = await records.read_many(
        redis, [(KEYS, "g-long"), (KEYS, "g-other"), (KEYS, "g-odd")]
    )
    assert long_record is not None and other_record is not None and odd_record is not None
    assert (long_record["text"], long_record["segments"], long_record["encoding"]) == (
        "ж" * records.TEXT_MAX,
        "9",
        "UCS-2",
    )
    assert (other_record["to"], other_record["conversation"]) == (other, CONV)
    assert (odd_record["text"], odd_record["status"], odd_record["status_code"]) == (
        odd,
        "delivered",
        "220",
    )
    assert 0 < await redis.pttl(KEYS.message("g-odd")) <= TTL_MS  # ttl 0 kept it


async def test_a_packed_record_is_smaller_than_the_hash_was(redis: Redis) -> None:
    """The same record as a packed string and as the hash it used to be: a text longer than
    the server's 64-byte ziplist value made the hash a hashtable."""
    text = "Hi Sam, your appointment at Bench Clinic is on Tue 10:00. Reply Y to confirm."
    sent = request(text, gw_id="g-size")
    batch = Batch()
    records.create(batch, KEYS, sent, ttl_ms=TTL_MS)
    records.mark_sent(batch, KEYS, sent.gw_id, OLD_RECORD["message_id"], ttl_ms=TTL_MS)
    await commit(redis, batch)
    record = await records.read(redis, KEYS, sent.gw_id)
    assert record is not None
    old_key = KEYS.message("g-size-as-a-hash")
    await redis.hset(old_key, mapping=cast(Any, {**record, "gw_id": "g-size-as-a-hash"}))
    packed = await redis.memory_usage(KEYS.message(sent.gw_id), samples=0)
    hashed = await redis.memory_usage(old_key, samples=0)
    assert packed is not None and hashed is not None
    assert packed < 400 < 800 < hashed, (packed, hashed)


async def test_records_of_an_earlier_version_are_read_merged_and_shown(
    aiohttp_client: ClientFactory, redis: Redis
) -> None:
    """An old-shape record (a hash) and its provider-id key, written as earlier versions
    did: the API shows the record by our id and by the provider's, receipts merge into it
    monotonically in its own shape, and the conversation view lists it."""
    gw_id, message_id = OLD_RECORD["gw_id"], OLD_RECORD["message_id"]
    await redis.hset(KEYS.message(gw_id), mapping=cast(Any, OLD_RECORD))
    await redis.pexpire(KEYS.message(gw_id), TTL_MS)
    await redis.set(KEYS.provider_id(message_id), gw_id, px=TTL_MS)
    await redis.rpush(
        KEYS.timeline(CONV),
        f'["1795710958015-1","outbound",1795710958.015,{{"gw_id":"{gw_id}","to":"{H}",'
        '"text":"Your table is ready","origin":"reply"}]',
    )
    api: TestClient[Any, Any] = await serve(aiohttp_client, make_deps(redis))

    for lookup in (gw_id, message_id):
        status, view = await get(api, f"/api/messages/{lookup}?provider=0")
        assert status == 200, lookup
        MessageView.model_validate(view)
        assert (view["id"], view["partition"], view["record"]) == (
            gw_id,
            KEYS.partition,
            OLD_RECORD,
        )

    batch = Batch()
    records.merge_receipt(batch, KEYS, gw_id, receipt("delivered", "220", gw_id), ttl_ms=TTL_MS)
    records.merge_receipt(batch, KEYS, gw_id, receipt("enroute", "101", gw_id), ttl_ms=TTL_MS)
    records.mark_sent(batch, KEYS, gw_id, message_id, ttl_ms=TTL_MS, attempts=2)
    assert await commit(redis, batch) == [1, 0, 0]
    assert await redis.type(KEYS.message(gw_id)) in (b"hash", "hash")  # its own shape
    assert await redis.hget(KEYS.message(gw_id), "rank") == str(RANK_DELIVERED).encode()

    status, view = await get(api, f"/api/conversations/{CONV.replace('+', '%2B')}")
    assert status == 200
    shown = view["messages"][gw_id]
    assert (shown["status"], shown["status_code"], shown["attempts"]) == ("delivered", "220", "2")
    assert shown["text"] == OLD_RECORD["text"]


async def test_the_provider_id_finds_our_id_for_as_long_as_the_record_lives(
    aiohttp_client: ClientFactory, redis: Redis
) -> None:
    """One hash per partition and day holds the day's mappings; it expires the TTL after
    the day's end, so each mapping lives at least as long as its record."""
    now = time.time()
    batch = Batch()
    records.mark_sent(batch, KEYS, "g-today", "m-today", ttl_ms=TTL_MS, now=now)
    records.mark_sent(batch, KEYS, "g-day-ago", "m-day-ago", ttl_ms=2 * DAY_MS, now=now - 86400)
    await commit(redis, batch)
    today = round(now * 1000) // DAY_MS
    bucket = KEYS.provider_ids(today)
    assert await redis.hget(bucket, "m-today") == b"g-today"
    left = await redis.pttl(bucket)
    assert TTL_MS - 5_000 < left <= TTL_MS + DAY_MS
    assert await redis.exists(KEYS.provider_id("m-today")) == 0  # no key of its own

    assert await records.find_gw_id(redis, KEYS, "m-today", ttl_ms=TTL_MS) == "g-today"
    assert await records.find_gw_id(redis, KEYS, "m-day-ago", ttl_ms=2 * DAY_MS) == "g-day-ago"
    assert await records.find_gw_id(redis, KEYS, "m-unknown", ttl_ms=TTL_MS) is None
    other = PartitionKeys((KEYS.partition + 1) % P)
    assert await records.find_gw_ids(redis, [other, KEYS], "m-today", ttl_ms=TTL_MS) == [
        None,
        "g-today",
    ]

    # The API takes the provider's id as well as ours (a record needs creating first).
    batch = Batch()
    records.create(batch, KEYS, request("Your table is ready", gw_id="g-today"), ttl_ms=TTL_MS)
    await commit(redis, batch)
    api: TestClient[Any, Any] = await serve(aiohttp_client, make_deps(redis))
    status, view = await get(api, "/api/messages/m-today?provider=0")
    assert (status, view["id"], view["record"]["gw_id"]) == (200, "g-today", "g-today")
    assert (await get(api, "/api/messages/m-unknown"))[0] == 404


async def test_a_sent_message_without_a_provider_id_moves_forward_only(redis: Redis) -> None:
    """Recorded sent without a message_id (the provider gave none): no mapping, and the
    status moves forward only, like any other."""
    batch = Batch()
    records.create(batch, KEYS, request("hi", gw_id="g-no-mid"), ttl_ms=TTL_MS)
    records.merge_receipt(
        batch, KEYS, "g-no-mid", receipt("delivered", "220", "g-no-mid"), ttl_ms=TTL_MS
    )
    records.mark_sent(batch, KEYS, "g-no-mid", "", ttl_ms=TTL_MS, attempts=3)
    await commit(redis, batch)
    record = await records.read(redis, KEYS, "g-no-mid")
    assert record is not None
    assert (record["status"], record["attempts"], "message_id" in record) == (
        "delivered",
        "3",
        False,
    )


async def test_a_deferred_record_of_either_shape_is_released(redis: Redis) -> None:
    """The deferred pump's script sets a still-deferred record back to queued, packed or
    an earlier version's hash."""

    class Always:
        """Quiet hours that hold back every send, due at once."""

        def applies_to(self, origin: str) -> bool:
            return True

        def check(self, number: str, now: Any) -> Any:
            return SimpleNamespace(until_ms=0, until_iso="2026-01-01T00:00:00Z", reason="quiet")

    batch = Batch()
    packed, hashed = request("a", gw_id="g-def-packed"), request("b", gw_id="g-def-hash")
    for sent in (packed, hashed):
        enqueue(batch, KEYS, sent, ttl_ms=TTL_MS, quiet_hours=Always())  # type: ignore[arg-type]
    await commit(redis, batch)
    record = await records.read(redis, KEYS, packed.gw_id)
    assert record is not None
    assert (record["status"], record["deferred_reason"]) == (DEFERRED, "quiet")
    # Make the second one the hash an earlier version would have written.
    await redis.delete(KEYS.message(hashed.gw_id))
    await redis.hset(
        KEYS.message(hashed.gw_id),
        mapping=cast(Any, {**OLD_RECORD, "gw_id": hashed.gw_id, "status": DEFERRED, "rank": "0"}),
    )

    class Owner:
        owned = {KEYS.partition}
        worker_id = "w1"

    await redis.set(KEYS.lease, "w1")
    pump = DeferredPump(Store(redis), Owner())  # type: ignore[arg-type]
    await pump.tick()
    assert pump.released == 2
    for gw_id in (packed.gw_id, hashed.gw_id):
        record = await records.read(redis, KEYS, gw_id)
        assert record is not None
        assert record["status"] == records.QUEUED, gw_id
        assert record["released_at"], gw_id
    assert 0 < await redis.pttl(KEYS.message(packed.gw_id)) <= TTL_MS


async def test_new_and_old_ids_and_provider_ids_are_all_found(
    aiohttp_client: ClientFactory, redis: Redis
) -> None:
    """New ids are 16 base64url characters; a 32-hex id of the previous version still names
    its record everywhere (the API, receipts), and its provider id, a field of a day hash
    under the full UUID as the previous version wrote it, still finds it beside the new
    mappings, whose UUIDs are 22-character fields."""
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", gw_id) for gw_id in ids)

    now = time.time()
    today = round(now * 1000) // DAY_MS
    old_id, old_mid = "5f0c2d0e9b7a4c3e8d1f2a3b4c5d6e7f", "9eca784a-54b9-44e9-a1c7-3c5fcc1241be"
    new, new_mid = new_id(), "1ac0b00b-cbe5-487b-b485-9b5833f7d0bc"
    batch = Batch()
    records.create(batch, KEYS, request("Your table is ready", gw_id=old_id), ttl_ms=TTL_MS)
    records.update(batch, KEYS, old_id, {"message_id": old_mid, "sent_at": "1795710958.027"})
    records.update(batch, KEYS, old_id, {"status": records.SENT}, rank=1)
    records.create(batch, KEYS, request("See you soon", gw_id=new), ttl_ms=TTL_MS)
    records.mark_sent(batch, KEYS, new, new_mid, ttl_ms=TTL_MS, now=now)
    await commit(redis, batch)
    day_hash = KEYS.provider_ids(today)
    await redis.hset(day_hash, old_mid, old_id)  # as the previous version mapped it
    fields = text_map(await redis.hgetall(day_hash))
    assert fields == {old_mid: old_id, records.provider_field(new_mid): new}
    assert len(records.provider_field(new_mid)) == 22
    assert records.provider_field("m-1") == "m-1"  # not a UUID: as it is
    assert records.provider_field(new_mid.upper()) == new_mid.upper()

    for message_id, gw_id in ((old_mid, old_id), (new_mid, new)):
        assert await records.find_gw_id(redis, KEYS, message_id, ttl_ms=TTL_MS) == gw_id
    api: TestClient[Any, Any] = await serve(aiohttp_client, make_deps(redis))
    for lookup, gw_id in ((old_id, old_id), (old_mid, old_id), (new, new), (new_mid, new)):
        status, view = await get(api, f"/api/messages/{lookup}?provider=0")
        assert (status, view["id"], view["record"]["gw_id"]) == (200, gw_id, gw_id), lookup

    batch = Batch()
    for gw_id in (old_id, new):
        records.merge_receipt(batch, KEYS, gw_id, receipt("delivered", "220", gw_id), ttl_ms=TTL_MS)
    assert await commit(redis, batch) == [1, 1]
    for gw_id in (old_id, new):
        record = await records.read(redis, KEYS, gw_id)
        assert record is not None and record["status"] == "delivered", gw_id

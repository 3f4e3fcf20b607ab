"""The batch script: all-or-nothing, fenced, versioned, monotonic merge (real Redis)."""

import pytest
from redis.asyncio import Redis

from bot.storage.store import (
    RANK_DELIVERED,
    RANK_ENROUTE,
    RANK_ERROR,
    RANK_SUBMITTED,
    Batch,
    CommitConflict,
    Store,
)

pytestmark = pytest.mark.cluster  # on one server and on a Redis Cluster


async def test_effects_apply_together(redis: Redis) -> None:
    store = Store(redis)
    ids = await (
        Batch()
        .xadd("s:{p1}", {"a": "1", "n": 2}, maxlen=100, ttl_ms=60_000)
        .hset("h:{p1}", {"x": "y"}, ttl_ms=60_000)
        .set("k:{p1}", "v", ttl_ms=60_000)
        .zadd("z:{p1}", 5, "m")
        .commit(store)
    )
    assert len(ids) == 1
    assert (await redis.xrange("s:{p1}"))[0][1] == {b"a": b"1", b"n": b"2"}
    assert await redis.hget("h:{p1}", "x") == b"y"
    assert await redis.get("k:{p1}") == b"v"
    assert 0 < await redis.pttl("s:{p1}") <= 60_000
    assert await redis.zscore("z:{p1}", "m") == 5


async def test_fence_refuses_the_whole_batch(redis: Redis) -> None:
    store = Store(redis)
    await redis.set("lease:{p1}", "worker-b")
    with pytest.raises(CommitConflict) as info:
        await Batch().xadd("s:{p1}", {"a": "1"}).fence("lease:{p1}", "worker-a").commit(store)
    assert info.value.reason == "fenced"
    assert await redis.exists("s:{p1}") == 0
    await Batch().fence("lease:{p1}", "worker-b").xadd("s:{p1}", {"a": "1"}).commit(store)
    assert await redis.xlen("s:{p1}") == 1


async def test_versioned_writes(redis: Redis) -> None:
    store = Store(redis)
    await Batch().write_versioned("sess:{p1}", 0, {"state": "a"}).commit(store)
    await Batch().write_versioned("sess:{p1}", 1, {"state": "b"}).commit(store)
    assert await redis.hgetall("sess:{p1}") == {b"v": b"2", b"state": b"b"}
    with pytest.raises(CommitConflict) as info:
        # a stale worker that read version 1 must not overwrite version 2
        await (
            Batch()
            .xadd("out:{p1}", {"r": "dup"})
            .write_versioned("sess:{p1}", 1, {"state": "stale"})
            .commit(store)
        )
    assert info.value.reason == "stale"
    assert await redis.hget("sess:{p1}", "state") == b"b"
    assert await redis.exists("out:{p1}") == 0


async def test_xack_deletes_processed_entries(redis: Redis) -> None:
    store = Store(redis)
    await redis.xgroup_create("in:{p1}", "g", id="0", mkstream=True)
    first = await redis.xadd("in:{p1}", {"n": "1"})
    await redis.xadd("in:{p1}", {"n": "2"})
    await redis.xreadgroup("g", "c", {"in:{p1}": ">"})
    await Batch().xack("in:{p1}", "g", [first.decode()]).commit(store)
    assert (await redis.xpending("in:{p1}", "g"))["pending"] == 1
    assert await redis.xlen("in:{p1}") == 1


@pytest.mark.parametrize(
    ("sequence", "final"),
    [
        ([RANK_ENROUTE, RANK_SUBMITTED, RANK_DELIVERED], "delivered"),
        ([RANK_DELIVERED, RANK_ENROUTE, RANK_SUBMITTED], "delivered"),
        ([RANK_ERROR, RANK_DELIVERED], "failed"),
        ([RANK_DELIVERED, RANK_ERROR], "failed"),
        ([RANK_SUBMITTED, RANK_SUBMITTED, RANK_ENROUTE], "submitted"),
    ],
)
async def test_receipt_merge_is_monotonic(redis: Redis, sequence: list[int], final: str) -> None:
    store = Store(redis)
    names = {
        RANK_ENROUTE: "enroute",
        RANK_SUBMITTED: "submitted",
        RANK_DELIVERED: "delivered",
        RANK_ERROR: "failed",
    }
    for rank in sequence:
        await Batch().merge_receipt("msg:{p1}", rank, {"status": names[rank]}).commit(store)
    assert await redis.hget("msg:{p1}", "status") == final.encode()


async def test_empty_batch_is_a_no_op(redis: Redis) -> None:
    assert await Batch().commit(Store(redis)) == []

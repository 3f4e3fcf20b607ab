"""The session-store seam: the Redis sessions load a batch's conversations at once and save
with the version they read, so a stale write is refused with the whole commit."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.storage.keys import PartitionKeys
from bot.storage.sessions import RedisSessions, Session, SessionStore
from bot.storage.store import Batch, CommitConflict, Store

pytestmark = pytest.mark.cluster  # on one server and on a Redis Cluster

KEYS = PartitionKeys(3)


async def test_a_missing_session_loads_empty_at_version_0(redis: Redis) -> None:
    sessions: SessionStore = RedisSessions(redis)
    loaded = await sessions.load(KEYS, ["+61491570157:+61491570156"])
    assert loaded == {"+61491570157:+61491570156": Session("+61491570157:+61491570156")}
    assert await sessions.load(KEYS, []) == {}


async def test_saved_sessions_come_back_and_a_stale_save_is_refused(redis: Redis) -> None:
    sessions = RedisSessions(redis)
    store = Store(redis)
    a, b = "+61491570157:+61491570156", "+61491570157:+61491570158"
    first = (await sessions.load(KEYS, [a]))[a]
    first.state, first.data, first.timers = "asked", {"slot": "tue-10"}, {"t1": "2030-01-01"}
    batch = Batch()
    sessions.save(batch, KEYS, first, ttl_ms=60_000)
    await batch.commit(store)

    loaded = await sessions.load(KEYS, [a, b])
    assert loaded[a].version == 1
    assert (loaded[a].state, loaded[a].data, loaded[a].timers) == (
        "asked",
        {"slot": "tue-10"},
        {"t1": "2030-01-01"},
    )
    assert loaded[b] == Session(b)
    assert 0 < await redis.pttl(KEYS.session(a)) <= 60_000

    # ``first`` still says version 0: saving it again would overwrite the newer state.
    stale = Batch()
    sessions.save(stale, KEYS, first, ttl_ms=60_000)
    with pytest.raises(CommitConflict) as refused:
        await stale.commit(store)
    assert refused.value.reason == "stale"
    assert (await sessions.load(KEYS, [a]))[a].version == 1


def test_a_copy_shares_nothing_with_its_original() -> None:
    original = Session("c", 4, "asked", {"slot": {"day": "tue", "hours": [10, 11]}}, {"t": "x"})
    copied = original.copy()
    assert copied == original
    copied.data["slot"]["hours"].append(12)
    copied.timers["u"] = "y"
    copied.state = "done"
    assert original == Session(
        "c", 4, "asked", {"slot": {"day": "tue", "hours": [10, 11]}}, {"t": "x"}
    )

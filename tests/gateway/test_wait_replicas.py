"""SINCHBOT_REDIS_WAIT_REPLICAS: a webhook's event is admitted (2xx) only once a replica of
its master has it (Redis ``WAIT`` on the connection that wrote it), else 503.

On the session's cluster (a replica per master) the replica is read directly after the
admission returned: it holds every admitted event and marker. On one server (no replica)
every admission is refused, and the events stay on the server for the provider's retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from aiohttp import web
from redis.asyncio import Redis

from bot.ingress.admission import Ingress
from bot.ingress.webhook_auth import WebhookAuth
from bot.ingress.webhooks import webhook_routes
from bot.sinch.models import InboundMessage
from bot.storage.connection import NotReplicated, RedisClient
from bot.storage.keys import PartitionKeys, partition_of
from bot.storage.redis_server import RedisServer
from bot.storage.store import Store, text
from tests.redis_cluster import LocalCluster, wait_until

P = 8
OURS = "+61491570157"


def inbound(event_id: str, n: int) -> InboundMessage:
    return InboundMessage(
        event_id=event_id,
        source_number=f"+6149157{n:04d}",
        destination_number=OURS,
        content=f"hello {n}",
    )


def replica_view(cluster: LocalCluster, key: str) -> sync_redis.Redis:
    """A connection to the replica of ``key``'s master, reading (READONLY)."""
    master = cluster.master_of_slot(cluster.key_slot(key))
    [replica] = cluster.replicas_of(master)
    client = replica.client(single_connection_client=True, socket_timeout=10)
    client.execute_command("READONLY")
    return client


async def test_an_admitted_event_is_on_a_replica_of_its_master(
    redis_cluster: LocalCluster,
) -> None:
    redis_cluster.flushall()
    redis = redis_cluster.client()
    ingress = Ingress(Store(redis), P, dedupe_ttl=600.0, wait_replicas=1, wait_timeout=5.0)
    events = [inbound(f"w{n}", n) for n in range(30)]
    admissions = await ingress.admit_many([*events, events[0]])
    assert [a.stored for a in admissions] == [True] * 30 + [False]
    for event, admission in zip(events, admissions[:30], strict=True):
        keys = PartitionKeys(admission.partition)
        with replica_view(redis_cluster, keys.inbox) as replica:
            assert replica.exists(keys.seen(event.event_id))
            ids = [text(entry_id) for entry_id, _ in replica.xrange(keys.inbox)]
            assert admission.entry_id in ids
    # A copy of an admitted event is a duplicate, once a replica has the first one too.
    assert not (await ingress.admit(events[5])).stored
    await redis.aclose()


async def test_a_marker_of_the_previous_version_is_a_duplicate_on_a_replica_too(
    redis_cluster: LocalCluster,
) -> None:
    """With WAIT, an event whose marker the previous version wrote (``seen:<event id>``) is
    a duplicate: that marker is touched (its TTL kept) and waited for, no new one written."""
    redis_cluster.flushall()
    redis = redis_cluster.client()
    ingress = Ingress(Store(redis), P, dedupe_ttl=600.0, wait_replicas=1, wait_timeout=5.0)
    event = inbound("w-before-upgrade", 4)
    keys = PartitionKeys(partition_of(event.source_number, P))
    await redis.set(keys.seen_legacy(event.event_id), "1", px=300_000)
    admissions = await ingress.admit_many([event, inbound("w-after-upgrade", 4)])
    assert [a.stored for a in admissions] == [False, True]
    assert 290_000 < await redis.pttl(keys.seen_legacy(event.event_id)) <= 300_000
    assert await redis.exists(keys.seen(event.event_id)) == 0
    with replica_view(redis_cluster, keys.inbox) as replica:
        assert replica.exists(keys.seen_legacy(event.event_id))
        assert replica.exists(keys.seen("w-after-upgrade"))
        assert replica.xlen(keys.inbox) == 1
    await redis.aclose()


@pytest.mark.cluster
async def test_more_replicas_than_a_master_has_is_refused_and_nothing_is_lost(
    redis: RedisClient, redis_kind: str
) -> None:
    # One server has no replica; the session's cluster has one per master.
    wanted = 1 if redis_kind == "single" else 2
    strict = Ingress(Store(redis), P, dedupe_ttl=600.0, wait_replicas=wanted, wait_timeout=0.05)
    event = inbound("lonely", 7)
    with pytest.raises(NotReplicated, match=f"0 of {wanted} replicas|1 of {wanted} replicas"):
        await strict.admit(event)
    # The event is on the master: a retry once enough replicas answer is a duplicate, and
    # the inbox holds it once.
    keys = PartitionKeys(partition_of(event.source_number, P))
    assert await redis.xlen(keys.inbox) == 1
    assert not (await Ingress(Store(redis), P, dedupe_ttl=600.0).admit(event)).stored


def test_bad_wait_settings_are_refused() -> None:
    store = Store(Redis())  # never connects
    with pytest.raises(ValueError, match="wait_replicas"):
        Ingress(store, P, dedupe_ttl=1.0, wait_replicas=-1)
    with pytest.raises(ValueError, match="wait_timeout"):
        Ingress(store, P, dedupe_ttl=1.0, wait_replicas=1, wait_timeout=0)


async def test_a_webhook_waiting_for_a_missing_replica_is_answered_503(
    aiohttp_client: Any, redis: RedisClient
) -> None:
    ingress = Ingress(Store(redis), P, dedupe_ttl=600.0, wait_replicas=1, wait_timeout=0.05)
    app = web.Application()
    app.add_routes(
        webhook_routes(
            ingress, WebhookAuth(None, None, 300.0, allow_unauthenticated=True), max_body=65536
        )
    )
    http = await aiohttp_client(app)
    body = {
        "reply_id": "wr-1",
        "source_address": "+61491570001",
        "destination_address": OURS,
        "content": "hi",
        "type": "SMS",
    }
    response = await http.post("/webhooks/messages", json=body)
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"


async def test_one_server_with_a_replica_waits_for_it(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(
        tmp_path / "replica",
        # No AOF: a replica refuses SIGTERM while it writes its first one.
        extra_args=["--replicaof", primary.host, str(primary.port), "--appendonly", "no"],
    )
    try:
        replica.start()
        with sync_redis.Redis(host=replica.host, port=replica.port) as view:
            wait_until(
                lambda: view.info("replication").get("master_link_status") == "up", "the sync"
            )
        redis = Redis.from_url(primary.url)
        try:
            ingress = Ingress(Store(redis), P, dedupe_ttl=600.0, wait_replicas=1, wait_timeout=10)
            admission = await ingress.admit(inbound("with-replica", 3))
            assert admission.stored
            with sync_redis.Redis(host=replica.host, port=replica.port) as view:
                keys = PartitionKeys(admission.partition)
                assert view.exists(keys.seen("with-replica"))
        finally:
            await redis.aclose()
    finally:
        replica.stop()
        primary.stop()

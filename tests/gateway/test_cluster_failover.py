"""The gateway on a Redis Cluster that changes under it, while webhooks flow: a master killed
with SIGKILL and replaced by its replica, and a partition's slot migrated to another master.

Each test starts its own 3-master / 3-replica cluster (tests/redis_cluster.py; the session's
stays untouched) and one gateway in-process (``create_app`` on a real port, the sandbox as
the provider, the ``ack <text>`` handler). The test plays the provider: each conversation's
messages are posted in order, the next only once the previous got a 2xx, and a webhook
answered otherwise is posted again (the provider retries). The gateway is never restarted.

Checked: every message is answered, each conversation's replies in order; with
SINCHBOT_REDIS_WAIT_REPLICAS=1 nothing acknowledged is lost when the master dies (every
webhook answered 2xx was on a replica). The tests print how many webhooks got 503 and for
how long.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app.gateway import GATEWAY, Gateway, create_app
from bot.core.config import Settings
from bot.sandbox import Sandbox, SandboxConfig
from bot.storage.keys import WORKERS, partition_of
from bot.storage.redis_server import free_port
from bot.storage.topology import partition_slot
from bot.streams.leases import WorkerRegistry
from tests.redis_cluster import LocalCluster

SECRET = "cluster-hook-secret"
OURS = "+61491570157"
PARTITIONS = 16
PER_CONVERSATION = 8


@pytest.fixture(autouse=True)
def _no_ambient_config(no_ambient_config: None) -> None:
    """Every test here runs without ambient settings (see tests/conftest.py)."""


def handsets(count: int, *, partition: int | None = None, start: int = 0) -> list[str]:
    """``count`` handset numbers (all of ``partition``, if given)."""
    found: list[str] = []
    n = start
    while len(found) < count:
        number = f"+614920{n:05d}"
        n += 1
        if partition is None or partition_of(number, PARTITIONS) == partition:
            found.append(number)
    return found


@asynccontextmanager
async def gateway_on(
    cluster: LocalCluster, sandbox: Sandbox, **values: Any
) -> AsyncIterator[tuple[Gateway, str]]:
    port = free_port()
    settings = Settings(
        _env_file=None,
        redis_url=cluster.url,
        base_url=sandbox.url,
        api_key=sandbox.api_key,
        api_secret=sandbox.api_secret,
        webhook_secret=SECRET,
        api_token="cluster-api-token",
        port=port,
        partitions=PARTITIONS,
        lease_ttl=3.0,
        throttle_calls=1000,
        throttle_period=1.0,
        handler="tests.gateway.burst_handler:Ack",
        **values,
    )
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield runner.app[GATEWAY], f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Provider:
    """Posts each conversation's messages in order, retrying until a 2xx; counts the 503s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted = 0
        self.unavailable: list[float] = []
        """When each 503 came (monotonic)."""
        self.other: list[int] = []

    async def converse(self, http: aiohttp.ClientSession, number: str) -> None:
        for n in range(PER_CONVERSATION):
            payload = {
                "reply_id": f"cl-{number}-{n}",
                "source_address": number,
                "destination_address": OURS,
                "content": f"m{n}",
                "type": "SMS",
                "attachments": [],
                "metadata": [],
            }
            while True:
                try:
                    async with http.post(
                        f"{self.url}/webhooks/messages?token={SECRET}", json=payload
                    ) as response:
                        if response.status == 200:
                            break
                        if response.status == 503:
                            self.unavailable.append(time.monotonic())
                        else:
                            self.other.append(response.status)
                except aiohttp.ClientError:
                    self.other.append(0)
                await asyncio.sleep(0.05)
            self.accepted += 1
            await asyncio.sleep(0.01)  # a conversation's pace: the burst lasts a while

    async def when(self, accepted: int) -> None:
        while self.accepted < accepted:
            await asyncio.sleep(0.005)

    def figures(self) -> dict[str, Any]:
        times = self.unavailable
        return {
            "webhooks_503": len(times),
            "503_for_s": round(times[-1] - times[0], 2) if times else 0.0,
        }


async def all_answered(sandbox: Sandbox, numbers: list[str], limit: float = 60.0) -> None:
    expected = [f"ack m{n}" for n in range(PER_CONVERSATION)]
    deadline = time.monotonic() + limit
    while True:
        missing = [number for number in numbers if set(replies(sandbox, number)) != set(expected)]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} conversations missing replies, e.g. "
                f"{missing[0]}: {replies(sandbox, missing[0])}"
            )
        await asyncio.sleep(0.1)
    await sandbox.wait_idle()
    for number in numbers:
        seen: list[str] = []
        for text in replies(sandbox, number):
            if text not in seen:
                seen.append(text)
        assert seen == expected, f"{number} out of order: {replies(sandbox, number)}"


def replies(sandbox: Sandbox, number: str) -> list[str]:
    return [m["content"] for m in sandbox.handset(number).received]


async def step(action: Callable[[], Any]) -> Any:
    """A blocking cluster operation, off the event loop."""
    return await asyncio.to_thread(action)


@pytest.mark.slow
async def test_a_master_killed_mid_burst_is_replaced_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    numbers = handsets(48)
    with LocalCluster(tmp_path / "cluster") as cluster:
        victim = cluster.master_of_slot(partition_slot(0))
        [replica] = cluster.replicas_of(victim)
        lost = [
            p
            for p in range(PARTITIONS)
            if victim.port == cluster.master_of_slot(partition_slot(p)).port
        ]
        async with (
            Sandbox(
                SandboxConfig(port=0, numbers=(OURS,), step_delay=0.01, time_scale=0.01)
            ) as sandbox,
            gateway_on(cluster, sandbox, redis_wait_replicas=1, redis_wait_timeout=0.5) as (_, url),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            provider = Provider(url)
            timings: dict[str, float] = {}

            async def break_it() -> None:
                await provider.when(len(numbers) * 2)
                start = time.monotonic()
                await step(lambda: cluster.kill(victim))
                await asyncio.sleep(0.5)  # webhooks of its partitions meet a dead master
                await step(lambda: cluster.failover(replica))
                timings["promoted_after_s"] = time.monotonic() - start
                # The new master has no replica yet: with WAIT_REPLICAS=1 its partitions
                # answer 503 until the old master is back, as its replica.
                await step(lambda: cluster.restart(victim))
                await step(cluster.wait_healthy)
                timings["healthy_after_s"] = time.monotonic() - start

            await asyncio.gather(break_it(), *(provider.converse(http, n) for n in numbers))
            await all_answered(sandbox, numbers)
            assert cluster.role(replica) == "master"
            assert cluster.role(victim) == "slave"
            print(
                "\nfailover figures: "
                + json.dumps(
                    {
                        "messages": len(numbers) * PER_CONVERSATION,
                        "partitions_on_the_killed_master": lost,
                        **{k: round(v, 2) for k, v in timings.items()},
                        **provider.figures(),
                        "other_answers": provider.other,
                    }
                )
            )
            assert provider.accepted == len(numbers) * PER_CONVERSATION
            assert provider.unavailable, "no webhook met the dead master"
            assert provider.other == []


@pytest.mark.slow
async def test_a_partitions_slot_migrates_while_traffic_flows_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    moving = 3
    slot = partition_slot(moving)
    numbers = handsets(24, partition=moving) + handsets(24, start=50_000)
    with LocalCluster(tmp_path / "cluster") as cluster:
        source = cluster.master_of_slot(slot)
        target = next(m for m in cluster.masters() if m.port != source.port)
        async with (
            Sandbox(
                SandboxConfig(port=0, numbers=(OURS,), step_delay=0.01, time_scale=0.01)
            ) as sandbox,
            gateway_on(cluster, sandbox) as (_, url),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            provider = Provider(url)
            moved: list[int] = []

            async def migrate() -> None:
                await provider.when(len(numbers) * 3)
                migration = cluster.migrate_slot(slot, target, batch=5)
                while (count := await step(lambda: next(migration, None))) is not None:
                    moved.append(count)
                    await asyncio.sleep(0.01)  # traffic between the batches of keys

            started = time.monotonic()
            await asyncio.gather(migrate(), *(provider.converse(http, n) for n in numbers))
            await all_answered(sandbox, numbers)
            assert cluster.master_of_slot(slot).port == target.port
            print(
                "\nmigration figures: "
                + json.dumps(
                    {
                        "messages": len(numbers) * PER_CONVERSATION,
                        "partition": moving,
                        "keys_moved": moved[-1] if moved else 0,
                        "migrate_calls": len(moved),
                        "burst_s": round(time.monotonic() - started, 2),
                        **provider.figures(),
                        "other_answers": provider.other,
                    }
                )
            )
            assert moved, "the slot had no keys to move"
            assert provider.accepted == len(numbers) * PER_CONVERSATION
            assert provider.other == []


async def test_a_dead_master_costs_only_the_leases_it_holds(tmp_path: Path) -> None:
    """A master down longer than the lease TTL (no replica takes over: none here; with one,
    an automatic failover after the node timeout, 15 s by default): the worker keeps
    renewing the leases on the other masters and loses only the dead one's."""
    with LocalCluster(tmp_path / "cluster", replicas=0) as cluster:
        redis = cluster.client()
        workers_slot = cluster.key_slot(WORKERS)
        victim = next(
            m
            for m in cluster.masters()
            if workers_slot not in cluster.slots_of(m)
            and any(partition_slot(p) in cluster.slots_of(m) for p in range(PARTITIONS))
        )
        on_victim = {p for p in range(PARTITIONS) if partition_slot(p) in cluster.slots_of(victim)}
        registry = WorkerRegistry(redis, worker_id="w1", partitions=PARTITIONS, lease_ttl=1.0)
        await registry.start()
        try:
            assert registry.owned == set(range(PARTITIONS))
            await step(lambda: cluster.kill(victim))
            deadline = time.monotonic() + 15
            while registry.owned & on_victim and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not registry.owned & on_victim  # not renewed in time: dropped
            await asyncio.sleep(2.5 * registry.lease_ttl)  # well past the TTL
            assert registry.owned == set(range(PARTITIONS)) - on_victim
        finally:
            await registry.halt()
            await redis.aclose()
